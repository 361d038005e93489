//! `EXEC_START` with `detach`: a background process. It is listed in the
//! agent's [`Procs`](super::procs::Procs), its output goes to a ring buffer
//! ([`super::ring`]) read with `ATTACH`, and it outlives the connection that
//! started it. The request ends with `EXEC_STARTED` (or `EXEC_EXIT` when it
//! never started, or `ERROR`).

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_proto::background::DEFAULT_BUFFER_BYTES;
use hearth_proto::message::error;
use hearth_proto::{pb, Message};

use super::exec;
use super::procs::{self, AddError, Output, Proc};
use super::writer::Writer;
use super::{pty, stdin, Shared};

/// A started child whose output goes to a ring.
pub struct Started {
    pub pid: i32,
    pub pidfd: OwnedFd,
    pub output: Output,
    /// The pty master, when it runs on one.
    pub master: Option<Arc<OwnedFd>>,
    /// The stdin pipe's write end, when it takes input without a pty.
    pub stdin: Option<OwnedFd>,
    pub started: Instant,
    /// Its own cgroup (limits, and the teardown that also reaches what left
    /// the process group), when cgroups are available.
    pub cgroup: Option<super::cgroup::Group>,
}

/// Spawns for a request on a pty (when `pty` is set) or on pipes.
pub fn spawn(req: &pb::ExecStart) -> Result<Started, pb::NeverStarted> {
    let spec = exec::prepare(
        &req.argv,
        &req.env,
        &req.cwd,
        req.user.as_ref(),
        req.clear_env,
    )?;
    match &req.pty {
        Some(p) => {
            let s = pty::spawn_on_pty(&spec, p, req.limits.as_ref())?;
            let master = pty::dup(&s.master).map_err(|e| {
                exec::signal_group(s.pid, libc::SIGKILL);
                exec::never_started(
                    pb::SpawnErrorKind::Other,
                    e.raw_os_error().unwrap_or(0),
                    format!("duplicating the pty: {}", hearth_proto::os_error_text(&e)),
                )
            })?;
            Ok(Started {
                pid: s.pid,
                pidfd: s.pidfd,
                output: Output::Pty(s.master),
                master: Some(Arc::new(master)),
                stdin: None,
                started: s.started,
                cgroup: s.cgroup,
            })
        }
        None => {
            let want_stdin = req.stdin_open || !req.stdin.is_empty();
            let s = exec::spawn_limited(&spec, want_stdin, req.limits.as_ref())?;
            Ok(Started {
                pid: s.pid,
                pidfd: s.pidfd,
                output: Output::Pipes {
                    stdout: s.stdout,
                    stderr: s.stderr,
                },
                master: None,
                stdin: s.stdin,
                started: s.started,
                cgroup: s.cgroup,
            })
        }
    }
}

/// Where a process's input goes: a new descriptor for the pty master or
/// the stdin pipe (so each writer registers its own with the reactor).
pub fn input_fd(proc: &Proc) -> Option<OwnedFd> {
    let fd = proc.pty.clone().or_else(|| proc.stdin())?;
    match pty::dup(fd.as_ref()) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::debug!(pid = proc.pid, error = %e, "duplicating a process's input failed");
            None
        }
    }
}

fn never_started_exit(ns: pb::NeverStarted) -> Message {
    Message::ExecExit(pb::ExecExit {
        outcome: Some(pb::ExecOutcome {
            kind: Some(pb::exec_outcome::Kind::NeverStarted(ns)),
        }),
        ..Default::default()
    })
}

fn add_error(e: &AddError) -> Message {
    let code = match e {
        AddError::DuplicateTag { .. } => pb::ErrorCode::AlreadyExists,
        AddError::TooMany { .. } => pb::ErrorCode::NoSpace,
        AddError::NoBuffer { .. } => pb::ErrorCode::NoSpace,
    };
    error(code, e.to_string(), 0)
}

/// Starts a background process and answers `EXEC_STARTED`.
pub async fn start(req: pb::ExecStart, seq: u32, writer: &Writer, shared: &Arc<Shared>) {
    let cap = match req.buffer_bytes {
        0 => DEFAULT_BUFFER_BYTES,
        n => n,
    } as usize;
    if let Err(e) = shared.procs.check(&req.tag, cap as u64) {
        let _ = writer.send(seq, &add_error(&e)).await;
        return;
    }
    let s = match spawn(&req) {
        Ok(s) => s,
        Err(ns) => {
            let _ = writer.send(seq, &never_started_exit(ns)).await;
            return;
        }
    };
    // A pipe that stays open is kept by the process entry; attachers write
    // to their own duplicates of it.
    let (kept_stdin, first_stdin) = match (s.stdin, req.stdin_open) {
        (Some(fd), true) => {
            let fd = Arc::new(fd);
            let first = pty::dup(fd.as_ref()).ok();
            (Some(fd), first)
        }
        (Some(fd), false) => (None, Some(fd)),
        (None, _) => (
            None,
            s.master.as_ref().and_then(|m| pty::dup(m.as_ref()).ok()),
        ),
    };
    let proc = Proc::new(
        s.pid,
        req.tag.clone(),
        req.argv.clone(),
        cap,
        s.master.clone(),
        kept_stdin,
        false,
    );
    let registered = match shared.sessions.register(proc.ctl.clone()) {
        Ok(r) => r,
        Err(e) => {
            exec::signal_group(s.pid, libc::SIGKILL);
            let _ = tokio::task::spawn_blocking(move || super::spawn::reap(s.pid, 0)).await;
            let err = error(pb::ErrorCode::ShuttingDown, e.to_string(), 0);
            let _ = writer.send(seq, &err).await;
            return;
        }
    };
    if let Err(e) = shared.procs.add(proc.clone()) {
        exec::signal_group(s.pid, libc::SIGKILL);
        let _ = tokio::task::spawn_blocking(move || super::spawn::reap(s.pid, 0)).await;
        let _ = writer.send(seq, &add_error(&e)).await;
        return;
    }
    if !req.stdin.is_empty() {
        if let Some(t) = stdin::spawn(first_stdin, req.stdin.clone(), None, None) {
            drop(t);
        }
    }
    let timeout = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms));
    tracing::debug!(seq, pid = s.pid, tag = %req.tag, "background process started");
    tokio::spawn(procs::run(
        proc, s.pidfd, s.output, s.started, timeout, registered, s.cgroup,
    ));
    let started = Message::ExecStarted(pb::ExecStarted { pid: s.pid as u32 });
    let _ = writer.send(seq, &started).await;
}
