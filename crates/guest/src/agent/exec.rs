//! Spawning a child for an exec session, and naming how it ended.
//!
//! The child gets its own session and process group (`setsid`), default
//! dispositions for every signal and an empty signal mask, `oom_score_adj` 0,
//! and no inherited descriptors beyond stdio. A spawn failure is reported as
//! `never_started` with the errno and a kind.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Instant;

use hearth_proto::pb;
use hearth_proto::pb::SpawnErrorKind as Kind;

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
    pub child: tokio::process::Child,
    /// Pid, which is also the process group id.
    pub pid: i32,
    pub stdin: Option<tokio::process::ChildStdin>,
    /// Non-blocking read ends.
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub started: Instant,
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
                format!("cwd {cwd}: {e}"),
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

/// Spawns `spec` with piped stdio.
pub fn spawn(spec: &Spec) -> Result<Spawned, pb::NeverStarted> {
    let mut cmd = tokio::process::Command::new(&spec.argv[0]);
    cmd.args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    let uid = spec.identity.uid;
    let gid = spec.identity.gid;
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (open/write/close, setsid, sigaction,
    // sigprocmask, setgroups/setgid/setuid, close_range); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || child_setup(uid, gid, is_root));
    }
    let started = Instant::now();
    let mut child = cmd.spawn().map_err(|e| {
        let errno = e.raw_os_error().unwrap_or(0);
        never_started(
            kind_for_errno(errno),
            errno,
            format!("{}: {e}", spec.argv[0]),
        )
    })?;
    let pid = child.id().unwrap_or(0) as i32;
    let stdin = child.stdin.take();
    let (stdout, stderr) = match (child.stdout.take(), child.stderr.take()) {
        (Some(o), Some(e)) => (o.into_owned_fd(), e.into_owned_fd()),
        _ => {
            return Err(never_started(Kind::Other, 0, "child pipes are missing"));
        }
    };
    let prep = |r: io::Result<OwnedFd>| -> Result<OwnedFd, pb::NeverStarted> {
        let fd = r.map_err(|e| {
            never_started(Kind::Other, e.raw_os_error().unwrap_or(0), e.to_string())
        })?;
        set_nonblocking(&fd).map_err(|e| {
            never_started(Kind::Other, e.raw_os_error().unwrap_or(0), e.to_string())
        })?;
        // SAFETY: F_SETPIPE_SZ on a pipe fd we own; failure only means a smaller pipe.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        Ok(fd)
    };
    let (stdout, stderr) = match (prep(stdout), prep(stderr)) {
        (Ok(o), Ok(e)) => (o, e),
        (Err(ns), _) | (_, Err(ns)) => {
            signal_group(pid, libc::SIGKILL);
            return Err(ns);
        }
    };
    Ok(Spawned {
        child,
        pid,
        stdin,
        stdout,
        stderr,
        started,
    })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on an fd we own.
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

/// The kernel's `struct sigaction` for `rt_sigaction(2)` on architectures
/// with `sa_restorer` (x86_64, aarch64); riscv64 has no `restorer`.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    #[cfg(not(target_arch = "riscv64"))]
    restorer: usize,
    mask: u64,
}

/// Runs in the child between fork and exec. Only async-signal-safe calls.
fn child_setup(uid: Option<u32>, gid: Option<u32>, is_root: bool) -> io::Result<()> {
    // SAFETY (whole function): plain system calls on constant arguments or
    // stack values; see the caller's comment on async-signal safety.
    unsafe {
        // Undo the agent's own -1000 (best-effort: /proc may be missing).
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(fd, b"0".as_ptr().cast(), 1);
            libc::close(fd);
        }
        if libc::setsid() < 0 {
            return Err(io::Error::last_os_error());
        }
        // The raw system call, because glibc's wrapper refuses its reserved
        // signals (32, 33), and an ignored disposition survives exec.
        let dfl = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            #[cfg(not(target_arch = "riscv64"))]
            restorer: 0,
            mask: 0,
        };
        for sig in 1..=64 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(g) = gid {
            if is_root && uid.is_some() && libc::setgroups(1, &g) < 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setgid(g) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if let Some(u) = uid {
            if libc::setuid(u) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // Nothing but stdio crosses exec (best-effort; needs Linux 5.11).
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
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
        let ns = spawn(&spec)
            .err()
            .expect("spawn of a missing program must fail");
        assert_eq!((ns.kind, ns.errno), (Kind::NotFound as i32, libc::ENOENT));
    }
}
