//! `FILE_WRITE` (chunked) and `WRITE_FILE` (one frame): both write a temporary
//! file `.<name>.hearth-tmp-<random>` in the target directory, fsync it,
//! rename it over the target and fsync the directory. On any failure the
//! temporary file is removed. Chunks come through an [`Input`] queue; with
//! input credit each written chunk's credit goes back in a `WINDOW_UPDATE`.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use hearth_proto::message::error;
use hearth_proto::{pb, Message};

use super::files::io_error;
use super::input::{Consumer, Input, Next};
use super::routes::Routes;
use super::writer::Writer;

/// Why a write failed; turned into an `ERROR` frame.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        source: io::Error,
    },
    #[error("write {path}: expected {expected} bytes, got {got}")]
    SizeMismatch {
        path: String,
        expected: u64,
        got: u64,
    },
    #[error("write {path}: the connection closed before the last chunk")]
    Incomplete { path: String },
}

impl WriteError {
    fn to_message(&self) -> Message {
        match self {
            WriteError::Io { op, path, source } => io_error(op, path, source),
            WriteError::SizeMismatch { .. } | WriteError::Incomplete { .. } => {
                error(pb::ErrorCode::InvalidArgument, self.to_string(), 0)
            }
        }
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        op,
        path: path.display().to_string(),
        source,
    }
}

/// A temporary file that becomes `target` on [`TempFile::commit`] and is
/// removed if dropped before.
pub struct TempFile {
    file: Option<File>,
    tmp: PathBuf,
    target: PathBuf,
    dir: PathBuf,
    written: u64,
    expected: u64,
}

fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mix = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("{:016x}", mix.wrapping_mul(0xBF58_476D_1CE4_E5B9))
}

impl TempFile {
    pub fn create(
        path: &str,
        mode: u32,
        create_parents: bool,
        expected: u64,
    ) -> Result<Self, WriteError> {
        let target = PathBuf::from(path);
        let (dir, name) = match (target.parent(), target.file_name()) {
            (Some(d), Some(n)) => (d.to_path_buf(), n.to_string_lossy().into_owned()),
            _ => {
                return Err(WriteError::Io {
                    op: "write",
                    path: path.to_string(),
                    source: io::Error::from_raw_os_error(libc::EISDIR),
                })
            }
        };
        if create_parents {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&dir)
                .map_err(io_err("create parents of", &target))?;
        }
        let mode = if mode == 0 { 0o644 } else { mode & 0o7777 };
        let mut last = None;
        for _ in 0..8 {
            let tmp = dir.join(format!(".{name}.hearth-tmp-{}", random_suffix()));
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .custom_flags(libc::O_CLOEXEC)
                .open(&tmp)
            {
                Ok(file) => {
                    let t = TempFile {
                        file: Some(file),
                        tmp,
                        target,
                        dir,
                        written: 0,
                        expected,
                    };
                    // The umask may have narrowed the mode; set it exactly.
                    if let Some(f) = &t.file {
                        f.set_permissions(std::fs::Permissions::from_mode(mode))
                            .map_err(io_err("chmod", &t.target))?;
                    }
                    return Ok(t);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(io_err("write", &target)(e)),
            }
        }
        let e = last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EEXIST));
        Err(io_err("write", &target)(e))
    }

    /// Gives the temporary file to `owner` (before the rename, so the
    /// target never shows with root's ownership).
    pub fn set_owner(&self, owner: Option<&pb::FileOwner>) -> Result<(), WriteError> {
        if let (Some(o), Some(f)) = (owner, &self.file) {
            std::os::unix::fs::fchown(f, Some(o.uid), Some(o.gid))
                .map_err(io_err("chown", &self.target))?;
        }
        Ok(())
    }

    pub fn write(&mut self, data: &[u8]) -> Result<(), WriteError> {
        if let Some(f) = self.file.as_mut() {
            f.write_all(data).map_err(|e| WriteError::Io {
                op: "write",
                path: self.target.display().to_string(),
                source: e,
            })?;
        }
        self.written += data.len() as u64;
        Ok(())
    }

    /// fsync, rename over the target, fsync the directory.
    pub fn commit(mut self) -> Result<u64, WriteError> {
        if self.expected != 0 && self.expected != self.written {
            return Err(WriteError::SizeMismatch {
                path: self.target.display().to_string(),
                expected: self.expected,
                got: self.written,
            });
        }
        let target = self.target.clone();
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(io_err("fsync", &target))?;
        }
        std::fs::rename(&self.tmp, &target).map_err(io_err("rename into", &target))?;
        // Renamed: nothing to clean up any more.
        self.tmp = PathBuf::new();
        if let Ok(d) = File::open(&self.dir) {
            d.sync_all()
                .map_err(io_err("fsync the directory of", &target))?;
        }
        Ok(self.written)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file.take();
        if !self.tmp.as_os_str().is_empty() {
            if let Err(e) = std::fs::remove_file(&self.tmp) {
                tracing::warn!(path = %self.tmp.display(), error = %e, "removing a temporary file failed");
            }
        }
    }
}

fn answer(r: Result<u64, WriteError>) -> Message {
    match r {
        Ok(bytes_written) => Message::WriteFileResult(pb::WriteFileResult { bytes_written }),
        Err(e) => {
            tracing::debug!(error = %e, "file write failed");
            e.to_message()
        }
    }
}

/// `WRITE_FILE`: the whole file in one frame.
pub async fn run_whole(req: pb::WriteFile, seq: u32, writer: Writer) {
    let r = tokio::task::spawn_blocking(move || {
        let mut t = TempFile::create(&req.path, req.mode, req.create_parents, 0)?;
        t.set_owner(req.owner.as_ref())?;
        t.write(&req.data)?;
        t.commit()
    })
    .await;
    let msg = match r {
        Ok(r) => answer(r),
        Err(e) => task_failed(e),
    };
    let _ = writer.send(seq, &msg).await;
}

/// `FILE_WRITE`: chunks arrive through `input` until one has `eof`.
pub async fn run_chunked(
    req: pb::FileWrite,
    seq: u32,
    input: Arc<Input>,
    writer: Writer,
    routes: Routes,
) {
    let input = Consumer::new(input);
    let msg = write_chunks(req, seq, &input, &writer).await;
    // Later FILE_DATA for this seq is dropped from here on.
    drop(input);
    routes.remove(seq);
    let _ = writer.send(seq, &msg).await;
}

async fn write_chunks(req: pb::FileWrite, seq: u32, input: &Consumer, writer: &Writer) -> Message {
    let path = req.path.clone();
    let created = tokio::task::spawn_blocking(move || {
        let t = TempFile::create(&req.path, req.mode, req.create_parents, req.size)?;
        t.set_owner(req.owner.as_ref())?;
        Ok(t)
    })
    .await;
    let mut file = match created {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return answer(Err(e)),
        Err(e) => return task_failed(e),
    };
    loop {
        let data = match input.next().await {
            Next::Data(d) => d,
            Next::Eof => {
                return match tokio::task::spawn_blocking(move || file.commit()).await {
                    Ok(r) => answer(r),
                    Err(e) => task_failed(e),
                }
            }
            Next::HungUp => {
                drop_blocking(file).await;
                return answer(Err(WriteError::Incomplete { path }));
            }
            Next::Aborted(reason) => {
                drop_blocking(file).await;
                tracing::debug!(seq, path = %path, "chunked write aborted");
                return *reason;
            }
        };
        let n = data.len();
        let wrote = tokio::task::spawn_blocking(move || {
            let r = file.write(&data);
            (file, r)
        })
        .await;
        match wrote {
            Ok((f, Ok(()))) => file = f,
            Ok((f, Err(e))) => {
                drop_blocking(f).await;
                return answer(Err(e));
            }
            Err(e) => return task_failed(e),
        }
        if let Some(bytes) = input.consumed(n) {
            let m = Message::WindowUpdate(pb::WindowUpdate { bytes });
            // `send` keeps order with the terminal answer, also `send`.
            let _ = writer.send(seq, &m).await;
        }
    }
}

/// Drops a temporary file (removing it) off the async threads.
async fn drop_blocking(file: TempFile) {
    let _ = tokio::task::spawn_blocking(move || drop(file)).await;
}

fn task_failed(e: tokio::task::JoinError) -> Message {
    error(
        pb::ErrorCode::Internal,
        format!("write task failed: {e}"),
        0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("hearth-fw-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("creating a test dir");
        d
    }

    fn leftovers(d: &Path) -> Vec<String> {
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".hearth-tmp-"))
            .collect()
    }

    #[test]
    fn commit_replaces_target_with_exact_mode() {
        let d = tmpdir("commit");
        let p = d.join("sub/f.txt");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "old").unwrap();
        let mut t = TempFile::create(p.to_str().unwrap(), 0o640, false, 0).unwrap();
        t.write(b"new ").unwrap();
        t.write(b"data").unwrap();
        assert_eq!(t.commit().unwrap(), 8);
        assert_eq!(std::fs::read(&p).unwrap(), b"new data");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        assert!(leftovers(p.parent().unwrap()).is_empty());
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn dropped_or_failed_write_leaves_no_temp_and_old_content() {
        let d = tmpdir("fail");
        let p = d.join("f");
        std::fs::write(&p, "old").unwrap();
        let mut t = TempFile::create(p.to_str().unwrap(), 0, false, 0).unwrap();
        t.write(b"partial").unwrap();
        assert_eq!(leftovers(&d).len(), 1);
        drop(t);
        assert!(leftovers(&d).is_empty());
        let mut t = TempFile::create(p.to_str().unwrap(), 0, false, 100).unwrap();
        t.write(b"short").unwrap();
        assert!(matches!(
            t.commit(),
            Err(WriteError::SizeMismatch {
                expected: 100,
                got: 5,
                ..
            })
        ));
        assert!(leftovers(&d).is_empty());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn missing_parent_fails_unless_asked_to_create_it() {
        let d = tmpdir("parents");
        let p = d.join("a/b/f");
        let err = TempFile::create(p.to_str().unwrap(), 0, false, 0)
            .err()
            .expect("no parent dir");
        let Message::Error(e) = err.to_message() else {
            panic!("expected an error message")
        };
        assert_eq!(e.code, pb::ErrorCode::NotFound as i32);
        assert!(e.message.contains("a/b/f"), "{}", e.message);
        let t = TempFile::create(p.to_str().unwrap(), 0, true, 0).unwrap();
        assert_eq!(t.commit().unwrap(), 0);
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o644
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
