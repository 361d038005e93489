//! Files owned by a guest user: the agent does file operations as root, so a
//! front end that acts for a user (the E2B gateway writes and makes
//! directories for `user`) makes the missing parents itself and hands what
//! it made to that user afterwards (one `chown` exec).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::exec::{ExecSpec, Outcome};
use crate::sandbox::Sandbox;

/// The most paths one `chown` exec is given.
const CHOWN_BATCH: usize = 256;

/// The directories above `path` (absolute, normalised), nearest the root
/// first: `/a/b/c` → `["/a", "/a/b"]`.
pub fn parents_of(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    for p in parts.iter().take(parts.len().saturating_sub(1)) {
        cur.push('/');
        cur.push_str(p);
        out.push(cur.clone());
    }
    out
}

impl Sandbox {
    /// Whether the agent sets a written file's owner itself
    /// (CAPABILITY_FILE_OWNER); without it, use [`Sandbox::chown`].
    pub async fn sets_file_owner(&self) -> Result<bool> {
        let caps = self.agent().await?.ready().capabilities;
        Ok(hearth_proto::has_capability(
            caps,
            crate::pb::Capability::FileOwner,
        ))
    }

    /// [`Sandbox::write_file`], the file owned by `uid`:`gid` from the start
    /// (the agent gives its temporary file to them before the rename).
    pub async fn write_file_as<R: tokio::io::AsyncRead + Unpin>(
        &self,
        path: &str,
        r: &mut R,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<u64> {
        let owner = Some(crate::pb::FileOwner { uid, gid });
        let agent = self.agent().await?;
        match agent
            .client()
            .write_file_owned(path, r, mode, false, owner)
            .await
        {
            Ok(n) => Ok(n),
            Err(e) => {
                let e = Error::agent(format!("{}: cannot write :{path}", agent.label()), e);
                Err(self.explain(e).await)
            }
        }
    }

    /// Makes every missing directory above `path` (mode 0755); returns the
    /// ones it made, nearest the root first (for [`Sandbox::chown`]).
    pub async fn make_parents(&self, path: &str) -> Result<Vec<String>> {
        let parents = parents_of(path);
        // Walk up to the nearest one that exists.
        let mut missing = Vec::new();
        for dir in parents.iter().rev() {
            match self.stat(dir).await {
                Ok(info) if info.kind == crate::pb::FileKind::Dir as i32 => break,
                Ok(_) => {
                    return Err(Error::InvalidSpec(format!(
                        "cannot make {path}: {dir} is not a directory"
                    )))
                }
                Err(e) if e.remote_code() == Some(crate::pb::ErrorCode::NotFound) => {
                    missing.push(dir.clone())
                }
                Err(e) => return Err(e),
            }
        }
        missing.reverse();
        if let Some(deepest) = missing.last() {
            self.mkdir(deepest, 0o755, true).await?;
        }
        Ok(missing)
    }

    /// Hands `paths` (not following symlinks) to guest user `user` and its
    /// primary group, with `chown` in the guest.
    pub async fn chown(&self, paths: &[String], user: &str) -> Result<()> {
        if user.is_empty() || user.starts_with('-') || user.contains([':', '\0']) {
            return Err(Error::InvalidSpec(format!("invalid user name {user:?}")));
        }
        for batch in paths.chunks(CHOWN_BATCH) {
            let mut argv = vec![
                "chown".to_string(),
                "-h".into(),
                format!("{user}:"),
                "--".into(),
            ];
            argv.extend(batch.iter().cloned());
            let spec = ExecSpec {
                argv,
                user: Some("root".into()),
                timeout: Some(Duration::from_secs(60)),
                ..Default::default()
            };
            let out = self.exec(&spec).await?;
            if out.exit.outcome != Outcome::Exited(0) {
                return Err(Error::Internal(format!(
                    "chown {user} {}: {:?}: {}",
                    batch.join(" "),
                    out.exit.outcome,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_nearest_root_first() {
        assert_eq!(parents_of("/a/b/c"), vec!["/a", "/a/b"]);
        assert_eq!(parents_of("/a"), Vec::<String>::new());
        assert_eq!(
            parents_of("/home/user/x/y.txt"),
            vec!["/home", "/home/user", "/home/user/x"]
        );
    }
}
