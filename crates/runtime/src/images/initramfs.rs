//! The boot initramfs, built on first use and cached by content hash in the
//! image cache.
//!
//! On top of the image crate's initramfs (guest binary + modules) a second cpio
//! layer with a static busybox (`/bin/busybox`, `/bin/sh` and applet links) is
//! appended when the config names one, so the bare guest has a shell. The
//! kernel unpacks concatenated archives in order. Both layers are uncompressed:
//! under software emulation the guest's decompression costs more boot time
//! than reading the extra bytes.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::paths;

/// A ready-to-boot initramfs.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Initramfs {
    pub path: PathBuf,
    pub hash: String,
    pub size: u64,
    pub kernel: PathBuf,
    pub kernel_release: String,
    pub busybox: bool,
}

/// The word for "hearth's own kernel" in place of a kernel path.
pub const KERNEL_OWN: &str = "own";
/// The word for "the Debian cloud kernel in /boot" in place of a kernel path.
pub const KERNEL_CLOUD: &str = "cloud";

/// The kernel to boot. `explicit` is a path, or `own` (hearth's own kernel,
/// an error when it is not built) or `cloud` (the newest Debian cloud
/// kernel). Without it: the Debian cloud kernel (hearth's own kernel from
/// `cfg.own_kernel_cache` is used when asked for by `own`).
pub fn kernel(explicit: Option<&Path>, cfg: &RuntimeConfig) -> Result<hearth_image::KernelInfo> {
    let find = |e| Error::image("cannot find a guest kernel", e);
    let own_cache = cfg.own_kernel_cache.as_deref();
    match explicit {
        Some(p) if p.as_os_str() == KERNEL_CLOUD && !p.exists() => {
            hearth_image::find_kernel(None).map_err(find)
        }
        Some(p) if p.as_os_str() == KERNEL_OWN && !p.exists() => own_cache
            .and_then(hearth_image::own_kernel::find_own_kernel)
            .ok_or_else(|| {
                Error::InvalidSpec(format!(
                    "hearth's own kernel is not built (no matching hearth-kernel-* in {}); \
                     run scripts/kernel.sh",
                    own_cache.map_or("(none configured)".into(), |d| d.display().to_string())
                ))
            }),
        Some(p) if !p.is_file() => Err(Error::InvalidSpec(format!(
            "kernel not found: {} (a kernel file, or `{KERNEL_OWN}` or `{KERNEL_CLOUD}`)",
            p.display()
        ))),
        // hearth's own kernel is not the default yet: a per-exec memory limit of
        // a background process does not take effect on it (docs/kernel.md).
        _ => hearth_image::select_kernel(explicit, None).map_err(find),
    }
}

fn busybox(cfg: &RuntimeConfig) -> Option<PathBuf> {
    let p = cfg.busybox.clone()?;
    if p.as_os_str().is_empty() || !p.is_file() {
        return None;
    }
    match paths::check_static(&p) {
        Ok(()) => Some(p),
        Err(e) => {
            tracing::warn!(path = %p.display(), error = %e, "busybox is not static; no shell in the guest");
            None
        }
    }
}

/// Applet names of a busybox binary (`busybox --list`).
fn applets(bb: &Path) -> Vec<String> {
    std::process::Command::new(bb)
        .arg("--list")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::trim)
                .filter(|a| {
                    !a.is_empty()
                        && a.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.[".contains(c))
                })
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn busybox_layer(bb: &Path, data: &[u8]) -> Result<Vec<u8>> {
    let cpio = |e| Error::image("cannot write the busybox layer", e);
    let mut w = hearth_image::cpio::CpioWriter::new(Vec::new());
    w.dir("bin", 0o755).map_err(cpio)?;
    w.file("bin/busybox", 0o755, data).map_err(cpio)?;
    let mut names = applets(bb);
    if !names.iter().any(|n| n == "sh") {
        names.push("sh".into());
    }
    for a in names.iter().filter(|a| a.as_str() != "busybox") {
        w.symlink(&format!("bin/{a}"), "busybox").map_err(cpio)?;
    }
    w.finish().map_err(cpio)
}

/// Builds or reuses the initramfs for `kernel` (blocking: call it from the
/// blocking pool).
pub fn ensure_blocking(
    cfg: &RuntimeConfig,
    kernel: &hearth_image::KernelInfo,
) -> Result<Initramfs> {
    let guest = cfg.guest_binary.clone().ok_or_else(|| {
        Error::InvalidSpec(format!(
            "no guest binary configured (the static hearth-guest); {}",
            paths::GUEST_BUILD_HINT
        ))
    })?;
    if !guest.is_file() {
        return Err(Error::InvalidSpec(format!(
            "the guest binary {} does not exist; {}",
            guest.display(),
            paths::GUEST_BUILD_HINT
        )));
    }
    paths::check_static(&guest)?;
    let cache = cfg.image_cache();
    std::fs::create_dir_all(cache).map_err(|e| Error::io("cannot create", cache, e))?;
    let spec = hearth_image::InitramfsSpec::with_default_modules(guest, kernel);
    let base = hearth_image::build_cached(&spec, cache)
        .map_err(|e| Error::image("cannot build the initramfs", e))?;
    let Some(bb) = busybox(cfg) else {
        return Ok(Initramfs {
            path: base.path,
            hash: base.hash,
            size: base.size,
            kernel: kernel.path.clone(),
            kernel_release: kernel.release.clone(),
            busybox: false,
        });
    };
    let bb_data = std::fs::read(&bb).map_err(|e| Error::io("cannot read", &bb, e))?;
    let mut h = Sha256::new();
    h.update(b"busybox layer v2, uncompressed");
    h.update(base.hash.as_bytes());
    h.update(&bb_data);
    let hash = hex::encode(h.finalize());
    let path = cache.join(format!("initramfs-{}-bb.cpio", &hash[..16]));
    if !path.is_file() {
        let mut out =
            std::fs::read(&base.path).map_err(|e| Error::io("cannot read", &base.path, e))?;
        out.extend(busybox_layer(&bb, &bb_data)?);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io("cannot write", &tmp, e))?;
        f.write_all(&out)
            .and_then(|_| f.sync_all())
            .map_err(|e| Error::io("cannot write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("cannot write", &path, e))?;
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    Ok(Initramfs {
        path,
        hash,
        size,
        kernel: kernel.path.clone(),
        kernel_release: kernel.release.clone(),
        busybox: true,
    })
}

/// Initramfs files in the cache, with their sizes.
pub fn list(cache: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(cache) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with("initramfs-")
                && (name.ends_with(".cpio") || name.ends_with(".cpio.gz"))
            {
                out.push((e.path(), e.metadata().map(|m| m.len()).unwrap_or(0)));
            }
        }
    }
    out.sort();
    out
}
