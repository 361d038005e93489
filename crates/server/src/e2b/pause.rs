//! E2B's pause and resume: `POST /sandboxes/{id}/pause` (204; 409 when it is
//! already paused, which the SDK reads as "was already paused"; 404 for an
//! unknown or stopped one) and `POST /sandboxes/{id}/resume` (201 Sandbox;
//! 409 when it is running). `connect` on a paused sandbox resumes it too
//! (see [`super::sandboxes::connect`]).
//!
//! hearth's pause always keeps the guest's memory (the VM's vCPUs stop in
//! place), so the SDK's `memory: false` (filesystem-only pause, reboot on
//! resume) is accepted and keeps the memory anyway.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hearth_runtime::{VmRecord, VmStatus};

use super::model::SandboxOut;
use super::sandboxes::{live, sandbox_out};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// `POST /sandboxes/{id}/pause`.
pub async fn pause(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    let r = live(&state, &id, true).await?;
    if r.status == VmStatus::Paused {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("sandbox {id:?} is already paused"),
        ));
    }
    // Closed before the pause, not during it (see rest::pause).
    state.forget(&r.id);
    let rec = state.runtime().pause(&r.id).await?;
    state.forget(&rec.id);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/resume`: 201 Sandbox.
pub async fn resume(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<SandboxOut>)> {
    let r = live(&state, &id, true).await?;
    if r.status == VmStatus::Running {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!("sandbox {id:?} is already running"),
        ));
    }
    let rec = resume_record(&state, &r.id).await?;
    Ok((StatusCode::CREATED, Json(sandbox_out(&state, &rec))))
}

/// Resumes a paused sandbox and drops any stale cached handle of it.
pub(crate) async fn resume_record(state: &AppState, id: &str) -> ApiResult<VmRecord> {
    let rec = state.runtime().resume(id).await?;
    state.forget(&rec.id);
    Ok(rec)
}
