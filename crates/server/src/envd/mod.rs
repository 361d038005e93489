//! The E2B sandbox surface ("envd"), served by the host: requests carrying
//! `E2b-Sandbox-Id` are translated to hearth's agent protocol. The guest stays
//! hearth's own agent.
//!
//! - [`pb`]: the envd schema's types (prost + proto3 JSON).
//! - [`connect`]: the Connect protocol over axum (unary, server and client
//!   streams, envelopes, errors, timeouts, keepalives).
//! - [`user`]: the user a request runs as, its home and default cwd.
//! - [`process`]: the `process.Process` service over hearth background
//!   processes.
//! - [`filesystem`]: the `filesystem.Filesystem` service and `/files`
//!   ([`files`]); [`entry`] maps hearth's `FileInfo` to envd's `EntryInfo`,
//!   [`watch`] / [`watch_dir`] are directory watches, [`fs_rpc`] the
//!   request's sandbox and user.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use hearth_runtime::Sandbox;

pub mod connect;
pub mod pb;
pub mod process;
mod process_map;
pub mod user;

pub mod entry;
pub mod files;
pub mod filesystem;
pub mod fs_rpc;
pub mod watch;
pub mod watch_dir;

use crate::app::AppState;
use crate::error::ApiError;
use connect::ConnectError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/health", get(health))
        .merge(process::router())
        .merge(filesystem::router())
        // Routes go above: the layers below reach only what is added before them.
        .layer(Extension(user::Users::default()))
        .layer(Extension(process_map::Registry::default()))
}

/// The running sandbox a gateway request is for. Unknown, stopped or dead
/// sandboxes are `unavailable` "... was not found" (what the SDK reads as
/// "not running").
pub async fn sandbox(state: &AppState, headers: &HeaderMap) -> Result<Arc<Sandbox>, ConnectError> {
    let id = headers
        .get("e2b-sandbox-id")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ConnectError::invalid_argument("the E2b-Sandbox-Id header is missing or not text")
        })?;
    match state.sandbox(id).await {
        Ok(s) => Ok(s),
        Err(e) if matches!(e.kind, "not_found" | "wrong_state") => {
            Err(ConnectError::sandbox_gone(id, e.message))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /health`: 204 while the sandbox runs.
async fn health(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<StatusCode, ConnectError> {
    sandbox(&state, &headers).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The sandbox a gateway request is for (its `E2b-Sandbox-Id`).
pub fn sandbox_id(req: &Request) -> Option<&str> {
    req.headers()
        .get("e2b-sandbox-id")
        .and_then(|v| v.to_str().ok())
}

/// Middleware: `X-Access-Token` must be the sandbox's access token.
pub async fn require_access_token(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(id) = sandbox_id(&req) else {
        return ApiError::bad_request("the E2b-Sandbox-Id header is not valid text")
            .into_response();
    };
    let token = req
        .headers()
        .get("x-access-token")
        .and_then(|v| v.to_str().ok());
    match token {
        Some(t) if state.secret().check(id, t) => next.run(req).await,
        Some(_) => ApiError::unauthorized(format!("invalid access token for sandbox {id}"))
            .into_response(),
        None => ApiError::unauthorized(format!(
            "missing X-Access-Token for sandbox {id} (create and connect return it as envdAccessToken)"
        ))
        .into_response(),
    }
}

/// Unknown sandbox routes: a JSON 404.
pub async fn no_route(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no sandbox route for {} {}",
        req.method(),
        req.uri().path()
    ))
}
