//! The E2B sandbox surface ("envd"), served by the host: requests carrying
//! `E2b-Sandbox-Id` are translated to hearth's agent protocol. The guest stays
//! hearth's own agent.

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::app::AppState;
use crate::error::ApiError;

pub mod entry;
pub mod files;
pub mod filesystem;
pub mod fs_rpc;
pub mod watch;
pub mod watch_dir;

pub fn router() -> Router<AppState> {
    Router::new().merge(filesystem::router())
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
        return ApiError::bad_request("the E2b-Sandbox-Id header is not valid text").into_response();
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
