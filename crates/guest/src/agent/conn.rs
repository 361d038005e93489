//! One connection: send `READY`, read frames, dispatch requests, route stream
//! frames (stdin, signals, window updates, file chunks) to their session.
//!
//! The reader never waits on a child or the disk: requests run in their own
//! tasks and answer through the connection's [`Writer`]. Pings are answered
//! right here, ahead of bulk output.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use hearth_proto::message::error;
use hearth_proto::{pb, Frame, FrameDecoder, Message, VERSION};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

use super::session::{self, Credit, Limits, Sink};
use super::splice::ConnWrite;
use super::writer::Writer;
use super::{exec, file_read, file_write, files, oneshot, sysinfo, Shared};

/// Default output credit of a streaming exec.
const DEFAULT_EXEC_WINDOW: u64 = 256 * 1024;
/// Stdin frames queued per session before the reader waits.
const STDIN_QUEUE: usize = 16;
/// File chunks queued per chunked write before the reader waits.
const FILE_QUEUE: usize = 8;
/// Read buffer kept between frames; larger ones are released.
const READ_BUF: usize = 64 * 1024;

/// Where stream frames for an in-flight request go.
pub enum Route {
    Exec {
        credit: Arc<Credit>,
        pgid: i32,
        stdin: Option<mpsc::Sender<pb::StdinData>>,
    },
    FileRead(Arc<Credit>),
    FileWrite(mpsc::Sender<pb::FileData>),
}

/// In-flight requests of one connection, by seq. A request removes its entry
/// before sending its terminal frame, so the host may reuse the seq at once.
#[derive(Clone, Default)]
pub struct Routes(Arc<Mutex<HashMap<u32, Route>>>);

impl Routes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Route>> {
        // A poisoned map only means a task panicked mid-insert; the map itself is fine.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inserts unless `seq` is in flight; returns whether it was inserted.
    fn insert(&self, seq: u32, route: Route) -> bool {
        let mut m = self.lock();
        if m.contains_key(&seq) {
            return false;
        }
        m.insert(seq, route);
        true
    }

    pub fn remove(&self, seq: u32) {
        self.lock().remove(&seq);
    }

    fn contains(&self, seq: u32) -> bool {
        self.lock().contains_key(&seq)
    }
}

/// An accepted connection, split into its read and write sides.
pub trait Conn: Send + 'static {
    type Read: AsyncRead + Unpin + Send + 'static;
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
pub async fn serve<S: Conn>(stream: S, shared: Arc<Shared>) {
    let (mut rd, wr) = stream.into_halves();
    let writer = Writer::spawn(wr, shared.max_frame_len);
    if writer
        .send(0, &Message::Ready(shared.ready.clone()))
        .await
        .is_err()
    {
        return;
    }
    let routes = Routes::default();
    let decoder = FrameDecoder::new(shared.max_frame_len);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                if buf.is_empty() && buf.capacity() > READ_BUF {
                    buf = BytesMut::with_capacity(8 * 1024);
                }
                dispatch(frame, &writer, &routes).await;
            }
            Ok(None) => match rd.read_buf(&mut buf).await {
                Ok(0) => {
                    tracing::debug!("connection closed by the host");
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "connection read failed");
                    break;
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "framing error, closing the connection");
                let _ = writer
                    .send(0, &error(pb::ErrorCode::BadFrame, e.to_string(), 0))
                    .await;
                writer.close().await;
                break;
            }
        }
    }
    // Dropping the routes closes stdin of open sessions and ends chunked writes;
    // running sessions finish on their own, their output drained and dropped.
    for (_, route) in routes.lock().drain() {
        match route {
            Route::Exec { credit, .. } | Route::FileRead(credit) => credit.close(),
            Route::FileWrite(_) => {}
        }
    }
}

async fn reply(writer: &Writer, seq: u32, msg: Message) {
    let _ = writer.send(seq, &msg).await;
}

async fn dispatch(frame: Frame, writer: &Writer, routes: &Routes) {
    let seq = frame.seq;
    let msg = match Message::from_frame(&frame) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(seq, error = %e, "refusing request");
            return reply(writer, seq, error(e.code(), e.to_string(), 0)).await;
        }
    };
    match msg {
        Message::Ping(p) => {
            let pong = Message::Pong(pb::Pong {
                nonce: p.nonce,
                agent_version: VERSION.to_string(),
            });
            let _ = writer.send(seq, &pong).await;
        }
        Message::Exec(req) => {
            tokio::spawn(oneshot::run(req, seq, writer.clone()));
        }
        Message::ExecStart(req) => start_session(req, seq, writer, routes).await,
        Message::ExecStdin(d) => {
            let tx = match routes.lock().get(&seq) {
                Some(Route::Exec {
                    stdin: Some(tx), ..
                }) => Some(tx.clone()),
                _ => None,
            };
            // Stdin for a finished session (or one whose stdin is closed) is dropped.
            if let Some(tx) = tx {
                let _ = tx.send(d).await;
            }
        }
        Message::ExecSignal(s) => {
            let pgid = match routes.lock().get(&seq) {
                Some(Route::Exec { pgid, .. }) => Some(*pgid),
                _ => None,
            };
            match pgid {
                Some(pgid) => exec::signal_group(pgid, s.signal),
                None => tracing::debug!(seq, "signal for a finished session dropped"),
            }
        }
        Message::WindowUpdate(w) => match routes.lock().get(&seq) {
            Some(Route::Exec { credit, .. }) | Some(Route::FileRead(credit)) => {
                credit.add(w.bytes as u64)
            }
            _ => {}
        },
        Message::FileData(d) => {
            let tx = match routes.lock().get(&seq) {
                Some(Route::FileWrite(tx)) => Some(tx.clone()),
                _ => None,
            };
            if let Some(tx) = tx {
                let _ = tx.send(d).await;
            }
        }
        Message::FileWrite(req) => {
            let (tx, rx) = mpsc::channel(FILE_QUEUE);
            if !routes.insert(seq, Route::FileWrite(tx)) {
                return reply(writer, seq, duplicate(seq)).await;
            }
            tokio::spawn(file_write::run_chunked(
                req,
                seq,
                rx,
                writer.clone(),
                routes.clone(),
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
            if !routes.insert(seq, Route::FileRead(credit.clone())) {
                return reply(writer, seq, duplicate(seq)).await;
            }
            tokio::spawn(file_read::run(
                req,
                seq,
                credit,
                writer.clone(),
                routes.clone(),
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
            let writer = writer.clone();
            tokio::spawn(async move {
                let answer = tokio::task::spawn_blocking(sysinfo::collect)
                    .await
                    .map(Message::SystemInfoResult)
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
        Message::Shutdown(s) => shutdown(s, seq, writer).await,
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
        | Message::Error(_)) => {
            let msg = format!(
                "{} is not a request the agent serves",
                other.message_type().name()
            );
            reply(writer, seq, error(pb::ErrorCode::InvalidArgument, msg, 0)).await;
        }
    }
}

fn duplicate(seq: u32) -> Message {
    error(
        pb::ErrorCode::DuplicateSeq,
        format!("seq {seq} is already in flight"),
        0,
    )
}

async fn start_session(req: pb::ExecStart, seq: u32, writer: &Writer, routes: &Routes) {
    if routes.contains(seq) {
        return reply(writer, seq, duplicate(seq)).await;
    }
    let spawned = exec::prepare(
        &req.argv,
        &req.env,
        &req.cwd,
        req.user.as_ref(),
        req.clear_env,
    )
    .and_then(|spec| exec::spawn(&spec, req.stdin_open || !req.stdin.is_empty()));
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
    let (stdin_tx, stdin_rx) = if req.stdin_open {
        let (tx, rx) = mpsc::channel(STDIN_QUEUE);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let pid = spawned.pid;
    routes.insert(
        seq,
        Route::Exec {
            credit: credit.clone(),
            pgid: pid,
            stdin: stdin_tx,
        },
    );
    let cap = |v: u64| if v == 0 { u64::MAX } else { v };
    let limits = Limits {
        max_stdout: cap(req.max_stdout_bytes),
        max_stderr: cap(req.max_stderr_bytes),
        timeout: (req.timeout_ms > 0).then(|| std::time::Duration::from_millis(req.timeout_ms)),
    };
    let chunk_max = chunk_max(writer.max_frame_len());
    let started = Message::ExecStarted(pb::ExecStarted { pid: pid as u32 });
    let writer = writer.clone();
    let routes = routes.clone();
    tokio::spawn(async move {
        let mut sink = Sink::Stream {
            writer: writer.clone(),
            seq,
            gone: writer.send_data(seq, &started).await.is_err(),
        };
        let stdin = req.stdin;
        let summary = session::run(
            spawned, stdin, stdin_rx, credit, limits, &mut sink, chunk_max,
        )
        .await;
        routes.remove(seq);
        tracing::debug!(seq, pid, outcome = ?summary.outcome, "exec session ended");
        let _ = writer.send_data(seq, &summary.exit_message()).await;
    });
}

/// Largest data chunk that fits a frame with its small envelope.
pub fn chunk_max(max_frame_len: u32) -> usize {
    (max_frame_len as usize)
        .saturating_sub(64)
        .min(session::MAX_CHUNK)
}

async fn shutdown(req: pb::Shutdown, seq: u32, writer: &Writer) {
    tracing::info!(reboot = req.reboot, "shutdown requested");
    let _ = writer.send_data(seq, &Message::Ok(pb::Ok {})).await;
    let _ = writer.flush().await;
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::process::exit(0);
}
