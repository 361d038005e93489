//! A sandbox's disks:
//! - the root image, read-only (lower), shared by every sandbox using it;
//! - `<vm dir>/upper.ext4`, a sparse ext4 disk holding the overlay's writable
//!   layer; kept across stop/start, removed with the sandbox;
//! - with persistence: `<state>/persist/<NAME>.ext4`, mounted at `/persist`;
//!   removed with the sandbox unless kept, attached again by name.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::state::{VmRecord, UPPER_DISK};

/// Default size of the writable upper disk.
pub const DEFAULT_DISK_MIB: u64 = 2048;
/// Default size of a new persist volume.
pub const DEFAULT_PERSIST_MIB: u64 = 1024;
/// ext4 label of the upper disk (the persist label is the contract's serial).
const UPPER_LABEL: &str = "hearth-upper";

async fn make_ext4(path: PathBuf, mib: u64, label: &'static str) -> Result<()> {
    let p = path.clone();
    tokio::task::spawn_blocking(move || hearth_image::rootfs::create_ext4(&p, mib, label))
        .await
        .map_err(|e| Error::Internal(format!("disk task: {e}")))?
        .map_err(|e| Error::image(format!("cannot create the disk {}", path.display()), e))
}

/// Creates the VM directory, the upper disk and (when new) the persist volume.
pub async fn make(rec: &VmRecord, persist_dir: &Path, persist_mib: u64) -> Result<()> {
    tokio::fs::create_dir_all(&rec.dir)
        .await
        .map_err(|e| Error::io("cannot create", &rec.dir, e))?;
    if rec.rootfs.is_some() {
        make_ext4(rec.dir.join(UPPER_DISK), rec.disk_mib, UPPER_LABEL).await?;
    }
    if let Some(vol) = &rec.persist_volume {
        if vol.is_file() {
            tracing::info!(sandbox_id = %rec.id, volume = %vol.display(), "attaching an existing persist volume");
        } else {
            tokio::fs::create_dir_all(persist_dir)
                .await
                .map_err(|e| Error::io("cannot create", persist_dir, e))?;
            make_ext4(
                vol.clone(),
                persist_mib,
                hearth_vmm::guest_contract::PERSIST_SERIAL,
            )
            .await?;
        }
    }
    Ok(())
}

/// Checks that a stopped VM's disks are all there, naming what is missing.
pub fn check(rec: &VmRecord) -> Result<()> {
    let missing = |what, path: &Path, hint| Error::MissingDisk {
        id: rec.id.clone(),
        what,
        path: path.to_path_buf(),
        hint,
    };
    if let Some(img) = &rec.rootfs {
        if !img.is_file() {
            return Err(missing(
                "the root image",
                img,
                " (removed with `hearth image rm`?); clean the vm and create a new one",
            ));
        }
    }
    if let Some(up) = rec.upper_disk() {
        if !up.is_file() {
            return Err(missing("the upper disk", &up, ""));
        }
    }
    if let Some(vol) = &rec.persist_volume {
        if !vol.is_file() {
            return Err(missing(
                "the persist volume",
                vol,
                " (was it deleted by hand?); clean the vm, or create a new one with --persist",
            ));
        }
    }
    Ok(())
}

/// Removes a persist volume file; a missing one is fine.
pub fn remove_persist_volume(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::rec;
    use crate::state::VmStatus;

    #[test]
    fn missing_disks_are_named() {
        let d = tempfile::tempdir().unwrap();
        let mut r = rec("ab12cd34", VmStatus::Stopped);
        r.dir = d.path().into();
        r.rootfs = Some(d.path().join("img.squashfs"));
        r.lowerfs = Some(hearth_vmm::LowerFs::Squashfs);
        r.persist_volume = Some(d.path().join("p.ext4"));
        let e = check(&r).unwrap_err().to_string();
        assert!(e.contains("img.squashfs") && e.contains("image rm"), "{e}");
        std::fs::write(d.path().join("img.squashfs"), b"x").unwrap();
        std::fs::write(d.path().join(UPPER_DISK), b"x").unwrap();
        let e = check(&r).unwrap_err().to_string();
        assert!(
            e.contains("persist volume") && e.contains("p.ext4") && e.contains("deleted by hand"),
            "{e}"
        );
        std::fs::write(d.path().join("p.ext4"), b"x").unwrap();
        check(&r).unwrap();
    }
}
