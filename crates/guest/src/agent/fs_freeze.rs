//! `FS_FREEZE`: freezing the guest's filesystems before a snapshot, so that
//! what was written just before it is on the disks the snapshot copies.
//!
//! FREEZE runs sync(2), then `FIFREEZE` on each mount point (opened
//! `O_RDONLY|O_DIRECTORY`, the descriptor kept for the thaw). With no paths it
//! takes every writable block-device filesystem in `/proc/self/mountinfo`
//! (major device number non-zero: tmpfs, proc, overlayfs and the other
//! virtual filesystems have none), one mount per filesystem, and skips those
//! that answer `EOPNOTSUPP`. The overlay root cannot be frozen itself
//! (overlayfs has no freeze in Linux 6.1); init keeps its upper ext4 visible
//! at `/run/hearth/upper`, which is what gets frozen. A VM whose root is the
//! initramfs has nothing to freeze unless `/persist` is mounted: the answer is
//! OK and the log says so. `SystemInfoResult.frozen` lists what is frozen.
//!
//! The agent thaws by itself after `timeout_ms`, so a host that dies between
//! FREEZE and THAW never leaves the guest frozen. While frozen the agent
//! writes no file of its own (its log is an in-memory ring, its console is
//! the serial port); host requests that write to a frozen filesystem
//! (WRITE_FILE, an exec that writes) block until the thaw.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use hearth_proto::message::error;
use hearth_proto::{pb, Message};

use super::writer::Writer;
use super::Shared;

/// `_IOWR('X', 119, int)`.
const FIFREEZE: libc::c_ulong = 0xC004_5877;
/// `_IOWR('X', 120, int)`.
const FITHAW: libc::c_ulong = 0xC004_5878;

/// One frozen filesystem: the mount point and the descriptor that froze it.
struct FrozenMount {
    path: String,
    dir: OwnedFd,
}

/// What the agent holds frozen.
#[derive(Default)]
pub struct Frozen {
    mounts: Vec<FrozenMount>,
    /// Bumped by every FREEZE, so an old auto-thaw timer does nothing.
    epoch: u64,
}

/// A step that failed: what the ERROR answer carries.
#[derive(Debug)]
pub struct StepError {
    pub code: pb::ErrorCode,
    pub message: String,
    pub errno: i32,
}

impl StepError {
    pub fn os(what: String, e: &std::io::Error) -> Self {
        let errno = e.raw_os_error().unwrap_or(0);
        let code = match errno {
            libc::EPERM | libc::EACCES => pb::ErrorCode::PermissionDenied,
            libc::ENOENT => pb::ErrorCode::NotFound,
            libc::ENOSPC => pb::ErrorCode::NoSpace,
            libc::EOPNOTSUPP => pb::ErrorCode::Unsupported,
            _ => pb::ErrorCode::Io,
        };
        Self {
            code,
            message: format!("{what}: {}", hearth_proto::os_error_text(e)),
            errno,
        }
    }

    pub fn into_message(self) -> Message {
        error(self.code, self.message, self.errno)
    }
}

impl Frozen {
    pub fn paths(&self) -> Vec<String> {
        self.mounts.iter().map(|m| m.path.clone()).collect()
    }

    /// FITHAW on everything frozen; a filesystem that is no longer frozen
    /// (EINVAL) is fine. Returns the thawed mount points.
    pub fn thaw_all(&mut self) -> Result<Vec<String>, StepError> {
        let mut thawed = Vec::new();
        let mut first_err = None;
        for m in self.mounts.drain(..) {
            match ioctl(&m.dir, FITHAW) {
                Ok(()) => thawed.push(m.path),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => thawed.push(m.path),
                Err(e) => {
                    tracing::warn!(path = %m.path, error = %e, "thaw failed");
                    first_err.get_or_insert(StepError::os(format!("thaw {}", m.path), &e));
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(thawed),
        }
    }
}

fn ioctl(dir: &OwnedFd, req: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: FIFREEZE and FITHAW take no argument the kernel reads; `dir` is
    // an open descriptor we own.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), req as _, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn open_dir(path: &str) -> std::io::Result<OwnedFd> {
    let c = CString::new(path).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a NUL-terminated path; open returns a new descriptor or -1.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Undoes `\NNN` octal escapes of mountinfo fields.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points of the writable block-device filesystems in mountinfo text,
/// one per filesystem (its first mount), in mount order.
pub fn freezable(mountinfo: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        if sep < 6 || f.len() < sep + 4 {
            continue;
        }
        let dev = f[2];
        let major_is_zero = dev.split(':').next() == Some("0");
        let super_rw = f[sep + 3].split(',').any(|o| o == "rw");
        if major_is_zero || !super_rw || seen.contains(&dev) {
            continue;
        }
        seen.push(dev);
        out.push(unescape(f[4]));
    }
    out
}

/// FREEZE (under the state lock). Returns the mount points frozen.
fn freeze(frozen: &mut Frozen, req: &pb::FsFreeze) -> Result<Vec<String>, StepError> {
    if !frozen.mounts.is_empty() {
        return Err(StepError {
            code: pb::ErrorCode::AlreadyExists,
            message: format!("already frozen: {} (THAW first)", frozen.paths().join(", ")),
            errno: 0,
        });
    }
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    let explicit = !req.paths.is_empty();
    let targets = if explicit {
        req.paths.clone()
    } else {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| StepError::os("read /proc/self/mountinfo".into(), &e))?;
        freezable(&text)
    };
    let mut skipped = Vec::new();
    for path in targets {
        let res = open_dir(&path)
            .map_err(|e| StepError::os(format!("open {path}"), &e))
            .and_then(|dir| match ioctl(&dir, FIFREEZE) {
                Ok(()) => Ok(Some(dir)),
                Err(e) if !explicit && e.raw_os_error() == Some(libc::EOPNOTSUPP) => Ok(None),
                Err(e) => {
                    let hint = match e.raw_os_error() {
                        Some(libc::EBUSY) => " (frozen by someone other than the agent?)",
                        Some(libc::EOPNOTSUPP) => " (this filesystem cannot be frozen)",
                        _ => "",
                    };
                    let mut err = StepError::os(format!("freeze {path}"), &e);
                    err.message.push_str(hint);
                    Err(err)
                }
            });
        match res {
            Ok(Some(dir)) => frozen.mounts.push(FrozenMount { path, dir }),
            Ok(None) => skipped.push(path),
            Err(e) => {
                // All or nothing: thaw what this request froze.
                let _ = frozen.thaw_all();
                return Err(e);
            }
        }
    }
    frozen.epoch += 1;
    let paths = frozen.paths();
    if paths.is_empty() {
        tracing::info!(?skipped, "fs freeze: nothing to freeze");
    } else {
        tracing::info!(frozen = ?paths, ?skipped, "fs freeze: frozen");
    }
    Ok(paths)
}

/// THAW (under the state lock): what the agent froze, plus `paths`.
fn thaw(frozen: &mut Frozen, req: &pb::FsFreeze) -> Result<Vec<String>, StepError> {
    let mut thawed = frozen.thaw_all()?;
    for path in &req.paths {
        if thawed.contains(path) {
            continue;
        }
        let dir = open_dir(path).map_err(|e| StepError::os(format!("open {path}"), &e))?;
        match ioctl(&dir, FITHAW) {
            Ok(()) => thawed.push(path.clone()),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(StepError::os(format!("thaw {path}"), &e)),
        }
    }
    tracing::info!(thawed = ?thawed, "fs freeze: thawed");
    Ok(thawed)
}

/// Serves one `FS_FREEZE` (validated) and arms the auto-thaw.
pub fn handle(req: pb::FsFreeze, seq: u32, writer: Writer, shared: Arc<Shared>) {
    tokio::spawn(async move {
        let timeout = hearth_proto::restore::freeze_timeout(&req);
        let s = shared.clone();
        let done = tokio::task::spawn_blocking(move || run(&req, &s)).await;
        let (answer, armed) = match done {
            Ok(v) => v,
            Err(e) => (
                error(
                    pb::ErrorCode::Internal,
                    format!("fs freeze task failed: {e}"),
                    0,
                ),
                None,
            ),
        };
        let _ = writer.send(seq, &answer).await;
        if let Some(epoch) = armed {
            auto_thaw(shared, epoch, timeout).await;
        }
    });
}

fn run(req: &pb::FsFreeze, shared: &Shared) -> (Message, Option<u64>) {
    let st = &shared.restore;
    let freezing = req.action == pb::FsFreezeAction::Freeze as i32;
    if !st.in_vm() {
        let what = if freezing { "FIFREEZE" } else { "FITHAW" };
        let msg = format!("not in a VM (the agent was not started by hearth init): {what} skipped");
        return (error(pb::ErrorCode::Unsupported, msg, 0), None);
    }
    let mut frozen = st.frozen();
    let result = if freezing {
        freeze(&mut frozen, req)
    } else {
        thaw(&mut frozen, req)
    };
    st.publish_frozen(frozen.paths());
    match result {
        Ok(paths) => {
            let armed = (freezing && !paths.is_empty()).then_some(frozen.epoch);
            (Message::Ok(pb::Ok {}), armed)
        }
        Err(e) => (e.into_message(), None),
    }
}

/// Thaws after `timeout` unless a THAW (or another FREEZE) came first.
async fn auto_thaw(shared: Arc<Shared>, epoch: u64, timeout: Duration) {
    tokio::time::sleep(timeout).await;
    let _ = tokio::task::spawn_blocking(move || {
        let st = &shared.restore;
        let mut frozen = st.frozen();
        if frozen.epoch != epoch || frozen.mounts.is_empty() {
            return;
        }
        let paths = frozen.paths();
        tracing::warn!(frozen = ?paths, after_ms = timeout.as_millis() as u64, "fs freeze: no THAW came; thawing on my own");
        if let Err(e) = frozen.thaw_all() {
            tracing::warn!(error = %e.message, "fs freeze: auto-thaw failed");
        }
        st.publish_frozen(frozen.paths());
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    const OVERLAY_VM: &str = "\
20 1 0:19 / / rw,relatime - overlay overlay rw,lowerdir=/mnt/lower,upperdir=/mnt/upper/upper
21 20 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,size=10240k
22 20 0:20 / /proc rw,nosuid,nodev,noexec - proc proc rw
23 20 0:21 / /run rw,nosuid,nodev - tmpfs tmpfs rw,mode=755
24 23 254:1 / /run/hearth/upper ro,noatime - ext4 /dev/vdb rw
25 20 254:2 / /persist rw,nosuid,nodev,noatime - ext4 /dev/vdc rw
26 20 254:2 /sub /mnt/again rw - ext4 /dev/vdc rw
27 20 254:0 / /mnt/lower ro - squashfs /dev/vda ro
28 20 254:3 / /mnt/my\\040disk rw shared:1 - ext4 /dev/vdd rw
";

    #[test]
    fn picks_each_writable_block_filesystem_once() {
        assert_eq!(
            freezable(OVERLAY_VM),
            ["/run/hearth/upper", "/persist", "/mnt/my disk"]
        );
    }

    #[test]
    fn a_tmpfs_only_root_has_nothing_to_freeze() {
        let initramfs = "\
1 0 0:2 / / rw - rootfs rootfs rw
2 1 0:21 / /tmp rw - tmpfs tmpfs rw
garbage line
3 1 0:22 / /proc rw - proc proc rw
";
        assert!(freezable(initramfs).is_empty());
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/a\\040b\\134c"), "/a b\\c");
        assert_eq!(unescape("/tail\\04"), "/tail\\04");
    }
}
