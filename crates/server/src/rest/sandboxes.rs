//! `/v1/sandboxes`: create (plain or with SSE progress), list, get, delete,
//! timeout, stop, start.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use hearth_runtime::{
    CreateSpec, Network, NoProgress, PersistSpec, Progress, SharedProgress, Step, VmRecord,
};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Path, Query};
use super::model::{SandboxView, Status};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// The network of a new sandbox.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// No NIC: only `lo`.
    None,
    /// Outbound NAT through the host.
    AllowAll,
}

/// A persist volume mounted at `/persist`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PersistRequest {
    /// The volume's name (default: the sandbox id); an existing one is attached again.
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: Option<String>,
    /// Size of a new volume in MiB (default 1024).
    #[schema(minimum = 8, maximum = 1048576)]
    #[serde(default, deserialize_with = "super::extract::opt_int")]
    pub size_mib: Option<u64>,
}

/// A new sandbox.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// A language image (python, javascript, node, ruby, golang); none: the bare guest.
    pub language: Option<String>,
    /// A host path of a squashfs or ext4 root image, instead of a language.
    pub image: Option<String>,
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "super::extract::opt_int")]
    pub cpus: Option<u32>,
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "super::extract::opt_int")]
    pub mem_mib: Option<u32>,
    pub network: Option<NetworkMode>,
    pub persist: Option<PersistRequest>,
    /// Environment of every exec.
    pub env: Option<BTreeMap<String, String>>,
    /// Free-form labels (list filters match them).
    pub metadata: Option<BTreeMap<String, String>>,
    /// Seconds until the server removes it (default: the server's, 300).
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "super::extract::opt_int")]
    pub timeout_secs: Option<u64>,
    /// A unique name usable instead of the id.
    #[schema(pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")]
    pub name: Option<String>,
}

impl CreateRequest {
    fn to_spec(&self, state: &AppState) -> ApiResult<CreateSpec> {
        let d = CreateSpec::default();
        let lifetime = match self.timeout_secs {
            Some(0) => return Err(ApiError::bad_request("timeout_secs: must be at least 1")),
            Some(s) => Duration::from_secs(s),
            None => state.settings().default_timeout,
        };
        if lifetime > state.settings().max_timeout {
            return Err(ApiError::bad_request(format!(
                "timeout_secs: {} is above the maximum of {} s",
                lifetime.as_secs(),
                state.settings().max_timeout.as_secs()
            )));
        }
        Ok(CreateSpec {
            language: self.language.clone(),
            image: self.image.clone().map(Into::into),
            cpus: self.cpus.unwrap_or(d.cpus),
            mem_mib: self.mem_mib.unwrap_or(d.mem_mib),
            network: match self.network {
                None | Some(NetworkMode::None) => Network::None,
                Some(NetworkMode::AllowAll) => Network::AllowAll,
            },
            persist: self.persist.as_ref().map(|p| PersistSpec {
                name: p.name.clone(),
                size_mib: p.size_mib,
            }),
            name: self.name.clone(),
            env: self.env.clone().unwrap_or_default().into_iter().collect(),
            metadata: self.metadata.clone().unwrap_or_default(),
            lifetime: Some(lifetime),
            ..d
        })
    }
}

/// One progress step of a create (SSE event `progress`).
#[derive(Debug, Clone, serde::Serialize, ToSchema)]
pub struct ProgressEvent {
    /// prepare_initramfs, build_image, build_output, image_built, make_disks, boot, stop.
    pub step: String,
    /// The step in words.
    pub message: String,
}

impl From<&Step> for ProgressEvent {
    fn from(s: &Step) -> Self {
        let step = match s {
            Step::PrepareInitramfs => "prepare_initramfs",
            Step::BuildImage { .. } => "build_image",
            Step::BuildOutput { .. } => "build_output",
            Step::ImageBuilt { .. } => "image_built",
            Step::MakeDisks { .. } => "make_disks",
            Step::Boot { .. } => "boot",
            Step::Stop { .. } => "stop",
        };
        Self {
            step: step.into(),
            message: s.to_string(),
        }
    }
}

/// Progress into a bounded channel; steps that do not fit are counted, not kept.
struct ChannelProgress {
    tx: mpsc::Sender<Event>,
    dropped: AtomicU64,
}

impl Progress for ChannelProgress {
    fn step(&self, step: Step) {
        let ev = sse_json("progress", &ProgressEvent::from(&step));
        if self.tx.try_send(ev).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

pub(crate) fn sse_json<T: serde::Serialize>(name: &str, v: &T) -> Event {
    Event::default()
        .event(name)
        .json_data(v)
        .unwrap_or_else(|_| Event::default().event(name).data("{}"))
}

fn wants_sse(headers: &HeaderMap) -> bool {
    headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"))
}

/// Runs a create in its own task, so a client that goes away cancels it
/// (through `cancel`) instead of dropping it half-way.
fn spawn_create(
    state: AppState,
    spec: CreateSpec,
    progress: SharedProgress,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<ApiResult<VmRecord>> {
    tokio::spawn(async move {
        let t0 = Instant::now();
        let r = state
            .runtime()
            .create_cancellable(&spec, &progress, &cancel)
            .await;
        let secs = t0.elapsed().as_secs_f64();
        let m = state.metrics();
        match r {
            Ok(s) => {
                m.create_seconds.with_label_values(&["ok"]).observe(secs);
                Ok(s.record().clone())
            }
            Err(e) => {
                m.create_seconds.with_label_values(&["error"]).observe(secs);
                use hearth_runtime::Error as E;
                if matches!(e, E::Died { .. } | E::Vmm(_) | E::Agent { .. }) {
                    m.boot_failures.inc();
                }
                Err(e.into())
            }
        }
    })
}

#[utoipa::path(post, path = "/v1/sandboxes", operation_id = "create_sandbox", tag = "sandboxes",
    request_body = CreateRequest,
    responses(
        (status = 201, description = "Created. With `Accept: text/event-stream` the answer is instead an SSE stream of `progress` events (ProgressEvent), then one `created` (SandboxView) or `error` (ErrorBody) event.",
            content((SandboxView = "application/json"), (super::model::SseEvent = "text/event-stream"))),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 409, description = "The name or persist volume is in use", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 429, description = "Not enough host capacity", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 502, description = "The sandbox died while booting", body = ErrorBody),
    ))]
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    Json(req): Json<CreateRequest>,
) -> ApiResult<Response> {
    let spec = req.to_spec(&state)?;
    spec.validate()?;
    let cancel = CancellationToken::new();
    if !wants_sse(&headers) {
        let guard = cancel.clone().drop_guard();
        let progress: SharedProgress = Arc::new(NoProgress);
        let r = spawn_create(state.clone(), spec, progress, cancel)
            .await
            .map_err(|e| ApiError::internal(format!("create task: {e}")))?;
        guard.disarm();
        let rec = r?;
        tracing::Span::current().record("sandbox_id", rec.id.as_str());
        return Ok((
            StatusCode::CREATED,
            axum::Json(SandboxView::new(&state, &rec)),
        )
            .into_response());
    }
    let (tx, rx) = mpsc::channel::<Event>(256);
    let progress = Arc::new(ChannelProgress {
        tx: tx.clone(),
        dropped: AtomicU64::new(0),
    });
    let shared: SharedProgress = progress.clone();
    let job = spawn_create(state.clone(), spec, shared, cancel.clone());
    let st = state.clone();
    tokio::spawn(async move {
        let ev = match job.await {
            Ok(Ok(rec)) => sse_json("created", &SandboxView::new(&st, &rec)),
            Ok(Err(e)) => sse_json("error", &e.body()),
            Err(e) => sse_json(
                "error",
                &ApiError::internal(format!("create task: {e}")).body(),
            ),
        };
        let n = progress.dropped.load(Ordering::Relaxed);
        if n > 0 {
            let _ = tx
                .send(Event::default().comment(format!("{n} progress steps dropped")))
                .await;
        }
        let _ = tx.send(ev).await;
    });
    // The guard lives in the stream: a client that disconnects drops it,
    // which cancels the create.
    let guard = cancel.drop_guard();
    let stream = futures::stream::unfold((rx, Some(guard)), |(mut rx, mut guard)| async move {
        match rx.recv().await {
            Some(ev) => Some((Ok::<_, Infallible>(ev), (rx, guard))),
            None => {
                if let Some(g) = guard.take() {
                    g.disarm();
                }
                None
            }
        }
    });
    Ok((
        StatusCode::CREATED,
        Sse::new(stream).keep_alive(KeepAlive::default()),
    )
        .into_response())
}

/// List filters (`metadata` and `status` may repeat).
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only these statuses.
    pub status: Option<Vec<Status>>,
    /// Only this name.
    pub name: Option<String>,
    /// `key:value`: only sandboxes whose metadata has it; `key`: only those
    /// that have the key (every one given must match).
    pub metadata: Option<Vec<String>>,
}

#[utoipa::path(get, path = "/v1/sandboxes", operation_id = "list_sandboxes", tag = "sandboxes", params(ListQuery),
    responses(
        (status = 200, description = "The sandboxes", body = [SandboxView]),
        (status = 400, description = "Bad filter", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    RawQuery(q): RawQuery,
) -> ApiResult<axum::Json<Vec<SandboxView>>> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad_request(format!("bad query string: {e}")))?;
    let mut filter = hearth_runtime::ListFilter::default();
    let mut meta = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "status" => filter.status.push(
                v.parse()
                    .map_err(|e: String| ApiError::bad_request(format!("status: {e}")))?,
            ),
            "name" => filter.name = Some(v),
            "metadata" => match v.split_once(':') {
                Some((mk, mv)) => meta.push((mk.to_string(), Some(mv.to_string()))),
                None => meta.push((v, None)),
            },
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?} (status, name, metadata)"
                )))
            }
        }
    }
    let recs = state.runtime().list(&filter).await?;
    Ok(axum::Json(
        recs.iter()
            .filter(|r| {
                meta.iter().all(|(k, v)| match v {
                    Some(v) => r.metadata.get(k) == Some(v),
                    None => r.metadata.contains_key(k),
                })
            })
            .map(|r| SandboxView::new(&state, r))
            .collect(),
    ))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", operation_id = "get_sandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "The sandbox", body = SandboxView),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The name is ambiguous", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ))]
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SandboxView>> {
    let s = state.runtime().get(&id).await?;
    Ok(axum::Json(SandboxView::new(&state, s.record())))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteQuery {
    /// Keep its persist volume on the host.
    #[serde(default)]
    pub keep_persist: bool,
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}", operation_id = "delete_sandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name"), DeleteQuery),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Bad query", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Wrong state or ambiguous name", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ))]
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<DeleteQuery>,
) -> ApiResult<StatusCode> {
    state.forget(&id);
    let removed = state
        .runtime()
        .remove(
            &id,
            q.keep_persist,
            &(Arc::new(NoProgress) as SharedProgress),
        )
        .await?;
    state.forget(&removed.record.id);
    Ok(StatusCode::NO_CONTENT)
}

/// A new lifetime, counted from now.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutRequest {
    #[schema(minimum = 1, maximum = 2592000)]
    #[serde(deserialize_with = "super::extract::int")]
    pub timeout_secs: u64,
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", operation_id = "set_sandbox_timeout", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = TimeoutRequest,
    responses(
        (status = 200, description = "The sandbox with its new deadline", body = SandboxView),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Ambiguous name", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ))]
pub async fn timeout(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<TimeoutRequest>,
) -> ApiResult<axum::Json<SandboxView>> {
    let max = state.settings().max_timeout.as_secs();
    if req.timeout_secs == 0 || req.timeout_secs > max {
        return Err(ApiError::bad_request(format!(
            "timeout_secs: {} is out of range (1..={max})",
            req.timeout_secs
        )));
    }
    let rec = state
        .runtime()
        .extend(&id, Duration::from_secs(req.timeout_secs))
        .await?;
    Ok(axum::Json(SandboxView::new(&state, &rec)))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/stop", operation_id = "stop_sandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "The stopped sandbox", body = SandboxView),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Still booting, or ambiguous name", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
    ))]
pub async fn stop(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SandboxView>> {
    state.forget(&id);
    let rec = state
        .runtime()
        .stop(&id, &(Arc::new(NoProgress) as SharedProgress))
        .await?;
    state.forget(&rec.id);
    Ok(axum::Json(SandboxView::new(&state, &rec)))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/start", operation_id = "start_sandbox", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "The running sandbox", body = SandboxView),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Already running, or ambiguous name", body = ErrorBody),
        (status = 429, description = "Not enough host capacity", body = ErrorBody),
        (status = 500, description = "Internal error", body = ErrorBody),
        (status = 502, description = "The sandbox died while booting", body = ErrorBody),
    ))]
pub async fn start(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<SandboxView>> {
    let s = state
        .runtime()
        .start(&id, &(Arc::new(NoProgress) as SharedProgress))
        .await?;
    state.forget(s.id());
    Ok(axum::Json(SandboxView::new(&state, s.record())))
}
