//! Response types shared by several `/v1` resources, and small helpers.

use std::collections::BTreeMap;

use base64::Engine;
use hearth_runtime::{VmRecord, VmStatus};
use serde::Serialize;
use utoipa::ToSchema;

use crate::app::AppState;
use crate::error::ApiError;

/// A sandbox's status.
#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Running,
    Stopped,
    Failed,
    Paused,
}

impl From<VmStatus> for Status {
    fn from(s: VmStatus) -> Self {
        match s {
            VmStatus::Creating => Status::Creating,
            VmStatus::Running => Status::Running,
            VmStatus::Stopped => Status::Stopped,
            VmStatus::Failed => Status::Failed,
            VmStatus::Paused => Status::Paused,
        }
    }
}

impl From<Status> for VmStatus {
    fn from(s: Status) -> Self {
        match s {
            Status::Creating => VmStatus::Creating,
            Status::Running => VmStatus::Running,
            Status::Stopped => VmStatus::Stopped,
            Status::Failed => VmStatus::Failed,
            Status::Paused => VmStatus::Paused,
        }
    }
}

/// A sandbox.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SandboxView {
    pub id: String,
    pub name: Option<String>,
    pub status: Status,
    /// `none`, a language name, or `custom` for a user's image.
    pub language: String,
    pub cpus: u32,
    pub mem_mib: u32,
    /// `none` or `allow_all`.
    pub network: String,
    /// RFC 3339.
    pub created_at: String,
    /// When the server removes it (RFC 3339); null: never.
    pub deadline: Option<String>,
    pub metadata: BTreeMap<String, String>,
    /// The persist volume mounted at `/persist`, if any.
    pub persist: Option<String>,
    /// Why it failed or stopped, when known.
    pub note: Option<String>,
    /// The sandbox's access token (for its E2B envd surface).
    pub access_token: String,
}

impl SandboxView {
    pub fn new(state: &AppState, r: &VmRecord) -> Self {
        Self {
            id: r.id.clone(),
            name: r.name.clone(),
            status: r.status.into(),
            language: r.language.clone(),
            cpus: r.cpus,
            mem_mib: r.mem_mib,
            network: r.network.as_str().to_string(),
            created_at: rfc3339_ms(r.created_at.saturating_mul(1000)),
            deadline: r.deadline_ms.map(rfc3339_ms),
            metadata: r.metadata.clone(),
            persist: r.persist_name(),
            note: r.note.clone(),
            access_token: state.secret().token_for(&r.id),
        }
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339_ms(ms: u64) -> String {
    hearth_runtime::logs::format_time(i64::try_from(ms).unwrap_or(i64::MAX))
}

/// Bytes as text when they are UTF-8; else lossy text plus base64.
pub fn text_and_b64(b: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(b) {
        Ok(s) => (s.to_string(), None),
        Err(_) => (String::from_utf8_lossy(b).into_owned(), Some(b64(b))),
    }
}

pub fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

pub fn unb64(field: &str, s: &str) -> Result<Vec<u8>, ApiError> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .map_err(|e| ApiError::bad_request(format!("{field}: not valid base64: {e}")))
}

/// A guest path from a query: absolute, no NUL.
pub fn guest_path(field: &str, p: &str) -> Result<String, ApiError> {
    if !p.starts_with('/') {
        return Err(ApiError::bad_request(format!(
            "{field}: {p:?} is not an absolute guest path (it must start with '/')"
        )));
    }
    if p.contains('\0') {
        return Err(ApiError::bad_request(format!(
            "{field}: {p:?} contains NUL"
        )));
    }
    Ok(p.to_string())
}

/// [`ApiError::from`] for file operations: an agent `Io` failure whose errno
/// says the request itself was wrong (a non-empty directory, a file where a
/// directory is needed, ...) is the caller's error, not a gateway failure.
pub fn fs_error(e: hearth_runtime::Error) -> ApiError {
    use axum::http::StatusCode;
    let errno = match &e {
        hearth_runtime::Error::Agent { source, .. } => source.remote_errno(),
        _ => None,
    };
    let mut api = ApiError::from(e);
    if api.status != StatusCode::BAD_GATEWAY && api.status != StatusCode::BAD_REQUEST {
        return api;
    }
    // The request passed the handler's checks, so what is left is the
    // guest's state: a directory where a file is needed, a name too long
    // for its file system, ...: a conflict with it.
    if api.status == StatusCode::BAD_REQUEST {
        api.status = StatusCode::CONFLICT;
        api.kind = "conflict";
        return api;
    }
    let (status, kind) = match errno {
        Some(2) => (StatusCode::NOT_FOUND, "not_found"),
        Some(1 | 13 | 30) => (StatusCode::FORBIDDEN, "permission_denied"),
        Some(16..=18 | 20..=22 | 26 | 36 | 39 | 40) => (StatusCode::CONFLICT, "conflict"),
        Some(28) => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
        _ => return api,
    };
    api.status = status;
    api.kind = kind;
    api
}

/// One Server-Sent Event as clients parse it: the `event` name and its
/// `data` (a JSON document, described with each stream).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SseEvent {
    pub event: Option<String>,
    /// JSON text.
    pub data: String,
}
