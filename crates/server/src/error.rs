//! [`ApiError`]: every failure a route returns, mapped once from the runtime's
//! error to an HTTP status and a JSON body. The body is
//! `{"code": <status>, "kind": "<snake_case>", "message": "..."}`: hearth's
//! clients read `kind`, the E2B SDK reads `code` and `message`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use hearth_runtime::{pb, Error};

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable snake_case name (`not_found`, `invalid_argument`, ...).
    pub kind: &'static str,
    pub message: String,
}

/// The JSON body of every error answer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The HTTP status again (the E2B SDK reads it from the body).
    pub code: u16,
    /// A stable snake_case name of what went wrong.
    pub kind: String,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.status.as_u16(),
            kind: self.kind.to_string(),
            message: self.message.clone(),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.status, self.kind, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The whole chain of an error, `outer: inner: ...`, each text once.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// The status and kind an agent error code stands for.
pub fn agent_code_status(code: pb::ErrorCode) -> (StatusCode, &'static str) {
    use pb::ErrorCode as C;
    match code {
        C::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        C::AlreadyExists => (StatusCode::CONFLICT, "already_exists"),
        C::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
        C::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_argument"),
        C::NoSpace => (StatusCode::INSUFFICIENT_STORAGE, "no_space"),
        C::Unsupported => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
        C::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        C::UnknownSession => (StatusCode::NOT_FOUND, "not_found"),
        C::Unspecified
        | C::BadFrame
        | C::UnknownType
        | C::Decode
        | C::Io
        | C::DuplicateSeq
        | C::Internal
        | C::FlowControl => (StatusCode::BAD_GATEWAY, "agent_error"),
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let message = chain(&e);
        let (status, kind) = match &e {
            Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Error::AmbiguousName { .. } => (StatusCode::CONFLICT, "ambiguous_name"),
            Error::WrongState { .. } => (StatusCode::CONFLICT, "wrong_state"),
            Error::Paused { .. } => (StatusCode::CONFLICT, "paused"),
            Error::InvalidSpec(_) => (StatusCode::BAD_REQUEST, "invalid_argument"),
            Error::Admission(_) => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
            Error::PersistInUse { .. } | Error::ImageInUse { .. } => {
                (StatusCode::CONFLICT, "conflict")
            }
            Error::DbLocked { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Error::Died { .. } => (StatusCode::BAD_GATEWAY, "sandbox_died"),
            Error::Agent { .. } => match e.remote_code() {
                Some(code) => agent_code_status(code),
                None => (StatusCode::BAD_GATEWAY, "agent_unreachable"),
            },
            Error::Cancelled(_) => (StatusCode::SERVICE_UNAVAILABLE, "cancelled"),
            Error::MissingDisk { .. }
            | Error::SchemaTooNew { .. }
            | Error::Db { .. }
            | Error::CorruptRecord { .. }
            | Error::Io { .. }
            | Error::Image { .. }
            | Error::Vmm(_)
            | Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError {
            status,
            kind,
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(status = self.status.as_u16(), kind = self.kind, error = %self.message, "request failed");
        }
        let mut r = (self.status, axum::Json(self.body())).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS
            || self.status == StatusCode::SERVICE_UNAVAILABLE
        {
            // Admission refusals do not go away by retrying at once: tell
            // clients that retry (the E2B SDK does) to wait.
            r.headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        r
    }
}

/// A route result.
pub type ApiResult<T> = std::result::Result<T, ApiError>;
