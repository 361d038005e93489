//! `/v1/sandboxes/{id}/exec`: collected runs, streaming runs over SSE (with
//! stdin through `/execs/{exec_id}/stdin`) and over a WebSocket. Live
//! streaming execs are kept in a bounded [`ExecRegistry`] keyed by exec id;
//! an entry goes when its exec ends or its stream is dropped.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use hearth_runtime::{ExecControl, ExecExit, ExecSpec, ExecStream, Outcome, Sandbox, StreamEvent};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::extract::{BodyBytes, Json, Path, Query};
use super::model::{b64, text_and_b64, unb64};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// Most live streaming execs at once (all sandboxes).
pub const MAX_LIVE_EXECS: usize = 256;
/// Most bytes of stdout (and of stderr) a collected exec returns.
pub const COLLECT_LIMIT: usize = 16 << 20;

/// A command to run.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// Program and arguments (no shell); with `cmd`, the shell's $0, $1, ...
    pub argv: Option<Vec<String>>,
    /// A shell command line, run as `/bin/sh -c CMD [argv...]`.
    pub cmd: Option<String>,
    /// Added to the sandbox's environment.
    pub env: Option<BTreeMap<String, String>>,
    /// Working directory (default `/`).
    pub cwd: Option<String>,
    /// A user of the guest's /etc/passwd (default: the image's, else root).
    pub user: Option<String>,
    /// Stdin as text.
    pub stdin: Option<String>,
    /// Stdin as base64 (after `stdin` when both are given).
    pub stdin_base64: Option<String>,
    /// Streaming only: keep stdin open for `/execs/{exec_id}/stdin` (or
    /// WebSocket binary messages) after the initial `stdin`; the collected
    /// exec ignores it.
    pub stdin_open: Option<bool>,
    /// Kill the command's process group after this many seconds (kind `timed_out`).
    #[schema(minimum = 1, maximum = 2592000)]
    #[serde(default, deserialize_with = "super::extract::opt_int")]
    pub timeout_secs: Option<u64>,
}

impl ExecRequest {
    pub fn to_spec(&self, streaming: bool) -> ApiResult<ExecSpec> {
        if let Some(a) = &self.argv {
            if a.first().is_none_or(|p| p.is_empty()) {
                return Err(ApiError::bad_request(
                    "argv: needs a program (a non-empty first element)",
                ));
            }
        }
        let mut spec = match (&self.argv, &self.cmd) {
            (Some(a), None) => ExecSpec::argv(a.clone()),
            // `sh -c CMD ARGV...`: argv are the shell's $0, $1, ...
            (a, Some(c)) => {
                let mut s = ExecSpec::shell(c.clone());
                s.argv.extend(a.iter().flatten().cloned());
                s
            }
            (None, None) => return Err(ApiError::bad_request("argv or cmd: one is required")),
        };
        if spec.argv.iter().any(|a| a.contains('\0')) {
            return Err(ApiError::bad_request("argv/cmd: contains NUL"));
        }
        if let Some(env) = &self.env {
            if let Some(k) = env.keys().find(|k| k.is_empty() || k.contains(['=', '\0'])) {
                return Err(ApiError::bad_request(format!(
                    "env: variable name {k:?} is empty or contains '=' or NUL"
                )));
            }
            if let Some(k) = env.iter().find(|(_, v)| v.contains('\0')).map(|(k, _)| k) {
                return Err(ApiError::bad_request(format!(
                    "env: value of {k:?} contains NUL"
                )));
            }
            spec.env = env.clone().into_iter().collect();
        }
        if let Some(c) = &self.cwd {
            spec.cwd = Some(super::model::guest_path("cwd", c)?);
        }
        if let Some(u) = &self.user {
            if u.is_empty() || u.contains(['\0', ':', '/']) {
                return Err(ApiError::bad_request(format!(
                    "user: {u:?} is not a user name"
                )));
            }
            spec.user = Some(u.clone());
        }
        // Both: the text first, then the decoded bytes.
        spec.stdin = self.stdin.clone().unwrap_or_default().into_bytes();
        if let Some(b) = &self.stdin_base64 {
            spec.stdin.extend(unb64("stdin_base64", b)?);
        }
        match self.timeout_secs {
            Some(0) => return Err(ApiError::bad_request("timeout_secs: must be at least 1")),
            Some(t) if t > 2_592_000 => {
                return Err(ApiError::bad_request(format!(
                    "timeout_secs: {t} is above the maximum of 2592000"
                )))
            }
            Some(t) => spec.timeout = Some(Duration::from_secs(t)),
            None => {}
        }
        // The collected exec closes stdin after `stdin`, whatever it says.
        spec.stdin_open = streaming && self.stdin_open.unwrap_or(false);
        Ok(spec)
    }
}

/// How a command ended.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExitInfo {
    /// Shell-style: the code; 128+N when killed by signal N; 124 timed out;
    /// 137 OOM-killed; 127 (126) never started.
    pub exit_code: i32,
    /// exited, killed, timed_out, oom_killed, never_started, unknown.
    pub kind: String,
    /// The outcome in words.
    pub message: String,
    /// The signal that ended it (killed, timed_out).
    pub signal: Option<i32>,
    /// Guest-measured run time in milliseconds.
    pub duration_ms: u64,
}

impl From<&ExecExit> for ExitInfo {
    fn from(x: &ExecExit) -> Self {
        let signal = match &x.outcome {
            Outcome::Killed { signal, .. } | Outcome::TimedOut { signal } => Some(*signal),
            _ => None,
        };
        Self {
            exit_code: x.outcome.exit_code(),
            kind: x.outcome.kind().to_string(),
            message: x.outcome.to_string(),
            signal,
            duration_ms: u64::try_from(x.duration.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// A collected run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExecResult {
    #[serde(flatten)]
    pub exit: ExitInfo,
    /// Stdout as text (lossy when not UTF-8).
    pub stdout: String,
    pub stderr: String,
    /// Stdout as base64, when it is not UTF-8.
    pub stdout_base64: Option<String>,
    pub stderr_base64: Option<String>,
    /// Output past the limit (16 MiB per stream) was dropped.
    pub truncated: bool,
}

/// One event of a streaming exec (SSE: the event name is `event`; WebSocket:
/// one JSON text message).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExecEvent {
    Started { exec_id: String, pid: u32 },
    Stdout { data: String },
    Stderr { data: String },
    Exit(ExitInfo),
    Error(ErrorBody),
}

impl ExecEvent {
    fn name(&self) -> &'static str {
        match self {
            ExecEvent::Started { .. } => "started",
            ExecEvent::Stdout { .. } => "stdout",
            ExecEvent::Stderr { .. } => "stderr",
            ExecEvent::Exit(_) => "exit",
            ExecEvent::Error(_) => "error",
        }
    }

    fn sse(&self) -> Event {
        super::sandboxes::sse_json(self.name(), self)
    }

    fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

struct LiveExec {
    sandbox_id: String,
    sandbox_name: Option<String>,
    control: ExecControl,
}

/// The live streaming execs, bounded by [`MAX_LIVE_EXECS`].
#[derive(Default)]
pub struct ExecRegistry {
    map: Mutex<HashMap<String, LiveExec>>,
}

/// Removes its entry from the registry when dropped.
pub struct Registered {
    registry: Arc<ExecRegistry>,
    pub exec_id: String,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.exec_id);
    }
}

impl ExecRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LiveExec>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn register(self: &Arc<Self>, s: &Sandbox, control: ExecControl) -> ApiResult<Registered> {
        let id = crate::auth::random_hex()
            .map_err(|e| ApiError::internal(format!("cannot make an exec id: {e}")))?[..16]
            .to_string();
        let mut map = self.lock();
        if map.len() >= MAX_LIVE_EXECS {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "resource_exhausted",
                format!(
                    "{MAX_LIVE_EXECS} streaming execs are running already; wait for one to end"
                ),
            ));
        }
        map.insert(
            id.clone(),
            LiveExec {
                sandbox_id: s.id().to_string(),
                sandbox_name: s.name().map(str::to_string),
                control,
            },
        );
        Ok(Registered {
            registry: Arc::clone(self),
            exec_id: id,
        })
    }

    fn control(&self, sandbox: &str, exec_id: &str) -> ApiResult<ExecControl> {
        let map = self.lock();
        match map.get(exec_id) {
            Some(e) if e.sandbox_id == sandbox || e.sandbox_name.as_deref() == Some(sandbox) => {
                Ok(e.control.clone())
            }
            _ => Err(ApiError::not_found(format!(
                "no running streaming exec {exec_id:?} in sandbox {sandbox:?}"
            ))),
        }
    }
}

async fn start_stream(
    state: &AppState,
    id: &str,
    spec: &ExecSpec,
) -> ApiResult<(Arc<Sandbox>, ExecStream)> {
    let s = state.sandbox(id).await?;
    match s.exec_stream(spec).await {
        Ok(st) => Ok((s, st)),
        Err(e) => {
            state.forget_if_gone(s.id(), &e);
            Err(e.into())
        }
    }
}

fn push_capped(buf: &mut Vec<u8>, b: &[u8], truncated: &mut bool) {
    let room = COLLECT_LIMIT.saturating_sub(buf.len());
    if b.len() > room {
        *truncated = true;
    }
    buf.extend_from_slice(&b[..b.len().min(room)]);
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", operation_id = "exec", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "The command ran (or never started: see `kind`)", body = ExecResult),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn exec(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<ExecRequest>,
) -> ApiResult<axum::Json<ExecResult>> {
    let spec = req.to_spec(false)?;
    let t0 = Instant::now();
    let (s, mut st) = start_stream(&state, &id, &spec).await?;
    let (mut out, mut err, mut truncated) = (Vec::new(), Vec::new(), false);
    let exit = loop {
        let ev = tokio::select! {
            ev = st.next() => ev,
            _ = state.shutdown().cancelled() => {
                return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the server is shutting down"));
            }
        };
        match ev {
            Ok(Some(StreamEvent::Started { .. })) => {}
            Ok(Some(StreamEvent::Stdout(b))) => push_capped(&mut out, &b, &mut truncated),
            Ok(Some(StreamEvent::Stderr(b))) => push_capped(&mut err, &b, &mut truncated),
            Ok(Some(StreamEvent::Exit(x))) => break x,
            Ok(None) => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "agent_error",
                    format!("vm {}: the exec ended without an exit status", s.id()),
                ))
            }
            Err(e) => {
                let e = s.explain(e).await;
                state.forget_if_gone(s.id(), &e);
                return Err(e.into());
            }
        }
    };
    state
        .metrics()
        .exec_seconds
        .with_label_values(&["rest"])
        .observe(t0.elapsed().as_secs_f64());
    let (stdout, stdout_base64) = text_and_b64(&out);
    let (stderr, stderr_base64) = text_and_b64(&err);
    Ok(axum::Json(ExecResult {
        exit: ExitInfo::from(&exit),
        stdout,
        stderr,
        stdout_base64,
        stderr_base64,
        truncated,
    }))
}

/// Pumps a stream's events into `tx` until the exit, the receiver going away
/// or the server shutting down.
async fn pump(
    state: AppState,
    s: Arc<Sandbox>,
    mut st: ExecStream,
    reg: Registered,
    tx: mpsc::Sender<ExecEvent>,
) {
    let t0 = Instant::now();
    loop {
        let ev = tokio::select! {
            ev = st.next() => ev,
            _ = state.shutdown().cancelled() => {
                let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the server is shutting down");
                let _ = tx.send(ExecEvent::Error(e.body())).await;
                return;
            }
            _ = tx.closed() => return,
        };
        let out = match ev {
            Ok(Some(StreamEvent::Started { pid })) => ExecEvent::Started {
                exec_id: reg.exec_id.clone(),
                pid,
            },
            Ok(Some(StreamEvent::Stdout(b))) => ExecEvent::Stdout { data: b64(&b) },
            Ok(Some(StreamEvent::Stderr(b))) => ExecEvent::Stderr { data: b64(&b) },
            Ok(Some(StreamEvent::Exit(x))) => {
                state
                    .metrics()
                    .exec_seconds
                    .with_label_values(&["rest_stream"])
                    .observe(t0.elapsed().as_secs_f64());
                drop(reg);
                let _ = tx.send(ExecEvent::Exit(ExitInfo::from(&x))).await;
                return;
            }
            Ok(None) => {
                let e = ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "agent_error",
                    "the exec ended without an exit status",
                );
                let _ = tx.send(ExecEvent::Error(e.body())).await;
                return;
            }
            Err(e) => {
                let e = s.explain(e).await;
                state.forget_if_gone(s.id(), &e);
                let _ = tx.send(ExecEvent::Error(ApiError::from(e).body())).await;
                return;
            }
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/stream", operation_id = "exec_stream", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = ExecRequest,
    responses(
        (status = 200, description = "An SSE stream of ExecEvent: `started` (exec_id, pid), `stdout`/`stderr` (base64 `data`), then `exit` (or `error`)", content_type = "text/event-stream", body = super::model::SseEvent),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Too many streaming execs", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn exec_stream(
    State(state): State<AppState>,
    Extension(registry): Extension<Arc<ExecRegistry>>,
    Path(id): Path<String>,
    Json(req): Json<ExecRequest>,
) -> ApiResult<Response> {
    let spec = req.to_spec(true)?;
    let (s, st) = start_stream(&state, &id, &spec).await?;
    let reg = registry.register(&s, st.control())?;
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(pump(state.clone(), s, st, reg, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|ev| (Ok::<_, Infallible>(ev.sse()), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StdinQuery {
    /// Close stdin after this body.
    #[serde(default)]
    pub eof: bool,
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/execs/{exec_id}/stdin", operation_id = "exec_stdin", tag = "exec",
    params(
        ("id" = String, Path, description = "Sandbox id or name"),
        ("exec_id" = String, Path, description = "From the `started` event"),
        StdinQuery,
    ),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Bytes for the command's stdin"),
    responses(
        (status = 204, description = "Sent"),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such running exec in that sandbox", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 502, description = "The agent connection failed", body = ErrorBody),
    ))]
pub async fn stdin(
    Extension(registry): Extension<Arc<ExecRegistry>>,
    Path((id, exec_id)): Path<(String, String)>,
    Query(q): Query<StdinQuery>,
    BodyBytes(body): BodyBytes,
) -> ApiResult<StatusCode> {
    let ctl = registry.control(&id, &exec_id)?;
    if !body.is_empty() {
        ctl.write_stdin(body).await.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "agent_error",
                format!("exec {exec_id}: writing stdin: {e}"),
            )
        })?;
    }
    if q.eof {
        ctl.close_stdin().await;
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/exec/ws", operation_id = "exec_ws", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 101, description = "WebSocket: the first client text message is an ExecRequest; binary messages are stdin; text `{\"eof\":true}` closes stdin; the server sends ExecEvent JSON text messages"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn exec_ws(
    State(state): State<AppState>,
    Extension(registry): Extension<Arc<ExecRegistry>>,
    Path(id): Path<String>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult<Response> {
    let s = state.sandbox(&id).await?;
    let ws = ws.map_err(|e| {
        ApiError::bad_request(format!(
            "exec/ws needs a WebSocket upgrade: {}",
            e.body_text()
        ))
    })?;
    Ok(ws
        .max_message_size(super::extract::JSON_LIMIT)
        .on_upgrade(move |socket| ws_session(state, registry, s, socket)))
}

#[derive(Deserialize)]
struct WsControl {
    eof: bool,
}

async fn ws_session(
    state: AppState,
    registry: Arc<ExecRegistry>,
    s: Arc<Sandbox>,
    mut ws: WebSocket,
) {
    let send = |ev: ExecEvent| Message::Text(ev.json().into());
    let fail = |e: ApiError| Message::Text(ExecEvent::Error(e.body()).json().into());
    // The first message: the exec request.
    let req = match ws.recv().await {
        Some(Ok(Message::Text(t))) => serde_json::from_str::<ExecRequest>(t.as_str())
            .map_err(|e| ApiError::bad_request(format!("bad exec request: {e}"))),
        Some(Ok(_)) => Err(ApiError::bad_request(
            "the first message must be a text ExecRequest (JSON)",
        )),
        _ => return,
    };
    let spec = match req.and_then(|r| r.to_spec(true)) {
        Ok(s) => s,
        Err(e) => {
            let _ = ws.send(fail(e)).await;
            return;
        }
    };
    let st = match s.exec_stream(&spec).await {
        Ok(st) => st,
        Err(e) => {
            state.forget_if_gone(s.id(), &e);
            let _ = ws.send(fail(e.into())).await;
            return;
        }
    };
    let ctl = st.control();
    let reg = match registry.register(&s, st.control()) {
        Ok(r) => r,
        Err(e) => {
            let _ = ws.send(fail(e)).await;
            return;
        }
    };
    let (tx, mut rx) = mpsc::channel(64);
    let pumper = tokio::spawn(pump(state.clone(), Arc::clone(&s), st, reg, tx));
    let mut client_open = true;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Some(ev) => {
                    let end = matches!(ev, ExecEvent::Exit(_) | ExecEvent::Error(_));
                    if ws.send(send(ev)).await.is_err() || end {
                        break;
                    }
                }
                None => break,
            },
            m = ws.recv(), if client_open => match m {
                Some(Ok(Message::Binary(b))) => {
                    if let Err(e) = ctl.write_stdin(Bytes::from(b.to_vec())).await {
                        let _ = ws.send(fail(ApiError::new(StatusCode::BAD_GATEWAY, "agent_error", format!("writing stdin: {e}")))).await;
                        break;
                    }
                }
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<WsControl>(t.as_str()) {
                    Ok(WsControl { eof: true }) => ctl.close_stdin().await,
                    Ok(_) => {}
                    Err(_) => {
                        let _ = ws.send(fail(ApiError::bad_request(format!("unknown control message {:?} (expected {{\"eof\":true}})", t.as_str())))).await;
                    }
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    client_open = false;
                    break;
                }
                Some(Ok(_)) => {}
            },
        }
    }
    // Dropping the receiver ends the pump, which drops the stream and so
    // kills a command that still runs.
    drop(rx);
    let _ = pumper.await;
    if client_open {
        let _ = ws.send(Message::Close(None)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(v: serde_json::Value) -> ExecRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn requests_become_specs_and_bad_ones_name_the_field() {
        let s = req(serde_json::json!({"cmd": "echo $0", "argv": ["x"], "stdin": "a", "stdin_base64": "Yg==", "timeout_secs": 2.0})).to_spec(false).unwrap();
        assert_eq!(s.argv, ["/bin/sh", "-c", "echo $0", "x"]);
        assert_eq!(s.stdin, b"ab");
        assert_eq!(s.timeout, Some(Duration::from_secs(2)));
        assert!(!s.stdin_open);
        let s = req(serde_json::json!({"argv": ["cat"], "stdin_open": true}))
            .to_spec(true)
            .unwrap();
        assert!(s.stdin_open);
        for (bad, field) in [
            (serde_json::json!({}), "argv or cmd"),
            (serde_json::json!({"argv": [""]}), "argv"),
            (serde_json::json!({"cmd": "x", "env": {"A=B": "1"}}), "env"),
            (serde_json::json!({"cmd": "x", "cwd": "tmp"}), "cwd"),
            (serde_json::json!({"cmd": "x", "user": "a:b"}), "user"),
            (
                serde_json::json!({"cmd": "x", "stdin_base64": "!!"}),
                "stdin_base64",
            ),
            (
                serde_json::json!({"cmd": "x", "timeout_secs": 0}),
                "timeout_secs",
            ),
        ] {
            let e = req(bad.clone()).to_spec(true).unwrap_err();
            assert_eq!(e.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(e.message.starts_with(field), "{bad}: {}", e.message);
        }
        assert!(serde_json::from_value::<ExecRequest>(
            serde_json::json!({"cmd": "x", "timeout_secs": 1.5})
        )
        .is_err());
        assert!(
            serde_json::from_value::<ExecRequest>(serde_json::json!({"cmd": "x", "nope": 1}))
                .is_err()
        );
    }
}
