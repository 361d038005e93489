//! envd's `/files`: `GET /files?path=P[&username=U]` streams a guest file
//! (gzip when the client accepts it), `POST /files` writes files from a
//! multipart body (part `file`, its filename the destination path, several
//! parts allowed) or an `application/octet-stream` body with `?path=`
//! (`Content-Encoding: gzip` accepted), streaming into the guest. Parent
//! directories are made; files (and the directories made) belong to the
//! request's user. Answers a JSON array of `{"path", "name", "type": "file"}`.

use std::io;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Json};
use futures::{StreamExt, TryStreamExt};
use hearth_runtime::pb;
use tokio_util::io::{ReaderStream, StreamReader};
use tower_http::compression::CompressionLayer;

use super::entry::base_name;
use super::fs_rpc::{caller, to_api, Caller, SharedFs};
use super::user::Users;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};

/// Bytes buffered between the agent's read and the HTTP body.
const DOWNLOAD_PIPE: usize = 256 * 1024;
/// The header prefix of E2B's file metadata.
const METADATA_PREFIX: &str = "x-metadata-";

#[derive(Debug, serde::Deserialize)]
pub struct FilesQuery {
    pub path: Option<String>,
    pub username: Option<String>,
}

/// One written file, as envd answers it.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct WriteInfo {
    pub path: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// The `/files` route (both methods).
pub fn route() -> MethodRouter<AppState> {
    let download = get(download).layer(CompressionLayer::new().gzip(true));
    let upload = post(upload).layer(DefaultBodyLimit::disable());
    download.merge(upload)
}

/// A runtime error of `c`'s sandbox as a `/files` answer (its handle is
/// dropped when the sandbox is gone).
fn gone(state: &AppState, c: &Caller, e: hearth_runtime::Error) -> ApiError {
    state.forget_if_gone(&c.id, &e);
    e.into()
}

async fn files_caller(
    state: &AppState,
    fs: &SharedFs,
    users: &Users,
    headers: &HeaderMap,
    username: Option<&str>,
) -> ApiResult<Caller> {
    caller(state, fs, users, headers, username)
        .await
        .map_err(to_api)
}

async fn download(
    State(state): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    Extension(users): Extension<Users>,
    headers: HeaderMap,
    Query(q): Query<FilesQuery>,
) -> ApiResult<Response> {
    let c = files_caller(&state, &fs, &users, &headers, q.username.as_deref()).await?;
    let Some(path) = q.path.as_deref().filter(|p| !p.is_empty()) else {
        return Err(ApiError::bad_request("GET /files needs ?path=<file>"));
    };
    let path = c.path(path).map_err(to_api)?;
    let info = c
        .sandbox
        .stat(&path)
        .await
        .map_err(|e| gone(&state, &c, e))?;
    if info.kind == pb::FileKind::Dir as i32 {
        return Err(ApiError::bad_request(format!(
            "{path} is a directory, not a file"
        )));
    }
    let (mut w, r) = tokio::io::duplex(DOWNLOAD_PIPE);
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Option<String>>();
    let sbx = c.sandbox.clone();
    let shutdown = state.shutdown().clone();
    let p = path.clone();
    tokio::spawn(async move {
        let res = tokio::select! {
            r = sbx.read_file_to(&p, &mut w) => r.err().map(|e| crate::error::chain(&e)),
            _ = shutdown.cancelled() => Some("the server is shutting down".to_string()),
        };
        if let Some(e) = &res {
            tracing::warn!(path = %p, error = %e, "file download failed midway");
        }
        let _ = done_tx.send(res);
        drop(w);
    });
    // The body ends with an error (the connection is cut) if the read
    // failed midway, so a short file is never taken for the whole one.
    let tail = futures::stream::once(async move {
        match done_rx.await {
            Ok(None) => None,
            Ok(Some(e)) => Some(Err(io::Error::other(e))),
            Err(_) => Some(Err(io::Error::other("the download task ended early"))),
        }
    })
    .filter_map(|x| async move { x });
    let body = Body::from_stream(ReaderStream::new(r).chain(tail));
    let name = base_name(&path).replace('"', "");
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Writes one file for `c` from `r`: parents made, owner set (by the
/// agent when it can, else with a `chown` exec after the write).
async fn write_one<R: tokio::io::AsyncRead + Unpin>(
    state: &AppState,
    c: &Caller,
    path: &str,
    r: &mut R,
) -> ApiResult<WriteInfo> {
    let err = |e| gone(state, c, e);
    let mut made = c.sandbox.make_parents(path).await.map_err(err)?;
    if !c.owns_files() {
        c.sandbox.write_file(path, r, 0o644).await.map_err(err)?;
    } else if c.sandbox.sets_file_owner().await.map_err(err)? {
        if !made.is_empty() {
            c.sandbox.chown(&made, &c.user).await.map_err(err)?;
        }
        c.sandbox
            .write_file_as(path, r, 0o644, c.uid, c.gid)
            .await
            .map_err(err)?;
    } else {
        c.sandbox.write_file(path, r, 0o644).await.map_err(err)?;
        made.push(path.to_string());
        c.sandbox.chown(&made, &c.user).await.map_err(err)?;
    }
    Ok(WriteInfo {
        path: path.to_string(),
        name: base_name(path),
        kind: "file",
    })
}

fn refuse_metadata(headers: &HeaderMap) -> ApiResult<()> {
    match headers
        .keys()
        .find(|k| k.as_str().starts_with(METADATA_PREFIX))
    {
        Some(k) => Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "unimplemented",
            format!(
                "file metadata ({k}) is not supported: hearth's agent cannot set user.e2b.* extended attributes"
            ),
        )),
        None => Ok(()),
    }
}

async fn upload(
    State(state): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    Extension(users): Extension<Users>,
    Query(q): Query<FilesQuery>,
    req: Request,
) -> ApiResult<Json<Vec<WriteInfo>>> {
    let headers = req.headers().clone();
    refuse_metadata(&headers)?;
    let c = files_caller(&state, &fs, &users, &headers, q.username.as_deref()).await?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if ctype.starts_with("multipart/form-data") {
        let mut mp = <Multipart as axum::extract::FromRequest<()>>::from_request(req, &())
            .await
            .map_err(|e| ApiError::bad_request(format!("malformed multipart body: {e}")))?;
        let mut out = Vec::new();
        while let Some(field) = mp
            .next_field()
            .await
            .map_err(|e| ApiError::bad_request(format!("malformed multipart body: {e}")))?
        {
            if field.name() != Some("file") {
                continue;
            }
            let dest =
                match (field.file_name(), q.path.as_deref()) {
                    (Some(f), _) if !f.is_empty() => f.to_string(),
                    (_, Some(p)) if !p.is_empty() => p.to_string(),
                    _ => return Err(ApiError::bad_request(
                        "a multipart `file` part needs a filename (the destination path) or ?path=",
                    )),
                };
            let path = c.path(&dest).map_err(to_api)?;
            let mut r = StreamReader::new(field.map_err(io::Error::other));
            out.push(write_one(&state, &c, &path, &mut r).await?);
        }
        if out.is_empty() {
            return Err(ApiError::bad_request(
                "the multipart body has no `file` part",
            ));
        }
        Ok(Json(out))
    } else {
        let Some(dest) = q.path.as_deref().filter(|p| !p.is_empty()) else {
            return Err(ApiError::bad_request(
                "POST /files with a raw body needs ?path=<destination>",
            ));
        };
        let path = c.path(dest).map_err(to_api)?;
        let encoding = headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("identity")
            .trim()
            .to_ascii_lowercase();
        let stream = req.into_body().into_data_stream().map_err(io::Error::other);
        let r = StreamReader::new(stream);
        let info = match encoding.as_str() {
            "identity" | "" => write_one(&state, &c, &path, &mut { r }).await?,
            "gzip" | "x-gzip" => {
                let mut gz = async_compression::tokio::bufread::GzipDecoder::new(r);
                write_one(&state, &c, &path, &mut gz).await?
            }
            other => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "invalid_argument",
                    format!("Content-Encoding {other:?} is not supported (gzip is)"),
                ))
            }
        };
        Ok(Json(vec![info]))
    }
}
