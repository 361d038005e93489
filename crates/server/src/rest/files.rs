//! `/v1/sandboxes/{id}/files`: streaming download and upload (neither is
//! buffered whole), list, stat, mkdir, remove, rename.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use hearth_runtime::{pb, Sandbox};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Json, Path, Query};
use super::model::{guest_path, rfc3339_ms};
use crate::app::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};

/// A file's metadata.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FileView {
    pub name: String,
    /// file, dir, symlink, other.
    pub kind: String,
    pub size: u64,
    /// Permission bits as an octal string (`0644`).
    pub mode: String,
    /// RFC 3339.
    pub modified: String,
    pub uid: u32,
    pub gid: u32,
    /// Where a symlink points.
    pub symlink_target: Option<String>,
}

impl From<&pb::FileInfo> for FileView {
    fn from(f: &pb::FileInfo) -> Self {
        let kind = match pb::FileKind::try_from(f.kind) {
            Ok(pb::FileKind::File) => "file",
            Ok(pb::FileKind::Dir) => "dir",
            Ok(pb::FileKind::Symlink) => "symlink",
            _ => "other",
        };
        Self {
            name: f.name.clone(),
            kind: kind.into(),
            size: f.size,
            mode: format!("{:04o}", f.mode & 0o7777),
            modified: rfc3339_ms(u64::try_from(f.mtime_ns / 1_000_000).unwrap_or(0)),
            uid: f.uid,
            gid: f.gid,
            symlink_target: (!f.symlink_target.is_empty()).then(|| f.symlink_target.clone()),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathQuery {
    /// An absolute guest path.
    #[param(pattern = "^/[^\\x00]*$")]
    pub path: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// An absolute guest path (its directory must exist).
    #[param(pattern = "^/[^\\x00]*$")]
    pub path: String,
    /// Octal permission bits (default 644).
    #[param(pattern = "^(0o)?0?[0-7]{1,4}$")]
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// An absolute guest path, not the root (no `.` or `..` components).
    #[param(pattern = "^(/+([^/\\x00.][^/\\x00]*|\\.[^/\\x00.][^/\\x00]*|\\.\\.[^/\\x00]+))+/*$")]
    pub path: String,
    /// Remove a directory with everything in it.
    #[serde(default)]
    pub recursive: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MkdirRequest {
    /// An absolute guest path.
    #[schema(pattern = "^/[^\\x00]*$")]
    pub path: String,
    /// Make missing parents too.
    #[serde(default)]
    pub parents: bool,
    /// Octal permission bits (default 755).
    #[schema(pattern = "^(0o)?0?[0-7]{1,4}$")]
    pub mode: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RenameRequest {
    /// An absolute guest path.
    #[schema(pattern = "^/[^\\x00]*$")]
    pub from: String,
    /// An absolute guest path.
    #[schema(pattern = "^/[^\\x00]*$")]
    pub to: String,
}

/// What an upload wrote.
#[derive(Debug, Serialize, ToSchema)]
pub struct Written {
    pub path: String,
    pub bytes: u64,
}

fn parse_mode(field: &str, m: Option<&str>, default: u32) -> ApiResult<u32> {
    match m {
        None => Ok(default),
        Some(s) => match s.strip_prefix("0o").unwrap_or(s) {
            d if !d.is_empty() && d.len() <= 5 && d.bytes().all(|b| (b'0'..=b'7').contains(&b)) => {
                let v = u32::from_str_radix(d, 8).unwrap_or(u32::MAX);
                if v > 0o7777 || (d.len() == 5 && !d.starts_with('0')) {
                    return Err(ApiError::bad_request(format!(
                        "{field}: {s:?} is not octal permission bits (like 644 or 0755)"
                    )));
                }
                Ok(v)
            }
            _ => Err(ApiError::bad_request(format!(
                "{field}: {s:?} is not octal permission bits (like 644 or 0755)"
            ))),
        },
    }
}

/// Runs `f` on the sandbox, forgetting its handle when the sandbox is gone.
async fn on<T, F>(state: &AppState, id: &str, f: F) -> ApiResult<T>
where
    F: AsyncFnOnce(&Sandbox) -> hearth_runtime::Result<T>,
{
    let s = state.sandbox(id).await?;
    match f(&s).await {
        Ok(v) => Ok(v),
        Err(e) => {
            state.forget_if_gone(s.id(), &e);
            Err(super::model::fs_error(e))
        }
    }
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", operation_id = "download_file", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses(
        (status = 200, description = "The file's bytes, streamed", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox or file", body = ErrorBody),
        (status = 409, description = "A directory, or the sandbox is not running", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let path = guest_path("path", &q.path)?;
    let info = on(&state, &id, async |s| s.stat(&path).await).await?;
    if info.kind == pb::FileKind::Dir as i32 {
        return Err(ApiError::conflict(format!(
            "path: {path:?} is a directory (list it with files/list)"
        )));
    }
    let s: Arc<Sandbox> = state.sandbox(&id).await?;
    let (mut w, r) = tokio::io::duplex(64 << 10);
    let st = state.clone();
    let job = tokio::spawn(async move {
        let r = s.read_file_to(&path, &mut w).await;
        if let Err(e) = &r {
            st.forget_if_gone(s.id(), e);
            tracing::warn!(error = %crate::error::chain(e), "download failed mid-stream");
        }
        r
    });
    // After the last byte, look at how the copy ended: a failure aborts the
    // body, so the client sees an incomplete transfer instead of a short file.
    let tail = futures::stream::once(async move {
        match job.await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(Err(std::io::Error::other(crate::error::chain(&e)))),
            Err(e) => Some(Err(std::io::Error::other(e.to_string()))),
        }
    })
    .filter_map(|x| async move { x });
    let body = tokio_util::io::ReaderStream::new(r).chain(tail);
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream")],
        Body::from_stream(body),
    )
        .into_response())
}

#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", operation_id = "upload_file", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "The file's bytes (streamed into the guest)"),
    responses(
        (status = 201, description = "Written (atomically: temp name, fsync, rename)", body = Written),
        (status = 400, description = "Bad path or mode", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox, or the directory is missing", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
        (status = 507, description = "No space left in the guest", body = ErrorBody),
    ))]
pub async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
    body: Body,
) -> ApiResult<(StatusCode, axum::Json<Written>)> {
    let path = guest_path("path", &q.path)?;
    let mode = parse_mode("mode", q.mode.as_deref(), 0o644)?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut reader = tokio_util::io::StreamReader::new(stream);
    let bytes = on(&state, &id, async |s| {
        s.write_file(&path, &mut reader, mode).await
    })
    .await?;
    Ok((StatusCode::CREATED, axum::Json(Written { path, bytes })))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", operation_id = "list_files", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses(
        (status = 200, description = "The entries, sorted by name", body = [FileView]),
        (status = 400, description = "Bad path, or not a directory", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox or directory", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<axum::Json<Vec<FileView>>> {
    let path = guest_path("path", &q.path)?;
    let v = on(&state, &id, async |s| s.list_dir(&path).await).await?;
    Ok(axum::Json(v.iter().map(FileView::from).collect()))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", operation_id = "stat_file", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), PathQuery),
    responses(
        (status = 200, description = "The file's metadata (a symlink itself, not its target)", body = FileView),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox or file", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn stat(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<axum::Json<FileView>> {
    let path = guest_path("path", &q.path)?;
    let f = on(&state, &id, async |s| s.stat(&path).await).await?;
    Ok(axum::Json(FileView::from(&f)))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", operation_id = "make_dir", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = MkdirRequest,
    responses(
        (status = 201, description = "Made"),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox, or a parent is missing", body = ErrorBody),
        (status = 409, description = "It exists already, or the sandbox is not running", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
        (status = 507, description = "No space left in the guest", body = ErrorBody),
    ))]
pub async fn mkdir(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<MkdirRequest>,
) -> ApiResult<StatusCode> {
    let path = guest_path("path", &req.path)?;
    let mode = parse_mode("mode", req.mode.as_deref(), 0o755)?;
    on(&state, &id, async |s| {
        s.mkdir(&path, mode, req.parents).await
    })
    .await?;
    Ok(StatusCode::CREATED)
}

#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", operation_id = "remove_file", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name"), RemoveQuery),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Bad path", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox or file", body = ErrorBody),
        (status = 409, description = "A non-empty directory without recursive, or the sandbox is not running", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<RemoveQuery>,
) -> ApiResult<StatusCode> {
    let path = guest_path("path", &q.path)?;
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.is_empty() || parts.iter().any(|c| *c == "." || *c == "..") {
        return Err(ApiError::bad_request(format!(
            "path: {path:?} must name something below the root, without `.` or `..` components"
        )));
    }
    on(&state, &id, async |s| s.remove(&path, q.recursive).await).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/rename", operation_id = "rename_file", tag = "files",
    params(("id" = String, Path, description = "Sandbox id or name")),
    request_body = RenameRequest,
    responses(
        (status = 204, description = "Renamed"),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox or file", body = ErrorBody),
        (status = 409, description = "The target exists, or the sandbox is not running", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 415, description = "Not JSON", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn rename(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Json(req): Json<RenameRequest>,
) -> ApiResult<StatusCode> {
    let from = guest_path("from", &req.from)?;
    let to = guest_path("to", &req.to)?;
    on(&state, &id, async |s| s.rename(&from, &to).await).await?;
    Ok(StatusCode::NO_CONTENT)
}
