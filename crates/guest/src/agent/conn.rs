//! One connection: send `READY`, read frames, dispatch requests, hand stream
//! frames (stdin, signals, window updates, file chunks) to [`StreamFrames`].
//!
//! Frames are read on the connection's own thread ([`liveness`]), which also
//! answers pings, so a busy executor never delays them. The dispatcher never
//! waits on a child or the disk: requests run in their own tasks and answer
//! through the connection's [`Writer`]. When the connection closes, every request
//! still in flight is ended (exec sessions: TERM, [`CONN_GRACE`], KILL).

use std::sync::Arc;
use std::time::Duration;

use std::os::fd::AsRawFd;

use hearth_proto::message::error;
use hearth_proto::{pb, Frame, Message, VERSION};

use super::credit::Credit;
use super::input::Input;
use super::lifecycle::{Ctl, Registered};
use super::routes::{Route, Routes, StreamFrames};
use super::session::{self, Io, Limits, Sink};
use super::splice::ConnWrite;
use super::writer::Writer;
use super::{
    attach, detach, exec, file_read, file_write, files, fs_freeze, liveness, logbuf, oneshot, port,
    process_ops, pty_session, restored, stats, stdin_close, sysinfo, watch, Shared,
};

/// Default output credit of a streaming exec.
const DEFAULT_EXEC_WINDOW: u64 = 256 * 1024;
/// Grace between TERM and KILL for the sessions of a closed connection.
pub const CONN_GRACE: Duration = Duration::from_secs(2);

/// An accepted connection, split into its read and write sides.
pub trait Conn: AsRawFd + Send + 'static {
    type Read: Send + 'static;
    type Write: ConnWrite + 'static;
    fn into_halves(self) -> (Self::Read, Self::Write);
}

impl Conn for tokio::net::UnixStream {
    type Read = tokio::net::unix::OwnedReadHalf;
    type Write = tokio::net::unix::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

impl Conn for tokio_vsock::VsockStream {
    type Read = tokio_vsock::OwnedReadHalf;
    type Write = tokio_vsock::OwnedWriteHalf;
    fn into_halves(self) -> (Self::Read, Self::Write) {
        self.into_split()
    }
}

/// Serves one accepted connection until the host closes it or breaks framing.
/// Frames are read (and pings answered) by a thread of their own
/// ([`liveness`]); this task dispatches the rest.
pub async fn serve<S: Conn>(stream: S, shared: Arc<Shared>) {
    let fd = stream.as_raw_fd();
    let (rd, wr) = stream.into_halves();
    let writer = Writer::spawn(wr, shared.max_frame_len);
    if writer
        .send(0, &Message::Ready(shared.ready.clone()))
        .await
        .is_err()
    {
        return;
    }
    let routes = Routes::default();
    let conn = shared.restore.register(fd);
    let (closed_tx, closed) = tokio::sync::watch::channel(false);
    // The thread holds the read half, which keeps `fd` open while it reads.
    let spawned = liveness::spawn(fd, rd, shared.max_frame_len, writer.clone(), routes.clone());
    let mut events = match spawned {
        Ok(rx) => rx,
        Err(e) => {
            tracing::error!(error = %e, "starting the connection's reader thread failed");
            let err = error(
                pb::ErrorCode::Internal,
                format!("agent cannot serve: {e}"),
                0,
            );
            let _ = writer.send(0, &err).await;
            writer.close().await;
            return;
        }
    };
    let mut cx = Cx {
        closed,
        streams: StreamFrames::new(routes.clone(), writer.clone()),
        writer: writer.clone(),
        routes: routes.clone(),
        shared,
        conn_id: conn.id,
    };
    while let Some(ev) = events.recv().await {
        match ev {
            liveness::Event::Frame(frame) => dispatch(frame, &mut cx).await,
            liveness::Event::Closed => break,
            liveness::Event::Bad(e) => {
                tracing::warn!(error = %e, "framing error, closing the connection");
                let _ = writer
                    .send(0, &error(pb::ErrorCode::BadFrame, e.to_string(), 0))
                    .await;
                writer.close().await;
                break;
            }
        }
    }
    // Nobody is left to read answers: sessions are ended, their output
    // drained and dropped; chunked writes are discarded; reads stop.
    restored::connection_closed(&cx.shared, &routes, conn.generation);
    routes.end_all(CONN_GRACE);
    let _ = closed_tx.send(true);
}

/// What the reader of one connection works with.
struct Cx {
    /// Turns true once the connection is gone (ends followers).
    closed: tokio::sync::watch::Receiver<bool>,
    writer: Writer,
    routes: Routes,
    streams: StreamFrames,
    shared: Arc<Shared>,
    /// This connection in `Shared::restore`.
    conn_id: u64,
}

async fn reply(writer: &Writer, seq: u32, msg: Message) {
    let _ = writer.send(seq, &msg).await;
}

async fn dispatch(frame: Frame, cx: &mut Cx) {
    let seq = frame.seq;
    let msg = match Message::from_frame(&frame) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(seq, error = %e, "refusing frame");
            let err = error(e.code(), e.to_string(), 0);
            return cx.routes.refuse(&cx.writer, seq, frame.kind, err).await;
        }
    };
    let writer = &cx.writer;
    match msg {
        Message::Ping(p) => {
            let pong = Message::Pong(pb::Pong {
                nonce: p.nonce,
                agent_version: VERSION.to_string(),
            });
            let _ = writer.send(seq, &pong).await;
        }
        Message::Exec(req) => start_oneshot(req, seq, cx).await,
        Message::ExecStart(req) => start_session(req, seq, cx).await,
        Message::ExecStdin(d) => cx.streams.stdin(seq, d).await,
        Message::ExecSignal(s) => cx.streams.signal(seq, s).await,
        Message::WindowUpdate(w) => cx.streams.window_update(seq, w).await,
        Message::FileData(d) => cx.streams.file_data(seq, d).await,
        Message::FileWrite(req) => {
            let window = req.input_credit.then_some(cx.shared.input_window as u64);
            let input = Input::new(window);
            if !cx.routes.insert(seq, Route::FileWrite(input.clone())) {
                return refuse_duplicate(seq, frame.kind, cx).await;
            }
            tokio::spawn(file_write::run_chunked(
                req,
                seq,
                input,
                writer.clone(),
                cx.routes.clone(),
            ));
        }
        Message::WriteFile(req) => {
            tokio::spawn(file_write::run_whole(req, seq, writer.clone()));
        }
        Message::FileRead(req) => {
            let window = if req.window == 0 {
                file_read::DEFAULT_WINDOW
            } else {
                req.window as u64
            };
            let credit = Credit::new(window);
            if !cx.routes.insert(seq, Route::FileRead(credit.clone())) {
                return refuse_duplicate(seq, frame.kind, cx).await;
            }
            tokio::spawn(file_read::run(
                req,
                seq,
                credit,
                writer.clone(),
                cx.routes.clone(),
            ));
        }
        m @ (Message::Stat(_)
        | Message::ListDir(_)
        | Message::Mkdir(_)
        | Message::Remove(_)
        | Message::Rename(_)) => {
            let writer = writer.clone();
            tokio::spawn(async move {
                let max = writer.max_frame_len();
                let answer = tokio::task::spawn_blocking(move || files::handle(m, max))
                    .await
                    .unwrap_or_else(|e| {
                        error(pb::ErrorCode::Internal, format!("file task failed: {e}"), 0)
                    });
                let _ = writer.send(seq, &answer).await;
            });
        }
        Message::SystemInfo(_) => {
            let (writer, shared) = (writer.clone(), cx.shared.clone());
            tokio::spawn(async move {
                let answer = tokio::task::spawn_blocking(sysinfo::collect)
                    .await
                    .map(|r| Message::SystemInfoResult(restored::annotate(r, &shared)))
                    .unwrap_or_else(|e| {
                        error(
                            pb::ErrorCode::Internal,
                            format!("system info failed: {e}"),
                            0,
                        )
                    });
                let _ = writer.send(seq, &answer).await;
            });
        }
        Message::Shutdown(s) => shutdown(s, seq, cx).await,
        Message::AgentLog(req) => {
            tokio::spawn(logbuf::serve(req, seq, writer.clone(), cx.closed.clone()));
        }
        Message::PtyResize(r) => cx.streams.pty_resize(seq, r).await,
        Message::ProcessList(_) => reply(writer, seq, process_ops::list(&cx.shared.procs)).await,
        Message::ProcessKill(k) => {
            reply(writer, seq, process_ops::kill(&cx.shared.procs, &k)).await
        }
        Message::ProcessStdinClose(c) => {
            reply(writer, seq, stdin_close::close(&cx.shared.procs, &c)).await
        }
        Message::Attach(req) => start_attach(req, seq, cx).await,
        Message::Stats(_) => stats::answer(seq, writer.clone()),
        Message::Watch(req) => {
            let window = match req.window {
                0 => watch::DEFAULT_WINDOW,
                w => w as u64,
            };
            let credit = Credit::new(window);
            if !cx.routes.insert(seq, Route::Watch(credit.clone())) {
                return refuse_duplicate(seq, frame.kind, cx).await;
            }
            let (w, r) = (writer.clone(), cx.routes.clone());
            tokio::spawn(watch::run(req, seq, credit, w, r));
        }
        Message::PortOpen(req) => {
            let window = match req.window {
                0 => port::DEFAULT_WINDOW,
                w => w as u64,
            };
            let credit = Credit::new(window);
            let input = Input::new(req.input_credit.then_some(cx.shared.input_window as u64));
            let route = Route::Port {
                credit: credit.clone(),
                input: input.clone(),
            };
            if !cx.routes.insert(seq, route) {
                return refuse_duplicate(seq, frame.kind, cx).await;
            }
            let (w, r) = (writer.clone(), cx.routes.clone());
            tokio::spawn(port::run(req, seq, credit, input, w, r));
        }
        Message::PortData(d) => cx.streams.port_data(seq, d).await,
        Message::StreamClose(_) => cx.streams.stream_close(seq, watch::closed_by_host()).await,
        Message::GuestRestored(req) => {
            restored::handle(req, seq, writer.clone(), cx.shared.clone(), cx.conn_id)
        }
        Message::FsFreeze(req) => fs_freeze::handle(req, seq, writer.clone(), cx.shared.clone()),
        other @ (Message::Ready(_)
        | Message::Pong(_)
        | Message::ExecResult(_)
        | Message::WriteFileResult(_)
        | Message::ExecStarted(_)
        | Message::ExecStdout(_)
        | Message::ExecStderr(_)
        | Message::ExecExit(_)
        | Message::StatResult(_)
        | Message::ListDirResult(_)
        | Message::Ok(_)
        | Message::SystemInfoResult(_)
        | Message::AgentLogLines(_)
        | Message::ProcessListResult(_)
        | Message::Attached(_)
        | Message::StatsResult(_)
        | Message::WatchEvent(_)
        | Message::PortOpened(_)
        | Message::StreamEnd(_)
        | Message::Error(_)) => {
            let msg = format!(
                "{} is not a request the agent serves",
                other.message_type().name()
            );
            let err = error(pb::ErrorCode::InvalidArgument, msg, 0);
            cx.routes.refuse(writer, seq, frame.kind, err).await;
        }
    }
}

/// A request that opens a stream reused the seq of one in flight.
async fn refuse_duplicate(seq: u32, kind: u8, cx: &Cx) {
    let err = error(
        pb::ErrorCode::DuplicateSeq,
        format!("seq {seq} is already in flight"),
        0,
    );
    cx.routes.refuse(&cx.writer, seq, kind, err).await;
}

/// Lists a new exec session with the agent, unless it is shutting down
/// (then the host is told, and `None`).
async fn register(seq: u32, ctl: &Arc<Ctl>, cx: &Cx) -> Option<Registered> {
    match cx.shared.sessions.register(ctl.clone()) {
        Ok(r) => Some(r),
        Err(e) => {
            let err = error(pb::ErrorCode::ShuttingDown, e.to_string(), 0);
            reply(&cx.writer, seq, err).await;
            None
        }
    }
}

async fn start_oneshot(req: pb::Exec, seq: u32, cx: &Cx) {
    if cx.routes.contains(seq) {
        return refuse_duplicate(seq, hearth_proto::MessageType::Exec as u8, cx).await;
    }
    let ctl = Ctl::new();
    let Some(registered) = register(seq, &ctl, cx).await else {
        return;
    };
    cx.routes.insert(
        seq,
        Route::Exec {
            ctl: ctl.clone(),
            credit: Credit::new(u64::MAX),
            pgid: 0,
            stdin: None,
            pty: None,
        },
    );
    tokio::spawn(oneshot::run(
        req,
        seq,
        ctl,
        cx.writer.clone(),
        cx.routes.clone(),
        registered,
    ));
}

async fn start_session(req: pb::ExecStart, seq: u32, cx: &Cx) {
    if cx.routes.contains(seq) {
        return refuse_duplicate(seq, hearth_proto::MessageType::ExecStart as u8, cx).await;
    }
    if req.detach {
        let (writer, shared) = (cx.writer.clone(), cx.shared.clone());
        tokio::spawn(async move { detach::start(req, seq, &writer, &shared).await });
        return;
    }
    let ctl = Ctl::new();
    let Some(registered) = register(seq, &ctl, cx).await else {
        return;
    };
    let writer = &cx.writer;
    if req.pty.is_some() {
        let params = pty_session::Params {
            window: if req.window == 0 {
                DEFAULT_EXEC_WINDOW
            } else {
                req.window as u64
            },
            input_window: req.input_credit.then_some(cx.shared.input_window as u64),
            chunk_max: chunk_max(writer.max_frame_len()),
        };
        pty_session::start(
            req,
            seq,
            writer.clone(),
            cx.routes.clone(),
            registered,
            ctl,
            params,
        );
        return;
    }
    let spawned = exec::prepare(
        &req.argv,
        &req.env,
        &req.cwd,
        req.user.as_ref(),
        req.clear_env,
    )
    .and_then(|spec| {
        let want_stdin = req.stdin_open || !req.stdin.is_empty();
        exec::spawn_limited(&spec, want_stdin, req.limits.as_ref())
    });
    let spawned = match spawned {
        Ok(s) => s,
        Err(ns) => {
            tracing::debug!(seq, argv0 = %req.argv[0], message = %ns.message, "exec never started");
            let exit = session::Summary {
                outcome: pb::exec_outcome::Kind::NeverStarted(ns),
                stdout_bytes: 0,
                stderr_bytes: 0,
                stdout_truncated: false,
                stderr_truncated: false,
                duration_us: 0,
            };
            let _ = writer.send_data(seq, &exit.exit_message()).await;
            return;
        }
    };
    let window = if req.window == 0 {
        DEFAULT_EXEC_WINDOW
    } else {
        req.window as u64
    };
    let credit = Credit::new(window);
    let input_window = req.input_credit.then_some(cx.shared.input_window as u64);
    let stdin = req.stdin_open.then(|| Input::new(input_window));
    let pid = spawned.pid;
    cx.routes.insert(
        seq,
        Route::Exec {
            ctl: ctl.clone(),
            credit: credit.clone(),
            pgid: pid,
            stdin: stdin.clone(),
            pty: None,
        },
    );
    let cap = |v: u64| if v == 0 { u64::MAX } else { v };
    let limits = Limits {
        max_stdout: cap(req.max_stdout_bytes),
        max_stderr: cap(req.max_stderr_bytes),
        timeout: (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms)),
    };
    let chunk_max = chunk_max(writer.max_frame_len());
    let started = Message::ExecStarted(pb::ExecStarted { pid: pid as u32 });
    let writer = writer.clone();
    let routes = cx.routes.clone();
    tokio::spawn(async move {
        let _registered = registered;
        // Through `send`, so WINDOW_UPDATEs and reports (also `send`) and
        // output (`send_data`) all follow it.
        let gone = writer.send(seq, &started).await.is_err();
        let mut sink = Sink::Stream {
            writer: writer.clone(),
            seq,
            gone,
        };
        let io = Io {
            stdin: req.stdin,
            more_stdin: stdin,
            credit,
            ctl,
        };
        let summary = session::run(spawned, io, limits, &mut sink, chunk_max).await;
        routes.remove(seq);
        tracing::debug!(seq, pid, outcome = ?summary.outcome, "exec session ended");
        let _ = writer.send_data(seq, &summary.exit_message()).await;
    });
}

async fn start_attach(req: pb::Attach, seq: u32, cx: &Cx) {
    if cx.routes.contains(seq) {
        return refuse_duplicate(seq, hearth_proto::MessageType::Attach as u8, cx).await;
    }
    let params = attach::Params {
        window: if req.window == 0 {
            DEFAULT_EXEC_WINDOW
        } else {
            req.window as u64
        },
        input_window: cx.shared.input_window as u64,
        chunk_max: chunk_max(cx.writer.max_frame_len()),
    };
    tokio::spawn(attach::run(
        req,
        seq,
        cx.writer.clone(),
        cx.routes.clone(),
        cx.shared.clone(),
        params,
    ));
}

/// Largest data chunk that fits a frame with its small envelope.
pub fn chunk_max(max_frame_len: u32) -> usize {
    (max_frame_len as usize)
        .saturating_sub(64)
        .min(session::MAX_CHUNK)
}

/// `SHUTDOWN`: answered by `OK`, then the agent ends its sessions and exits
/// (see `agent::shut_down`). Rebooting is not something the guest can do.
async fn shutdown(req: pb::Shutdown, seq: u32, cx: &Cx) {
    if req.reboot {
        let err = error(
            pb::ErrorCode::Unsupported,
            "reboot is not supported: the guest only powers off",
            0,
        );
        return reply(&cx.writer, seq, err).await;
    }
    tracing::info!("shutdown requested");
    let _ = cx.writer.send(seq, &Message::Ok(pb::Ok {})).await;
    let _ = cx.writer.flush().await;
    cx.shared.request_shutdown();
}
