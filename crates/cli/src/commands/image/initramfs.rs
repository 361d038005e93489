//! The boot initramfs, built on first use and cached by content hash in the
//! image cache (`HEARTH_IMAGE_CACHE`, else `<state dir>/images`).
//!
//! On top of the image crate's initramfs (guest binary + modules) a second cpio
//! layer with a static busybox (`/bin/busybox`, `/bin/sh` and applet links) is
//! appended when one is available (`HEARTH_BUSYBOX`, else `/bin/busybox`), so
//! `vm run --cmd` has a shell. The kernel unpacks concatenated archives in order.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use sha2::{Digest, Sha256};

use crate::commands::vm::common::Progress;
use crate::paths;
use crate::state::State;

/// A ready-to-boot image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Image {
    pub path: PathBuf,
    pub hash: String,
    pub size: u64,
    pub kernel: PathBuf,
    pub kernel_release: String,
    pub busybox: bool,
}

/// The kernel to boot, with a clear error when an explicit one is missing.
pub fn kernel(explicit: Option<&Path>) -> anyhow::Result<hearth_image::KernelInfo> {
    if let Some(p) = explicit {
        if !p.is_file() {
            anyhow::bail!("kernel not found: {}", p.display());
        }
    }
    hearth_image::find_kernel(explicit).context("cannot find a guest kernel")
}

fn busybox() -> Option<PathBuf> {
    let p = std::env::var_os("HEARTH_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
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

/// The busybox layer, uncompressed like the base image: under software
/// emulation the kernel's gunzip of it costs more boot time than reading the
/// extra megabyte (see crates/image/README.md).
fn busybox_layer(bb: &Path, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut w = hearth_image::cpio::CpioWriter::new(Vec::new());
    w.dir("bin", 0o755)?;
    w.file("bin/busybox", 0o755, data)?;
    let mut names = applets(bb);
    if !names.iter().any(|n| n == "sh") {
        names.push("sh".into());
    }
    for a in names.iter().filter(|a| a.as_str() != "busybox") {
        w.symlink(&format!("bin/{a}"), "busybox")?;
    }
    Ok(w.finish()?)
}

/// Builds or reuses the image for `kernel`; progress goes to stderr.
pub fn ensure(state: &State, kernel: &hearth_image::KernelInfo) -> anyhow::Result<Image> {
    let guest = paths::guest_binary()?;
    let spec = hearth_image::InitramfsSpec::with_default_modules(guest, kernel);
    let progress = Progress::start("preparing the guest image");
    let base = hearth_image::build_cached(&spec, &state.images_dir())
        .context("cannot build the initramfs")?;
    let Some(bb) = busybox() else {
        progress.finish(&format!("image {}", base.path.display()));
        return Ok(Image {
            path: base.path,
            hash: base.hash,
            size: base.size,
            kernel: kernel.path.clone(),
            kernel_release: kernel.release.clone(),
            busybox: false,
        });
    };
    let bb_data = std::fs::read(&bb).with_context(|| format!("cannot read {}", bb.display()))?;
    let mut h = Sha256::new();
    h.update(b"busybox layer v2, uncompressed");
    h.update(base.hash.as_bytes());
    h.update(&bb_data);
    let hash = hex::encode(h.finalize());
    let path = state
        .images_dir()
        .join(format!("initramfs-{}-bb.cpio", &hash[..16]));
    if !path.is_file() {
        let mut out = std::fs::read(&base.path)
            .with_context(|| format!("cannot read {}", base.path.display()))?;
        out.extend(busybox_layer(&bb, &bb_data)?);
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(&out)
            .and_then(|_| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    progress.finish(&format!("image {}", path.display()));
    Ok(Image {
        path,
        hash,
        size,
        kernel: kernel.path.clone(),
        kernel_release: kernel.release.clone(),
        busybox: true,
    })
}
