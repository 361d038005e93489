//! `GET /v1/sandboxes/{id}/logs`: the console or agent log, as a snapshot or
//! followed over SSE until the VM stops, the client goes or the server stops.

use std::convert::Infallible;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use hearth_runtime::{LogEvent, LogLine, LogQuery, LogSource};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Path, Query};
use super::model::rfc3339_ms;
use super::sandboxes::sse_json;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

#[derive(Debug, Clone, Copy, Default, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The serial console (kernel, init, agent lines); readable when stopped too.
    #[default]
    Console,
    /// The agent's own log (running sandboxes only).
    Agent,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// console (default) or agent.
    pub source: Option<Source>,
    /// Only the last N lines.
    #[param(minimum = 1, maximum = 100000)]
    pub tail: Option<u32>,
    /// A duration back from now (`90s`, `15m`, `2h`, `1d`) or an RFC 3339 time.
    #[param(
        max_length = 40,
        pattern = "^(([0-9]+\\.?[0-9]*|\\.[0-9]+)(ms|s|m|h|d)?|[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[Tt ]([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2}))$"
    )]
    pub since: Option<String>,
    /// Include each line's time (default true).
    pub timestamps: Option<bool>,
    /// Keep the answer open (SSE `lines` events) until the VM stops.
    #[serde(default)]
    pub follow: bool,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogLineView {
    /// RFC 3339, when known and asked for.
    pub at: Option<String>,
    /// The agent's level; console lines have none.
    pub level: Option<String>,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogLines {
    pub lines: Vec<LogLineView>,
    /// Lines dropped before they could be read (follow only).
    pub dropped: u64,
}

fn view(lines: Vec<LogLine>, stamps: bool) -> Vec<LogLineView> {
    lines
        .into_iter()
        .map(|l| LogLineView {
            at: l
                .at_ms
                .filter(|_| stamps)
                .map(|ms| rfc3339_ms(u64::try_from(ms).unwrap_or(0))),
            level: l.level,
            text: l.text,
        })
        .collect()
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/logs", operation_id = "sandbox_logs", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name"), LogsQuery),
    responses(
        (status = 200, description = "The log lines; with follow=true an SSE stream of `lines` events (LogLines) instead", 
            content((LogLines = "application/json"), (super::model::SseEvent = "text/event-stream"))),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The agent log needs a running sandbox", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> ApiResult<Response> {
    let source = match q.source.unwrap_or_default() {
        Source::Console => LogSource::Console,
        Source::Agent => LogSource::Agent,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let since_ms = match &q.since {
        Some(s) => Some(
            hearth_runtime::logs::parse_since(s, now)
                .map_err(|e| ApiError::bad_request(format!("since: {e}")))?,
        ),
        None => None,
    };
    if let Some(t) = q.tail.filter(|t| !(1..=100_000).contains(t)) {
        return Err(ApiError::bad_request(format!(
            "tail: {t} is out of range (1..=100000)"
        )));
    }
    if q.since.as_ref().is_some_and(|s| s.len() > 40) {
        return Err(ApiError::bad_request("since: longer than 40 characters"));
    }
    let query = LogQuery {
        tail: q.tail.map(|t| t as usize),
        since_ms,
    };
    let stamps = q.timestamps.unwrap_or(true);
    // The console is read on the host (any status); the agent log needs a
    // running sandbox and its shared connection.
    let s = match source {
        LogSource::Console => std::sync::Arc::new(state.runtime().get(&id).await?),
        LogSource::Agent => state.sandbox(&id).await?,
    };
    if !q.follow {
        let lines = s
            .log(source, query)
            .await
            .inspect_err(|e| state.forget_if_gone(s.id(), e))?;
        return Ok(axum::Json(LogLines {
            lines: view(lines, stamps),
            dropped: 0,
        })
        .into_response());
    }
    let mut follow = s
        .follow_log(source)
        .await
        .inspect_err(|e| state.forget_if_gone(s.id(), e))?;
    let first = if q.tail.is_some() || q.since.is_some() {
        s.log(source, query).await.unwrap_or_default()
    } else {
        Vec::new()
    };
    let (tx, rx) = mpsc::channel::<axum::response::sse::Event>(16);
    let shutdown = state.shutdown().clone();
    tokio::spawn(async move {
        if !first.is_empty() {
            let ev = sse_json(
                "lines",
                &LogLines {
                    lines: view(first, stamps),
                    dropped: 0,
                },
            );
            if tx.send(ev).await.is_err() {
                return;
            }
        }
        loop {
            let ev = tokio::select! {
                ev = follow.next() => ev,
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => return,
            };
            let out = match ev {
                None => return,
                Some(Ok(LogEvent::Lines(l))) => sse_json(
                    "lines",
                    &LogLines {
                        lines: view(l, stamps),
                        dropped: 0,
                    },
                ),
                Some(Ok(LogEvent::Dropped(n))) => sse_json(
                    "lines",
                    &LogLines {
                        lines: Vec::new(),
                        dropped: n,
                    },
                ),
                Some(Err(e)) => sse_json("error", &ApiError::from(e).body()),
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|ev| (Ok::<_, Infallible>(ev), rx))
    });
    let _ = StatusCode::OK;
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
