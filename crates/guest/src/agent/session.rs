//! Running a spawned child to its end: output with flow control, stdin,
//! timeout, being ended from outside (connection closed, agent shutdown,
//! broken input), drain, outcome. Shared by streaming (`EXEC_START`) and
//! one-shot (`EXEC`) execs; they differ only in the [`Sink`].

use std::os::fd::{AsRawFd, OwnedFd};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hearth_proto::{pb, Message, MessageType};
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

pub use super::credit::Credit;
use super::exec::{decode_status, signal_group, Spawned, Termination};
use super::input::Input;
use super::lifecycle::Ctl;
use super::writer::Writer;
use super::{outbuf, spawn, splice, stdin};

/// Grace between SIGTERM and SIGKILL on timeout.
const KILL_GRACE: Duration = Duration::from_secs(2);
/// How long to keep draining pipes after the child exited.
const DRAIN: Duration = Duration::from_millis(200);
/// Largest output chunk.
pub const MAX_CHUNK: usize = 256 * 1024;

/// Where output goes.
pub enum Sink {
    /// `EXEC_STDOUT`/`EXEC_STDERR` frames for session `seq`. After the
    /// connection is gone output is drained and dropped so the child never blocks.
    Stream {
        writer: Writer,
        seq: u32,
        gone: bool,
    },
    /// Collected for an `EXEC_RESULT`.
    Collect { stdout: Vec<u8>, stderr: Vec<u8> },
}

/// What a session exchanges besides output: stdin, credit, control.
pub struct Io {
    /// Written to stdin first (`stdin` of the request).
    pub stdin: Bytes,
    /// `EXEC_STDIN` data that follows, when stdin stays open.
    pub more_stdin: Option<Arc<Input>>,
    /// Output credit granted by the host.
    pub credit: Arc<Credit>,
    pub ctl: Arc<Ctl>,
}

/// Output caps (`u64::MAX` = unlimited) and timeout.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_stdout: u64,
    pub max_stderr: u64,
    pub timeout: Option<Duration>,
}

/// What the terminal frame reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub outcome: pb::exec_outcome::Kind,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_us: u64,
}

impl Summary {
    pub fn exit_message(&self) -> Message {
        Message::ExecExit(pb::ExecExit {
            outcome: Some(pb::ExecOutcome {
                kind: Some(self.outcome.clone()),
            }),
            stdout_bytes: self.stdout_bytes,
            stderr_bytes: self.stderr_bytes,
            stdout_truncated: self.stdout_truncated,
            stderr_truncated: self.stderr_truncated,
            duration_us: self.duration_us,
        })
    }
}

struct Stream {
    /// Shared so the connection writer can splice from it.
    fd: AsyncFd<Arc<OwnedFd>>,
    open: bool,
    /// Next chunk index.
    index: u64,
    /// Everything the child wrote, kept or dropped.
    total: u64,
    /// Bytes kept (sent or collected).
    kept: u64,
    cap: u64,
    truncated: bool,
    is_stderr: bool,
    /// The pipe was enlarged (see `GROW_AFTER`).
    grown: bool,
}

impl Stream {
    fn new(fd: OwnedFd, cap: u64, is_stderr: bool) -> std::io::Result<Self> {
        Ok(Self {
            // SAFETY: the OwnedFd is moved into the AsyncFd (behind an Arc), so it
            // stays open and names the same pipe for the AsyncFd's whole life.
            fd: unsafe {
                AsyncFd::register_with_interest(Arc::new(fd), tokio::io::Interest::READABLE)
            }
            .map_err(|e| e.into_parts().1)?,
            open: true,
            index: 0,
            total: 0,
            kept: 0,
            cap,
            truncated: false,
            is_stderr,
            grown: false,
        })
    }

    fn over_cap(&self) -> bool {
        self.kept >= self.cap
    }
}

/// Waits until the child behind `pidfd` has exited, then reaps it.
async fn wait_exit(pidfd: &AsyncFd<OwnedFd>, pid: i32) -> std::io::Result<ExitStatus> {
    loop {
        let mut guard = pidfd.readable().await?;
        match spawn::reap(pid, libc::WNOHANG)? {
            Some(st) => return Ok(st),
            None => guard.clear_ready(),
        }
    }
}

fn never_registered(e: &std::io::Error, what: &str) -> Summary {
    Summary {
        outcome: pb::exec_outcome::Kind::NeverStarted(super::exec::never_started(
            pb::SpawnErrorKind::Other,
            e.raw_os_error().unwrap_or(0),
            format!("registering {what}: {}", hearth_proto::os_error_text(e)),
        )),
        stdout_bytes: 0,
        stderr_bytes: 0,
        stdout_truncated: false,
        stderr_truncated: false,
        duration_us: 0,
    }
}

/// Runs the child to its end and returns the summary for the terminal frame.
pub async fn run(
    sp: Spawned,
    io: Io,
    limits: Limits,
    sink: &mut Sink,
    chunk_max: usize,
) -> Summary {
    let Io {
        stdin: initial_stdin,
        more_stdin,
        credit,
        ctl,
    } = io;
    let Spawned {
        pid,
        pidfd,
        stdin,
        stdout,
        stderr,
        started,
        cgroup,
    } = sp;
    // SIGKILL for the process group and, with a cgroup, everything in it
    // (also what left the group with setsid).
    let kill_all = |pid: i32| {
        signal_group(pid, libc::SIGKILL);
        if let Some(g) = &cgroup {
            g.kill();
        }
    };
    let mut swept = false;
    let started = Instant::from_std(started);
    // SAFETY: the pidfd is moved into the AsyncFd, so it stays open and names
    // the same child for the AsyncFd's whole life.
    let registered =
        unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
            .map_err(|e| e.into_parts().1)
            .and_then(|p| {
                Ok((
                    p,
                    Stream::new(stdout, limits.max_stdout, false)?,
                    Stream::new(stderr, limits.max_stderr, true)?,
                ))
            });
    let (pidfd, mut streams) = match registered {
        Ok((p, o, e)) => (p, [o, e]),
        Err(e) => {
            // Without a reactor registration we cannot read or wait; do not
            // leave the child behind.
            tracing::error!(error = %e, "registering the child's descriptors failed");
            signal_group(pid, libc::SIGKILL);
            let _ = tokio::task::spawn_blocking(move || spawn::reap(pid, 0)).await;
            return never_registered(&e, "the child's descriptors");
        }
    };
    let credit_to = match sink {
        Sink::Stream { writer, seq, .. } => Some((writer.clone(), *seq)),
        Sink::Collect { .. } => None,
    };
    let stdin_task = stdin::spawn(stdin, initial_stdin, more_stdin, credit_to);
    let mut pool = outbuf::Pool::new(chunk_max, credit.available());
    let mut scratch: Vec<u8> = Vec::new();
    let far = started + Duration::from_secs(86400 * 365);
    let mut term_at = limits.timeout.map(|t| started + t);
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let mut timed_out: Option<i32> = None;
    // Ended from outside: the group is KILLed once the leader is gone.
    let mut ending = false;
    let mut status: Option<Termination> = None;
    let wait = wait_exit(&pidfd, pid);
    tokio::pin!(wait);

    loop {
        if status.is_some() && !streams[0].open && !streams[1].open {
            break;
        }
        if credit.is_closed() {
            if let Sink::Stream { gone, .. } = sink {
                *gone = true;
            }
        }
        let discard = matches!(sink, Sink::Stream { gone: true, .. });
        let collect = matches!(sink, Sink::Collect { .. });
        let has_credit = collect || discard || credit.available() > 0;
        let readable = |s: &Stream| s.open && (has_credit || s.over_cap());
        let want_credit = !has_credit && streams.iter().any(|s| s.open && !s.over_cap());
        let (r0, r1) = (readable(&streams[0]), readable(&streams[1]));
        let take0 = read_size(&streams[0], &credit, sink, chunk_max);
        let take1 = read_size(&streams[1], &credit, sink, chunk_max);
        let [s0, s1] = &mut streams;
        let mut done = false;
        let read: Option<(usize, Read)> = tokio::select! {
            g = s0.fd.readable(), if r0 && take0 > 0 => {
                read_ready(g, s0, take0, sink, &mut pool, &mut scratch).map(|r| (0, r))
            }
            g = s1.fd.readable(), if r1 && take1 > 0 => {
                read_ready(g, s1, take1, sink, &mut pool, &mut scratch).map(|r| (1, r))
            }
            _ = credit.notified(), if want_credit => None,
            st = &mut wait, if status.is_none() => {
                let t = match st {
                    Ok(st) => decode_status(st),
                    Err(e) => {
                        tracing::error!(pid, error = %e, "waiting for the child failed");
                        Termination::Exited(-1)
                    }
                };
                status = Some(t);
                if timed_out.is_some() || ending {
                    // A timeout or an ended session ends the whole group,
                    // grandchildren included.
                    kill_all(pid);
                }
                drain_until = Some(Instant::now() + DRAIN);
                None
            }
            _ = tokio::time::sleep_until(term_at.unwrap_or(far)), if term_at.is_some() && status.is_none() => {
                tracing::debug!(pid, "exec timed out, sending SIGTERM to the group");
                signal_group(pid, libc::SIGTERM);
                timed_out = Some(libc::SIGTERM);
                term_at = None;
                kill_at = Some(Instant::now() + KILL_GRACE);
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
            _ = ctl.woken() => {
                let orders = ctl.take();
                for report in &orders.reports {
                    if let Sink::Stream { writer, seq, gone } = sink {
                        if !*gone && writer.send(*seq, report).await.is_err() {
                            *gone = true;
                        }
                    }
                }
                if orders.kill {
                    kill_all(pid);
                    ending = true;
                    term_at = None;
                    kill_at = None;
                }
                if let (Some(grace), false) = (orders.end, ending) {
                    ending = true;
                    if status.is_none() {
                        tracing::debug!(pid, "ending the session: SIGTERM to the group");
                        signal_group(pid, libc::SIGTERM);
                        term_at = None;
                        kill_at = Some(Instant::now() + grace);
                    } else {
                        kill_all(pid);
                    }
                }
                None
            }
            _ = tokio::time::sleep_until(drain_until.unwrap_or(far)), if drain_until.is_some() => {
                // The leader is gone: what is left of its cgroup (background
                // jobs holding the pipes) goes too.
                if !swept {
                    if let Some(g) = &cgroup {
                        g.kill();
                        swept = true;
                    }
                }
                // Output already in a pipe is the child's, not a straggler's: it
                // waits for the host's credit instead of being dropped.
                if streams.iter().any(|s| s.open && !s.over_cap() && pending(s) > 0) {
                    drain_until = Some(Instant::now() + DRAIN);
                } else {
                    done = true;
                }
                None
            }
        };
        if done {
            break;
        }
        if let Some((i, r)) = read {
            deliver(&mut streams[i], r, sink, &mut pool, &credit).await;
        }
    }
    if let Some(t) = stdin_task {
        // Wait for it to stop, so no WINDOW_UPDATE of it follows EXEC_EXIT.
        t.abort();
        let _ = t.await;
    }
    let term = status.unwrap_or(Termination::Exited(-1));
    let oom = cgroup.as_ref().and_then(|g| g.oom_killed());
    if let Some(g) = cgroup {
        // Nothing of the exec outlives its terminal frame; removing the empty
        // group can happen after it.
        g.kill();
        tokio::spawn(g.remove());
    }
    let oom_signalled = matches!(
        term,
        Termination::Killed {
            signal: libc::SIGKILL,
            ..
        }
    );
    let outcome = match (oom, timed_out) {
        (Some(o), _) if oom_signalled => pb::exec_outcome::Kind::OomKilled(o),
        (_, timed_out) => match timed_out {
            Some(sent) => pb::exec_outcome::Kind::TimedOut(pb::TimedOut {
                signal: match term {
                    Termination::Killed { signal, .. } => signal,
                    Termination::Exited(_) => sent,
                },
            }),
            None => term.outcome(),
        },
    };
    let [o, e] = &streams;
    Summary {
        outcome,
        stdout_bytes: o.total,
        stderr_bytes: e.total,
        stdout_truncated: o.truncated,
        stderr_truncated: e.truncated,
        duration_us: started.elapsed().as_micros() as u64,
    }
}

/// Bytes waiting in the pipe (FIONREAD); 0 if unknown.
fn pending(s: &Stream) -> usize {
    splice::pipe_pending(s.fd.get_ref().as_raw_fd())
}

/// How many bytes to read next from `s` (0 = do not read now).
fn read_size(s: &Stream, credit: &Credit, sink: &Sink, chunk_max: usize) -> usize {
    if s.over_cap() {
        return chunk_max;
    }
    let room = s.cap - s.kept;
    let n = match sink {
        Sink::Stream { gone: true, .. } => chunk_max as u64,
        Sink::Stream { .. } => credit.available().min(room),
        Sink::Collect { .. } => room,
    };
    n.min(chunk_max as u64) as usize
}

/// A read at least this big (half the default pipe) enlarges the pipe.
const GROW_AFTER: usize = 32 * 1024;
/// Smallest read into a one-shot collection buffer; it grows with the output.
const COLLECT_MIN: usize = 16 * 1024;
/// Read size when output is dropped (over the cap, or the host is gone).
const DISCARD_READ: usize = 64 * 1024;

/// One non-blocking `read(2)` into the uninitialised tail of a buffer.
fn read_into(
    guard: &mut tokio::io::unix::AsyncFdReadyGuard<'_, Arc<OwnedFd>>,
    dst: &mut [std::mem::MaybeUninit<u8>],
) -> Option<std::io::Result<usize>> {
    let r = guard.try_io(|fd| {
        // SAFETY: read(2) writes at most `dst.len()` bytes into memory we own.
        let n = unsafe { libc::read(fd.get_ref().as_raw_fd(), dst.as_mut_ptr().cast(), dst.len()) };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    });
    match r {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => None,
        Ok(r) => Some(r),
        // Would block: `try_io` cleared the readiness; wait again.
        Err(_would_block) => None,
    }
}

/// What one read returned, and where the bytes went.
enum Read {
    /// Into the scratch buffer: output that is dropped.
    Dropped(std::io::Result<usize>),
    /// Appended to the one-shot collection (already accounted in its length).
    Collected(std::io::Result<usize>),
    /// Into a frame buffer after its headroom (and whether it is pooled).
    Frame(std::io::Result<usize>, BytesMut, bool),
    /// Left in the pipe for the writer to splice: this many bytes, all there.
    Splice(usize),
}

/// After the reactor reported `s` readable: reads at most `take` bytes
/// straight to where they go (a frame buffer, the collection, or a scratch
/// buffer when dropped). `None` when the pipe had nothing after all.
fn read_ready(
    guard: std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'_, Arc<OwnedFd>>>,
    s: &Stream,
    take: usize,
    sink: &mut Sink,
    pool: &mut outbuf::Pool,
    scratch: &mut Vec<u8>,
) -> Option<Read> {
    let mut guard = match guard {
        Ok(g) => g,
        Err(e) => return Some(Read::Dropped(Err(e))),
    };
    if s.over_cap() || matches!(sink, Sink::Stream { gone: true, .. }) {
        if scratch.capacity() < DISCARD_READ {
            *scratch = Vec::with_capacity(DISCARD_READ);
        }
        let n = take.min(scratch.capacity());
        return read_into(&mut guard, &mut scratch.spare_capacity_mut()[..n]).map(Read::Dropped);
    }
    match sink {
        Sink::Collect { stdout, stderr } => {
            let dst = if s.is_stderr { stderr } else { stdout };
            let want = take.min(COLLECT_MIN.max(dst.len()));
            dst.reserve(want);
            let r = read_into(&mut guard, &mut dst.spare_capacity_mut()[..want])?;
            if let Ok(n) = r {
                // SAFETY: read(2) initialised the `n` bytes after the old length.
                unsafe { dst.set_len(dst.len() + n) };
            }
            Some(Read::Collected(r))
        }
        Sink::Stream { writer, .. } => {
            if writer.can_splice() {
                // Only what is already in the pipe, so the splice never waits
                // for the child and the frame length is known up front. An
                // empty pipe (end of file, or a spurious wakeup) takes the
                // read below, which sees it.
                let n = take.min(pending(s));
                if n > 0 {
                    return Some(Read::Splice(n));
                }
            }
            let (mut buf, pooled) = pool.get(take);
            let room = buf.spare_capacity_mut();
            let n = take.min(room.len());
            match read_into(&mut guard, &mut room[..n]) {
                Some(r) => Some(Read::Frame(r, buf, pooled)),
                None => {
                    pool.put(buf, pooled);
                    None
                }
            }
        }
    }
}

/// Accounts for what one read returned and forwards it.
async fn deliver(
    s: &mut Stream,
    r: Read,
    sink: &mut Sink,
    pool: &mut outbuf::Pool,
    credit: &Credit,
) {
    let (r, buf) = match r {
        Read::Dropped(r) | Read::Collected(r) => (r, None),
        Read::Frame(r, buf, pooled) => (r, Some((buf, pooled))),
        Read::Splice(n) => return deliver_spliced(s, n, sink, credit).await,
    };
    let n = match r {
        Ok(0) => {
            s.open = false;
            if let Some((b, pooled)) = buf {
                pool.put(b, pooled);
            }
            return;
        }
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(error = %e, "reading child output failed");
            s.open = false;
            if let Some((b, pooled)) = buf {
                pool.put(b, pooled);
            }
            return;
        }
    };
    s.total += n as u64;
    if !s.grown && n >= GROW_AFTER {
        // The child writes a lot: a bigger pipe lets it run ahead of us.
        super::exec::grow_pipe(s.fd.get_ref());
        s.grown = true;
    }
    if s.over_cap() {
        s.truncated = true;
        if let Some((b, pooled)) = buf {
            pool.put(b, pooled);
        }
        return;
    }
    s.kept += n as u64;
    let (mut buf, pooled, writer, seq, gone) = match (buf, sink) {
        (Some((buf, pooled)), Sink::Stream { writer, seq, gone }) => {
            (buf, pooled, writer, seq, gone)
        }
        (Some((b, pooled)), Sink::Collect { .. }) => return pool.put(b, pooled),
        (None, _) => return,
    };
    // SAFETY: read(2) initialised the `n` bytes after the headroom.
    unsafe { buf.set_len(outbuf::HEADROOM + n) };
    credit.take(n as u64);
    let kind = if s.is_stderr {
        MessageType::ExecStderr
    } else {
        MessageType::ExecStdout
    };
    let wire = outbuf::finish_chunk(&mut buf, kind as u8, *seq, s.index);
    s.index += 1;
    pool.put(buf, pooled);
    if writer.send_wire(wire).await.is_err() {
        *gone = true;
    }
}

/// Accounts for `n` bytes left in the pipe (within credit and cap) and has
/// the writer send them as the stream's next chunk, spliced pipe → socket.
async fn deliver_spliced(s: &mut Stream, n: usize, sink: &mut Sink, credit: &Credit) {
    let Sink::Stream { writer, seq, gone } = sink else {
        return;
    };
    s.total += n as u64;
    s.kept += n as u64;
    if !s.grown && n >= GROW_AFTER {
        super::exec::grow_pipe(s.fd.get_ref());
        s.grown = true;
    }
    credit.take(n as u64);
    let kind = if s.is_stderr {
        MessageType::ExecStderr
    } else {
        MessageType::ExecStdout
    };
    let (head, h) = outbuf::chunk_header(kind as u8, *seq, s.index, n);
    s.index += 1;
    let pipe = s.fd.get_ref().clone();
    if writer
        .send_splice(Bytes::copy_from_slice(&head[..h]), pipe, n)
        .await
        .is_err()
    {
        *gone = true;
    }
}
