//! Spawning a child for an exec session, and naming how it ended.
//!
//! The child gets its own session and process group (`setsid`), default
//! dispositions for every signal and an empty signal mask, `oom_score_adj` 0,
//! and no inherited descriptors beyond stdio. A spawn failure is reported as
//! `never_started` with the errno and a kind.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Instant;

use hearth_proto::pb;
use hearth_proto::pb::SpawnErrorKind as Kind;
use hearth_proto::{errno_text, os_error_text};

use super::cgroup::Group;
use super::spawn;
use super::user::{self, Identity};

/// Pipe buffer we ask for on the child's stdout/stderr (best-effort).
const PIPE_SIZE: libc::c_int = 1024 * 1024;

/// What to run, fully resolved.
#[derive(Debug, Clone)]
pub struct Spec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub identity: Identity,
}

/// A running child with the agent's ends of its pipes.
pub struct Spawned {
    /// Pid, which is also the process group id.
    pub pid: i32,
    /// Readable once the child has exited; it is then reaped with `waitpid`.
    pub pidfd: OwnedFd,
    /// Non-blocking write end, when the caller asked to feed stdin; otherwise
    /// the child's stdin is already at end of file.
    pub stdin: Option<OwnedFd>,
    /// Non-blocking read ends.
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub started: Instant,
    /// The exec's own cgroup, when cgroups are available.
    pub cgroup: Option<Group>,
}

/// How a child that ran ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    Exited(i32),
    Killed { signal: i32, core_dumped: bool },
}

/// Decodes a wait status.
pub fn decode_status(status: ExitStatus) -> Termination {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Termination::Exited(code),
        (None, Some(signal)) => Termination::Killed {
            signal,
            core_dumped: status.core_dumped(),
        },
        // Stopped/continued statuses are not reported by wait(); treat as exit -1.
        (None, None) => Termination::Exited(-1),
    }
}

impl Termination {
    pub fn outcome(self) -> pb::exec_outcome::Kind {
        match self {
            Termination::Exited(code) => pb::exec_outcome::Kind::Exited(pb::Exited { code }),
            Termination::Killed {
                signal,
                core_dumped,
            } => pb::exec_outcome::Kind::Killed(pb::Killed {
                signal,
                core_dumped,
            }),
        }
    }
}

/// Maps a spawn errno to the kind reported in `never_started`.
pub fn kind_for_errno(errno: i32) -> Kind {
    match errno {
        libc::ENOENT | libc::ENOTDIR => Kind::NotFound,
        libc::EACCES | libc::EPERM => Kind::PermissionDenied,
        libc::ENOEXEC | libc::EINVAL | libc::E2BIG | libc::ENAMETOOLONG | libc::ELOOP => {
            Kind::InvalidArgument
        }
        libc::EAGAIN | libc::ENOMEM | libc::EMFILE | libc::ENFILE => Kind::ResourceLimit,
        _ => Kind::Other,
    }
}

pub fn never_started(kind: Kind, errno: i32, message: impl Into<String>) -> pb::NeverStarted {
    pb::NeverStarted {
        kind: kind as i32,
        errno,
        message: message.into(),
    }
}

/// Resolves user, environment and cwd; failures are `never_started`.
pub fn prepare(
    argv: &[String],
    env: &[pb::EnvVar],
    cwd: &str,
    user: Option<&pb::User>,
    clear_env: bool,
) -> Result<Spec, pb::NeverStarted> {
    let identity =
        user::resolve(user).map_err(|e| never_started(Kind::BadUser, 0, e.to_string()))?;
    let env = user::build_env(clear_env, env, &identity.home)
        .map_err(|e| never_started(Kind::InvalidArgument, libc::EINVAL, e.to_string()))?;
    let cwd = if cwd.is_empty() { "/" } else { cwd };
    if !cwd.starts_with('/') {
        return Err(never_started(
            Kind::BadCwd,
            libc::EINVAL,
            format!("cwd {cwd:?} is not absolute"),
        ));
    }
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(never_started(
                Kind::BadCwd,
                libc::ENOTDIR,
                format!("cwd {cwd}: not a directory"),
            ))
        }
        Err(e) => {
            return Err(never_started(
                Kind::BadCwd,
                e.raw_os_error().unwrap_or(0),
                format!("cwd {cwd}: {}", os_error_text(&e)),
            ))
        }
    }
    Ok(Spec {
        argv: argv.to_vec(),
        env,
        cwd: PathBuf::from(cwd),
        identity,
    })
}

/// Spawns `spec` with piped stdio (see [`spawn`](super::spawn) for how), in
/// a fresh cgroup with `limits` when cgroups are available (see
/// [`super::cgroup`]).
pub fn spawn_limited(
    spec: &Spec,
    want_stdin: bool,
    limits: Option<&pb::ResourceLimits>,
) -> Result<Spawned, pb::NeverStarted> {
    let cgroup = super::cgroup::create(limits)?;
    spawn_in(spec, want_stdin, cgroup)
}

fn spawn_in(
    spec: &Spec,
    want_stdin: bool,
    cgroup: Option<Group>,
) -> Result<Spawned, pb::NeverStarted> {
    let os = |e: io::Error| {
        let errno = e.raw_os_error().unwrap_or(0);
        never_started(
            kind_for_errno(errno),
            errno,
            format!("{}: {}", spec.argv[0], os_error_text(&e)),
        )
    };
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut plan = spawn::Plan::new(
        &spec.argv,
        &spec.env,
        &spec.cwd,
        spec.identity.uid,
        spec.identity.gid,
        is_root && spec.identity.uid.is_some(),
    )
    .map_err(|e| never_started(Kind::InvalidArgument, libc::EINVAL, e.to_string()))?;
    if let Some(g) = &cgroup {
        plan.join_cgroup(&g.procs);
    }
    // Without stdin to feed, the child reads /dev/null: end of file at once,
    // like a pipe whose write end is closed, for one fewer pipe.
    let null = if want_stdin { None } else { dev_null() };
    let (in_pipe_r, in_w) = match null {
        Some(_) => (None, None),
        None => pipe().map(|(r, w)| (Some(r), Some(w))).map_err(os)?,
    };
    let Some(in_r) = in_pipe_r.as_ref().or(null) else {
        return Err(never_started(Kind::Other, 0, "no stdin for the child"));
    };
    let (out_r, out_w) = pipe().map_err(os)?;
    let (err_r, err_w) = pipe().map_err(os)?;
    let started = Instant::now();
    let child = spawn::start(&mut plan, in_r, &out_w, &err_w)
        .map_err(|e| spawn_failed(spec, cgroup.as_ref(), e))?;
    drop((in_pipe_r, out_w, err_w));
    // The output pipes grow to PIPE_SIZE only once a child writes a lot
    // (see `grow_pipe`), so short commands do not pay for it.
    let stdin = if want_stdin { in_w } else { None };
    let prepared = set_nonblocking(&out_r)
        .and_then(|()| set_nonblocking(&err_r))
        .and_then(|()| stdin.as_ref().map_or(Ok(()), set_nonblocking));
    if let Err(e) = prepared {
        signal_group(child.pid, libc::SIGKILL);
        let _ = spawn::reap(child.pid, 0);
        return Err(never_started(
            Kind::Other,
            e.raw_os_error().unwrap_or(0),
            format!("preparing the child's pipes: {}", os_error_text(&e)),
        ));
    }
    Ok(Spawned {
        pid: child.pid,
        pidfd: child.pidfd,
        stdin,
        stdout: out_r,
        stderr: err_r,
        started,
        cgroup,
    })
}

/// What a failed spawn of `spec` reports, by the step that failed (shared by
/// pipe and pty execs).
pub fn spawn_failed(spec: &Spec, cgroup: Option<&Group>, e: spawn::SpawnError) -> pb::NeverStarted {
    let msg = errno_text(e.errno);
    match e.stage {
        spawn::Stage::Chdir => never_started(
            Kind::BadCwd,
            e.errno,
            format!("cwd {}: {msg}", spec.cwd.display()),
        ),
        spawn::Stage::Credentials => never_started(
            Kind::BadUser,
            e.errno,
            format!(
                "switching to uid {:?} gid {:?}: {msg}",
                spec.identity.uid, spec.identity.gid
            ),
        ),
        spawn::Stage::Cgroup => never_started(
            Kind::Other,
            e.errno,
            format!(
                "joining cgroup {}: {msg}",
                cgroup.map_or(Path::new("?"), |g| g.path()).display()
            ),
        ),
        spawn::Stage::Exec | spawn::Stage::Stdio | spawn::Stage::Setsid => never_started(
            kind_for_errno(e.errno),
            e.errno,
            format!("{}: {msg}", spec.argv[0]),
        ),
    }
}

/// Asks for a bigger pipe behind `fd` (best-effort), for children that write a lot.
pub fn grow_pipe(fd: &impl AsRawFd) {
    // SAFETY: F_SETPIPE_SZ on a pipe fd we own; failure only means a smaller pipe.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
}

/// `/dev/null` opened once for reading (shared by every child's stdin);
/// `None` if it cannot be opened.
fn dev_null() -> Option<&'static OwnedFd> {
    static NULL: std::sync::OnceLock<Option<OwnedFd>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| {
        let f = std::fs::File::open("/dev/null").ok()?;
        spawn::above_stdio(OwnedFd::from(f)).ok()
    })
    .as_ref()
}

/// A close-on-exec pipe whose ends are both above stdio.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh fds that we now own.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((spawn::above_stdio(r)?, spawn::above_stdio(w)?))
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own; a pipe end has no other status flags to keep.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sends `signal` to the process group `pgid`; a group that is gone is fine.
pub fn signal_group(pgid: i32, signal: i32) {
    if pgid <= 0 {
        return;
    }
    // SAFETY: kill(2) with a negative pid targets exactly the group `pgid`,
    // which the agent created with setsid for this session.
    let rc = unsafe { libc::kill(-pgid, signal) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            tracing::debug!(pgid, signal, error = %e, "signalling process group failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn decodes_exit_codes_and_signals() {
        assert_eq!(
            decode_status(ExitStatus::from_raw(0)),
            Termination::Exited(0)
        );
        assert_eq!(
            decode_status(ExitStatus::from_raw(3 << 8)),
            Termination::Exited(3)
        );
        assert_eq!(
            decode_status(ExitStatus::from_raw(libc::SIGKILL)),
            Termination::Killed {
                signal: 9,
                core_dumped: false
            }
        );
        assert_eq!(
            decode_status(ExitStatus::from_raw(libc::SIGSEGV | 0x80)),
            Termination::Killed {
                signal: 11,
                core_dumped: true
            }
        );
    }

    #[test]
    fn maps_spawn_errnos_to_kinds() {
        assert_eq!(kind_for_errno(libc::ENOENT), Kind::NotFound);
        assert_eq!(kind_for_errno(libc::EACCES), Kind::PermissionDenied);
        assert_eq!(kind_for_errno(libc::EPERM), Kind::PermissionDenied);
        assert_eq!(kind_for_errno(libc::ENOEXEC), Kind::InvalidArgument);
        assert_eq!(kind_for_errno(libc::EAGAIN), Kind::ResourceLimit);
        assert_eq!(kind_for_errno(libc::EIO), Kind::Other);
    }

    #[test]
    fn missing_cwd_is_bad_cwd_before_spawning() {
        let ns = prepare(
            &["/bin/true".into()],
            &[],
            "/nonexistent/hearth-test",
            None,
            false,
        )
        .unwrap_err();
        assert_eq!(ns.kind, Kind::BadCwd as i32);
        assert_eq!(ns.errno, libc::ENOENT);
        assert!(
            ns.message.contains("/nonexistent/hearth-test"),
            "{}",
            ns.message
        );
        let ns = prepare(&["/bin/true".into()], &[], "/etc/passwd", None, false).unwrap_err();
        assert_eq!((ns.kind, ns.errno), (Kind::BadCwd as i32, libc::ENOTDIR));
    }

    #[tokio::test]
    async fn missing_program_never_starts_with_enoent() {
        let spec = prepare(&["/nonexistent/prog".into()], &[], "", None, false).unwrap();
        let ns = spawn_limited(&spec, false, None)
            .err()
            .expect("spawn of a missing program must fail");
        assert_eq!((ns.kind, ns.errno), (Kind::NotFound as i32, libc::ENOENT));
        // The number travels in `errno` only; the text says what failed.
        assert_eq!(ns.message, "/nonexistent/prog: No such file or directory");
    }
}
