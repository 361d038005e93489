//! Sparse ext4 disk images, made without loop devices or root: the per-VM
//! writable upper layer and `--persist` volumes.

use std::path::Path;
use std::process::{Command, Stdio};

use super::build::find_tool;
use super::RootfsError;

/// Creates `path` (which must not exist) as a sparse file of `size_mib` MiB
/// and formats it as ext4 with label `label` and a root-owned root directory.
/// On failure nothing is left at `path`.
pub fn create_ext4(path: &Path, size_mib: u64, label: &str) -> Result<(), RootfsError> {
    if label.len() > 16 || label.contains(['\0', '\n']) {
        return Err(RootfsError::Label(label.to_string()));
    }
    if size_mib < 8 {
        return Err(RootfsError::DiskSize(size_mib));
    }
    let mkfs = find_tool("mkfs.ext4", "e2fsprogs")?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => RootfsError::AlreadyExists {
                path: path.to_path_buf(),
            },
            _ => RootfsError::io("create disk image", path, e),
        })?;
    let cleanup = |err: RootfsError| {
        let _ = std::fs::remove_file(path);
        err
    };
    file.set_len(size_mib * 1024 * 1024)
        .map_err(|e| cleanup(RootfsError::io("size disk image", path, e)))?;
    drop(file);
    let out = Command::new(&mkfs)
        .args(["-F", "-q", "-L", label, "-E", "root_owner=0:0"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| {
            cleanup(RootfsError::Spawn {
                tool: "mkfs.ext4",
                source,
            })
        })?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if stderr.contains("No space left on device") {
        return Err(cleanup(RootfsError::DiskFull {
            path: path.to_path_buf(),
        }));
    }
    Err(cleanup(RootfsError::Mkfs {
        path: path.to_path_buf(),
        status: out.status.to_string(),
        stderr,
    }))
}
