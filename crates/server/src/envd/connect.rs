//! The Connect protocol (connectrpc.com/docs/protocol) over axum, JSON codec
//! only — what the E2B SDK speaks to envd:
//!
//! - unary: `application/json` request and answer; an error is a non-200
//!   status from the code table with `{"code": "<snake_case>", "message"}`;
//! - streams (`application/connect+json`): every message in an envelope
//!   `[flags u8][len u32 BE][json]`, the answer ends with an end-of-stream
//!   envelope (flags `0x02`) holding `{}` or `{"error": {...}}`, and errors
//!   once a stream answered stay HTTP 200;
//! - `Connect-Timeout-Ms` bounds the call (`deadline_exceeded`), the SDK's
//!   `Keepalive-Ping-Interval` (seconds) asks for keepalive messages on long
//!   streams, and every stream ends when the server shuts down.
//!
//! The envelope codec ([`EnvelopeDecoder`]) is sans-I/O: it never sees a
//! socket, "need more bytes" is `Ok(None)`, and the length is checked against
//! [`MAX_ENVELOPE`] before anything is buffered for it.

use std::pin::Pin;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

/// The largest envelope accepted from a client (16 MiB).
pub const MAX_ENVELOPE: usize = 16 << 20;
/// The largest unary request body accepted.
pub const MAX_UNARY: usize = 16 << 20;
/// Envelope flag: the payload is compressed (never negotiated here).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Envelope flag: the end-of-stream message.
pub const FLAG_END_STREAM: u8 = 0x02;
/// The content type of unary JSON calls.
pub const CONTENT_JSON: &str = "application/json";
/// The content type of streaming JSON calls.
pub const CONTENT_CONNECT_JSON: &str = "application/connect+json";
/// The longest keepalive interval a client may ask for, and the shortest.
const KEEPALIVE_RANGE: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(3600));

/// The Connect error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    Canceled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    pub const ALL: [Code; 16] = [
        Code::Canceled,
        Code::Unknown,
        Code::InvalidArgument,
        Code::DeadlineExceeded,
        Code::NotFound,
        Code::AlreadyExists,
        Code::PermissionDenied,
        Code::ResourceExhausted,
        Code::FailedPrecondition,
        Code::Aborted,
        Code::OutOfRange,
        Code::Unimplemented,
        Code::Internal,
        Code::Unavailable,
        Code::DataLoss,
        Code::Unauthenticated,
    ];

    /// The wire name (`not_found`).
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Canceled => "canceled",
            Code::Unknown => "unknown",
            Code::InvalidArgument => "invalid_argument",
            Code::DeadlineExceeded => "deadline_exceeded",
            Code::NotFound => "not_found",
            Code::AlreadyExists => "already_exists",
            Code::PermissionDenied => "permission_denied",
            Code::ResourceExhausted => "resource_exhausted",
            Code::FailedPrecondition => "failed_precondition",
            Code::Aborted => "aborted",
            Code::OutOfRange => "out_of_range",
            Code::Unimplemented => "unimplemented",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
            Code::DataLoss => "data_loss",
            Code::Unauthenticated => "unauthenticated",
        }
    }

    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The HTTP status of a unary error with this code. `unavailable` is 502,
    /// not the table's 503: the gateway answers as E2B's proxy does for a
    /// sandbox it cannot reach, and the SDK reads the code from the body.
    pub fn http_status(self) -> StatusCode {
        match self {
            Code::Canceled => StatusCode::from_u16(499).unwrap_or(StatusCode::REQUEST_TIMEOUT),
            Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                StatusCode::BAD_REQUEST
            }
            Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
            Code::PermissionDenied => StatusCode::FORBIDDEN,
            Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
            Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
            Code::Unavailable => StatusCode::BAD_GATEWAY,
            Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        }
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A Connect error: a code and a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ConnectError {
    pub code: Code,
    pub message: String,
}

impl ConnectError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthenticated, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::Internal, message)
    }

    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(Code::DeadlineExceeded, message)
    }

    /// The sandbox `id` is unknown, stopped or dead (the SDK's
    /// "not running" error reads "was not found").
    pub fn sandbox_gone(id: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            Code::Unavailable,
            format!("sandbox {id} was not found ({why})"),
        )
    }

    /// The JSON error object (`{"code", "message"}`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code.as_str(), "message": self.message})
    }

    /// The end-of-stream envelope carrying this error.
    pub fn end_stream(&self) -> Bytes {
        let body = serde_json::json!({"error": self.to_json()});
        envelope(FLAG_END_STREAM, body.to_string().as_bytes())
    }
}

/// The one mapping from the server's error answer (and so from the
/// runtime's errors) to a Connect code. A sandbox that is unknown, not
/// running or dead is `unavailable` "... was not found".
impl From<ApiError> for ConnectError {
    fn from(e: ApiError) -> Self {
        let code = match e.kind {
            "not_found" => Code::NotFound,
            "already_exists" | "conflict" | "ambiguous_name" => Code::AlreadyExists,
            "permission_denied" => Code::PermissionDenied,
            "invalid_argument" => Code::InvalidArgument,
            "no_space" | "resource_exhausted" => Code::ResourceExhausted,
            "unimplemented" => Code::Unimplemented,
            "unauthenticated" => Code::Unauthenticated,
            "cancelled" => Code::Canceled,
            "unavailable" | "agent_unreachable" => Code::Unavailable,
            "wrong_state" | "sandbox_died" => {
                return ConnectError::new(
                    Code::Unavailable,
                    format!("sandbox was not found: {}", e.message),
                )
            }
            _ => match e.status {
                StatusCode::NOT_FOUND => Code::NotFound,
                StatusCode::BAD_REQUEST => Code::InvalidArgument,
                StatusCode::UNAUTHORIZED => Code::Unauthenticated,
                StatusCode::FORBIDDEN => Code::PermissionDenied,
                StatusCode::CONFLICT => Code::AlreadyExists,
                StatusCode::TOO_MANY_REQUESTS => Code::ResourceExhausted,
                StatusCode::NOT_IMPLEMENTED => Code::Unimplemented,
                StatusCode::BAD_GATEWAY | StatusCode::SERVICE_UNAVAILABLE => Code::Unavailable,
                StatusCode::GATEWAY_TIMEOUT => Code::DeadlineExceeded,
                _ => Code::Internal,
            },
        };
        ConnectError::new(code, e.message)
    }
}

impl From<hearth_runtime::Error> for ConnectError {
    fn from(e: hearth_runtime::Error) -> Self {
        use hearth_runtime::Error as E;
        match &e {
            // No record: the message names the id the caller gave.
            E::NotFound(id) => ConnectError::sandbox_gone(id, "no such sandbox"),
            E::WrongState { id, status, .. } => ConnectError::sandbox_gone(id, status),
            _ => ApiError::from(e).into(),
        }
    }
}

/// A unary error answer.
impl IntoResponse for ConnectError {
    fn into_response(self) -> Response {
        if matches!(self.code, Code::Internal | Code::Unknown | Code::DataLoss) {
            tracing::warn!(code = %self.code, error = %self.message, "envd call failed");
        }
        (
            self.code.http_status(),
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_JSON))],
            self.to_json().to_string(),
        )
            .into_response()
    }
}

/// Frames `payload` in an envelope.
pub fn envelope(flags: u8, payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(flags);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// The end-of-stream envelope of a stream that ended well.
pub fn end_stream_ok() -> Bytes {
    envelope(FLAG_END_STREAM, b"{}")
}

/// One decoded envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub flags: u8,
    pub data: Bytes,
}

/// What is wrong with an envelope stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("envelope of {len} bytes is over the {max}-byte limit")]
    TooLong { len: usize, max: usize },
    #[error("compressed envelope (flags {flags:#04x}) but no compression was negotiated")]
    Compressed { flags: u8 },
    #[error("envelope with unknown flags {flags:#04x}")]
    UnknownFlags { flags: u8 },
    #[error("request stream ended inside an envelope ({have} of {need} bytes)")]
    Truncated { have: usize, need: usize },
}

impl From<EnvelopeError> for ConnectError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::TooLong { .. } => {
                ConnectError::new(Code::ResourceExhausted, e.to_string())
            }
            EnvelopeError::Compressed { .. } => ConnectError::new(Code::Internal, e.to_string()),
            _ => ConnectError::invalid_argument(e.to_string()),
        }
    }
}

/// Sans-I/O envelope decoder.
#[derive(Debug, Clone)]
pub struct EnvelopeDecoder {
    max: usize,
}

impl Default for EnvelopeDecoder {
    fn default() -> Self {
        Self { max: MAX_ENVELOPE }
    }
}

impl EnvelopeDecoder {
    pub fn new(max: usize) -> Self {
        Self { max }
    }

    /// The next whole envelope in `buf` (consumed), `Ok(None)` when more
    /// bytes are needed.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Envelope>, EnvelopeError> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let flags = buf[0];
        if flags & FLAG_COMPRESSED != 0 {
            return Err(EnvelopeError::Compressed { flags });
        }
        if flags & !(FLAG_COMPRESSED | FLAG_END_STREAM) != 0 {
            return Err(EnvelopeError::UnknownFlags { flags });
        }
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > self.max {
            return Err(EnvelopeError::TooLong { len, max: self.max });
        }
        if buf.len() < 5 + len {
            buf.reserve(5 + len - buf.len());
            return Ok(None);
        }
        buf.advance(5);
        let data = buf.split_to(len).freeze();
        Ok(Some(Envelope { flags, data }))
    }

    /// Called when the input ended: leftover bytes are a truncated envelope.
    pub fn finish(&self, buf: &BytesMut) -> Result<(), EnvelopeError> {
        if buf.is_empty() {
            return Ok(());
        }
        let need = if buf.len() >= 5 {
            5 + u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize
        } else {
            5
        };
        Err(EnvelopeError::Truncated {
            have: buf.len(),
            need,
        })
    }
}

/// What every call carries besides its message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallMeta {
    /// `Connect-Timeout-Ms`: the whole call must end within this.
    pub timeout: Option<Duration>,
    /// `Keepalive-Ping-Interval` (seconds): send keepalives this often.
    pub keepalive: Option<Duration>,
}

impl CallMeta {
    pub fn from_headers(h: &HeaderMap) -> Result<Self, ConnectError> {
        Ok(Self {
            timeout: parse_timeout(h)?,
            keepalive: parse_keepalive(h)?,
        })
    }
}

/// `Connect-Timeout-Ms`: a positive integer of at most 10 digits.
pub fn parse_timeout(h: &HeaderMap) -> Result<Option<Duration>, ConnectError> {
    let Some(v) = h.get("connect-timeout-ms") else {
        return Ok(None);
    };
    let bad = || {
        ConnectError::invalid_argument(format!(
            "Connect-Timeout-Ms {:?} is not a positive integer of at most 10 digits",
            String::from_utf8_lossy(v.as_bytes())
        ))
    };
    let s = v.to_str().map_err(|_| bad())?;
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ms: u64 = s.parse().map_err(|_| bad())?;
    Ok(Some(Duration::from_millis(ms)))
}

/// `Keepalive-Ping-Interval`: whole seconds, clamped to 1 s..1 h.
pub fn parse_keepalive(h: &HeaderMap) -> Result<Option<Duration>, ConnectError> {
    let Some(v) = h.get("keepalive-ping-interval") else {
        return Ok(None);
    };
    let secs: u64 = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| {
            ConnectError::invalid_argument(format!(
                "Keepalive-Ping-Interval {:?} is not a whole number of seconds",
                String::from_utf8_lossy(v.as_bytes())
            ))
        })?;
    let d = Duration::from_secs(secs);
    Ok(Some(d.clamp(KEEPALIVE_RANGE.0, KEEPALIVE_RANGE.1)))
}

fn content_type(h: &HeaderMap) -> &str {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(';').next().unwrap_or("").trim())
        .unwrap_or("")
}

fn check_content_type(h: &HeaderMap, want: &str) -> Result<(), ConnectError> {
    let got = content_type(h);
    if got.eq_ignore_ascii_case(want) {
        return Ok(());
    }
    let code = if got.eq_ignore_ascii_case("application/proto")
        || got.eq_ignore_ascii_case("application/connect+proto")
    {
        Code::Unimplemented
    } else {
        Code::InvalidArgument
    };
    Err(ConnectError::new(
        code,
        format!("content type {got:?} is not supported here: send {want}"),
    ))
}

/// Decodes one JSON message.
pub fn decode_json<T: DeserializeOwned>(data: &[u8]) -> Result<T, ConnectError> {
    // An empty body is the empty message.
    let data = if data.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        data
    };
    serde_json::from_slice(data).map_err(|e| {
        ConnectError::invalid_argument(format!(
            "cannot decode {}: {e}",
            std::any::type_name::<T>()
                .rsplit("::")
                .next()
                .unwrap_or("message")
        ))
    })
}

fn encode_json<T: Serialize>(m: &T) -> Result<Vec<u8>, ConnectError> {
    serde_json::to_vec(m)
        .map_err(|e| ConnectError::internal(format!("cannot encode an answer: {e}")))
}

/// Reads the body of a unary call: its JSON message.
pub async fn read_unary<T: DeserializeOwned>(h: &HeaderMap, body: Body) -> Result<T, ConnectError> {
    check_content_type(h, CONTENT_JSON)?;
    let bytes = axum::body::to_bytes(body, MAX_UNARY).await.map_err(|e| {
        ConnectError::new(
            Code::ResourceExhausted,
            format!("cannot read the request body (at most {MAX_UNARY} bytes): {e}"),
        )
    })?;
    decode_json(&bytes)
}

/// A unary answer.
pub struct Unary<T>(pub T);

impl<T: Serialize> IntoResponse for Unary<T> {
    fn into_response(self) -> Response {
        match encode_json(&self.0) {
            Ok(body) => (
                StatusCode::OK,
                [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_JSON))],
                body,
            )
                .into_response(),
            Err(e) => e.into_response(),
        }
    }
}

/// Runs a unary handler's work under the call's `Connect-Timeout-Ms`.
pub async fn with_deadline<T>(
    meta: &CallMeta,
    fut: impl std::future::Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    match meta.timeout {
        Some(t) => tokio::time::timeout(t, fut).await.unwrap_or_else(|_| {
            Err(ConnectError::deadline_exceeded(format!(
                "the call did not finish within its {} ms deadline",
                t.as_millis()
            )))
        }),
        None => fut.await,
    }
}

/// Envelopes decoded from a streaming request body as they arrive.
pub type MessageStream<T> = Pin<Box<dyn Stream<Item = Result<T, ConnectError>> + Send>>;

/// The messages of a streaming request (`application/connect+json`),
/// decoded envelope by envelope as the body arrives.
pub fn stream_messages<T: DeserializeOwned + Send + 'static>(
    h: &HeaderMap,
    body: Body,
) -> Result<MessageStream<T>, ConnectError> {
    check_content_type(h, CONTENT_CONNECT_JSON)?;
    Ok(decode_stream(
        body.into_data_stream(),
        EnvelopeDecoder::default(),
    ))
}

/// Decodes JSON messages from a stream of body chunks.
pub fn decode_stream<T, S, E>(chunks: S, decoder: EnvelopeDecoder) -> MessageStream<T>
where
    T: DeserializeOwned + Send + 'static,
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    Box::pin(async_stream::stream! {
        let mut chunks = std::pin::pin!(chunks);
        let mut buf = BytesMut::new();
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(env)) => {
                    if env.flags & FLAG_END_STREAM != 0 {
                        // Clients do not send one; a message after it would be
                        // a protocol error, so the stream ends here.
                        return;
                    }
                    yield decode_json::<T>(&env.data);
                    continue;
                }
                Ok(None) => {}
                Err(e) => {
                    yield Err(e.into());
                    return;
                }
            }
            match chunks.next().await {
                Some(Ok(c)) => buf.extend_from_slice(&c),
                Some(Err(e)) => {
                    yield Err(ConnectError::new(Code::Canceled, format!("the request stream failed: {e}")));
                    return;
                }
                None => {
                    if let Err(e) = decoder.finish(&buf) {
                        yield Err(e.into());
                    }
                    return;
                }
            }
        }
    })
}

/// The single request message of a server-streaming call.
pub async fn read_stream_request<T: DeserializeOwned + Send + 'static>(
    h: &HeaderMap,
    body: Body,
) -> Result<T, ConnectError> {
    let mut s = stream_messages::<T>(h, body)?;
    match s.next().await {
        Some(m) => m,
        None => Err(ConnectError::invalid_argument(
            "the request stream held no message",
        )),
    }
}

/// How a server stream is driven.
pub struct StreamOptions<M> {
    pub meta: CallMeta,
    /// Ends the stream (`unavailable`) when cancelled: the server's shutdown.
    pub shutdown: CancellationToken,
    /// The message sent every `meta.keepalive` (none: no keepalives).
    pub keepalive: Option<M>,
}

/// A server-streaming answer: every item of `messages` in an envelope, then
/// the end-of-stream envelope — `{}` when `messages` ends, the error when an
/// item is `Err` (nothing after it is sent), `deadline_exceeded` when the
/// call's timeout passes, `unavailable` when the server shuts down.
pub fn server_stream<M, S>(opts: StreamOptions<M>, messages: S) -> Response
where
    M: Serialize + Send + 'static,
    S: Stream<Item = Result<M, ConnectError>> + Send + 'static,
{
    let body = stream_body(opts, messages);
    streaming_response(Body::from_stream(
        body.map(Ok::<_, std::convert::Infallible>),
    ))
}

/// The envelopes of a server stream (see [`server_stream`]), for tests and
/// for callers that frame the body themselves.
pub fn stream_body<M, S>(opts: StreamOptions<M>, messages: S) -> impl Stream<Item = Bytes> + Send
where
    M: Serialize + Send + 'static,
    S: Stream<Item = Result<M, ConnectError>> + Send + 'static,
{
    let StreamOptions {
        meta,
        shutdown,
        keepalive,
    } = opts;
    async_stream::stream! {
        let mut messages = std::pin::pin!(messages);
        let deadline = meta.timeout.map(|t| tokio::time::Instant::now() + t);
        let sleep = tokio::time::sleep_until(deadline.unwrap_or_else(far_future));
        let mut sleep = std::pin::pin!(sleep);
        let period = meta.keepalive.filter(|_| keepalive.is_some());
        let mut ticker = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let keepalive = match &keepalive {
            Some(k) => match encode_json(k) {
                Ok(b) => Some(envelope(0, &b)),
                Err(e) => {
                    yield e.end_stream();
                    return;
                }
            },
            None => None,
        };
        loop {
            tokio::select! {
                biased;
                m = messages.next() => match m {
                    Some(Ok(m)) => match encode_json(&m) {
                        Ok(b) => yield envelope(0, &b),
                        Err(e) => {
                            yield e.end_stream();
                            return;
                        }
                    },
                    Some(Err(e)) => {
                        yield e.end_stream();
                        return;
                    }
                    None => {
                        yield end_stream_ok();
                        return;
                    }
                },
                _ = &mut sleep, if deadline.is_some() => {
                    let ms = meta.timeout.map(|t| t.as_millis()).unwrap_or_default();
                    yield ConnectError::deadline_exceeded(format!(
                        "the stream did not finish within its {ms} ms deadline (Connect-Timeout-Ms)"
                    )).end_stream();
                    return;
                }
                _ = shutdown.cancelled() => {
                    yield ConnectError::new(Code::Unavailable, "hearth serve is shutting down").end_stream();
                    return;
                }
                _ = ticker.tick(), if period.is_some() => {
                    if let Some(k) = &keepalive {
                        yield k.clone();
                    }
                }
            }
        }
    }
}

fn far_future() -> tokio::time::Instant {
    tokio::time::Instant::now() + Duration::from_secs(86400 * 365)
}

fn streaming_response(body: Body) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(CONTENT_CONNECT_JSON),
        )],
        body,
    )
        .into_response()
}

/// A streaming call that failed before it produced anything: HTTP 200 and
/// only the end-of-stream envelope with the error.
pub fn stream_error(e: ConnectError) -> Response {
    if matches!(e.code, Code::Internal | Code::Unknown | Code::DataLoss) {
        tracing::warn!(code = %e.code, error = %e.message, "envd stream failed");
    }
    streaming_response(Body::from(e.end_stream()))
}

/// The answer of a client-streaming call: its one message, then `{}`; or
/// only the error.
pub fn client_stream_answer<M: Serialize>(r: Result<M, ConnectError>) -> Response {
    match r.and_then(|m| encode_json(&m)) {
        Ok(b) => {
            let mut out = BytesMut::new();
            out.extend_from_slice(&envelope(0, &b));
            out.extend_from_slice(&end_stream_ok());
            streaming_response(Body::from(out.freeze()))
        }
        Err(e) => stream_error(e),
    }
}
