//! hearth's own REST API under `/v1` (one file per resource), and its OpenAPI
//! document at `/v1/openapi.json`.

use axum::Router;

use crate::app::AppState;

/// The `/v1` routes that need an API token.
pub fn router() -> Router<AppState> {
    Router::new()
}

/// The `/v1` routes open to anyone (the OpenAPI document).
pub fn open_router() -> Router<AppState> {
    Router::new()
}
