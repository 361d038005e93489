//! Pseudo-terminals for execs that ask for one (`ExecStart.pty`).
//!
//! The agent opens a master/slave pair (`posix_openpt`, `grantpt`,
//! `unlockpt`), sets the size, and the child gets the slave as stdin, stdout
//! and stderr and as its controlling terminal (`setsid`, then `TIOCSCTTY` in
//! the vfork child, see [`super::spawn`]). The agent keeps only the master:
//! output is what the master reads (stdout and stderr merged, as a terminal
//! shows them), input is written to it, `PTY_RESIZE` is `TIOCSWINSZ` on it
//! (the kernel sends SIGWINCH to the foreground group). Ctrl-C is the byte
//! 0x03 written to the master: the line discipline sends SIGINT to the
//! foreground job. A terminal is only allocated when asked for (LESSONS.md:
//! a spurious controlling TTY made background jobs stop on SIGTTOU).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use hearth_proto::pb;
use hearth_proto::pb::SpawnErrorKind as Kind;
use hearth_proto::{errno_text, os_error_text};

use super::exec::{kind_for_errno, never_started, signal_group, Spec};
use super::spawn;

/// Size when the request leaves it 0.
const DEFAULT_ROWS: u16 = 24;
const DEFAULT_COLS: u16 = 80;
/// TERM when the request leaves it empty.
const DEFAULT_TERM: &str = "xterm";

/// A child running on a pty.
pub struct PtySpawned {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// The master, non-blocking.
    pub master: OwnedFd,
    pub started: Instant,
    /// The exec's own cgroup, when cgroups are available.
    pub cgroup: Option<super::cgroup::Group>,
}

fn side(v: u32, default: u16) -> u16 {
    if v == 0 {
        default
    } else {
        v.min(u16::MAX as u32) as u16
    }
}

/// Sets the terminal size on `fd` (either end); the kernel sends SIGWINCH to
/// the terminal's foreground process group.
pub fn resize(fd: &impl AsRawFd, rows: u32, cols: u32) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: side(rows, DEFAULT_ROWS),
        ws_col: side(cols, DEFAULT_COLS),
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer we pass.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens a master/slave pair of the given size; both are close-on-exec and
/// above stdio.
fn open_pair(rows: u32, cols: u32) -> io::Result<(OwnedFd, OwnedFd)> {
    // SAFETY: posix_openpt returns a new descriptor or -1.
    let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if m < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `m` is a fresh descriptor that we now own.
    let master = spawn::above_stdio(unsafe { OwnedFd::from_raw_fd(m) })?;
    // SAFETY: grantpt/unlockpt on the master we own.
    if unsafe { libc::grantpt(master.as_raw_fd()) } < 0
        || unsafe { libc::unlockpt(master.as_raw_fd()) } < 0
    {
        return Err(io::Error::last_os_error());
    }
    let mut name = [0 as libc::c_char; 128];
    // SAFETY: ptsname_r writes a NUL-terminated name of at most `name.len()` bytes.
    let r = unsafe { libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    // SAFETY: `name` is NUL-terminated (ptsname_r succeeded).
    let s = unsafe {
        libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if s < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `s` is a fresh descriptor that we now own.
    let slave = spawn::above_stdio(unsafe { OwnedFd::from_raw_fd(s) })?;
    resize(&master, rows, cols)?;
    Ok((master, slave))
}

/// `TERM` for the child: the request's, or [`DEFAULT_TERM`].
pub fn term(p: &pb::PtySpec) -> &str {
    if p.term.is_empty() {
        DEFAULT_TERM
    } else {
        &p.term
    }
}

/// Spawns `spec` on a new pty (`TERM` set from `p`); failures are `never_started`.
pub fn spawn_on_pty(
    spec: &Spec,
    p: &pb::PtySpec,
    limits: Option<&pb::ResourceLimits>,
) -> Result<PtySpawned, pb::NeverStarted> {
    let os = |what: &str, e: io::Error| {
        let errno = e.raw_os_error().unwrap_or(0);
        never_started(
            kind_for_errno(errno),
            errno,
            format!("{what}: {}", os_error_text(&e)),
        )
    };
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter(|(k, _)| k != "TERM")
        .cloned()
        .collect();
    env.push(("TERM".into(), term(p).to_string()));
    // SAFETY: geteuid has no preconditions.
    let is_root = unsafe { libc::geteuid() } == 0;
    let mut plan = spawn::Plan::new(
        &spec.argv,
        &env,
        &spec.cwd,
        spec.identity.uid,
        spec.identity.gid,
        is_root && spec.identity.uid.is_some(),
    )
    .map_err(|e| never_started(Kind::InvalidArgument, libc::EINVAL, e.to_string()))?;
    plan.ctty = true;
    let cgroup = super::cgroup::create(limits)?;
    if let Some(g) = &cgroup {
        plan.join_cgroup(&g.procs);
    }
    let (master, slave) = open_pair(p.rows, p.cols).map_err(|e| os("opening a pty", e))?;
    let started = Instant::now();
    let child = spawn::start(&mut plan, &slave, &slave, &slave).map_err(|e| match e.stage {
        spawn::Stage::Setsid => never_started(
            kind_for_errno(e.errno),
            e.errno,
            format!(
                "making the pty the controlling terminal: {}",
                errno_text(e.errno)
            ),
        ),
        _ => super::exec::spawn_failed(spec, cgroup.as_ref(), e),
    })?;
    drop(slave);
    if let Err(e) = set_nonblocking(&master) {
        signal_group(child.pid, libc::SIGKILL);
        let _ = spawn::reap(child.pid, 0);
        return Err(os("preparing the pty", e));
    }
    Ok(PtySpawned {
        pid: child.pid,
        pidfd: child.pidfd,
        master,
        started,
        cgroup,
    })
}

pub fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
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

/// A second descriptor for the same open file (close-on-exec), so it can be
/// registered with the reactor apart from the first (stdin writer vs reader).
pub fn dup(fd: &impl AsRawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own returns a new fd we then own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}
