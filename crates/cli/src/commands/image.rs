//! `hearth image build|list`: the boot initramfs, built on first use and cached by
//! content hash under `<state dir>/images`.
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

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Build (or find in the cache) the boot initramfs and print its path, hash and size.
    Build(BuildArgs),
    /// List cached images.
    List(ListArgs),
}

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Kernel whose modules go into the image (default: newest /boot/vmlinuz-*-cloud-amd64).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

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

/// The gzip-compressed busybox layer.
fn busybox_layer(bb: &Path, data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let mut w = hearth_image::cpio::CpioWriter::new(enc);
    w.dir("bin", 0o755)?;
    w.file("bin/busybox", 0o755, data)?;
    let mut names = applets(bb);
    if !names.iter().any(|n| n == "sh") {
        names.push("sh".into());
    }
    for a in names.iter().filter(|a| a.as_str() != "busybox") {
        w.symlink(&format!("bin/{a}"), "busybox")?;
    }
    let enc = w.finish()?;
    Ok(enc.finish()?)
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
    h.update(base.hash.as_bytes());
    h.update(&bb_data);
    let hash = hex::encode(h.finalize());
    let path = state
        .images_dir()
        .join(format!("initramfs-{}-bb.cpio.gz", &hash[..16]));
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

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let state = State::new(paths::state_dir()?);
    match args.cmd {
        Cmd::Build(a) => {
            let k = kernel(a.kernel.as_deref())?;
            let img = tokio::task::spawn_blocking(move || ensure(&state, &k)).await??;
            if a.json {
                println!("{}", serde_json::to_string(&img)?);
            } else {
                println!(
                    "path:   {}\nhash:   {}\nsize:   {}\nkernel: {} ({})\nshell:  {}",
                    img.path.display(),
                    img.hash,
                    img.size,
                    img.kernel.display(),
                    img.kernel_release,
                    if img.busybox { "busybox" } else { "none" }
                );
            }
            Ok(0)
        }
        Cmd::List(a) => {
            let mut rows = Vec::new();
            if let Ok(rd) = std::fs::read_dir(state.images_dir()) {
                for e in rd.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("initramfs-") && name.ends_with(".cpio.gz") {
                        let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                        rows.push((e.path(), size));
                    }
                }
            }
            rows.sort();
            if a.json {
                let v: Vec<_> = rows
                    .iter()
                    .map(|(p, s)| serde_json::json!({"path": p, "size": s}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for (p, s) in rows {
                    println!("{s:>10}  {}", p.display());
                }
            }
            Ok(0)
        }
    }
}
