//! What every Filesystem and `/files` handler starts with: the sandbox of
//! the request, the user it acts for (and that user's home, the base of
//! relative paths), and the Connect error answer of a unary call.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hearth_runtime::Sandbox;

use super::entry::{Accounts, AccountsCache};
use super::watch::Watchers;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// State of the file surface shared by its handlers (one per router).
#[derive(Default)]
pub struct FsState {
    pub accounts: AccountsCache,
    pub watchers: Watchers,
}

pub type SharedFs = Arc<FsState>;

/// The sandbox, user and home a request acts for.
pub struct Caller {
    pub id: String,
    pub sandbox: Arc<Sandbox>,
    pub user: String,
    pub home: String,
    pub accounts: Arc<Accounts>,
}

impl Caller {
    /// `path` resolved against the caller's home.
    pub fn path(&self, path: &str) -> ApiResult<String> {
        super::entry::resolve(path, &self.home)
    }

    /// Whether files made for this caller are handed to its user (root's
    /// are root's already, as the agent makes them).
    pub fn owns_files(&self) -> bool {
        self.user != "root"
    }
}

/// The user named by `Authorization: Basic base64("<user>:")`, if any.
pub fn basic_user(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
    let Some(b64) = v.strip_prefix("Basic ") else {
        return Err(ApiError::unauthorized(
            "the Authorization header must be `Basic base64(<user>:)`",
        ));
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| ApiError::unauthorized(format!("the Authorization header is not base64: {e}")))?;
    let text = String::from_utf8(raw)
        .map_err(|_| ApiError::unauthorized("the Authorization user is not UTF-8"))?;
    let user = text.split(':').next().unwrap_or("").to_string();
    Ok((!user.is_empty()).then_some(user))
}

/// Resolves the request's sandbox (`E2b-Sandbox-Id`) and user: `username`
/// (the `/files` query) or the Basic user, else the sandbox's default user,
/// else root. A user the guest's /etc/passwd lacks is `unauthenticated`.
pub async fn caller(
    state: &AppState,
    fs: &FsState,
    headers: &HeaderMap,
    username: Option<&str>,
) -> ApiResult<Caller> {
    let id = headers
        .get("e2b-sandbox-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let sandbox = state.sandbox(&id).await.map_err(|e| sandbox_gone(&id, e))?;
    let named = match username.filter(|u| !u.is_empty()) {
        Some(u) => Some(u.to_string()),
        None => basic_user(headers)?,
    };
    let user = named
        .or_else(|| sandbox.record().user.clone())
        .unwrap_or_else(|| "root".into());
    let accounts = fs.accounts.get(&sandbox).await;
    if user != "root" && !accounts.homes.contains_key(&user) {
        return Err(ApiError::unauthorized(format!(
            "invalid username: '{user}' is not a user of sandbox {id}"
        )));
    }
    let home = accounts.home(&user);
    Ok(Caller {
        id: sandbox.id().to_string(),
        sandbox,
        user,
        home,
        accounts,
    })
}

/// A sandbox that is unknown or not running answers as E2B's proxy does:
/// 502 with "was not found" (the SDK's SandboxNotRunning), so it is never
/// taken for a missing file.
pub fn sandbox_gone(id: &str, e: ApiError) -> ApiError {
    match e.kind {
        "not_found" | "wrong_state" => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "sandbox_not_found",
            format!("sandbox {id} was not found ({})", e.message),
        ),
        _ => e,
    }
}

/// A Connect error (unary calls): the status of its code and a JSON body
/// `{"code": "<snake_case>", "message": "..."}`.
#[derive(Debug, Clone)]
pub struct RpcError {
    pub code: &'static str,
    pub message: String,
}

impl RpcError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status Connect gives `code`.
    pub fn status(&self) -> StatusCode {
        match self.code {
            "invalid_argument" | "failed_precondition" | "out_of_range" => StatusCode::BAD_REQUEST,
            "unauthenticated" => StatusCode::UNAUTHORIZED,
            "permission_denied" => StatusCode::FORBIDDEN,
            "not_found" | "unimplemented" => StatusCode::NOT_FOUND,
            "already_exists" | "aborted" => StatusCode::CONFLICT,
            "resource_exhausted" => StatusCode::TOO_MANY_REQUESTS,
            "canceled" => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "unavailable" => StatusCode::SERVICE_UNAVAILABLE,
            "deadline_exceeded" => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The `{"code", "message"}` JSON (also the error of a stream's end).
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"code": self.code, "message": self.message})
    }
}

/// The Connect code of an [`ApiError`] (by its kind, then its status).
pub fn connect_code(e: &ApiError) -> &'static str {
    match e.kind {
        "not_found" => "not_found",
        "already_exists" => "already_exists",
        "permission_denied" => "permission_denied",
        "invalid_argument" => "invalid_argument",
        "unauthenticated" => "unauthenticated",
        "no_space" | "resource_exhausted" => "resource_exhausted",
        "unimplemented" => "unimplemented",
        "unavailable" | "cancelled" | "sandbox_died" | "agent_unreachable" | "sandbox_not_found" => {
            "unavailable"
        }
        "wrong_state" | "conflict" => "failed_precondition",
        _ => match e.status.as_u16() {
            400 => "invalid_argument",
            401 => "unauthenticated",
            403 => "permission_denied",
            404 => "not_found",
            409 => "already_exists",
            429 | 507 => "resource_exhausted",
            502 | 503 => "unavailable",
            _ => "internal",
        },
    }
}

impl From<ApiError> for RpcError {
    fn from(e: ApiError) -> Self {
        RpcError::new(connect_code(&e), e.message)
    }
}

impl From<hearth_runtime::Error> for RpcError {
    fn from(e: hearth_runtime::Error) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for RpcError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code, error = %self.message, "filesystem call failed");
        }
        (status, axum::Json(self.json())).into_response()
    }
}

/// A unary request's JSON body (Connect, `application/json`).
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RpcError> {
    let body = if body.is_empty() { b"{}".as_slice() } else { body };
    serde_json::from_slice(body)
        .map_err(|e| RpcError::new("invalid_argument", format!("malformed request body: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_user() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_user(&h).unwrap(), None);
        h.insert("authorization", "Basic dXNlcjo=".parse().unwrap()); // "user:"
        assert_eq!(basic_user(&h).unwrap().as_deref(), Some("user"));
        h.insert("authorization", "Bearer x".parse().unwrap());
        assert_eq!(basic_user(&h).unwrap_err().kind, "unauthenticated");
        h.insert("authorization", "Basic !!".parse().unwrap());
        assert!(basic_user(&h).unwrap_err().message.contains("base64"));
    }

    #[test]
    fn connect_codes_of_api_errors() {
        let c = |e: ApiError| RpcError::from(e);
        let nf = c(ApiError::not_found("x"));
        assert_eq!((nf.code, nf.status()), ("not_found", StatusCode::NOT_FOUND));
        let ae = c(ApiError::new(StatusCode::CONFLICT, "already_exists", "y"));
        assert_eq!((ae.code, ae.status()), ("already_exists", StatusCode::CONFLICT));
        let ns = c(ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "no_space", "z"));
        assert_eq!(ns.code, "resource_exhausted");
        assert_eq!(c(ApiError::internal("q")).code, "internal");
        assert_eq!(nf.json()["message"], "x");
        let gone = sandbox_gone("abc", ApiError::not_found("no vm abc"));
        assert_eq!(gone.status, StatusCode::BAD_GATEWAY);
        assert!(gone.message.contains("sandbox abc was not found"), "{}", gone.message);
        assert_eq!(c(gone).code, "unavailable");
    }

    #[test]
    fn decode_reports_the_problem() {
        #[derive(serde::Deserialize, Debug)]
        struct R {
            #[allow(dead_code)]
            path: String,
        }
        let e = decode::<R>(b"{\"path\": 3}").unwrap_err();
        assert_eq!(e.code, "invalid_argument");
        assert!(e.message.contains("malformed request body"), "{}", e.message);
    }
}
