//! Snapshots of a running VM, and VMs started from them.
//!
//! A snapshot is QEMU's migration stream (device state and guest RAM)
//! written to a file through a descriptor handed over QMP (`getfd` +
//! `migrate fd:…`: QEMU runs under `-sandbox spawn=deny`, so `exec:` URIs
//! are impossible), plus copies of the VM's writable disks, taken while the
//! vCPUs are stopped so that disk and memory agree. Before stopping, the VM
//! link is suspended ([`LinkControl`]): both ends then stand at a frame
//! boundary with nothing in flight, which is what a restored guest wakes up
//! to; the restored VM's new proxy greets it with `HELLO`, and the guest
//! drops the old host's streams.
//!
//! A restore starts QEMU with the same devices and `-incoming defer`, feeds
//! it the stream with `migrate-incoming fd:…`, waits for the load and
//! resumes it ([`load`], called by [`super::QemuFactory::start`]).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::qmp::Qmp;
use super::{files, VmHandle};
pub use crate::backend::SnapshotStats;
use crate::error::VmmError;

/// How long QEMU may take to write or load a migration stream.
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a restoring QEMU may take to create its monitor socket.
const MONITOR_WAIT: Duration = Duration::from_secs(20);
/// Timeout of one monitor command during a snapshot or restore.
const QMP_TIMEOUT: Duration = Duration::from_secs(10);

/// A suspended VM link, held through the proxy's control socket; dropping
/// it (or [`LinkControl::resume`]) lets the link run again.
pub struct LinkControl {
    conn: BufReader<UnixStream>,
}

impl LinkControl {
    /// Suspends the link of the VM in `dir` and waits until it is still.
    pub async fn suspend(dir: &Path) -> Result<Self, String> {
        let path = dir.join(files::LINK_CTL);
        let s = UnixStream::connect(&path)
            .await
            .map_err(|e| format!("cannot reach the link proxy at {}: {e}", path.display()))?;
        let mut c = Self {
            conn: BufReader::new(s),
        };
        match c.ask("SUSPEND").await?.as_str() {
            "SUSPENDED" => Ok(c),
            other => Err(format!("the link proxy answered SUSPEND with {other:?}")),
        }
    }

    async fn ask(&mut self, cmd: &str) -> Result<String, String> {
        let io = |e: std::io::Error| format!("talking to the link proxy: {e}");
        self.conn
            .get_mut()
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(io)?;
        let mut line = String::new();
        let n = tokio::time::timeout(QMP_TIMEOUT, self.conn.read_line(&mut line))
            .await
            .map_err(|_| format!("the link proxy did not answer {cmd}"))?
            .map_err(io)?;
        if n == 0 {
            return Err(format!(
                "the link proxy closed the control socket after {cmd}"
            ));
        }
        Ok(line.trim_end().to_string())
    }

    /// Lets the link run again.
    pub async fn resume(mut self) -> Result<(), String> {
        match self.ask("RESUME").await?.as_str() {
            "RESUMED" => Ok(()),
            other => Err(format!("the link proxy answered RESUME with {other:?}")),
        }
    }
}

impl VmHandle {
    /// Writes a snapshot of this running VM: the migration stream to `state`
    /// (created, must not exist) and each `(disk, copy)` pair copied, all
    /// while its vCPUs are stopped. With `resume` the VM runs on afterwards
    /// (its link streams intact); without, it stays stopped for the caller
    /// to end. On failure the VM is resumed and `state` removed; the copies
    /// are the caller's to remove.
    pub async fn snapshot(
        &self,
        state: &Path,
        disks: &[(PathBuf, PathBuf)],
        resume: bool,
    ) -> Result<SnapshotStats, VmmError> {
        let fail = |reason: String| VmmError::SnapshotFailed {
            id: self.id.clone(),
            reason,
        };
        let link = LinkControl::suspend(&self.dir).await.map_err(fail)?;
        let mut qmp = self.qmp().await?;
        qmp.set_timeout(QMP_TIMEOUT);
        let t0 = Instant::now();
        let r = async {
            qmp.stop().await.map_err(|e| e.to_string())?;
            let file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(state)
                .map_err(|e| format!("cannot create {}: {e}", state.display()))?;
            qmp.getfd("snapshot", file.as_fd())
                .await
                .map_err(|e| e.to_string())?;
            qmp.migrate("fd:snapshot")
                .await
                .map_err(|e| e.to_string())?;
            qmp.wait_migration(MIGRATION_TIMEOUT)
                .await
                .map_err(|e| format!("writing {}: {e}", state.display()))?;
            file.sync_all()
                .map_err(|e| format!("cannot sync {}: {e}", state.display()))?;
            let mut disk_bytes = 0;
            for (from, to) in disks {
                disk_bytes += copy_sparse(from, to).map_err(|e| {
                    format!("cannot copy {} to {}: {e}", from.display(), to.display())
                })?;
            }
            let state_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
            Ok::<_, String>((state_bytes, disk_bytes))
        }
        .await;
        if r.is_err() {
            let _ = std::fs::remove_file(state);
        }
        let paused_ms = t0.elapsed().as_millis() as u64;
        if resume || r.is_err() {
            let cont = qmp.cont().await.map_err(|e| e.to_string());
            let back = link.resume().await;
            if let Err(e) = cont.and(back) {
                tracing::warn!(id = %self.id, error = %e, "resuming after the snapshot failed");
            }
        } else {
            // Stopped for good: the caller ends the VM; the link stays still.
            std::mem::forget(link);
        }
        let (state_bytes, disk_bytes) = r.map_err(fail)?;
        Ok(SnapshotStats {
            paused_ms,
            state_bytes,
            disk_bytes,
        })
    }
}

/// Loads the migration stream `stream` into the QEMU (started with
/// `-incoming defer`) whose monitor is `qmp_sock`, and lets it run.
pub(crate) async fn load(
    qmp_sock: &Path,
    stream: &Path,
    qemu: &mut std::process::Child,
) -> Result<(), String> {
    let deadline = Instant::now() + MONITOR_WAIT;
    while !qmp_sock.exists() {
        if matches!(qemu.try_wait(), Ok(Some(_))) {
            return Err("qemu exited before its monitor was up".into());
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "qemu made no monitor socket within {} s",
                MONITOR_WAIT.as_secs()
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut qmp = Qmp::connect(qmp_sock, QMP_TIMEOUT)
        .await
        .map_err(|e| format!("cannot reach qemu's monitor: {e}"))?;
    let file = std::fs::File::open(stream)
        .map_err(|e| format!("cannot open the snapshot {}: {e}", stream.display()))?;
    qmp.getfd("snapshot", file.as_fd())
        .await
        .map_err(|e| e.to_string())?;
    drop(file);
    qmp.migrate_incoming("fd:snapshot")
        .await
        .map_err(|e| e.to_string())?;
    qmp.wait_migration(MIGRATION_TIMEOUT)
        .await
        .map_err(|e| format!("loading {}: {e}", stream.display()))?;
    qmp.cont().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Copies `from` to the new file `to`, only the data (holes stay holes);
/// returns the bytes copied.
pub fn copy_sparse(from: &Path, to: &Path) -> std::io::Result<u64> {
    use std::os::fd::AsRawFd;
    let src = std::fs::File::open(from)?;
    let len = src.metadata()?.len();
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    dst.set_len(len)?;
    let (s, d) = (src.as_raw_fd(), dst.as_raw_fd());
    let mut copied = 0u64;
    let mut pos: i64 = 0;
    while (pos as u64) < len {
        // SAFETY: lseek on an fd we own.
        let data = unsafe { libc::lseek(s, pos, libc::SEEK_DATA) };
        if data < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                break; // only a hole is left
            }
            return Err(e);
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(s, data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut off_in = data;
        let mut off_out = data;
        let mut left = (hole - data) as usize;
        while left > 0 {
            // SAFETY: copy_file_range between two fds we own, with offsets
            // we own; the kernel checks the ranges.
            let n = unsafe { libc::copy_file_range(s, &mut off_in, d, &mut off_out, left, 0) };
            if n < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if n == 0 {
                break;
            }
            left -= n as usize;
            copied += n as u64;
        }
        pos = hole;
    }
    dst.sync_all()?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Seek, SeekFrom, Write};

    #[test]
    fn a_sparse_copy_keeps_data_and_holes() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        let mut f = std::fs::File::create(&a).unwrap();
        f.set_len(64 << 20).unwrap();
        f.seek(SeekFrom::Start(1 << 20)).unwrap();
        f.write_all(&[7u8; 8192]).unwrap();
        f.seek(SeekFrom::Start(40 << 20)).unwrap();
        f.write_all(b"tail").unwrap();
        drop(f);
        let n = copy_sparse(&a, &b).unwrap();
        assert!(n < 1 << 20, "copied {n} bytes of a mostly empty file");
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        use std::os::unix::fs::MetadataExt;
        assert!(
            std::fs::metadata(&b).unwrap().blocks() < 2048,
            "holes were filled"
        );
        assert!(
            copy_sparse(&a, &b).is_err(),
            "an existing target is refused"
        );
    }
}
