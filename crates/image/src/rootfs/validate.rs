//! Recognising a user's own root image (`--image PATH`) before a VM boots it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use super::RootfsError;

/// The filesystem of a user image; [`UserImageKind::fstype`] is what init mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UserImageKind {
    Squashfs,
    Ext4,
}

impl UserImageKind {
    /// The `mount(2)` filesystem type.
    pub fn fstype(self) -> &'static str {
        match self {
            UserImageKind::Squashfs => "squashfs",
            UserImageKind::Ext4 => "ext4",
        }
    }
}

const SQUASHFS_MAGIC: &[u8; 4] = b"hsqs";
/// squashfs superblock: major version (u16 LE) at 28, bytes_used (u64 LE) at 40.
const SQUASHFS_SUPER_LEN: usize = 96;
const EXT4_SUPER_OFFSET: u64 = 1024;
/// ext2/3/4 superblock: s_log_block_size (u32 LE) at 24, s_magic (u16 LE) at 56.
const EXT4_MAGIC: u16 = 0xEF53;

/// Checks that `path` is a squashfs (v4) or ext2/3/4 image whose superblock
/// fits the file; errors name the path and what is wrong.
pub fn validate_user_image(path: &Path) -> Result<UserImageKind, RootfsError> {
    let not_image = |detail: &str| RootfsError::NotAnImage {
        path: path.to_path_buf(),
        detail: detail.to_string(),
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(RootfsError::ImageMissing {
                path: path.to_path_buf(),
            })
        }
        Err(e) => return Err(RootfsError::io("read image", path, e)),
    };
    if meta.is_dir() {
        return Err(not_image("a directory"));
    }
    let len = meta.len();
    if len == 0 {
        return Err(not_image("empty file"));
    }
    let mut f = File::open(path).map_err(|e| RootfsError::io("read image", path, e))?;
    let mut head = [0u8; SQUASHFS_SUPER_LEN];
    let n = read_up_to(&mut f, &mut head).map_err(|e| RootfsError::io("read image", path, e))?;
    if n >= 4 && &head[..4] == SQUASHFS_MAGIC {
        if n < SQUASHFS_SUPER_LEN {
            return Err(not_image("truncated squashfs superblock"));
        }
        let major = u16::from_le_bytes([head[28], head[29]]);
        let bytes_used = u64::from_le_bytes(head[40..48].try_into().unwrap_or_default());
        if major != 4 {
            return Err(not_image(&format!("squashfs version {major}, want 4")));
        }
        if bytes_used > len || bytes_used < SQUASHFS_SUPER_LEN as u64 {
            return Err(not_image(&format!(
                "squashfs claims {bytes_used} bytes but the file has {len}"
            )));
        }
        return Ok(UserImageKind::Squashfs);
    }
    let mut sb = [0u8; 64];
    let ext = f
        .seek(SeekFrom::Start(EXT4_SUPER_OFFSET))
        .and_then(|_| read_up_to(&mut f, &mut sb))
        .map_err(|e| RootfsError::io("read image", path, e))?;
    if ext == sb.len() && u16::from_le_bytes([sb[56], sb[57]]) == EXT4_MAGIC {
        let log_block = u32::from_le_bytes(sb[24..28].try_into().unwrap_or_default());
        let blocks = u32::from_le_bytes(sb[4..8].try_into().unwrap_or_default()) as u64;
        if log_block > 6 {
            return Err(not_image("ext4 superblock has an impossible block size"));
        }
        let block_size = 1024u64 << log_block;
        if blocks.saturating_mul(block_size) > len {
            return Err(not_image(&format!(
                "ext4 filesystem of {} bytes in a file of {len}",
                blocks * block_size
            )));
        }
        return Ok(UserImageKind::Ext4);
    }
    Err(not_image("no squashfs or ext4 superblock"))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
