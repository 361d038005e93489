//! The Unix socket the agent listens on (`--unix-socket PATH`), made to
//! appear only once it listens.
//!
//! `bind(2)` creates the socket file before `listen(2)`; a client that
//! connects in between gets ECONNREFUSED. So the agent binds and listens on a
//! temporary name in the same directory, then renames it over `PATH` (which
//! also replaces a stale socket atomically). A client that sees the file can
//! connect.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Longest path `sockaddr_un` takes (108 bytes with the NUL).
const SUN_PATH_MAX: usize = 107;

/// Why the socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    #[error("{path} has no file name")]
    NoFileName { path: PathBuf },
    #[error("binding unix socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("renaming {tmp} to {path}")]
    Rename {
        tmp: PathBuf,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A listening socket at its final path.
pub struct Bound {
    pub listener: tokio::net::UnixListener,
    path: PathBuf,
    /// (device, inode) of our socket file, to remove only our own at exit.
    id: Option<(u64, u64)>,
}

impl Bound {
    /// Removes the socket file if it is still ours (not replaced by another
    /// agent since).
    pub fn remove(&self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if ours.is_some() && ours == self.id {
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::debug!(path = %self.path.display(), error = %e, "removing the socket failed");
            }
        }
    }
}

/// Binds and listens on a temporary name next to `path`, then renames it
/// into place. Call from within a tokio runtime.
pub fn bind(path: &Path) -> Result<Bound, ListenError> {
    let name = path.file_name().ok_or_else(|| ListenError::NoFileName {
        path: path.to_path_buf(),
    })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp_name = format!(
        ".{}.{}.hearth-tmp",
        name.to_string_lossy(),
        std::process::id()
    );
    let tmp = dir.join(&tmp_name);
    // A leftover of an agent with our pid (a reused pid) is never live.
    let _ = std::fs::remove_file(&tmp);
    let bind_err = |source| ListenError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let std_listener = bind_at(&dir, &tmp, &tmp_name).map_err(bind_err)?;
    let id = std::fs::symlink_metadata(&tmp)
        .ok()
        .map(|m| (m.dev(), m.ino()));
    if let Err(source) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(ListenError::Rename {
            tmp,
            path: path.to_path_buf(),
            source,
        });
    }
    let listener = std_listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::UnixListener::from_std(std_listener))
        .map_err(|source| ListenError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(Bound {
        listener,
        path: path.to_path_buf(),
        id,
    })
}

/// Binds `tmp` (= `dir/tmp_name`); through `/proc/self/fd` when `tmp` is too
/// long for a socket address but the target path is not.
fn bind_at(dir: &Path, tmp: &Path, tmp_name: &str) -> io::Result<std::os::unix::net::UnixListener> {
    if tmp.as_os_str().len() <= SUN_PATH_MAX {
        return std::os::unix::net::UnixListener::bind(tmp);
    }
    let d = std::fs::File::open(dir)?;
    let short = format!("/proc/self/fd/{}/{tmp_name}", d.as_raw_fd());
    std::os::unix::net::UnixListener::bind(short)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn replaces_a_stale_socket_and_removes_only_its_own() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.sock");
        // A stale socket: bound, never listening, its process gone.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("stale bind"));
        let b = bind(&path).expect("bind over a stale socket");
        tokio::net::UnixStream::connect(&path)
            .await
            .expect("the socket listens as soon as it exists");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["a.sock"], "no temporary name is left behind");
        b.remove();
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn long_directories_bind_through_proc() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut deep = dir.path().to_path_buf();
        while deep.as_os_str().len() < 96 {
            deep.push("dddddddd");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let path = deep.join("s");
        assert!(path.as_os_str().len() <= SUN_PATH_MAX, "{}", path.display());
        let _b = bind(&path).expect("bind with a long temporary name");
        tokio::net::UnixStream::connect(&path)
            .await
            .expect("connect");
    }
}
