//! Create, get, kill, connect, timeout and metrics of one sandbox (pause
//! and resume: [`super::pause`]).
//!
//! E2B's view: only running and paused hearth sandboxes exist. A stopped or
//! failed one (or one still being created) is 404 to get, connect, timeout and metrics,
//! and is not listed; `DELETE` removes a hearth sandbox in any state.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use hearth_runtime::{CreateSpec, Error, Network, NoProgress, SharedProgress, VmRecord, VmStatus};

use super::model::{
    lifetime, millis, rfc3339_ms, ApiJson, ConnectRequest, NewSandbox, SandboxDetail,
    SandboxMetric, SandboxOut, TimeoutRequest, CLIENT_ID, ENVD_VERSION,
};
use super::templates;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

fn progress() -> SharedProgress {
    Arc::new(NoProgress)
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("sandbox {id:?} was not found"))
}

/// E2B's name of a listed sandbox's state.
pub fn e2b_state(s: VmStatus) -> &'static str {
    match s {
        VmStatus::Paused => "paused",
        VmStatus::Creating | VmStatus::Running | VmStatus::Stopped | VmStatus::Failed => "running",
    }
}

/// The running record `id`, or 404 (unknown, or not running).
async fn running(state: &AppState, id: &str) -> ApiResult<VmRecord> {
    live(state, id, false).await
}

/// The running (or, with `paused_too`, paused) record `id`, or 404.
pub(crate) async fn live(state: &AppState, id: &str, paused_too: bool) -> ApiResult<VmRecord> {
    match state.runtime().get(id).await {
        Ok(s) if s.status() == VmStatus::Running => Ok(s.record().clone()),
        Ok(s) if paused_too && s.status() == VmStatus::Paused => Ok(s.record().clone()),
        Ok(s) => {
            state.forget(id);
            Err(ApiError::not_found(format!(
                "sandbox {id:?} was not found (it is {} in hearth)",
                s.status()
            )))
        }
        Err(Error::NotFound(_)) => Err(not_found(id)),
        Err(e) => Err(e.into()),
    }
}

/// The create/connect answer of a record.
pub fn sandbox_out(state: &AppState, r: &VmRecord) -> SandboxOut {
    SandboxOut {
        template_id: templates::template_of(&r.language).to_string(),
        sandbox_id: r.id.clone(),
        client_id: CLIENT_ID.into(),
        envd_version: ENVD_VERSION.into(),
        envd_access_token: state.secret().token_for(&r.id),
        domain: state.settings().domain.clone(),
    }
}

/// The detail (`with_secrets`) or list item of a record. A sandbox made
/// without a lifetime (by the hearth CLI) reports `endAt` as its start plus
/// the longest lifetime.
pub fn detail(state: &AppState, r: &VmRecord, with_secrets: bool) -> SandboxDetail {
    let started = r.created_at.saturating_mul(1000);
    let end = r.deadline_ms.unwrap_or_else(|| {
        started.saturating_add(millis(
            SystemTime::UNIX_EPOCH + state.settings().max_timeout,
        ))
    });
    SandboxDetail {
        template_id: templates::template_of(&r.language).to_string(),
        sandbox_id: r.id.clone(),
        client_id: CLIENT_ID.into(),
        started_at: rfc3339_ms(started),
        end_at: rfc3339_ms(end),
        envd_version: ENVD_VERSION.into(),
        envd_access_token: with_secrets.then(|| state.secret().token_for(&r.id)),
        domain: with_secrets.then(|| state.settings().domain.clone()),
        cpu_count: r.cpus,
        memory_mb: r.mem_mib,
        disk_size_mb: r.disk_mib,
        metadata: r.metadata.clone(),
        state: e2b_state(r.status).into(),
        allow_internet_access: with_secrets.then_some(r.network == Network::AllowAll),
    }
}

/// `POST /sandboxes`, `POST /v2/sandboxes`: 201 Sandbox.
pub async fn create(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<NewSandbox>,
) -> ApiResult<(StatusCode, Json<SandboxOut>)> {
    let template = body
        .template_id
        .as_deref()
        .unwrap_or(templates::DEFAULT_TEMPLATE);
    let tpl = match templates::resolve(template) {
        Ok(t) => t,
        Err(e) => {
            return match super::snapshots::restore_for_create(&state, template, &body).await? {
                Some(out) => Ok(out),
                None => Err(e),
            }
        }
    };
    let settings = state.settings();
    let life = lifetime(
        body.timeout
            .unwrap_or(settings.default_timeout.as_secs() as i64),
        settings.max_timeout,
    )?;
    // No NIC unless asked for: E2B allows internet by default, hearth does
    // not without `allow_internet_access: true` (or a network config that
    // allows outbound traffic).
    let wants_net = body.allow_internet_access.unwrap_or_else(|| {
        body.network
            .as_ref()
            .and_then(|n| n.allow_out.as_ref())
            .is_some_and(|a| !a.is_empty())
    });
    if body.auto_pause == Some(true) {
        tracing::info!(
            "autoPause requested: hearth does not pause at the timeout; the sandbox is removed then"
        );
    }
    let spec = CreateSpec {
        language: Some(tpl.language.into()),
        cpus: tpl.cpus,
        mem_mib: tpl.mem_mib,
        network: if wants_net {
            Network::AllowAll
        } else {
            Network::None
        },
        env: body.env_vars.unwrap_or_default().into_iter().collect(),
        metadata: body.metadata.unwrap_or_default(),
        lifetime: Some(life),
        ..Default::default()
    };
    spec.validate()?;
    // Its own task: a client that goes away does not cancel a create half
    // way (the sandbox then has a deadline and the reaper ends it); a server
    // shutdown does.
    let rt = state.runtime().clone();
    let cancel = state.shutdown().child_token();
    let t0 = Instant::now();
    let res = tokio::spawn(async move { rt.create_cancellable(&spec, &progress(), &cancel).await })
        .await
        .map_err(|e| ApiError::internal(format!("the create task failed: {e}")))?;
    let secs = t0.elapsed().as_secs_f64();
    let sb = match res {
        Ok(sb) => {
            state
                .metrics()
                .create_seconds
                .with_label_values(&["ok"])
                .observe(secs);
            sb
        }
        Err(e) => {
            state
                .metrics()
                .create_seconds
                .with_label_values(&["error"])
                .observe(secs);
            if matches!(e, Error::Died { .. } | Error::Vmm(_) | Error::Agent { .. }) {
                state.metrics().boot_failures.inc();
            }
            return Err(e.into());
        }
    };
    tracing::Span::current().record("sandbox_id", sb.id());
    tracing::info!(sandbox_id = sb.id(), template, secs, "sandbox created");
    Ok((StatusCode::CREATED, Json(sandbox_out(&state, sb.record()))))
}

/// `GET /sandboxes/{id}`: SandboxDetail.
pub async fn get_one(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxDetail>> {
    let r = live(&state, &id, true).await?;
    Ok(Json(detail(&state, &r, true)))
}

/// `DELETE /sandboxes/{id}`: 204, or 404 for an unknown one.
pub async fn kill(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    state.forget(&id);
    match state.runtime().remove(&id, false, &progress()).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(Error::NotFound(_)) => Err(not_found(&id)),
        Err(e) => Err(e.into()),
    }
}

/// `POST /sandboxes/{id}/timeout`: the deadline becomes now + timeout.
pub async fn set_timeout(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<TimeoutRequest>,
) -> ApiResult<StatusCode> {
    let life = lifetime(body.timeout, state.settings().max_timeout)?;
    let r = live(&state, &id, true).await?;
    state.runtime().extend(&r.id, life).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes/{id}/connect`, `POST /v2/sandboxes/{id}/connect`: 200
/// Sandbox for a running one, 201 for a paused one, which is resumed. A
/// `timeout` moves the deadline to now + timeout only if that is later
/// (E2B: connecting never shortens a sandbox's life).
pub async fn connect(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ConnectRequest>,
) -> ApiResult<(StatusCode, Json<SandboxOut>)> {
    let mut r = live(&state, &id, true).await?;
    let mut code = StatusCode::OK;
    if r.status == VmStatus::Paused {
        r = super::pause::resume_record(&state, &r.id).await?;
        code = StatusCode::CREATED;
    }
    if let Some(t) = body.timeout {
        let life = lifetime(t, state.settings().max_timeout)?;
        let new_end = millis(SystemTime::now() + life);
        if r.deadline_ms.is_some_and(|d| d < new_end) {
            r = state.runtime().extend(&r.id, life).await?;
        }
    }
    Ok((code, Json(sandbox_out(&state, &r))))
}

/// `GET /sandboxes/{id}/metrics`: one sample now (CPU use over 200 ms).
pub async fn metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<SandboxMetric>>> {
    running(&state, &id).await?;
    let sb = state.sandbox(&id).await?;
    let sample = async {
        let a = sb.stats().await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let b = sb.stats().await?;
        Ok::<_, Error>((a, b))
    };
    let (a, b) = match sample.await {
        Ok(v) => v,
        Err(e) => {
            state.forget_if_gone(&id, &e);
            return Err(e.into());
        }
    };
    let disk = b.disk("/").or_else(|| b.disks.first());
    let now = SystemTime::now();
    Ok(Json(vec![SandboxMetric {
        timestamp: rfc3339_ms(millis(now)),
        timestamp_unix: (millis(now) / 1000) as i64,
        cpu_count: b.cpu.cpu_count,
        cpu_used_pct: hearth_runtime::stats::cpu_percent(&a, &b).unwrap_or(0.0),
        mem_used: b.memory.used_bytes,
        mem_total: b.memory.total_bytes,
        mem_cache: b.memory.cached_bytes,
        disk_used: disk.map(|d| d.used_bytes).unwrap_or(0),
        disk_total: disk.map(|d| d.total_bytes).unwrap_or(0),
    }]))
}
