//! What every Filesystem and `/files` handler starts with: the sandbox of
//! the request and the user it acts for ([`super::user`]), that user's home
//! (the base of relative paths), and the guest's user and group names.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use hearth_runtime::Sandbox;

use super::connect::{Code, ConnectError};
use super::entry::{Accounts, AccountsCache};
use super::user::{requested_user, Users};
use super::watch::Watchers;
use crate::app::AppState;
use crate::error::ApiError;

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
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub accounts: Arc<Accounts>,
}

impl Caller {
    /// `path` resolved against the caller's home and normalised.
    pub fn path(&self, path: &str) -> Result<String, ConnectError> {
        super::entry::resolve(path, &self.home)
    }

    /// Whether files made for this caller are handed to its user (root's
    /// are root's already, as the agent makes them).
    pub fn owns_files(&self) -> bool {
        self.user != "root"
    }

    /// A runtime error of this sandbox (a gone sandbox's handle is dropped).
    pub fn err(&self, state: &AppState, e: hearth_runtime::Error) -> ConnectError {
        state.forget_if_gone(&self.id, &e);
        e.into()
    }
}

/// Resolves the request's sandbox (`E2b-Sandbox-Id`) and user: `username`
/// (the `/files` query) or the `Authorization: Basic` user, else the
/// sandbox's default user, else root.
pub async fn caller(
    state: &AppState,
    fs: &FsState,
    users: &Users,
    headers: &HeaderMap,
    username: Option<&str>,
) -> Result<Caller, ConnectError> {
    let sandbox = super::sandbox(state, headers).await?;
    let named = match username.filter(|u| !u.is_empty()) {
        Some(u) => Some(u.to_string()),
        None => requested_user(headers)?,
    };
    let user = users.resolve(&sandbox, named.as_deref()).await?;
    let accounts = fs.accounts.get(&sandbox).await;
    Ok(Caller {
        id: sandbox.id().to_string(),
        sandbox,
        user: user.name,
        uid: user.uid,
        gid: user.gid,
        home: user.home,
        accounts,
    })
}

/// A Connect error as a `/files` answer (`{"code": <status>, ...}`): a gone
/// sandbox is 502 "was not found", as E2B's proxy answers.
pub fn to_api(e: ConnectError) -> ApiError {
    let (status, kind) = match e.code {
        Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
        Code::InvalidArgument | Code::OutOfRange | Code::FailedPrecondition => {
            (StatusCode::BAD_REQUEST, "invalid_argument")
        }
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "unauthenticated"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "permission_denied"),
        Code::AlreadyExists | Code::Aborted => (StatusCode::CONFLICT, "conflict"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "resource_exhausted"),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "unimplemented"),
        Code::Unavailable => (StatusCode::BAD_GATEWAY, "unavailable"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "deadline_exceeded"),
        Code::Canceled => (StatusCode::SERVICE_UNAVAILABLE, "cancelled"),
        Code::Unknown | Code::Internal | Code::DataLoss => {
            (StatusCode::INTERNAL_SERVER_ERROR, "internal")
        }
    };
    ApiError::new(status, kind, e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_as_files_answers() {
        let gone = to_api(ConnectError::sandbox_gone("abc", "no such sandbox"));
        assert_eq!(gone.status, StatusCode::BAD_GATEWAY);
        assert!(
            gone.message.contains("sandbox abc was not found"),
            "{}",
            gone.message
        );
        assert_eq!(
            to_api(ConnectError::not_found("x")).status,
            StatusCode::NOT_FOUND
        );
        let u = to_api(ConnectError::unauthenticated("invalid username"));
        assert_eq!(
            (u.status, u.kind),
            (StatusCode::UNAUTHORIZED, "unauthenticated")
        );
        assert_eq!(
            to_api(ConnectError::internal("q")).status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
