//! `GUEST_RESTORED`: the host restored or forked this VM from a snapshot.
//!
//! In order: record the generation and shut down every other connection
//! (they belonged to the old host; their sessions end and are remembered as
//! lost, see [`super::generation`]); set `CLOCK_REALTIME`; mix the host's
//! bytes into the kernel pool (`RNDADDENTROPY`, all bits credited) and force
//! a CRNG reseed (`RNDRESEEDCRNG`; `ENOTTY`/`EINVAL` from an old kernel is
//! logged, not fatal), so clones' `/dev/urandom` diverge at once; thaw what
//! `FS_FREEZE` froze (the snapshot was taken frozen); set the hostname
//! (sethostname(2), `/etc/hostname`, the `127.0.1.1` line of `/etc/hosts`
//! when there is one) and write `/etc/machine-id`, each file replaced
//! atomically (temporary name, fsync, rename). A failed step does not stop
//! the ones after it (except that the files wait for a successful thaw); the
//! ERROR names every failed step and carries the first one's errno.
//!
//! Outside a VM (an agent not started by hearth init, as in the agent-tier
//! tests) the clock, the entropy ioctls and sethostname(2) are skipped, the
//! files are written under `--etc-dir` only, and the answer is an
//! `UNSUPPORTED` ERROR that names what was skipped and what was done.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use hearth_proto::message::error;
use hearth_proto::{pb, Message};

use super::fs_freeze::StepError;
use super::procs::Target;
use super::routes::Routes;
use super::writer::Writer;
use super::Shared;

/// `_IOW('R', 0x03, int[2])`.
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `_IO('R', 0x07)`.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// Serves one `GUEST_RESTORED` (validated) that came on connection `conn`.
pub fn handle(req: pb::GuestRestored, seq: u32, writer: Writer, shared: Arc<Shared>, conn: u64) {
    tokio::spawn(async move {
        let answer = tokio::task::spawn_blocking(move || run(&req, &shared, conn))
            .await
            .unwrap_or_else(|e| {
                error(
                    pb::ErrorCode::Internal,
                    format!("restore task failed: {e}"),
                    0,
                )
            });
        let _ = writer.send(seq, &answer).await;
    });
}

fn run(req: &pb::GuestRestored, shared: &Shared, conn: u64) -> Message {
    let st = &shared.restore;
    let mut frozen = st.frozen();
    let previous = st.generation();
    st.set_generation(req.generation);
    let ended = st.end_other_connections(conn);
    let mut done = vec![format!("generation {previous} -> {}", req.generation)];
    if ended > 0 {
        done.push(format!("ended {ended} connection(s) of the old host"));
    }
    let mut skipped: Vec<&str> = Vec::new();
    let mut failed: Vec<StepError> = Vec::new();
    let mut thawed_ok = true;
    if st.in_vm() {
        match set_realtime(req.realtime_ns) {
            Ok(()) => done.push("clock set".into()),
            Err(e) => failed.push(StepError::os(
                "set CLOCK_REALTIME (clock_settime)".into(),
                &e,
            )),
        }
        match add_entropy(&req.entropy) {
            Ok(reseeded) => {
                done.push(format!("{} entropy bytes credited", req.entropy.len()));
                if reseeded {
                    done.push("CRNG reseeded".into());
                }
            }
            Err(e) => failed.push(e),
        }
        match frozen.thaw_all() {
            Ok(t) if !t.is_empty() => done.push(format!("thawed {}", t.join(", "))),
            Ok(_) => {}
            Err(e) => {
                thawed_ok = false;
                failed.push(e);
            }
        }
        st.publish_frozen(frozen.paths());
    } else {
        skipped.extend(["setting CLOCK_REALTIME", "RNDADDENTROPY and RNDRESEEDCRNG"]);
    }
    if let Some(h) = &req.hostname {
        if st.in_vm() {
            match nix::unistd::sethostname(h) {
                Ok(()) => done.push(format!("hostname {h}")),
                Err(e) => failed.push(StepError::os(
                    format!("sethostname {h:?}"),
                    &std::io::Error::from(e),
                )),
            }
        } else {
            skipped.push("sethostname");
        }
    }
    let files = st.etc_dir().filter(|_| thawed_ok);
    match (files, &req.hostname, &req.machine_id) {
        (_, None, None) => {}
        (None, _, _) if !thawed_ok => {
            skipped.push("the /etc files (a filesystem may still be frozen)")
        }
        (None, _, _) => skipped.push("the /etc files (no --etc-dir outside a VM)"),
        (Some(etc), host, id) => {
            if let Some(h) = host {
                match write_hostname_files(etc, h) {
                    Ok(mut w) => done.append(&mut w),
                    Err(e) => failed.push(e),
                }
            }
            if let Some(id) = id {
                let path = etc.join("machine-id");
                match write_atomic(&path, format!("{id}\n").as_bytes(), 0o444) {
                    Ok(()) => done.push(format!("wrote {}", path.display())),
                    Err(e) => failed.push(StepError::os(format!("write {}", path.display()), &e)),
                }
            }
        }
    }
    drop(frozen);
    tracing::info!(done = ?done, skipped = ?skipped, failed = failed.len(), "guest restored");
    if let Some(first) = failed.first() {
        let steps: Vec<&str> = failed.iter().map(|f| f.message.as_str()).collect();
        let msg = format!(
            "restore to generation {} failed: {}",
            req.generation,
            steps.join("; ")
        );
        return error(first.code, msg, first.errno);
    }
    if !skipped.is_empty() {
        let msg = format!(
            "not in a VM (the agent was not started by hearth init): skipped {}; done: {}",
            skipped.join(", "),
            done.join(", ")
        );
        return error(pb::ErrorCode::Unsupported, msg, 0);
    }
    Message::Ok(pb::Ok {})
}

fn set_realtime(ns: u64) -> std::io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads the timespec we pass.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// RNDADDENTROPY with every bit credited, then RNDRESEEDCRNG. Returns
/// whether the reseed ran (an old kernel lacks it).
fn add_entropy(bytes: &[u8]) -> Result<bool, StepError> {
    let urandom = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")
        .map_err(|e| StepError::os("open /dev/urandom".into(), &e))?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = vec![0u32; 2 + bytes.len().div_ceil(4)];
    info[0] = (bytes.len() * 8) as u32;
    info[1] = bytes.len() as u32;
    for (i, b) in bytes.iter().enumerate() {
        let word = &mut info[2 + i / 4];
        let mut le = word.to_ne_bytes();
        le[i % 4] = *b;
        *word = u32::from_ne_bytes(le);
    }
    // SAFETY: `info` is a rand_pool_info whose buffer holds `buf_size` bytes;
    // the kernel only reads it.
    let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY as _, info.as_ptr()) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        return Err(StepError::os("RNDADDENTROPY on /dev/urandom".into(), &e));
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG as _, 0) };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOTTY) | Some(libc::EINVAL) => {
            tracing::warn!(error = %e, "RNDRESEEDCRNG is not supported by this kernel; the pool reseeds on its own schedule");
            Ok(false)
        }
        _ => Err(StepError::os("RNDRESEEDCRNG on /dev/urandom".into(), &e)),
    }
}

/// `hostname`, and the `127.0.1.1` line of `hosts` when it has one.
fn write_hostname_files(etc: &Path, host: &str) -> Result<Vec<String>, StepError> {
    let mut done = Vec::new();
    let path = etc.join("hostname");
    write_atomic(&path, format!("{host}\n").as_bytes(), 0o644)
        .map_err(|e| StepError::os(format!("write {}", path.display()), &e))?;
    done.push(format!("wrote {}", path.display()));
    let hosts = etc.join("hosts");
    let text = match std::fs::read_to_string(&hosts) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(done),
        Err(e) => return Err(StepError::os(format!("read {}", hosts.display()), &e)),
    };
    if let Some(new) = replace_loopback_name(&text, host) {
        let mode = std::fs::metadata(&hosts)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        write_atomic(&hosts, new.as_bytes(), mode)
            .map_err(|e| StepError::os(format!("write {}", hosts.display()), &e))?;
        done.push(format!("wrote {}", hosts.display()));
    }
    Ok(done)
}

/// `hosts` text with its `127.0.1.1` line naming `host`; `None` when it has
/// no such line.
pub fn replace_loopback_name(text: &str, host: &str) -> Option<String> {
    let mut found = false;
    let mut out = String::with_capacity(text.len() + host.len());
    for line in text.split_inclusive('\n') {
        let mut words = line.split_whitespace();
        if words.next() == Some("127.0.1.1") && !line.trim_start().starts_with('#') {
            found = true;
            out.push_str("127.0.1.1\t");
            out.push_str(host);
            out.push('\n');
        } else {
            out.push_str(line);
        }
    }
    found.then_some(out)
}

/// Replaces `path` with `data`: a temporary file beside it, fsync, rename.
fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.hearth-{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Connection `generation`'s end: remembers its foreground exec sessions
/// (not attaches to background processes, which keep running) as lost.
pub fn connection_closed(shared: &Shared, routes: &Routes, generation: u64) {
    let lost: Vec<u32> = routes
        .exec_pids()
        .into_iter()
        .filter(|pid| shared.procs.find(&Target::Pid(*pid)).is_none())
        .collect();
    if !lost.is_empty() {
        shared.restore.record_lost(generation, lost);
    }
}

/// `SYSTEM_INFO` with the generation and the frozen mount points.
pub fn annotate(mut info: pb::SystemInfoResult, shared: &Shared) -> pb::SystemInfoResult {
    info.generation = shared.restore.generation();
    info.frozen = shared.restore.frozen_paths();
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_only_the_loopback_name_line() {
        let hosts = "127.0.0.1\tlocalhost\n127.0.1.1 old.example old\n# 127.0.1.1 x\n::1 ip6\n";
        assert_eq!(
            replace_loopback_name(hosts, "new").unwrap(),
            "127.0.0.1\tlocalhost\n127.0.1.1\tnew\n# 127.0.1.1 x\n::1 ip6\n"
        );
        assert_eq!(replace_loopback_name("127.0.0.1 localhost\n", "new"), None);
    }

    #[test]
    fn atomic_writes_replace_and_keep_the_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("etc/machine-id");
        write_atomic(&p, b"a\n", 0o444).unwrap();
        write_atomic(&p, b"b\n", 0o444).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"b\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o444);
        let names: Vec<_> = std::fs::read_dir(dir.path().join("etc")).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");
    }
}
