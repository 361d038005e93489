//! Copying files and whole directory trees between the host and a guest,
//! keeping mode bits; like `cp`, copying onto an existing directory puts the
//! source inside it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use hearth_client::pb;

use crate::agent::Agent;
use crate::error::{Error, Result};

fn check_abs(path: &str) -> Result<()> {
    if !path.starts_with('/') {
        return Err(Error::InvalidSpec(format!(
            "guest path {path:?} must be absolute"
        )));
    }
    Ok(())
}

/// Last component of a path, refusing `..`, `.` and empty names.
pub fn base_name(path: &str) -> Result<String> {
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." {
        return Err(Error::InvalidSpec(format!(
            "cannot tell a file name from {path:?}"
        )));
    }
    Ok(name.to_string())
}

fn remote_join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

fn mode_of(m: &std::fs::Metadata) -> u32 {
    m.permissions().mode() & 0o7777
}

/// Something a copy skipped (not a regular file or directory).
pub type Skipped = Vec<String>;

impl Agent {
    /// Copies a host file or directory to `remote`; returns bytes copied and
    /// the paths it skipped.
    pub async fn copy_in(&self, local: &Path, remote: &str) -> Result<(u64, Skipped)> {
        check_abs(remote)?;
        let meta = tokio::fs::metadata(local)
            .await
            .map_err(|e| Error::io("cannot read", local, e))?;
        let mut dest = remote.to_string();
        if let Ok(info) = self.stat(remote).await {
            if info.kind == pb::FileKind::Dir as i32 {
                dest = remote_join(remote, &base_name(&local.to_string_lossy())?);
            }
        }
        let mut skipped = Vec::new();
        let n = if meta.is_dir() {
            self.upload_dir(local, &dest, &mut skipped).await?
        } else {
            self.upload_file(local, &dest, mode_of(&meta)).await?
        };
        Ok((n, skipped))
    }

    /// Copies a guest file or directory to `local`; returns bytes copied and
    /// the paths it skipped.
    pub async fn copy_out(&self, remote: &str, local: &Path) -> Result<(u64, Skipped)> {
        check_abs(remote)?;
        let info = self.stat(remote).await?;
        let mut dest = local.to_path_buf();
        if tokio::fs::metadata(local)
            .await
            .map(|m| m.is_dir())
            .unwrap_or(false)
        {
            dest = local.join(base_name(remote)?);
        }
        let mut skipped = Vec::new();
        let n = if info.kind == pb::FileKind::Dir as i32 {
            self.download_dir(remote, &dest, info.mode, &mut skipped)
                .await?
        } else {
            self.download_file(remote, &dest, info.mode).await?
        };
        Ok((n, skipped))
    }

    async fn upload_file(&self, src: &Path, dest: &str, mode: u32) -> Result<u64> {
        let mut f = tokio::fs::File::open(src)
            .await
            .map_err(|e| Error::io("cannot open", src, e))?;
        self.write_file(dest, &mut f, mode).await
    }

    async fn upload_dir(&self, src: &Path, dest: &str, skipped: &mut Skipped) -> Result<u64> {
        let mut total = 0;
        let mut stack = vec![(src.to_path_buf(), dest.to_string())];
        while let Some((ldir, rdir)) = stack.pop() {
            let meta = tokio::fs::metadata(&ldir)
                .await
                .map_err(|e| Error::io("cannot read", &ldir, e))?;
            self.mkdir(&rdir, mode_of(&meta), true).await?;
            let mut rd = tokio::fs::read_dir(&ldir)
                .await
                .map_err(|e| Error::io("cannot list", &ldir, e))?;
            while let Some(ent) = rd
                .next_entry()
                .await
                .map_err(|e| Error::io("cannot list", &ldir, e))?
            {
                let name = ent.file_name().to_string_lossy().into_owned();
                let lpath = ent.path();
                let rpath = remote_join(&rdir, &name);
                let meta = tokio::fs::symlink_metadata(&lpath)
                    .await
                    .map_err(|e| Error::io("cannot read", &lpath, e))?;
                if meta.is_dir() {
                    stack.push((lpath, rpath));
                } else if meta.is_file() {
                    total += self.upload_file(&lpath, &rpath, mode_of(&meta)).await?;
                } else {
                    skipped.push(lpath.display().to_string());
                }
            }
        }
        Ok(total)
    }

    async fn download_file(&self, src: &str, dest: &Path, mode: u32) -> Result<u64> {
        let mut f = tokio::fs::File::create(dest)
            .await
            .map_err(|e| Error::io("cannot create", dest, e))?;
        let n = self.read_file_to(src, &mut f).await?;
        f.sync_all()
            .await
            .map_err(|e| Error::io("cannot write", dest, e))?;
        tokio::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode & 0o7777))
            .await
            .map_err(|e| Error::io("cannot set the mode of", dest, e))?;
        Ok(n)
    }

    async fn download_dir(
        &self,
        src: &str,
        dest: &Path,
        mode: u32,
        skipped: &mut Skipped,
    ) -> Result<u64> {
        let mut total = 0;
        let mut stack: Vec<(String, PathBuf, u32)> =
            vec![(src.to_string(), dest.to_path_buf(), mode)];
        // Directory modes are applied last so a read-only directory can be filled.
        let mut dir_modes = Vec::new();
        while let Some((rdir, ldir, mode)) = stack.pop() {
            match tokio::fs::create_dir(&ldir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("cannot create", &ldir, e)),
            }
            dir_modes.push((ldir.clone(), mode));
            for ent in self.list_dir(&rdir).await? {
                let name = base_name(&ent.name)?;
                let rpath = remote_join(&rdir, &name);
                let lpath = ldir.join(&name);
                if ent.kind == pb::FileKind::Dir as i32 {
                    stack.push((rpath, lpath, ent.mode));
                } else if ent.kind == pb::FileKind::File as i32 {
                    total += self.download_file(&rpath, &lpath, ent.mode).await?;
                } else {
                    skipped.push(format!(":{rpath}"));
                }
            }
        }
        for (d, m) in dir_modes.into_iter().rev() {
            tokio::fs::set_permissions(&d, std::fs::Permissions::from_mode(m & 0o7777))
                .await
                .map_err(|e| Error::io("cannot set the mode of", &d, e))?;
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_names() {
        assert_eq!(base_name("/a/b/").unwrap(), "b");
        assert_eq!(base_name("b").unwrap(), "b");
        assert!(base_name("/").is_err());
        assert!(base_name("/a/..").is_err());
    }
}
