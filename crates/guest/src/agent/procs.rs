//! Processes whose output goes to a [`Ring`] instead of straight to one
//! connection: background processes (`ExecStart.detach`), listed in the
//! agent-wide [`Procs`] table, and foreground pty sessions.
//!
//! One runner task per process ([`run`]) reads its output (the pty master, or
//! the stdout and stderr pipes) into the ring, applies the timeout and the
//! agent's orders (shutdown: TERM, grace, KILL) and records the exit.
//! Followers ([`super::follow`]) read the ring with their own cursors. A
//! *lossless* process (a foreground pty session) is not read further than
//! its one follower has sent, so the host's output credit holds it back as
//! with pipes; a background process never waits: the ring overwrites.
//!
//! Exited background processes keep their status and ring for
//! [`EXITED_FOR`], at most [`MAX_EXITED`] of them.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearth_proto::pb;
use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Notify};

use super::exec::{decode_status, signal_group, Termination};
use super::lifecycle::{Ctl, Registered};
use super::ring::Ring;
use super::spawn;

/// How long an exited background process stays listed.
pub const EXITED_FOR: Duration = Duration::from_secs(600);
/// Most exited background processes kept.
pub const MAX_EXITED: usize = 64;
/// Most live background processes.
pub const MAX_LIVE: usize = 1024;
/// Agent-wide bound on the rings of all listed background processes.
pub const MAX_TOTAL_BUFFER: u64 = 512 * 1024 * 1024;
/// Grace between SIGTERM and SIGKILL on timeout.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// Draining after the exit: stop after this long without output...
const DRAIN_QUIET: Duration = Duration::from_millis(200);
/// ...and after this long in any case (a grandchild may keep the pty open).
const DRAIN_MAX: Duration = Duration::from_secs(2);
/// Largest single read.
const READ_CHUNK: usize = 64 * 1024;

/// What the process writes to.
pub enum Output {
    Pty(OwnedFd),
    Pipes { stdout: OwnedFd, stderr: OwnedFd },
}

#[derive(Debug)]
pub struct State {
    pub ring: Ring,
    /// Set once the process was reaped and its output drained.
    pub exit: Option<pb::ExecExit>,
    pub exited_at: Option<Instant>,
    /// Lossless: the follower's cursor; the ring never overwrites past it.
    pub hold: Option<u64>,
}

/// One process whose output goes to a ring.
pub struct Proc {
    pub pid: i32,
    pub tag: String,
    pub argv: Vec<String>,
    pub started_unix_ms: u64,
    /// The pty master (for resizing; a dup of it takes input).
    pub pty: Option<Arc<OwnedFd>>,
    /// The write end of its stdin pipe, when it takes input without a pty;
    /// `None` once PROCESS_STDIN_CLOSE closed it.
    stdin: Mutex<Option<Arc<OwnedFd>>>,
    /// Becomes true when its stdin is closed: attaches drop their copies.
    stdin_closed: watch::Sender<bool>,
    /// The runner's control: ended by shutdown, or by the foreground
    /// session's connection.
    pub ctl: Arc<Ctl>,
    state: Mutex<State>,
    /// Bumped on every change of the state (output, exit).
    changed: watch::Sender<u64>,
    /// The follower advanced `hold`.
    room: Notify,
}

impl Proc {
    pub fn new(
        pid: i32,
        tag: String,
        argv: Vec<String>,
        cap: usize,
        pty: Option<Arc<OwnedFd>>,
        stdin: Option<Arc<OwnedFd>>,
        lossless: bool,
    ) -> Arc<Proc> {
        Arc::new(Proc {
            pid,
            tag,
            argv,
            started_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            pty,
            stdin: Mutex::new(stdin),
            stdin_closed: watch::channel(false).0,
            ctl: Ctl::new(),
            state: Mutex::new(State {
                ring: Ring::new(cap),
                exit: None,
                exited_at: None,
                hold: lossless.then_some(0),
            }),
            changed: watch::channel(0).0,
            room: Notify::new(),
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The write end of its stdin pipe, while it is open.
    pub fn stdin(&self) -> Option<Arc<OwnedFd>> {
        self.stdin.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Closes its stdin pipe (see [`super::stdin_close`]); false when it has
    /// none open.
    pub fn close_stdin(&self) -> bool {
        let had = self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
        if had.is_some() {
            self.stdin_closed.send_replace(true);
        }
        had.is_some()
    }

    /// Tells when its stdin is closed.
    pub fn stdin_closed(&self) -> watch::Receiver<bool> {
        self.stdin_closed.subscribe()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A lossless follower has sent everything before `offset` (`None`:
    /// it is gone, never hold the process back again).
    pub fn release(&self, offset: Option<u64>) {
        {
            let mut s = self.lock();
            if s.hold.is_some() {
                s.hold = offset;
            }
        }
        self.room.notify_one();
    }

    pub fn running(&self) -> bool {
        self.lock().exit.is_none()
    }

    pub fn info(&self) -> pb::ProcessInfo {
        let s = self.lock();
        pb::ProcessInfo {
            pid: self.pid as u32,
            tag: self.tag.clone(),
            argv: self.argv.clone(),
            state: if s.exit.is_some() {
                pb::ProcessState::Exited
            } else {
                pb::ProcessState::Running
            } as i32,
            started_unix_ms: self.started_unix_ms,
            outcome: s.exit.as_ref().and_then(|x| x.outcome.clone()),
            pty: self.pty.is_some(),
            output_bytes: s.ring.end(),
            retained_from: s.ring.start(),
            buffer_bytes: s.ring.cap() as u32,
        }
    }
}

/// Which process a request names.
pub enum Target<'a> {
    Pid(u32),
    Tag(&'a str),
}

impl<'a> Target<'a> {
    pub fn new(pid: u32, tag: &'a str) -> Self {
        if pid != 0 {
            Target::Pid(pid)
        } else {
            Target::Tag(tag)
        }
    }
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Pid(p) => write!(f, "pid {p}"),
            Target::Tag(t) => write!(f, "tag {t:?}"),
        }
    }
}

/// Why a background process could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error("tag {tag:?} is already used by running process {pid}")]
    DuplicateTag { tag: String, pid: i32 },
    #[error("{live} background processes are running, the most the agent keeps")]
    TooMany { live: usize },
    #[error("a {want} byte buffer would take the agent's background buffers over {MAX_TOTAL_BUFFER} bytes ({used} in use)")]
    NoBuffer { want: u64, used: u64 },
}

/// Every background process the agent still knows.
#[derive(Default)]
pub struct Procs {
    list: Mutex<Vec<Arc<Proc>>>,
}

impl Procs {
    fn lock(&self) -> MutexGuard<'_, Vec<Arc<Proc>>> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets exited processes past [`EXITED_FOR`] or beyond [`MAX_EXITED`].
    fn prune(list: &mut Vec<Arc<Proc>>) {
        let now = Instant::now();
        let mut exited: Vec<(Instant, i32)> = list
            .iter()
            .filter_map(|p| p.lock().exited_at.map(|t| (t, p.pid)))
            .collect();
        exited.sort();
        let excess = exited.len().saturating_sub(MAX_EXITED);
        let mut forget: Vec<(Instant, i32)> = exited[..excess].to_vec();
        forget.extend(
            exited[excess..]
                .iter()
                .filter(|(t, _)| now.duration_since(*t) >= EXITED_FOR),
        );
        list.retain(|p| {
            let at = p.lock().exited_at;
            !at.is_some_and(|t| forget.contains(&(t, p.pid)))
        });
    }

    /// Checks that `tag` is free and that a `cap` byte ring fits.
    pub fn check(&self, tag: &str, cap: u64) -> Result<(), AddError> {
        let mut list = self.lock();
        Self::prune(&mut list);
        Self::check_locked(&list, tag, cap)
    }

    fn check_locked(list: &[Arc<Proc>], tag: &str, cap: u64) -> Result<(), AddError> {
        let live: Vec<&Arc<Proc>> = list.iter().filter(|p| p.running()).collect();
        if !tag.is_empty() {
            if let Some(p) = live.iter().find(|p| p.tag == tag) {
                return Err(AddError::DuplicateTag {
                    tag: tag.to_string(),
                    pid: p.pid,
                });
            }
        }
        if live.len() >= MAX_LIVE {
            return Err(AddError::TooMany { live: live.len() });
        }
        let used: u64 = list.iter().map(|p| p.lock().ring.cap() as u64).sum();
        if used + cap > MAX_TOTAL_BUFFER {
            return Err(AddError::NoBuffer { want: cap, used });
        }
        Ok(())
    }

    /// Lists a started process (checked again under the lock).
    pub fn add(&self, p: Arc<Proc>) -> Result<(), AddError> {
        let mut list = self.lock();
        Self::prune(&mut list);
        Self::check_locked(&list, &p.tag, p.lock().ring.cap() as u64)?;
        list.push(p);
        Ok(())
    }

    /// The process `t` names: a running one first (a pid may have been
    /// reused), else the most recent exited one.
    pub fn find(&self, t: &Target<'_>) -> Option<Arc<Proc>> {
        let mut list = self.lock();
        Self::prune(&mut list);
        let hit = |p: &&Arc<Proc>| match t {
            Target::Pid(pid) => p.pid as u32 == *pid,
            Target::Tag(tag) => !tag.is_empty() && p.tag == *tag,
        };
        let running = list.iter().filter(hit).find(|p| p.running());
        running.or_else(|| list.iter().rfind(hit)).cloned()
    }

    /// Everything listed, by pid.
    pub fn list(&self) -> Vec<pb::ProcessInfo> {
        let mut list = self.lock();
        Self::prune(&mut list);
        let mut v: Vec<pb::ProcessInfo> = list.iter().map(|p| p.info()).collect();
        v.sort_by_key(|i| (i.pid, i.started_unix_ms));
        v
    }
}

/// Readable output descriptors of a process.
struct Src {
    fd: AsyncFd<OwnedFd>,
    is_stderr: bool,
    open: bool,
    pty: bool,
}

impl Src {
    fn new(fd: OwnedFd, is_stderr: bool, pty: bool) -> std::io::Result<Src> {
        Ok(Src {
            // SAFETY: the OwnedFd moves into the AsyncFd, so it stays open and
            // names the same file for the AsyncFd's whole life.
            fd: unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
                .map_err(|e| e.into_parts().1)?,
            is_stderr,
            open: true,
            pty,
        })
    }
}

/// Reads what is there now (at most `max`): `Some(n)` bytes (0 = end), or
/// `None` if nothing was ready.
fn read_now(
    guard: &mut tokio::io::unix::AsyncFdReadyGuard<'_, OwnedFd>,
    buf: &mut [u8],
    pty: bool,
) -> Option<usize> {
    match guard.try_io(|fd| {
        // SAFETY: read(2) writes at most `buf.len()` bytes into our buffer.
        let n = unsafe { libc::read(fd.get_ref().as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }) {
        Ok(Ok(n)) => Some(n),
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => None,
        // A pty master reads EIO once the last slave is closed: its end.
        Ok(Err(e)) => {
            if !(pty && e.raw_os_error() == Some(libc::EIO)) {
                tracing::debug!(error = %e, "reading process output failed");
            }
            Some(0)
        }
        Err(_would_block) => None,
    }
}

/// Runs the process to its end: output into the ring, timeout, orders from
/// `proc.ctl`, then the exit recorded for the followers.
pub async fn run(
    proc: Arc<Proc>,
    pidfd: OwnedFd,
    output: Output,
    started: Instant,
    timeout: Option<Duration>,
    registered: Registered,
    cgroup: Option<super::cgroup::Group>,
) {
    let _registered = registered;
    let pid = proc.pid;
    // SIGKILL for the process group and, with a cgroup, everything in it
    // (also what left the group with setsid).
    let kill_all = |pid: i32| {
        signal_group(pid, libc::SIGKILL);
        if let Some(g) = &cgroup {
            g.kill();
        }
    };
    let srcs: std::io::Result<Vec<Src>> = match output {
        Output::Pty(m) => Src::new(m, false, true).map(|s| vec![s]),
        Output::Pipes { stdout, stderr } => {
            Src::new(stdout, false, false).and_then(|o| Ok(vec![o, Src::new(stderr, true, false)?]))
        }
    };
    // SAFETY: as in `Src::new`: the pidfd moves into the AsyncFd.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1);
    let (mut srcs, pidfd) = match (srcs, pidfd) {
        (Ok(s), Ok(p)) => (s, p),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(pid, error = %e, "registering a process's descriptors failed");
            kill_all(pid);
            let _ = tokio::task::spawn_blocking(move || spawn::reap(pid, 0)).await;
            finish(&proc, Termination::Exited(-1), None, None, started);
            return;
        }
    };
    let mut buf = vec![0u8; READ_CHUNK];
    let far = tokio::time::Instant::now() + Duration::from_secs(86400 * 365);
    let mut term_at = timeout.map(|t| tokio::time::Instant::from_std(started + t));
    let mut kill_at: Option<tokio::time::Instant> = None;
    let mut timed_out: Option<i32> = None;
    let mut status: Option<Termination> = None;
    let mut ending = false;
    let mut drain_quiet: Option<tokio::time::Instant> = None;
    let mut drain_max = far;
    loop {
        if status.is_some() && srcs.iter().all(|s| !s.open) {
            break;
        }
        // Lossless: read no more than the follower has room for.
        let room = {
            let s = proc.lock();
            match s.hold {
                Some(h) => (s.ring.cap() as u64).saturating_sub(s.ring.end() - h) as usize,
                None => READ_CHUNK,
            }
        };
        let take = room.min(READ_CHUNK);
        let s0 = &srcs[0];
        let s1 = srcs.get(1);
        let r1 = s1.is_some_and(|s| s.open) && take > 0;
        let second = async {
            match s1 {
                Some(s) => s.fd.readable().await,
                None => std::future::pending().await,
            }
        };
        let read: Option<(usize, bool, usize)> = tokio::select! {
            g = s0.fd.readable(), if s0.open && take > 0 => match g {
                Ok(mut g) => read_now(&mut g, &mut buf[..take], s0.pty).map(|n| (0, s0.is_stderr, n)),
                Err(_) => Some((0, s0.is_stderr, 0)),
            },
            g = second, if r1 => match g {
                Ok(mut g) => read_now(&mut g, &mut buf[..take], false).map(|n| (1, true, n)),
                Err(_) => Some((1, true, 0)),
            },
            _ = proc.room.notified(), if take == 0 => None,
            g = pidfd.readable(), if status.is_none() => {
                match g {
                    Ok(mut g) => match spawn::reap(pid, libc::WNOHANG) {
                        Ok(Some(st)) => {
                            status = Some(decode_status(st));
                            if timed_out.is_some() || ending {
                                kill_all(pid);
                            }
                            let now = tokio::time::Instant::now();
                            drain_quiet = Some(now + DRAIN_QUIET);
                            drain_max = now + DRAIN_MAX;
                        }
                        Ok(None) => g.clear_ready(),
                        Err(e) => {
                            tracing::error!(pid, error = %e, "waiting for a process failed");
                            status = Some(Termination::Exited(-1));
                            drain_quiet = Some(tokio::time::Instant::now());
                        }
                    },
                    Err(_) => status = Some(Termination::Exited(-1)),
                }
                None
            }
            _ = tokio::time::sleep_until(term_at.unwrap_or(far)), if term_at.is_some() && status.is_none() => {
                signal_group(pid, libc::SIGTERM);
                timed_out = Some(libc::SIGTERM);
                term_at = None;
                kill_at = Some(tokio::time::Instant::now() + KILL_GRACE);
                None
            }
            _ = tokio::time::sleep_until(kill_at.unwrap_or(far)), if kill_at.is_some() && status.is_none() => {
                kill_all(pid);
                if timed_out.is_some() {
                    timed_out = Some(libc::SIGKILL);
                }
                kill_at = None;
                None
            }
            _ = proc.ctl.woken() => {
                let orders = proc.ctl.take();
                if orders.kill {
                    kill_all(pid);
                    ending = true;
                }
                if let (Some(grace), false) = (orders.end, ending) {
                    ending = true;
                    signal_group(pid, libc::SIGTERM);
                    term_at = None;
                    kill_at = Some(tokio::time::Instant::now() + grace);
                }
                None
            }
            _ = tokio::time::sleep_until(drain_quiet.unwrap_or(far).min(drain_max)), if drain_quiet.is_some() => break,
        };
        if let Some((i, is_stderr, n)) = read {
            if n == 0 {
                srcs[i].open = false;
            } else {
                proc.lock().ring.push(&buf[..n], is_stderr);
                proc.bump();
                if drain_quiet.is_some() {
                    drain_quiet = Some(tokio::time::Instant::now() + DRAIN_QUIET);
                }
            }
        }
    }
    let term = status.unwrap_or(Termination::Exited(-1));
    // An OOM kill counts only when it took the leader (as for sessions).
    let oom = match (&cgroup, term) {
        (
            Some(g),
            Termination::Killed {
                signal: libc::SIGKILL,
                ..
            },
        ) => g.oom_killed(),
        _ => None,
    };
    if let Some(g) = cgroup {
        // Nothing of the process outlives its exit status; the empty group
        // is removed after.
        g.kill();
        tokio::spawn(g.remove());
    }
    finish(&proc, term, timed_out, oom, started);
}

fn finish(
    proc: &Proc,
    term: Termination,
    timed_out: Option<i32>,
    oom: Option<pb::OomKilled>,
    started: Instant,
) {
    let outcome = match (timed_out, oom) {
        (_, Some(o)) => pb::exec_outcome::Kind::OomKilled(o),
        (None, None) => term.outcome(),
        (Some(sent), None) => pb::exec_outcome::Kind::TimedOut(pb::TimedOut {
            signal: match term {
                Termination::Killed { signal, .. } => signal,
                Termination::Exited(_) => sent,
            },
        }),
    };
    {
        let mut s = proc.lock();
        s.exit = Some(pb::ExecExit {
            outcome: Some(pb::ExecOutcome {
                kind: Some(outcome),
            }),
            stdout_bytes: s.ring.stdout_total,
            stderr_bytes: s.ring.stderr_total,
            stdout_truncated: false,
            stderr_truncated: false,
            duration_us: started.elapsed().as_micros() as u64,
        });
        s.exited_at = Some(Instant::now());
    }
    tracing::debug!(pid = proc.pid, tag = %proc.tag, "process ended");
    proc.bump();
}
