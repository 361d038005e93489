//! The E2B control plane: the REST routes the official E2B SDKs call
//! (`/sandboxes`, `/v2/sandboxes`, ...), over hearth-runtime.
//!
//! - [`model`]: the JSON types, [`model::ApiJson`] (bad JSON → JSON 400).
//! - [`sandboxes`]: create, get, kill, connect, timeout, metrics, pause.
//! - [`pause`]: pause, resume (and connect resuming a paused sandbox).
//! - [`snapshots`]: snapshots (create, list, delete, create a sandbox from one), fork.
//! - [`list`]: the list with its filters and pagination.
//! - [`templates`]: E2B template → hearth image.

pub mod list;
pub mod model;
pub mod pause;
pub mod sandboxes;
pub mod snapshots;
pub mod templates;

use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    use sandboxes as s;
    Router::new()
        .route("/sandboxes", post(s::create).get(list::list))
        .route("/v2/sandboxes", post(s::create).get(list::list))
        .route("/sandboxes/{id}", get(s::get_one).delete(s::kill))
        .route("/sandboxes/{id}/timeout", post(s::set_timeout))
        .route("/sandboxes/{id}/connect", post(s::connect))
        .route("/v2/sandboxes/{id}/connect", post(s::connect))
        .route("/sandboxes/{id}/metrics", get(s::metrics))
        .route("/sandboxes/{id}/pause", post(pause::pause))
        .route("/sandboxes/{id}/resume", post(pause::resume))
        .route("/sandboxes/{id}/snapshots", post(snapshots::create))
        .route("/sandboxes/{id}/fork", post(snapshots::fork))
        .route("/snapshots", get(snapshots::list))
        .route("/templates/{id}", delete(snapshots::delete))
        .method_not_allowed_fallback(method_not_allowed)
}

/// A known path with a method it does not take: a JSON 405.
async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}
