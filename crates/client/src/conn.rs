//! The connection: a reader task that decodes frames (length checked against
//! the cap before buffering) and routes them by seq, a writer task fed by a
//! bounded channel, and a seq allocator that skips 0 and seqs in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hearth_proto::{pb, Frame, FrameDecoder, Message, MessageType, DEFAULT_MAX_FRAME_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::credit::{Ended, InputCredit};
use crate::error::ClientError;

/// Read into the buffer only when at least this much room is left...
const READ_MIN: usize = 64 * 1024;
/// ...otherwise make this much room first.
const READ_RESERVE: usize = 256 * 1024;

/// How the client connects.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Overall deadline for connecting, retries and the READY frame.
    pub timeout: Duration,
    /// Largest frame accepted from the agent (type + seq + payload).
    pub max_frame_len: u32,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
        }
    }
}

pub(crate) type Reply = Result<Message, ClientError>;

/// What kind of stream a seq carries; it decides which frame ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamKind {
    /// Ends with EXEC_EXIT; an ERROR ends it only before EXEC_STARTED (after
    /// that it reports a refused stream frame and the session goes on).
    Exec { started: bool },
    /// Ends with the FILE_DATA that has `eof`, or ERROR.
    Read,
    /// Ends with WRITE_FILE_RESULT or ERROR.
    Write,
    /// Ends with the AGENT_LOG_LINES that has `end`, or ERROR.
    Log,
    /// Ends with STREAM_END; an ERROR ends it only before the STARTED event.
    Watch { started: bool },
    /// Ends with STREAM_END; an ERROR ends it only before PORT_OPENED.
    Port { started: bool },
}

/// How a stream is opened: its kind and its credit in both directions.
pub(crate) struct StreamSpec {
    pub(crate) kind: StreamKind,
    /// Output credit granted to the agent, when the agent follows it.
    pub(crate) credit: Option<Arc<AtomicI64>>,
    /// Input credit granted by the agent, when it grants any.
    pub(crate) input: Option<Arc<InputCredit>>,
}

/// Where frames for one seq go.
enum Route {
    /// A request answered by exactly one frame.
    Once(oneshot::Sender<Reply>),
    /// A stream (exec session, file read, file write).
    Stream {
        tx: mpsc::UnboundedSender<Reply>,
        spec: StreamSpec,
    },
}

/// State shared between the client handles and the reader task.
pub(crate) struct Routes {
    inner: Mutex<RoutesInner>,
    /// Mirrors `RoutesInner::closed.is_some()` for lock-free checks on the
    /// send path.
    is_closed: std::sync::atomic::AtomicBool,
}

struct RoutesInner {
    map: HashMap<u32, Route>,
    next_seq: u32,
    /// Set once the connection is gone; new requests fail with it.
    closed: Option<String>,
}

impl Routes {
    fn new() -> Self {
        Self {
            inner: Mutex::new(RoutesInner {
                map: HashMap::new(),
                next_seq: 1,
                closed: None,
            }),
            is_closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RoutesInner> {
        // A panic while holding the lock leaves plain data behind; keep going.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Allocates a seq that is non-zero and not in flight, and registers `route`.
    fn register(&self, route: Route) -> Result<u32, ClientError> {
        let mut g = self.lock();
        if let Some(reason) = &g.closed {
            return Err(ClientError::ConnectionClosed {
                reason: reason.clone(),
            });
        }
        loop {
            let seq = g.next_seq;
            g.next_seq = g.next_seq.wrapping_add(1);
            if seq != 0 && !g.map.contains_key(&seq) {
                g.map.insert(seq, route);
                return Ok(seq);
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn set_next_seq_for_test(&self, seq: u32) {
        self.lock().next_seq = seq;
    }

    fn unregister(&self, seq: u32) {
        self.lock().map.remove(&seq);
    }

    /// Fails every pending request and stream; later requests fail at once.
    fn close(&self, reason: &str) {
        let routes: Vec<Route> = {
            let mut g = self.lock();
            if g.closed.is_none() {
                g.closed = Some(reason.to_string());
                self.is_closed.store(true, Ordering::Release);
            }
            g.map.drain().map(|(_, r)| r).collect()
        };
        for r in routes {
            let err = ClientError::ConnectionClosed {
                reason: reason.to_string(),
            };
            match r {
                Route::Once(tx) => {
                    let _ = tx.send(Err(err));
                }
                Route::Stream { tx, spec } => {
                    if let Some(input) = &spec.input {
                        input.end(Ended::Closed(reason.to_string()));
                    }
                    let _ = tx.send(Err(err));
                }
            }
        }
    }

    fn closed_reason(&self) -> Option<String> {
        if !self.is_closed.load(Ordering::Acquire) {
            return None;
        }
        self.lock().closed.clone()
    }

    /// Routes one frame from the agent.
    fn dispatch(&self, frame: Frame, slack: i64) {
        let seq = frame.seq;
        let msg = decode(&frame).map_err(|e| ClientError::Protocol {
            reason: format!("frame {:#04x} seq {seq}: {e}", frame.kind),
        });
        let mut g = self.lock();
        let Some(route) = g.map.get_mut(&seq) else {
            debug!(
                seq,
                kind = frame.kind,
                "frame for a seq that is not in flight"
            );
            return;
        };
        let (tx, spec) = match route {
            Route::Once(_) => {
                if let Some(Route::Once(tx)) = g.map.remove(&seq) {
                    let _ = tx.send(msg);
                }
                return;
            }
            Route::Stream { tx, spec } => (tx, spec),
        };
        if let Ok(Message::WindowUpdate(w)) = &msg {
            // Input credit returned by the agent: not an event for the consumer.
            match &spec.input {
                Some(input) => input.grant(w.bytes),
                None => debug!(seq, "WINDOW_UPDATE for a stream without input credit"),
            }
            return;
        }
        let terminal = match (&msg, &mut spec.kind) {
            (Err(_), _) => true,
            (Ok(Message::ExecStarted(_)), StreamKind::Exec { started }) => {
                *started = true;
                false
            }
            (Ok(Message::Attached(_)), StreamKind::Exec { started }) => {
                *started = true;
                false
            }
            (Ok(Message::ExecExit(_)), StreamKind::Exec { .. }) => true,
            (Ok(Message::Error(_)), StreamKind::Exec { started }) => !*started,
            (Ok(Message::Error(_)), StreamKind::Read | StreamKind::Write) => true,
            (Ok(Message::FileData(d)), StreamKind::Read) => d.eof,
            (Ok(Message::WriteFileResult(_)), StreamKind::Write) => true,
            (Ok(Message::Error(_)), StreamKind::Log) => true,
            (Ok(Message::AgentLogLines(b)), StreamKind::Log) => b.end,
            (Ok(Message::WatchEvent(e)), StreamKind::Watch { started }) => {
                *started |= e.kind == pb::WatchEventKind::Started as i32;
                false
            }
            (Ok(Message::PortOpened(_)), StreamKind::Port { started }) => {
                *started = true;
                false
            }
            (Ok(Message::StreamEnd(_)), StreamKind::Watch { .. } | StreamKind::Port { .. }) => true,
            (
                Ok(Message::Error(_)),
                StreamKind::Watch { started } | StreamKind::Port { started },
            ) => !*started,
            (Ok(_), _) => false,
        };
        let data_len = match &msg {
            Ok(Message::ExecStdout(c)) | Ok(Message::ExecStderr(c)) => c.data.len(),
            Ok(Message::FileData(d)) => d.data.len(),
            Ok(Message::PortData(d)) => d.data.len(),
            Ok(Message::WatchEvent(e)) => prost::Message::encoded_len(e),
            _ => 0,
        };
        let mut violation = None;
        if let Some(credit) = &spec.credit {
            let left = credit.fetch_sub(data_len as i64, Ordering::AcqRel) - data_len as i64;
            if left < -slack {
                violation = Some(ClientError::Protocol {
                    reason: format!(
                        "seq {seq}: the agent sent {} bytes beyond its flow-control credit",
                        -left
                    ),
                });
            }
        }
        // The consumer may have gone away; the route stays until the
        // terminal frame so the seq is not reused too early.
        let end = match violation {
            Some(err) => {
                let _ = tx.send(Err(err));
                true
            }
            None => {
                let _ = tx.send(msg);
                terminal
            }
        };
        if end {
            if let Some(input) = &spec.input {
                input.end(Ended::Finished);
            }
            g.map.remove(&seq);
        }
    }
}

/// Decodes a frame from the agent. Output and file data are decoded straight
/// from the frame's buffer (prost slices `Bytes` without copying).
fn decode(frame: &Frame) -> Result<Message, hearth_proto::MessageError> {
    use prost::Message as _;
    let zero_copy = |kind: MessageType| hearth_proto::MessageError::Decode {
        kind,
        reason: "payload does not decode".into(),
    };
    match MessageType::from_u8(frame.kind) {
        Some(MessageType::ExecStdout) => pb::OutputChunk::decode(frame.payload.clone())
            .map(Message::ExecStdout)
            .map_err(|_| zero_copy(MessageType::ExecStdout)),
        Some(MessageType::ExecStderr) => pb::OutputChunk::decode(frame.payload.clone())
            .map(Message::ExecStderr)
            .map_err(|_| zero_copy(MessageType::ExecStderr)),
        Some(MessageType::FileData) => pb::FileData::decode(frame.payload.clone())
            .map(Message::FileData)
            .map_err(|_| zero_copy(MessageType::FileData)),
        Some(MessageType::PortData) => pb::PortData::decode(frame.payload.clone())
            .map(Message::PortData)
            .map_err(|_| zero_copy(MessageType::PortData)),
        _ => Message::from_frame(frame),
    }
}

/// The part every handle shares; dropping the last handle stops the tasks and
/// closes the stream.
type BoxWriter = Box<dyn AsyncWrite + Send + Unpin>;

pub(crate) struct Inner {
    pub(crate) routes: Arc<Routes>,
    /// The write half. Callers write their own frames under the lock (no task
    /// hop); a write that would block finishes in a background task that owns
    /// the lock, so cancelling a caller never leaves half a frame behind.
    writer: Arc<tokio::sync::Mutex<BoxWriter>>,
    pub(crate) ready: pb::Ready,
    /// Largest frame the agent accepts.
    pub(crate) max_out: u32,
    reader: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.reader.abort();
        self.routes.close("the client was dropped");
    }
}

/// A connection to one agent. Cheap to clone; many requests may be in flight.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("agent_version", &self.inner.ready.agent_version)
            .finish()
    }
}

impl Client {
    /// Speaks the protocol over an already connected stream: waits for READY
    /// under `opts.timeout`, then checks the protocol version.
    pub async fn from_stream<S>(s: S, opts: &ConnectOptions) -> Result<Client, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (rd, wr) = tokio::io::split(s);
        let routes = Arc::new(Routes::new());
        let (ready_tx, ready_rx) = oneshot::channel();
        let decoder = FrameDecoder::new(opts.max_frame_len);
        let reader = tokio::spawn(read_loop(rd, decoder, routes.clone(), ready_tx));
        let writer: Arc<tokio::sync::Mutex<BoxWriter>> =
            Arc::new(tokio::sync::Mutex::new(Box::new(wr)));

        let ready = match tokio::time::timeout(opts.timeout, ready_rx).await {
            Err(_) => {
                reader.abort();
                routes.close("no READY");
                return Err(ClientError::ReadyTimeout {
                    timeout: opts.timeout,
                });
            }
            Ok(Err(_)) => {
                return Err(ClientError::ClosedBeforeReady {
                    reason: routes
                        .closed_reason()
                        .unwrap_or_else(|| "reader stopped".into()),
                })
            }
            Ok(Ok(r)) => r,
        };
        if ready.protocol_version != hearth_proto::PROTOCOL_VERSION {
            reader.abort();
            routes.close("protocol version mismatch");
            return Err(ClientError::ProtocolVersion {
                agent: ready.protocol_version,
                client: hearth_proto::PROTOCOL_VERSION,
            });
        }
        let max_out = if ready.max_frame_len == 0 {
            DEFAULT_MAX_FRAME_LEN
        } else {
            ready.max_frame_len
        };
        // The limit binds both directions: an agent that may send frames this
        // client refuses would fail later, in the middle of some stream.
        if max_out > opts.max_frame_len {
            reader.abort();
            routes.close("frame limit above the client's");
            return Err(ClientError::Protocol {
                reason: format!(
                    "the agent announces frames of up to {max_out} bytes, above this client's limit of {} (ConnectOptions::max_frame_len)",
                    opts.max_frame_len
                ),
            });
        }
        debug!(agent = %ready.agent_version, caps = ready.capabilities, "agent ready");
        Ok(Client {
            inner: Arc::new(Inner {
                routes,
                writer,
                ready,
                max_out,
                reader,
            }),
        })
    }

    /// The READY frame the agent sent.
    pub fn ready(&self) -> &pb::Ready {
        &self.inner.ready
    }

    /// Fails with `Unsupported` when the agent lacks `cap`.
    pub(crate) fn require(
        &self,
        cap: pb::Capability,
        what: &'static str,
    ) -> Result<(), ClientError> {
        if hearth_proto::has_capability(self.inner.ready.capabilities, cap) {
            Ok(())
        } else {
            Err(ClientError::Unsupported {
                what,
                agent_version: self.inner.ready.agent_version.clone(),
            })
        }
    }

    pub(crate) fn flow_control(&self) -> bool {
        hearth_proto::has_capability(self.inner.ready.capabilities, pb::Capability::FlowControl)
    }

    /// Input credit for a new stream, when the agent grants it.
    pub(crate) fn input_credit(&self) -> Option<Arc<InputCredit>> {
        let caps = self.inner.ready.capabilities;
        if !hearth_proto::has_capability(caps, pb::Capability::InputFlowControl) {
            return None;
        }
        Some(InputCredit::new(match self.inner.ready.input_window {
            0 => hearth_proto::DEFAULT_INPUT_WINDOW,
            w => w,
        }))
    }

    /// Largest payload that fits in a frame the agent accepts.
    pub(crate) fn max_payload(&self) -> usize {
        self.inner.max_out as usize - hearth_proto::frame::HEADER_AFTER_LEN
    }

    fn closed_error(&self) -> ClientError {
        ClientError::ConnectionClosed {
            reason: self
                .inner
                .routes
                .closed_reason()
                .unwrap_or_else(|| "the writer stopped".into()),
        }
    }

    /// Writes a frame, after checking it fits in what the agent accepts.
    pub(crate) async fn send_frame(&self, frame: Frame) -> Result<(), ClientError> {
        if frame.wire_len() > self.inner.max_out as usize {
            return Err(hearth_proto::EncodeError::TooLarge {
                len: frame.wire_len(),
                max: self.inner.max_out,
            }
            .into());
        }
        if let Some(reason) = self.inner.routes.closed_reason() {
            return Err(ClientError::ConnectionClosed { reason });
        }
        let guard = self.inner.writer.clone().lock_owned().await;
        match write_frame(guard, frame, self.inner.routes.clone()) {
            WriteState::Done => Ok(()),
            WriteState::Failed => Err(self.closed_error()),
            WriteState::Blocked(task) => match task.await {
                Ok(true) => Ok(()),
                _ => Err(self.closed_error()),
            },
        }
    }

    /// Sends a frame without waiting (for `Drop` paths). Best effort.
    pub(crate) fn try_send_frame(&self, frame: Frame) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let c = self.clone();
        handle.spawn(async move {
            let _ = c.send_frame(frame).await;
        });
    }

    /// Sends `msg` and waits for its single answer.
    pub(crate) async fn request(&self, msg: Message) -> Result<Message, ClientError> {
        let (tx, rx) = oneshot::channel();
        let seq = self.inner.routes.register(Route::Once(tx))?;
        if let Err(e) = self.send_frame(msg.into_frame(seq)).await {
            self.inner.routes.unregister(seq);
            return Err(e);
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.closed_error()),
        }
    }

    /// Opens a stream: registers the route, sends `msg`, returns the seq and the
    /// receiver for every frame with that seq.
    pub(crate) async fn open_stream(
        &self,
        msg: Message,
        spec: StreamSpec,
    ) -> Result<(u32, mpsc::UnboundedReceiver<Reply>), ClientError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let seq = self.inner.routes.register(Route::Stream { tx, spec })?;
        if let Err(e) = self.send_frame(msg.into_frame(seq)).await {
            self.inner.routes.unregister(seq);
            return Err(e);
        }
        Ok((seq, rx))
    }
}

async fn read_loop<R>(
    mut rd: R,
    decoder: FrameDecoder,
    routes: Arc<Routes>,
    ready_tx: oneshot::Sender<pb::Ready>,
) where
    R: AsyncRead + Unpin,
{
    let mut ready_tx = Some(ready_tx);
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // A stream may overshoot its credit by at most one frame.
    let slack = decoder.max_frame_len() as i64;
    let reason = loop {
        match decoder.decode(&mut buf) {
            Err(e) => break format!("the agent sent a bad frame: {e}"),
            Ok(Some(frame)) => {
                if frame.seq == 0 {
                    match Message::from_frame(&frame) {
                        Ok(Message::Ready(r)) => match ready_tx.take() {
                            Some(tx) => {
                                let _ = tx.send(r);
                            }
                            None => debug!("ignoring a second READY"),
                        },
                        Ok(Message::Error(e)) => {
                            let code = pb::ErrorCode::try_from(e.code)
                                .unwrap_or(pb::ErrorCode::Unspecified);
                            warn!(?code, message = %e.message, "agent reported a connection error");
                            break format!("the agent reported {code:?}: {}", e.message);
                        }
                        Ok(m) => debug!(kind = ?m.message_type(), "ignoring unsolicited frame"),
                        Err(e) => debug!(error = %e, "ignoring undecodable unsolicited frame"),
                    }
                } else if ready_tx.is_some() {
                    break format!(
                        "the agent sent {} before READY",
                        MessageType::from_u8(frame.kind)
                            .map(|t| t.name().to_string())
                            .unwrap_or_else(|| format!("type {:#04x}", frame.kind))
                    );
                } else {
                    routes.dispatch(frame, slack);
                }
                continue;
            }
            Ok(None) => {}
        }
        // Large reads: output frames are up to 256 KiB and the socket often
        // holds several. Frames split off the buffer keep their part alive,
        // so a fresh buffer is only allocated when the old one is full.
        if buf.capacity() - buf.len() < READ_MIN {
            buf.reserve(READ_RESERVE);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => break "the agent closed the stream".to_string(),
            Ok(0) => {
                break format!(
                    "the agent closed the stream in the middle of a frame ({} bytes buffered)",
                    buf.len()
                )
            }
            Ok(_) => {}
            Err(e) => break format!("read error: {e}"),
        }
    };
    debug!(%reason, "connection reader stopped");
    routes.close(&reason);
}

enum WriteState {
    Done,
    Failed,
    /// The socket would block; the rest is written by this task (true = ok).
    Blocked(JoinHandle<bool>),
}

/// Writes `frame` as far as the socket takes it now; hands the rest, with the
/// lock, to a background task.
fn write_frame(
    mut w: tokio::sync::OwnedMutexGuard<BoxWriter>,
    frame: Frame,
    routes: Arc<Routes>,
) -> WriteState {
    use futures::FutureExt;
    let small = frame.payload.len() <= 16 * 1024;
    let mut head = BytesMut::with_capacity(
        hearth_proto::HEADER_LEN + if small { frame.payload.len() } else { 0 },
    );
    let len = frame.wire_len() as u32;
    head.extend_from_slice(&len.to_be_bytes());
    head.extend_from_slice(&[frame.kind]);
    head.extend_from_slice(&frame.seq.to_be_bytes());
    if small {
        head.extend_from_slice(&frame.payload);
        // The common case (requests, window updates): one write of one buffer.
        match w.write(&head).now_or_never() {
            Some(Ok(n)) if n == head.len() => {
                if let Some(r) = w.flush().now_or_never() {
                    return match r {
                        Ok(()) => WriteState::Done,
                        Err(e) => {
                            routes.close(&format!("write error: {e}"));
                            WriteState::Failed
                        }
                    };
                }
                let _ = head.split_to(n);
            }
            Some(Ok(0)) => {
                routes.close("write error: the stream accepts no more bytes");
                return WriteState::Failed;
            }
            Some(Ok(n)) => {
                let _ = head.split_to(n);
            }
            Some(Err(e)) => {
                routes.close(&format!("write error: {e}"));
                return WriteState::Failed;
            }
            None => {}
        }
    }
    let mut parts: Vec<Bytes> = if small {
        vec![head.freeze()]
    } else {
        vec![head.freeze(), frame.payload]
    };
    parts.retain(|p| !p.is_empty());
    while let Some(first) = parts.first_mut() {
        match w.write(first).now_or_never() {
            Some(Ok(0)) => {
                routes.close("write error: the stream accepts no more bytes");
                return WriteState::Failed;
            }
            Some(Ok(n)) => {
                let _ = first.split_to(n);
                if first.is_empty() {
                    parts.remove(0);
                }
            }
            Some(Err(e)) => {
                routes.close(&format!("write error: {e}"));
                return WriteState::Failed;
            }
            None => break,
        }
    }
    if parts.is_empty() {
        if let Some(r) = w.flush().now_or_never() {
            return match r {
                Ok(()) => WriteState::Done,
                Err(e) => {
                    routes.close(&format!("write error: {e}"));
                    WriteState::Failed
                }
            };
        }
    }
    WriteState::Blocked(tokio::spawn(async move {
        for p in parts {
            if let Err(e) = w.write_all(&p).await {
                routes.close(&format!("write error: {e}"));
                return false;
            }
        }
        if let Err(e) = w.flush().await {
            routes.close(&format!("write error: {e}"));
            return false;
        }
        true
    }))
}

/// Unwraps an `Error` answer, or complains about an unexpected message.
pub(crate) fn unexpected(op: &'static str, m: Message) -> ClientError {
    match m {
        Message::Error(e) => ClientError::remote(op, e),
        other => ClientError::Protocol {
            reason: format!("{op}: unexpected {} answer", other.message_type().name()),
        },
    }
}
