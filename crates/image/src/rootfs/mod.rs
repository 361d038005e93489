//! Language root filesystems: Debian bookworm roots built with `mmdebstrap`,
//! packed read-only as squashfs, cached by the content hash of their recipe.
//!
//! Module map:
//! - [`language`] — the [`Language`] names a user can ask for
//! - [`recipe`] — what goes into an image ([`Recipe`]), its canonical hash
//! - [`build`] — running `mmdebstrap` + `sqfstar`, with [`BuildProgress`]
//! - [`cache`] — `<cache>/rootfs/<language>-<hash16>.squashfs` + JSON sidecar:
//!   [`ensure`], [`list`], [`remove`]
//! - [`validate`] — recognising a user's own squashfs/ext4 image
//! - [`disk`] — sparse ext4 disks for the writable upper layer and `--persist`
//!
//! How a guest uses an image: the squashfs is attached as a read-only virtio-blk
//! disk (lower), a per-VM ext4 disk from [`create_ext4`] as a writable one
//! (upper, with `upper/` and `work/` directories made by init), overlayfs on
//! top, then init switches root into it. The image provides `/in`, `/out`
//! (1777), `/persist`, `/root`, `/tmp`, `/etc/hostname`, a placeholder
//! `/etc/resolv.conf`, `/etc/environment` and `/etc/profile.d/hearth.sh`.

pub mod build;
pub mod cache;
pub mod disk;
pub mod language;
pub mod recipe;
pub mod validate;

use std::path::PathBuf;

pub use build::{BuildPhase, BuildProgress, NoProgress};
pub use cache::{
    ensure, ensure_recipe, list, remove, rootfs_dir, ImageInfo, ImageSelector,
    SIDECAR_FORMAT_VERSION,
};
pub use disk::create_ext4;
pub use language::{Language, UnknownLanguage};
pub use recipe::{Compression, Recipe, RECIPE_VERSION};
pub use validate::{validate_user_image, UserImageKind};

/// Errors from building, caching and checking root filesystem images.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("{what}: {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{tool} not found; install {package}")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("running {tool}")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error(
        "{tool} failed ({status}) while {phase}; full log: {}{}",
        log.display(),
        fmt_tail(tail)
    )]
    ToolFailed {
        tool: &'static str,
        phase: BuildPhase,
        status: String,
        log: PathBuf,
        tail: Vec<String>,
    },
    #[error("image not found: {}", path.display())]
    ImageMissing { path: PathBuf },
    #[error("not a squashfs or ext4 image: {} ({detail})", path.display())]
    NotAnImage { path: PathBuf, detail: String },
    #[error("no space left on the disk holding {}", path.display())]
    DiskFull { path: PathBuf },
    #[error("{} already exists; refusing to overwrite it", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("invalid ext4 label {0:?} (at most 16 bytes)")]
    Label(String),
    #[error("invalid disk size {0} MiB (must be at least 8)")]
    DiskSize(u64),
    #[error("mkfs.ext4 failed on {} ({status}): {stderr}", path.display())]
    Mkfs {
        path: PathBuf,
        status: String,
        stderr: String,
    },
    #[error("no cached image matches {0}")]
    NoMatch(String),
    #[error("cache sidecar {} is unreadable", path.display())]
    Sidecar {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("locking the image cache {}", path.display())]
    Lock {
        path: PathBuf,
        source: nix::errno::Errno,
    },
}

fn fmt_tail(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!("; last output:\n  {}", tail.join("\n  "))
    }
}

impl RootfsError {
    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if source.raw_os_error() == Some(libc_enospc()) {
            return RootfsError::DiskFull { path: path.into() };
        }
        RootfsError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}
