//! Guest images: the boot initramfs ([`initramfs`]) and root images — language
//! images built from Debian and users' own squashfs/ext4 files ([`rootfs`]).

pub mod initramfs;
pub mod rootfs;

pub use initramfs::{kernel, Initramfs};
pub use rootfs::{parse_language, RootImage};
