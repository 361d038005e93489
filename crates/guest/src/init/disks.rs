//! Finding the block devices named on the command line: a `/dev/...` path, or
//! `serial:NAME`, the virtio-blk serial the host set (`-device
//! virtio-blk-device,serial=NAME`), which the kernel shows in
//! `/sys/block/vd*/serial`. Serials do not depend on the order in which the
//! host attached the disks, so the host never has to predict `vdX` names.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cmdline::DeviceRef;
use super::InitError;

/// How long a disk may take to appear after its driver loaded. Drivers probe
/// synchronously when the module loads, so this is only a safety margin.
pub const DEVICE_WAIT: Duration = Duration::from_secs(5);

const SYS_BLOCK: &str = "/sys/block";

/// `(name, serial)` of every virtio disk (`vd*`) under `sys_block`, sorted by
/// name. Disks without a readable serial get an empty one.
pub fn virtio_disks(sys_block: &Path) -> Vec<(String, String)> {
    let Ok(dir) = std::fs::read_dir(sys_block) else {
        return Vec::new();
    };
    let mut out: Vec<(String, String)> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with("vd"))
        .map(|name| {
            let serial = std::fs::read(sys_block.join(&name).join("serial"))
                .map(|b| clean_serial(&b))
                .unwrap_or_default();
            (name, serial)
        })
        .collect();
    out.sort();
    out
}

/// The sysfs attribute holds up to 20 bytes, NUL-padded by some devices, with a
/// trailing newline.
fn clean_serial(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).trim().to_owned()
}

/// The kernel name (`vdb`) of the first disk whose serial is `serial`.
pub fn find_by_serial(sys_block: &Path, serial: &str) -> Option<String> {
    virtio_disks(sys_block)
        .into_iter()
        .find(|(_, s)| s == serial)
        .map(|(name, _)| name)
}

/// Resolves `dev` to an existing device node, waiting up to [`DEVICE_WAIT`].
/// `role` ("root lower", "persist", ...) names the disk in the error.
pub fn wait_for(dev: &DeviceRef, role: &str) -> Result<PathBuf, InitError> {
    let deadline = Instant::now() + DEVICE_WAIT;
    loop {
        let node = match dev {
            DeviceRef::Path(p) => Some(p.clone()),
            DeviceRef::Serial(s) => {
                find_by_serial(Path::new(SYS_BLOCK), s).map(|n| Path::new("/dev").join(n))
            }
        };
        if let Some(node) = node.filter(|n| n.exists()) {
            return Ok(node);
        }
        if Instant::now() > deadline {
            let present: Vec<String> = virtio_disks(Path::new(SYS_BLOCK))
                .into_iter()
                .map(|(n, s)| format!("{n}={s}"))
                .collect();
            let present = if present.is_empty() {
                "none".to_owned()
            } else {
                present.join(", ")
            };
            return Err(InitError::io(
                format!("find {role} disk {dev}"),
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "it did not appear within {} s (virtio disks present: {present})",
                        DEVICE_WAIT.as_secs()
                    ),
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sys(disks: &[(&str, Option<&[u8]>)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, serial) in disks {
            let d = dir.path().join(name);
            std::fs::create_dir(&d).unwrap();
            if let Some(s) = serial {
                std::fs::write(d.join("serial"), s).unwrap();
            }
        }
        dir
    }

    #[test]
    fn finds_disks_by_serial_regardless_of_order() {
        let sys = fake_sys(&[
            ("vdb", Some(b"hearth-upper\n")),
            ("vda", Some(b"hearth-lower")),
            ("vdc", Some(b"hearth-persist\0\0\0\0\0\0")),
            ("sda", Some(b"hearth-other")),
            ("vdd", None),
        ]);
        assert_eq!(
            find_by_serial(sys.path(), "hearth-lower").as_deref(),
            Some("vda")
        );
        assert_eq!(
            find_by_serial(sys.path(), "hearth-upper").as_deref(),
            Some("vdb")
        );
        assert_eq!(
            find_by_serial(sys.path(), "hearth-persist").as_deref(),
            Some("vdc")
        );
        // Only virtio disks count, and a prefix is not a match.
        assert_eq!(find_by_serial(sys.path(), "hearth-other"), None);
        assert_eq!(find_by_serial(sys.path(), "hearth"), None);
        assert_eq!(
            virtio_disks(sys.path()),
            [
                ("vda".into(), "hearth-lower".into()),
                ("vdb".into(), "hearth-upper".into()),
                ("vdc".into(), "hearth-persist".into()),
                ("vdd".into(), String::new()),
            ]
        );
    }

    #[test]
    fn missing_sys_block_means_no_disks() {
        let dir = tempfile::tempdir().unwrap();
        assert!(virtio_disks(&dir.path().join("absent")).is_empty());
        assert_eq!(find_by_serial(&dir.path().join("absent"), "x"), None);
    }
}
