//! Snapshots, restores and forks: `POST /v1/sandboxes/{id}/snapshots`,
//! `GET /v1/snapshots`, `GET|DELETE /v1/snapshots/{name}`,
//! `POST /v1/snapshots/{name}/restore`, `POST /v1/sandboxes/{id}/fork`.
//! Thin handlers over [`hearth_runtime::Runtime`]'s snapshot API; the
//! helpers named `pub(crate)` are shared with the E2B routes.
//!
//! Every call is synchronous: a snapshot stops the source's vCPUs for a
//! moment and writes its memory, a restore starts a VM from it (about a
//! second under software emulation), a fork is a snapshot restored N times.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use hearth_runtime::snapshot::SnapshotInfo;
use hearth_runtime::{Error, VmRecord};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::extract::{Json, Path};
use super::model::{rfc3339_ms, SandboxView};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The most clones one fork request makes.
pub const MAX_FORK: u32 = 16;

/// A snapshot on the host.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Snapshot {
    pub name: String,
    /// The sandbox it was taken of (it may be gone since).
    pub source_id: String,
    /// The source's image: `none`, a language name, or `custom`.
    pub language: String,
    pub cpus: u32,
    pub mem_mib: u32,
    /// RFC 3339.
    pub created_at: String,
    /// Bytes on the host's disk (device state, memory and disk data).
    pub bytes: u64,
    /// How long the source's vCPUs were stopped while it was taken.
    pub paused_ms: u64,
}

impl From<&SnapshotInfo> for Snapshot {
    fn from(s: &SnapshotInfo) -> Self {
        Self {
            name: s.name.clone(),
            source_id: s.source_id.clone(),
            language: s.language.clone(),
            cpus: s.cpus,
            mem_mib: s.mem_mib,
            created_at: rfc3339_ms(s.created_at.saturating_mul(1000)),
            bytes: s.bytes,
            paused_ms: s.paused_ms,
        }
    }
}

/// A new snapshot.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotRequest {
    /// Its name (default: `snap-<new id>`); must not exist yet.
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: Option<String>,
}

/// A new sandbox from a snapshot.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// A unique name for the new sandbox, usable instead of its id.
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: Option<String>,
    /// Seconds until the server removes it (default: the server's, 300).
    #[schema(minimum = 1, maximum = 2592000)]
    #[serde(default, deserialize_with = "super::extract::opt_int")]
    pub timeout_secs: Option<u64>,
}

/// Clones of a running sandbox.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// How many (1-16).
    #[schema(minimum = 1, maximum = 16)]
    #[serde(deserialize_with = "super::extract::int")]
    pub count: u32,
    /// Seconds until the server removes each clone (default: the server's, 300).
    #[schema(minimum = 1, maximum = 2592000)]
    #[serde(default, deserialize_with = "super::extract::opt_int")]
    pub timeout_secs: Option<u64>,
}

/// The clones a fork made.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ForkResponse {
    pub sandboxes: Vec<SandboxView>,
}

/// A snapshot name as the runtime takes it, or a 400 naming the problem.
pub(crate) fn check_name(name: &str) -> ApiResult<()> {
    hearth_runtime::lifecycle::create::check_name("snapshot name", name).map_err(ApiError::from)
}

/// The snapshot `name`, or 404.
pub(crate) fn find(state: &AppState, name: &str) -> ApiResult<SnapshotInfo> {
    check_name(name)?;
    state
        .runtime()
        .list_snapshots()?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no snapshot named {name:?}")))
}

/// A request's lifetime in seconds (default: the server's), or a 400.
pub(crate) fn lifetime(state: &AppState, secs: Option<u64>) -> ApiResult<Duration> {
    let max = state.settings().max_timeout;
    let life = match secs {
        Some(0) => return Err(ApiError::bad_request("timeout_secs: must be at least 1")),
        Some(s) => Duration::from_secs(s),
        None => state.settings().default_timeout,
    };
    if life > max {
        return Err(ApiError::bad_request(format!(
            "timeout_secs: {} is above the maximum of {} s",
            life.as_secs(),
            max.as_secs()
        )));
    }
    Ok(life)
}

/// Takes a snapshot of the running sandbox `id`: 404 unknown, 409 not
/// running or the name is taken; a sandbox with a persist volume is
/// refused with 400 (the runtime's `InvalidSpec`).
pub(crate) async fn take(
    state: &AppState,
    id: &str,
    name: Option<&str>,
) -> ApiResult<SnapshotInfo> {
    if let Some(n) = name {
        check_name(n)?;
        if find(state, n).is_ok() {
            return Err(ApiError::conflict(format!(
                "a snapshot named {n:?} exists already; delete it first or choose another name"
            )));
        }
    }
    let rec = state.runtime().get(id).await?.record().clone();
    // The snapshot suspends the agent link: the cached connection is not
    // used across it.
    state.forget(&rec.id);
    let info = state.runtime().snapshot(&rec.id, name).await;
    state.forget(&rec.id);
    let info = info.map_err(|e| match e {
        // The name was taken between the check and the snapshot.
        Error::InvalidSpec(m) if m.contains("exists already") => ApiError::conflict(m),
        e => e.into(),
    })?;
    tracing::info!(sandbox_id = %rec.id, snapshot = %info.name, bytes = info.bytes, "snapshot taken");
    Ok(info)
}

/// Restores `snapshot` as a new sandbox living `life` from now.
pub(crate) async fn restore_one(
    state: &AppState,
    snapshot: &str,
    name: Option<&str>,
    life: Duration,
) -> ApiResult<VmRecord> {
    find(state, snapshot)?;
    let sb = state
        .runtime()
        .restore(snapshot, name)
        .await
        .map_err(|e| match e {
            Error::InvalidSpec(m) if m.contains("is taken by") => ApiError::conflict(m),
            e => e.into(),
        })?;
    Ok(state.runtime().extend(sb.id(), life).await?)
}

/// `count` clones of the running sandbox `id`, each living `life` from now.
pub(crate) async fn fork_n(
    state: &AppState,
    id: &str,
    count: u32,
    life: Duration,
) -> ApiResult<Vec<VmRecord>> {
    let rec = state.runtime().get(id).await?.record().clone();
    state.forget(&rec.id);
    let made = state.runtime().fork(&rec.id, count as usize).await;
    state.forget(&rec.id);
    let mut out = Vec::new();
    for sb in made? {
        out.push(state.runtime().extend(sb.id(), life).await?);
    }
    tracing::info!(sandbox_id = %rec.id, count, "sandbox forked");
    Ok(out)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/snapshots", operation_id = "snapshot_sandbox", tag = "snapshots",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = SnapshotRequest,
    responses(
        (status = 201, description = "The snapshot (the sandbox runs on)", body = Snapshot),
        (status = 400, description = "Bad input, or the sandbox has a persist volume (which a restore would share)", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running, the snapshot name exists, or ambiguous sandbox name", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<SnapshotRequest>,
) -> ApiResult<(StatusCode, axum::Json<Snapshot>)> {
    let info = take(&state, &id, req.name.as_deref()).await?;
    Ok((StatusCode::CREATED, axum::Json(Snapshot::from(&info))))
}

#[utoipa::path(get, path = "/v1/snapshots", operation_id = "list_snapshots", tag = "snapshots",
    responses(
        (status = 200, description = "The snapshots, oldest first", body = [Snapshot]),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ))]
pub async fn list(State(state): State<AppState>) -> ApiResult<axum::Json<Vec<Snapshot>>> {
    let v = state.runtime().list_snapshots()?;
    Ok(axum::Json(v.iter().map(Snapshot::from).collect()))
}

#[utoipa::path(get, path = "/v1/snapshots/{name}", operation_id = "get_snapshot", tag = "snapshots",
    params(("name" = String, Path, description = "Snapshot name")),
    responses(
        (status = 200, description = "The snapshot", body = Snapshot),
        (status = 400, description = "Not a valid snapshot name", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such snapshot", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<Snapshot>> {
    Ok(axum::Json(Snapshot::from(&find(&state, &name)?)))
}

#[utoipa::path(delete, path = "/v1/snapshots/{name}", operation_id = "delete_snapshot", tag = "snapshots",
    params(("name" = String, Path, description = "Snapshot name")),
    responses(
        (status = 204, description = "Removed (sandboxes restored from it are not affected)"),
        (status = 400, description = "Not a valid snapshot name", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such snapshot", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    find(&state, &name)?;
    state.runtime().remove_snapshot(&name)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/snapshots/{name}/restore", operation_id = "restore_snapshot", tag = "snapshots",
    params(("name" = String, Path, description = "Snapshot name")),
    request_body = RestoreRequest,
    responses(
        (status = 201, description = "The new sandbox, running as the source was when the snapshot was taken (with its own id, hostname and machine-id)", body = SandboxView),
        (status = 400, description = "Bad input, or a snapshot this hearth cannot restore (another version, a changed kernel, a truncated file)", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such snapshot", body = ErrorBody),
        (status = 409, description = "The sandbox name is taken", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Not enough host capacity", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 502, description = "The restored sandbox died or its agent did not answer", body = ErrorBody),
    ))]
pub async fn restore(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Json(req): Json<RestoreRequest>,
) -> ApiResult<(StatusCode, axum::Json<SandboxView>)> {
    let life = lifetime(&state, req.timeout_secs)?;
    let rec = restore_one(&state, &name, req.name.as_deref(), life).await?;
    tracing::info!(sandbox_id = %rec.id, snapshot = %name, "sandbox restored");
    Ok((
        StatusCode::CREATED,
        axum::Json(SandboxView::new(&state, &rec)),
    ))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/fork", operation_id = "fork_sandbox", tag = "snapshots",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = ForkRequest,
    responses(
        (status = 201, description = "The clones (the source runs on); all are made or none", body = ForkResponse),
        (status = 400, description = "Bad input (count outside 1-16), or the sandbox has a persist volume", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running, or ambiguous name", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Not enough host capacity", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 502, description = "A clone died or its agent did not answer", body = ErrorBody),
    ))]
pub async fn fork(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<ForkRequest>,
) -> ApiResult<(StatusCode, axum::Json<ForkResponse>)> {
    if req.count == 0 || req.count > MAX_FORK {
        return Err(ApiError::bad_request(format!(
            "count: {} is outside 1..={MAX_FORK}",
            req.count
        )));
    }
    let life = lifetime(&state, req.timeout_secs)?;
    let recs = fork_n(&state, &id, req.count, life).await?;
    let sandboxes = recs.iter().map(|r| SandboxView::new(&state, r)).collect();
    Ok((StatusCode::CREATED, axum::Json(ForkResponse { sandboxes })))
}
