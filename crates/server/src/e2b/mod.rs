//! The E2B control plane: the REST routes the official E2B SDKs call
//! (`/sandboxes`, `/v2/sandboxes`, ...), over hearth-runtime.

use axum::Router;

use crate::app::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
