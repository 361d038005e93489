//! `/v1/sandboxes/{id}/processes`: background processes (list, start,
//! attach over SSE, signal).

use std::collections::BTreeMap;
use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use hearth_runtime::{AttachEvent, DetachSpec, ProcessInfo, ProcessRef};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::exec::{ExecRequest, ExitInfo};
use super::extract::{Json, Path, Query};
use super::model::{b64, rfc3339_ms};
use super::sandboxes::sse_json;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// A background process.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProcessView {
    pub pid: u32,
    pub tag: Option<String>,
    pub argv: Vec<String>,
    /// running or exited.
    pub state: String,
    /// RFC 3339.
    pub started_at: String,
    /// How it ended, once it has.
    pub exit: Option<ExitInfo>,
    pub pty: bool,
    /// Bytes of output so far.
    pub output_bytes: u64,
    /// Offset of the oldest output byte still retained.
    pub retained_from: u64,
    pub buffer_bytes: u32,
}

impl From<&ProcessInfo> for ProcessView {
    fn from(p: &ProcessInfo) -> Self {
        Self {
            pid: p.pid,
            tag: p.tag.clone(),
            argv: p.argv.clone(),
            state: p.state.as_str().into(),
            started_at: rfc3339_ms(p.started_unix_ms),
            exit: p.outcome.as_ref().map(|o| ExitInfo {
                exit_code: o.exit_code(),
                kind: o.kind().into(),
                message: o.to_string(),
                signal: match o {
                    hearth_runtime::Outcome::Killed { signal, .. }
                    | hearth_runtime::Outcome::TimedOut { signal } => Some(*signal),
                    _ => None,
                },
                duration_ms: 0,
            }),
            pty: p.pty,
            output_bytes: p.output_bytes,
            retained_from: p.retained_from,
            buffer_bytes: p.buffer_bytes,
        }
    }
}

/// A background process to start.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartProcessRequest {
    /// Program and arguments. Give this or `cmd`.
    pub argv: Option<Vec<String>>,
    /// A shell command line (`/bin/sh -c`). Give this or `argv`.
    pub cmd: Option<String>,
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
    pub user: Option<String>,
    /// Initial stdin as text (at most 256 KiB).
    pub stdin: Option<String>,
    pub stdin_base64: Option<String>,
    #[schema(minimum = 1, maximum = 2592000)]
    #[serde(default, deserialize_with = "super::extract::opt_int")]
    pub timeout_secs: Option<u64>,
    /// A name unique among running processes: 1-64 of `[A-Za-z0-9._-]`, not all digits.
    pub tag: Option<String>,
    /// Output ring buffer in bytes (default 1 MiB).
    #[schema(minimum = 4096, maximum = 67108864)]
    #[serde(default, deserialize_with = "super::extract::opt_int")]
    pub buffer_bytes: Option<u32>,
}

/// A started process.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Started {
    pub pid: u32,
    pub tag: Option<String>,
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes", operation_id = "list_processes", tag = "processes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "The background processes", body = [ProcessView]),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<Vec<ProcessView>>> {
    let s = state.sandbox(&id).await?;
    let v = s
        .processes()
        .await
        .inspect_err(|e| state.forget_if_gone(s.id(), e))?;
    Ok(axum::Json(v.iter().map(ProcessView::from).collect()))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes", operation_id = "start_process", tag = "processes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = StartProcessRequest,
    responses(
        (status = 201, description = "Started", body = Started),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "It could not start (`never_started`), the tag is in use, or the sandbox is not running", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<StartProcessRequest>,
) -> ApiResult<(StatusCode, axum::Json<Started>)> {
    let exec = ExecRequest {
        argv: req.argv,
        cmd: req.cmd,
        env: req.env,
        cwd: req.cwd,
        user: req.user,
        stdin: req.stdin,
        stdin_base64: req.stdin_base64,
        stdin_open: None,
        timeout_secs: req.timeout_secs,
    }
    .to_spec(false)?;
    if let Some(t) = &req.tag {
        let ok = (1..=64).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            && !t.bytes().all(|b| b.is_ascii_digit());
        if !ok {
            return Err(ApiError::bad_request(format!(
                "tag: {t:?} must be 1-64 of [A-Za-z0-9._-], not all digits"
            )));
        }
    }
    if let Some(b) = req.buffer_bytes {
        if !(4096..=64 << 20).contains(&b) {
            return Err(ApiError::bad_request(format!(
                "buffer_bytes: {b} is out of range (4096..=67108864)"
            )));
        }
    }
    let spec = DetachSpec {
        exec,
        tag: req.tag.clone(),
        buffer_bytes: req.buffer_bytes.unwrap_or(0),
    };
    let s = state.sandbox(&id).await?;
    let pid = match s.exec_detached(&spec).await {
        Ok(pid) => pid,
        // The request was valid; the guest could not start it (no such
        // program, user or directory).
        Err(hearth_runtime::Error::InvalidSpec(m)) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "never_started", m))
        }
        Err(e) => {
            state.forget_if_gone(s.id(), &e);
            return Err(e.into());
        }
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(Started { pid, tag: req.tag }),
    ))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttachQuery {
    /// Replay retained output from this byte offset (default: all retained).
    pub from_offset: Option<u64>,
}

/// One event of an attach (SSE event name = `event`).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AttachEventView {
    Attached {
        pid: u32,
        tag: Option<String>,
        /// Offset of the first byte that follows.
        offset: u64,
        /// Bytes asked for that were already overwritten.
        dropped: u64,
    },
    Stdout {
        data: String,
    },
    Stderr {
        data: String,
    },
    /// This many bytes were overwritten before they could be sent.
    Dropped {
        bytes: u64,
    },
    Exit(ExitInfo),
    Error(ErrorBody),
}

impl AttachEventView {
    fn name(&self) -> &'static str {
        match self {
            Self::Attached { .. } => "attached",
            Self::Stdout { .. } => "stdout",
            Self::Stderr { .. } => "stderr",
            Self::Dropped { .. } => "dropped",
            Self::Exit(_) => "exit",
            Self::Error(_) => "error",
        }
    }
}

fn target(s: &str) -> ApiResult<ProcessRef> {
    if s.is_empty() {
        return Err(ApiError::bad_request("pid_or_tag: empty"));
    }
    // Tags are never all digits: digits that are no valid pid name nothing;
    // neither does anything the agent would refuse as a tag.
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.parse::<u32>() {
            Ok(p) if p > 0 => Ok(ProcessRef::Pid(p)),
            _ => Err(ApiError::not_found(format!(
                "no background process with pid {s}"
            ))),
        };
    }
    if hearth_proto::background::validate_tag(s).is_err() {
        return Err(ApiError::not_found(format!(
            "no background process with tag {s:?}"
        )));
    }
    Ok(ProcessRef::Tag(s.to_string()))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid_or_tag}/attach", operation_id = "attach_process", tag = "processes",
    params(
        ("id" = String, Path, description = "Sandbox id or name"),
        ("pid_or_tag" = String, Path, description = "A pid or a tag"),
        AttachQuery,
    ),
    responses(
        (status = 200, description = "An SSE stream of AttachEventView: `attached`, then `stdout`/`stderr`/`dropped`, then `exit` (or `error`)", content_type = "text/event-stream", body = super::model::SseEvent),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox or process", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn attach(
    State(state): State<AppState>,
    Path((id, who)): Path<(String, String)>,
    Query(q): Query<AttachQuery>,
) -> ApiResult<Response> {
    let t = target(&who)?;
    let s = state.sandbox(&id).await?;
    let mut st = s
        .attach(&t, q.from_offset)
        .await
        .inspect_err(|e| state.forget_if_gone(s.id(), e))?;
    let (tx, rx) = mpsc::channel::<AttachEventView>(64);
    let a = st.attached().clone();
    let shutdown = state.shutdown().clone();
    tokio::spawn(async move {
        let first = AttachEventView::Attached {
            pid: a.pid,
            tag: a.tag,
            offset: a.offset,
            dropped: a.dropped,
        };
        if tx.send(first).await.is_err() {
            return;
        }
        loop {
            let ev = tokio::select! {
                ev = st.next() => ev,
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => {
                    let e = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the server is shutting down");
                    let _ = tx.send(AttachEventView::Error(e.body())).await;
                    return;
                }
            };
            let (out, end) = match ev {
                Ok(Some(AttachEvent::Stdout(b))) => {
                    (AttachEventView::Stdout { data: b64(&b) }, false)
                }
                Ok(Some(AttachEvent::Stderr(b))) => {
                    (AttachEventView::Stderr { data: b64(&b) }, false)
                }
                Ok(Some(AttachEvent::Dropped(n))) => (AttachEventView::Dropped { bytes: n }, false),
                Ok(Some(AttachEvent::Exit(x))) => (AttachEventView::Exit(ExitInfo::from(&x)), true),
                Ok(None) => return,
                Err(e) => (AttachEventView::Error(ApiError::from(e).body()), true),
            };
            if tx.send(out).await.is_err() || end {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|ev| (Ok::<_, Infallible>(sse_json(ev.name(), &ev)), rx))
    });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// A signal: a name (`TERM`, `SIGKILL`, ...) or a number.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum Signal {
    #[schema(value_type = i32)]
    Number(serde_json::Number),
    Name(String),
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KillRequest {
    /// Default TERM.
    pub signal: Option<Signal>,
}

const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("TERM", 15),
    ("CONT", 18),
    ("STOP", 19),
];

/// Every signal name a kill takes: `TERM` and `SIGTERM` alike.
pub fn signal_names() -> Vec<String> {
    SIGNALS
        .iter()
        .flat_map(|(n, _)| [n.to_string(), format!("SIG{n}")])
        .collect()
}

fn signal_number(s: &Signal) -> ApiResult<i32> {
    match s {
        Signal::Number(n) => match super::extract::integer_of(n) {
            Some(v @ 1..=64) => Ok(v as i32),
            _ => Err(ApiError::bad_request(format!(
                "signal: {n} is not a signal number (1..=64)"
            ))),
        },
        Signal::Name(name) => {
            let bare = name.strip_prefix("SIG").unwrap_or(name);
            SIGNALS
                .iter()
                .find(|(n, _)| *n == bare)
                .map(|(_, v)| *v)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "signal: unknown signal {name:?} (HUP, INT, QUIT, KILL, USR1, USR2, TERM, CONT, STOP, or a number)"
                    ))
                })
        }
    }
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid_or_tag}/kill", operation_id = "kill_process", tag = "processes",
    params(
        ("id" = String, Path, description = "Sandbox id or name"),
        ("pid_or_tag" = String, Path, description = "A pid or a tag"),
    ),
    request_body = KillRequest,
    responses(
        (status = 204, description = "Signalled (its process group)"),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox or process", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn kill(
    State(state): State<AppState>,
    Path((id, who)): Path<(String, String)>,
    Json(req): Json<KillRequest>,
) -> ApiResult<StatusCode> {
    let t = target(&who)?;
    let sig = match &req.signal {
        Some(s) => signal_number(s)?,
        None => 15,
    };
    let s = state.sandbox(&id).await?;
    s.kill_process(&t, sig)
        .await
        .inspect_err(|e| state.forget_if_gone(s.id(), e))?;
    Ok(StatusCode::NO_CONTENT)
}
