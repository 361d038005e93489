//! `POST /v1/sandboxes/{id}/pause` and `/resume`: stop and restart the
//! guest's vCPUs. A paused sandbox keeps its memory and its deadline keeps
//! counting; requests that need its agent answer 409 `paused` until it is
//! resumed.

use axum::extract::{Path, State};

use super::model::SandboxView;
use crate::app::AppState;
use crate::error::{ApiResult, ErrorBody};

#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", operation_id = "pause_sandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "The paused sandbox", body = SandboxView),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running (already paused, stopped, booting), or ambiguous name", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ))]
pub async fn pause(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SandboxView>> {
    // The cached handle's agent connection cannot be used while paused, and
    // is closed before the pause: with vhost-user-vsock, a connection the host
    // closes while the guest is paused leaves the agent unreachable after the
    // resume.
    state.forget(&id);
    let rec = state.runtime().pause(&id).await?;
    state.forget(&rec.id);
    Ok(axum::Json(SandboxView::new(&state, &rec)))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", operation_id = "resume_sandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "The running sandbox", body = SandboxView),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not paused, or ambiguous name", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ))]
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SandboxView>> {
    let rec = state.runtime().resume(&id).await?;
    state.forget(&rec.id);
    Ok(axum::Json(SandboxView::new(&state, &rec)))
}
