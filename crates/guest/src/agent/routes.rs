//! The requests in flight on one connection, by seq, and where the host's
//! stream frames for them go (`EXEC_STDIN`, `EXEC_SIGNAL`, `WINDOW_UPDATE`,
//! `FILE_DATA`).
//!
//! Errors about a frame for a live request go through that request, so they
//! reach the host in order with its other frames: for an exec session as a
//! report before its `EXEC_EXIT` (the session goes on, unless its stdin was
//! lost); for `FILE_WRITE` and `FILE_READ` as their terminal `ERROR`. Stream
//! frames for a seq that ended recently are dropped silently (they crossed
//! the end on the wire); for any other seq the host is told, rate-limited,
//! with `UNKNOWN_SESSION`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hearth_proto::message::error;
use hearth_proto::{pb, Message, MessageType};

use super::credit::Credit;
use super::exec;
use super::input::{Input, Pushed};
use super::lifecycle::Ctl;
use super::writer::Writer;

/// Ended seqs remembered per connection, for dropping late stream frames.
const RECENT: usize = 64;
/// `UNKNOWN_SESSION` answers per connection and second; more are dropped.
const UNKNOWN_PER_SECOND: u32 = 10;

/// Where stream frames for an in-flight request go.
pub enum Route {
    Exec {
        ctl: Arc<Ctl>,
        credit: Arc<Credit>,
        /// The process group; 0 for a one-shot `EXEC`, which takes no stream
        /// frames.
        pgid: i32,
        stdin: Option<Arc<Input>>,
        /// The pty master, for `PTY_RESIZE` (pty sessions and attaches).
        pty: Option<Arc<std::os::fd::OwnedFd>>,
    },
    FileRead(Arc<Credit>),
    FileWrite(Arc<Input>),
    /// A `WATCH` stream: its output credit.
    Watch(Arc<Credit>),
    /// A `PORT_OPEN` stream: output credit and the host's `PORT_DATA` queue.
    Port {
        credit: Arc<Credit>,
        input: Arc<Input>,
    },
}

#[derive(Default)]
struct Inner {
    map: HashMap<u32, Route>,
    recent: VecDeque<u32>,
}

/// In-flight requests of one connection, by seq. A request removes its entry
/// before sending its terminal frame, so the host may reuse the seq at once.
#[derive(Clone, Default)]
pub struct Routes(Arc<Mutex<Inner>>);

impl Routes {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned map only means a task panicked mid-insert; the map itself is fine.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts unless `seq` is in flight; returns whether it was inserted.
    pub fn insert(&self, seq: u32, route: Route) -> bool {
        let mut g = self.lock();
        if g.map.contains_key(&seq) {
            return false;
        }
        g.map.insert(seq, route);
        g.recent.retain(|&s| s != seq);
        true
    }

    pub fn remove(&self, seq: u32) {
        let mut g = self.lock();
        if g.map.remove(&seq).is_some() {
            g.recent.push_back(seq);
            if g.recent.len() > RECENT {
                g.recent.pop_front();
            }
        }
    }

    /// The output credit of stream `seq` (exec, file read, watch, port), if one is
    /// in flight (for the reader thread's fast path of `WINDOW_UPDATE`).
    pub fn credit(&self, seq: u32) -> Option<Arc<Credit>> {
        match self.lock().map.get(&seq)? {
            Route::Exec { credit, .. }
            | Route::FileRead(credit)
            | Route::Watch(credit)
            | Route::Port { credit, .. } => Some(credit.clone()),
            Route::FileWrite(_) => None,
        }
    }

    pub fn contains(&self, seq: u32) -> bool {
        self.lock().map.contains_key(&seq)
    }

    /// Process groups of the exec sessions and attaches in flight.
    pub fn exec_pids(&self) -> Vec<u32> {
        self.lock()
            .map
            .values()
            .filter_map(|r| match r {
                Route::Exec { pgid, .. } if *pgid > 0 => Some(*pgid as u32),
                _ => None,
            })
            .collect()
    }

    /// The connection closed: ends every request still in flight.
    pub fn end_all(&self, grace: Duration) {
        let routes: Vec<Route> = self.lock().map.drain().map(|(_, r)| r).collect();
        for route in routes {
            match route {
                Route::Exec { ctl, credit, .. } => {
                    credit.close();
                    ctl.end(grace);
                }
                Route::FileRead(credit) | Route::Watch(credit) => credit.close(),
                Route::FileWrite(input) => input.hang_up(),
                Route::Port { credit, input } => {
                    credit.close();
                    input.hang_up();
                }
            }
        }
    }

    /// Delivers `err` about a frame with `seq` that the agent refused: through
    /// the live request with that seq, or straight to the host. `kind` is the
    /// refused frame's type byte.
    pub async fn refuse(&self, writer: &Writer, seq: u32, kind: u8, err: Message) {
        let lost_stdin = kind == MessageType::ExecStdin as u8;
        let direct = {
            let g = self.lock();
            match g.map.get(&seq) {
                // A one-shot EXEC has one answer, so nothing can go through it.
                Some(Route::Exec { pgid: 0, .. }) => Some(err),
                Some(Route::Exec { ctl, stdin, .. }) => {
                    match (lost_stdin, stdin) {
                        // The child's input has a hole: do not let it go on.
                        (true, Some(input)) => {
                            input.abort(err.clone());
                            ctl.kill(err);
                        }
                        _ => ctl.report(err),
                    }
                    None
                }
                Some(Route::FileWrite(input)) => {
                    input.abort(err);
                    None
                }
                Some(Route::FileRead(credit)) => {
                    credit.abort(err);
                    None
                }
                // The bytes to the guest socket have a hole: end that stream.
                Some(Route::Port { input, .. }) if kind == MessageType::PortData as u8 => {
                    input.abort(err);
                    None
                }
                // Anything else refused for a watch or port stream is a
                // report; the stream goes on.
                Some(Route::Watch(_) | Route::Port { .. }) => Some(err),
                None => Some(err),
            }
        };
        if let Some(err) = direct {
            let _ = writer.send(seq, &err).await;
        }
    }
}

/// Routes the host's stream frames of one connection; owned by its reader.
pub struct StreamFrames {
    routes: Routes,
    writer: Writer,
    unknown: RateLimit,
}

impl StreamFrames {
    pub fn new(routes: Routes, writer: Writer) -> Self {
        StreamFrames {
            routes,
            writer,
            unknown: RateLimit::new(UNKNOWN_PER_SECOND),
        }
    }

    /// What a stream frame for `seq` meets: `Ok` with what `pick` took from
    /// the route, or `Err(true)` for a route of another kind, `Err(false)`
    /// for none. The lock is released before the caller waits on anything.
    fn lookup<T>(&self, seq: u32, pick: impl FnOnce(&Route) -> Option<T>) -> Result<T, bool> {
        match self.routes.lock().map.get(&seq) {
            Some(r) => pick(r).ok_or(true),
            None => Err(false),
        }
    }

    async fn missed(&mut self, seq: u32, kind: MessageType, wrong_kind: bool) {
        if wrong_kind {
            self.wrong_kind(seq, kind).await
        } else {
            self.unknown(seq, kind).await
        }
    }

    pub async fn stdin(&mut self, seq: u32, d: pb::StdinData) {
        let found = self.lookup(seq, |r| match r {
            Route::Exec { stdin, ctl, .. } => Some((stdin.clone(), ctl.clone())),
            _ => None,
        });
        let (input, ctl) = match found {
            Ok(v) => v,
            Err(wrong) => return self.missed(seq, MessageType::ExecStdin, wrong).await,
        };
        // Stdin that is closed (or was never open) takes nothing.
        let Some(input) = input else { return };
        if !input.credited() {
            input.room().await;
        }
        if let Pushed::Overrun { len, credit } = input.push(d.data, d.eof) {
            let err = overrun(seq, "EXEC_STDIN", len, credit);
            input.abort(err.clone());
            ctl.kill(err);
        }
    }

    pub async fn file_data(&mut self, seq: u32, d: pb::FileData) {
        let found = self.lookup(seq, |r| match r {
            Route::FileWrite(input) => Some(input.clone()),
            _ => None,
        });
        let input = match found {
            Ok(v) => v,
            Err(wrong) => return self.missed(seq, MessageType::FileData, wrong).await,
        };
        if !input.credited() {
            input.room().await;
        }
        if let Pushed::Overrun { len, credit } = input.push(d.data, d.eof) {
            input.abort(overrun(seq, "FILE_DATA", len, credit));
        }
    }

    pub async fn signal(&mut self, seq: u32, s: pb::ExecSignal) {
        let found = self.lookup(seq, |r| match r {
            Route::Exec { pgid, .. } => Some(*pgid),
            _ => None,
        });
        let pgid = match found {
            Ok(v) => v,
            Err(wrong) => return self.missed(seq, MessageType::ExecSignal, wrong).await,
        };
        if pgid > 0 {
            exec::signal_group(pgid, s.signal);
        }
    }

    /// `PTY_RESIZE`: `TIOCSWINSZ` on the session's pty; refused (as a
    /// report, the session goes on) when it has none.
    pub async fn pty_resize(&mut self, seq: u32, r: pb::PtyResize) {
        let found = self.lookup(seq, |r| match r {
            Route::Exec { pty, ctl, .. } => Some((pty.clone(), ctl.clone())),
            _ => None,
        });
        let (pty, ctl) = match found {
            Ok(v) => v,
            Err(wrong) => return self.missed(seq, MessageType::PtyResize, wrong).await,
        };
        let failed = match pty {
            None => Some(error(
                pb::ErrorCode::InvalidArgument,
                format!("seq {seq} has no pty to resize"),
                0,
            )),
            Some(fd) => super::pty::resize(fd.as_ref(), r.rows, r.cols)
                .err()
                .map(|e| {
                    error(
                        pb::ErrorCode::Io,
                        format!(
                            "resizing the pty of seq {seq}: {}",
                            hearth_proto::os_error_text(&e)
                        ),
                        e.raw_os_error().unwrap_or(0),
                    )
                }),
        };
        if let Some(err) = failed {
            ctl.report(err);
        }
    }

    pub async fn window_update(&mut self, seq: u32, w: pb::WindowUpdate) {
        let found = self.lookup(seq, |r| match r {
            Route::Exec { credit, .. }
            | Route::FileRead(credit)
            | Route::Watch(credit)
            | Route::Port { credit, .. } => Some(credit.clone()),
            Route::FileWrite(_) => None,
        });
        let credit = match found {
            Ok(v) => v,
            Err(wrong) => return self.missed(seq, MessageType::WindowUpdate, wrong).await,
        };
        credit.add(w.bytes as u64);
    }

    /// `PORT_DATA` for a port stream: queued under its input credit.
    pub async fn port_data(&mut self, seq: u32, d: pb::PortData) {
        let found = self.lookup(seq, |r| match r {
            Route::Port { input, .. } => Some(input.clone()),
            _ => None,
        });
        let input = match found {
            Ok(v) => v,
            Err(wrong) => return self.missed(seq, MessageType::PortData, wrong).await,
        };
        if !input.credited() {
            input.room().await;
        }
        if let Pushed::Overrun { len, credit } = input.push(d.data, d.eof) {
            input.abort(overrun(seq, "PORT_DATA", len, credit));
        }
    }

    /// `STREAM_CLOSE`: ends a watch or port stream; `end` is its `STREAM_END`.
    pub async fn stream_close(&mut self, seq: u32, end: Message) {
        let found = self.lookup(seq, |r| match r {
            Route::Watch(c) => Some((c.clone(), None)),
            Route::Port { credit, input } => Some((credit.clone(), Some(input.clone()))),
            _ => None,
        });
        match found {
            Ok((credit, input)) => {
                if let Some(input) = input {
                    input.abort(end.clone());
                }
                credit.abort(end);
            }
            Err(wrong) => self.missed(seq, MessageType::StreamClose, wrong).await,
        }
    }

    /// A stream frame for a request of another kind (e.g. `FILE_DATA` for an
    /// exec session): refused through that request.
    async fn wrong_kind(&self, seq: u32, kind: MessageType) {
        let msg = format!("seq {seq} is in flight but takes no {}", kind.name());
        let err = error(pb::ErrorCode::InvalidArgument, msg, 0);
        self.routes.refuse(&self.writer, seq, kind as u8, err).await;
    }

    /// A stream frame for a seq that is not in flight.
    async fn unknown(&mut self, seq: u32, kind: MessageType) {
        let recent = self.routes.lock().recent.contains(&seq);
        if recent {
            tracing::trace!(
                seq,
                kind = kind.name(),
                "frame for a request that just ended"
            );
            return;
        }
        if !self.unknown.allow() {
            return;
        }
        let msg = format!(
            "no request in flight with seq {seq}; {} dropped",
            kind.name()
        );
        let err = error(pb::ErrorCode::UnknownSession, msg, 0);
        let _ = self.writer.send(seq, &err).await;
    }
}

fn overrun(seq: u32, what: &str, len: usize, credit: u64) -> Message {
    error(
        pb::ErrorCode::FlowControl,
        format!("seq {seq}: {what} of {len} bytes exceeds the {credit} bytes of input credit left"),
        0,
    )
}

/// At most `per_second` events per second; the rest are counted and logged
/// once per second at most.
struct RateLimit {
    per_second: u32,
    window: Instant,
    used: u32,
    dropped: u64,
}

impl RateLimit {
    fn new(per_second: u32) -> Self {
        RateLimit {
            per_second,
            window: Instant::now(),
            used: 0,
            dropped: 0,
        }
    }

    fn allow(&mut self) -> bool {
        if self.window.elapsed() >= Duration::from_secs(1) {
            if self.dropped > 0 {
                tracing::debug!(dropped = self.dropped, "UNKNOWN_SESSION answers dropped");
            }
            self.window = Instant::now();
            self.used = 0;
            self.dropped = 0;
        }
        if self.used < self.per_second {
            self.used += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_allows_a_burst_then_drops() {
        let mut r = RateLimit::new(3);
        let allowed = (0..10).filter(|_| r.allow()).count();
        assert_eq!(allowed, 3);
        r.window -= Duration::from_secs(2);
        assert!(r.allow(), "a new second allows again");
    }

    #[test]
    fn removed_seqs_are_remembered_until_reused() {
        let routes = Routes::default();
        assert!(routes.insert(5, Route::FileRead(Credit::new(1))));
        assert!(!routes.insert(5, Route::FileRead(Credit::new(1))));
        routes.remove(5);
        assert!(routes.lock().recent.contains(&5));
        assert!(routes.insert(5, Route::FileRead(Credit::new(1))));
        assert!(!routes.lock().recent.contains(&5));
        for s in 100..100 + RECENT as u32 + 1 {
            routes.insert(s, Route::FileRead(Credit::new(1)));
            routes.remove(s);
        }
        assert_eq!(routes.lock().recent.len(), RECENT);
    }
}
