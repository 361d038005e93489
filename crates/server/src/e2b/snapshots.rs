//! E2B's snapshots and fork, as the 2.x SDK calls them:
//!
//! - `Sandbox.create_snapshot(name?)`: `POST /sandboxes/{id}/snapshots`
//!   `{"name"?, "memory"?}` → 201 `SnapshotInfo` `{"snapshotID", "names"}`.
//! - `Sandbox.list_snapshots(sandbox_id?, name?, limit?)`: `GET /snapshots`
//!   `?sandboxID&name&limit&nextToken` → 200 `[SnapshotInfo]`, with
//!   `X-Next-Token` while more pages follow.
//! - `Sandbox.create(snapshot_id)`: `POST /sandboxes` whose `templateID` is a
//!   snapshot → the sandbox restored from it (see [`restore_for_create`]).
//! - `Sandbox.delete_snapshot(id)`: `DELETE /templates/{id}` → 204 / 404.
//! - `Sandbox.fork(count?, timeout?)`: `POST /sandboxes/{id}/fork`
//!   `{"count"?, "timeout"?}` → 201 `[SandboxForkResult]` `{"sandbox": Sandbox}`.
//!
//! A snapshot's `snapshotID` is its hearth name (an E2B tag suffix such as
//! `:default` is accepted on the way in). hearth snapshots always keep the
//! memory: `memory: false` is accepted and keeps it anyway. A name that
//! exists is 409 (E2B would add a new build to it): delete it first.
//! Restored and forked sandboxes report their source's template.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::Json;
use hearth_runtime::snapshot::SnapshotInfo;
use serde::{Deserialize, Serialize};

use super::model::{lifetime, ApiJson, NewSandbox, SandboxOut};
use super::sandboxes::{live, sandbox_out};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::rest::extract::Query;
use crate::rest::snapshots as rest;

/// The most forks one request makes (the SDK's own limit).
pub const MAX_FORK: i64 = 20;

/// `SandboxSnapshotRequest`.
#[derive(Debug, Default, Deserialize)]
pub struct SnapshotRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub memory: Option<bool>,
}

/// `SnapshotInfo`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotOut {
    #[serde(rename = "snapshotID")]
    pub snapshot_id: String,
    pub names: Vec<String>,
}

impl From<&SnapshotInfo> for SnapshotOut {
    fn from(s: &SnapshotInfo) -> Self {
        Self {
            snapshot_id: s.name.clone(),
            names: vec![s.name.clone()],
        }
    }
}

/// `SandboxForkRequest`.
#[derive(Debug, Default, Deserialize)]
pub struct ForkRequest {
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub count: Option<i64>,
}

/// `SandboxForkResult` (hearth's forks are all made or none, so only
/// `sandbox` is ever set).
#[derive(Debug, Clone, Serialize)]
pub struct ForkResult {
    pub sandbox: SandboxOut,
}

/// `GET /snapshots`'s query.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(rename = "sandboxID")]
    pub sandbox_id: Option<String>,
    pub name: Option<String>,
    pub limit: Option<String>,
    #[serde(rename = "nextToken")]
    pub next_token: Option<String>,
}

/// A snapshot id as the SDK may send it: `name`, or `name:tag`.
fn snapshot_name(id: &str) -> &str {
    id.split_once(':').map_or(id, |(n, _)| n)
}

/// `POST /sandboxes/{id}/snapshots`: 201 SnapshotInfo.
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<SnapshotRequest>,
) -> ApiResult<(StatusCode, Json<SnapshotOut>)> {
    let r = live(&state, &id, true).await?;
    if body.memory == Some(false) {
        tracing::info!(sandbox_id = %r.id, "filesystem-only snapshot requested: hearth keeps the memory too");
    }
    let name = body
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .map(snapshot_name);
    let info = rest::take(&state, &r.id, name).await?;
    Ok((StatusCode::CREATED, Json(SnapshotOut::from(&info))))
}

/// `GET /snapshots`: oldest first; `sandboxID` and `name` filter.
pub async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<(HeaderMap, Json<Vec<SnapshotOut>>)> {
    let limit = match q.limit.as_deref() {
        None | Some("") => 100,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "invalid limit {s:?}: an integer in 1..=1000"
                )))
            }
        },
    };
    let all = state.runtime().list_snapshots()?;
    let mut v: Vec<&SnapshotInfo> = all
        .iter()
        .filter(|s| q.sandbox_id.as_ref().is_none_or(|id| &s.source_id == id))
        .filter(|s| q.name.as_deref().is_none_or(|n| s.name == snapshot_name(n)))
        .collect();
    if let Some(t) = q.next_token.as_deref().filter(|t| !t.is_empty()) {
        let at = v.iter().position(|s| s.name == t).ok_or_else(|| {
            ApiError::bad_request(format!(
                "invalid nextToken {t:?}: not a token this server issued"
            ))
        })?;
        v.drain(..=at);
    }
    let mut headers = HeaderMap::new();
    if v.len() > limit {
        v.truncate(limit);
        if let Some(last) = v.last() {
            if let Ok(h) = HeaderValue::from_str(&last.name) {
                headers.insert("x-next-token", h);
            }
        }
    }
    Ok((
        headers,
        Json(v.into_iter().map(SnapshotOut::from).collect()),
    ))
}

/// `DELETE /templates/{id}`: removes the snapshot `id` (E2B's snapshots are
/// templates); 404 when there is none. hearth's own templates cannot be
/// deleted.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let name = snapshot_name(&id);
    if super::templates::resolve(name).is_ok() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_denied",
            format!("template {name:?} is built into hearth and cannot be deleted"),
        ));
    }
    match rest::find(&state, name) {
        Ok(_) => {}
        Err(e) if e.status == StatusCode::BAD_REQUEST => {
            return Err(ApiError::not_found(format!("template {id:?} not found")))
        }
        Err(e) => return Err(e),
    }
    state.runtime().remove_snapshot(name)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /sandboxes` with a `templateID` that names a snapshot: the sandbox
/// restored from it, or `None` when no snapshot has that name.
pub async fn restore_for_create(
    state: &AppState,
    template: &str,
    body: &NewSandbox,
) -> ApiResult<Option<(StatusCode, Json<SandboxOut>)>> {
    let name = snapshot_name(template);
    if rest::find(state, name).is_err() {
        return Ok(None);
    }
    let settings = state.settings();
    let life = lifetime(
        body.timeout
            .unwrap_or(settings.default_timeout.as_secs() as i64),
        settings.max_timeout,
    )?;
    let rec = rest::restore_one(state, name, None, life).await?;
    tracing::info!(sandbox_id = %rec.id, snapshot = name, "sandbox restored from a snapshot");
    Ok(Some((StatusCode::CREATED, Json(sandbox_out(state, &rec)))))
}

/// `POST /sandboxes/{id}/fork`: 201, one `{"sandbox": ...}` per fork.
pub async fn fork(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ForkRequest>,
) -> ApiResult<(StatusCode, Json<Vec<ForkResult>>)> {
    let count = body.count.unwrap_or(1);
    if !(1..=MAX_FORK).contains(&count) {
        return Err(ApiError::bad_request(format!(
            "count must be an integer between 1 and {MAX_FORK}, not {count}"
        )));
    }
    let settings = state.settings();
    let life = lifetime(
        body.timeout
            .unwrap_or(settings.default_timeout.as_secs() as i64),
        settings.max_timeout,
    )?;
    let r = live(&state, &id, true).await?;
    let recs = rest::fork_n(&state, &r.id, count as u32, life)
        .await
        .map_err(|e| match e.status {
            // The SDK documents no 400 for fork (it checks the count
            // itself): a persist volume is a conflict with the sandbox's state.
            StatusCode::BAD_REQUEST => ApiError::conflict(e.message),
            _ => e,
        })?;
    let out = recs
        .iter()
        .map(|rec| ForkResult {
            sandbox: sandbox_out(&state, rec),
        })
        .collect();
    Ok((StatusCode::CREATED, Json(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_ids_drop_their_tag() {
        assert_eq!(snapshot_name("s1"), "s1");
        assert_eq!(snapshot_name("s1:default"), "s1");
        assert_eq!(snapshot_name(""), "");
    }

    #[test]
    fn snapshot_info_has_the_sdk_keys() {
        let v = serde_json::to_value(SnapshotOut {
            snapshot_id: "a".into(),
            names: vec!["a".into()],
        })
        .unwrap();
        assert_eq!(v, serde_json::json!({"snapshotID": "a", "names": ["a"]}));
    }
}
