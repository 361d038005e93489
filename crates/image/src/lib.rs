//! hearth guest images.
//!
//! Module map:
//! - [`cpio`] — cpio "newc" writer (and a reader for checks)
//! - [`modules`] — `modules.dep` / `modules.builtin` parsing, dependency ordering
//! - [`kernel`] — finding the host kernel image and its release; choosing the kernel
//! - [`own_kernel`] — hearth's own built-in-everything kernel in the `scripts/kernel.sh` cache
//! - [`initramfs`] — the boot initramfs layout and its content-addressed cache
//! - [`rootfs`] — language root filesystems (mmdebstrap + squashfs), cached; ext4 disks

pub mod cpio;
pub mod initramfs;
pub mod kernel;
pub mod modules;
pub mod own_kernel;
pub mod rootfs;

use std::path::PathBuf;

pub use initramfs::{
    build_cached, build_cached_with, BuiltImage, Compression, InitramfsSpec, DEFAULT_MODULES,
};
pub use kernel::{find_kernel, select_kernel, KernelInfo, KernelKind};

/// Errors from building guest images.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no kernel found in {} ({detail}); install linux-image-cloud-amd64 or pass --kernel",
        dir.display()
    )]
    KernelNotFound { dir: PathBuf, detail: String },
    #[error("cannot tell the release of kernel {}; name it vmlinuz-<release>", path.display())]
    KernelRelease { path: PathBuf },
    #[error("resolving kernel modules in {}", dir.display())]
    Modules {
        dir: PathBuf,
        source: modules::ModulesError,
    },
    #[error("writing initramfs archive")]
    Cpio(#[source] cpio::CpioError),
}
