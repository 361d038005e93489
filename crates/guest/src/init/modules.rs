//! Loading the kernel modules shipped in the initramfs, in the order the image
//! builder wrote to `/lib/modules/hearth.order` (dependencies first).
//!
//! Only what the boot needs is loaded (each module costs tens of milliseconds
//! under TCG): the disk and filesystem modules only with an overlay root or a
//! persist volume, the NIC modules only with `hearth.net`. Everything else in
//! the manifest (virtio transport, vsock, unknown names) is always loaded, in
//! manifest order, so dependency order is kept.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::InitError;

/// The manifest written by `hearth_image::initramfs`; paths are relative to
/// `/lib/modules`.
pub const ORDER_FILE: &str = "/lib/modules/hearth.order";

/// Which optional module groups this boot needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Needs {
    /// virtio-blk disks (overlay root or persist volume).
    pub disks: bool,
    /// overlayfs (overlay root).
    pub overlay: bool,
    /// squashfs (overlay root with a squashfs lower layer).
    pub squashfs: bool,
    /// virtio-net and its failover helpers (`hearth.net`).
    pub net: bool,
}

/// Whether the manifest line `rel` (e.g. `6.1.0/kernel/fs/squashfs/squashfs.ko`)
/// is loaded for `needs`. Names outside the optional groups always load.
pub fn wanted(rel: &str, needs: &Needs) -> bool {
    let file = rel.rsplit('/').next().unwrap_or(rel);
    let name = file.split('.').next().unwrap_or(file).replace('-', "_");
    match name.as_str() {
        "virtio_blk" => needs.disks,
        "overlay" => needs.overlay,
        "squashfs" => needs.squashfs,
        "virtio_net" | "net_failover" | "failover" => needs.net,
        _ => true,
    }
}

/// What loading took.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    /// Already present (EEXIST), e.g. after a kexec or a duplicate line.
    pub already: usize,
    /// In the manifest but not needed by this boot.
    pub skipped: usize,
    pub total: Duration,
    /// (path, time) per module, in load order.
    pub each: Vec<(String, Duration)>,
}

/// Loads the manifest's modules that `needs` asks for. A missing manifest means
/// a kernel with everything built in: nothing to do.
pub fn load(needs: &Needs) -> Result<LoadReport, InitError> {
    let start = Instant::now();
    let mut report = LoadReport::default();
    let list = match std::fs::read_to_string(ORDER_FILE) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(InitError::io(format!("read {ORDER_FILE}"), e)),
    };
    for rel in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !wanted(rel, needs) {
            report.skipped += 1;
            continue;
        }
        let path = Path::new("/lib/modules").join(rel);
        let t = Instant::now();
        if load_one(&path)? {
            report.loaded += 1;
        } else {
            report.already += 1;
        }
        report.each.push((rel.to_owned(), t.elapsed()));
    }
    report.total = start.elapsed();
    Ok(report)
}

/// Returns Ok(false) when the module was already loaded.
fn load_one(path: &Path) -> Result<bool, InitError> {
    let what = || format!("load module {}", path.display());
    let file = std::fs::File::open(path).map_err(|e| InitError::io(what(), e))?;
    let params = c"";
    // SAFETY: finit_module reads a module image from a valid open fd and a
    // NUL-terminated parameter string that outlives the call; flags are 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(false);
    }
    Err(InitError::io(what(), err))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The manifest the image builder writes for the Debian cloud kernel.
    const MANIFEST: &[&str] = &[
        "6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio.ko",
        "6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio_ring.ko",
        "6.1.0-56-cloud-amd64/kernel/drivers/virtio/virtio_mmio.ko",
        "6.1.0-56-cloud-amd64/kernel/net/vmw_vsock/vsock.ko",
        "6.1.0-56-cloud-amd64/kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko",
        "6.1.0-56-cloud-amd64/kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
        "6.1.0-56-cloud-amd64/kernel/drivers/block/virtio_blk.ko",
        "6.1.0-56-cloud-amd64/kernel/fs/overlayfs/overlay.ko",
        "6.1.0-56-cloud-amd64/kernel/fs/squashfs/squashfs.ko",
        "6.1.0-56-cloud-amd64/kernel/net/core/failover.ko",
        "6.1.0-56-cloud-amd64/kernel/drivers/net/net_failover.ko",
        "6.1.0-56-cloud-amd64/kernel/drivers/net/virtio_net.ko",
    ];

    fn names(needs: Needs) -> Vec<&'static str> {
        MANIFEST
            .iter()
            .filter(|r| wanted(r, &needs))
            .map(|r| r.rsplit('/').next().unwrap().trim_end_matches(".ko"))
            .collect()
    }

    const BASE: &[&str] = &[
        "virtio",
        "virtio_ring",
        "virtio_mmio",
        "vsock",
        "vmw_vsock_virtio_transport_common",
        "vmw_vsock_virtio_transport",
    ];

    #[test]
    fn bare_boot_loads_only_virtio_and_vsock() {
        assert_eq!(names(Needs::default()), BASE);
    }

    #[test]
    fn groups_are_added_in_manifest_order() {
        let overlay = Needs {
            disks: true,
            overlay: true,
            squashfs: true,
            net: false,
        };
        let mut want = BASE.to_vec();
        want.extend(["virtio_blk", "overlay", "squashfs"]);
        assert_eq!(names(overlay), want);

        let ext4_lower_with_net = Needs {
            squashfs: false,
            net: true,
            ..overlay
        };
        let mut want = BASE.to_vec();
        want.extend([
            "virtio_blk",
            "overlay",
            "failover",
            "net_failover",
            "virtio_net",
        ]);
        assert_eq!(names(ext4_lower_with_net), want);

        let persist_only = Needs {
            disks: true,
            ..Needs::default()
        };
        assert_eq!(names(persist_only).last(), Some(&"virtio_blk"));
    }

    #[test]
    fn unknown_and_compressed_names_are_handled() {
        let none = Needs::default();
        assert!(wanted("x/kernel/lib/crc32c_generic.ko", &none));
        assert!(!wanted("x/kernel/drivers/block/virtio_blk.ko.xz", &none));
        assert!(!wanted("virtio-net.ko", &none));
    }
}
