//! envd's Filesystem service (Connect, JSON): `Stat`, `ListDir`, `MakeDir`,
//! `Move`, `Remove`, the streaming `WatchDir` and the polling watcher trio,
//! on hearth's agent file operations. Paths resolve against the user's home;
//! what is made for a user belongs to that user.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use hearth_runtime::pb;
use serde::Deserialize;
use serde_json::{json, Value};

use super::entry::{entry_info, EntryInfo};
use super::fs_rpc::{caller, decode, Caller, FsState, RpcError, SharedFs};
use super::watch::WatchSpec;
use crate::app::AppState;

/// The most entries one `ListDir` answers.
pub const MAX_LIST_ENTRIES: usize = 100_000;
/// The deepest `ListDir` goes.
pub const MAX_LIST_DEPTH: u32 = 64;

/// The Filesystem service and `/files`, with their shared state.
pub fn router() -> Router<AppState> {
    let fs: SharedFs = Arc::new(FsState::default());
    Router::new()
        .route("/files", super::files::route())
        .route("/filesystem.Filesystem/Stat", post(stat))
        .route("/filesystem.Filesystem/ListDir", post(list_dir))
        .route("/filesystem.Filesystem/MakeDir", post(make_dir))
        .route("/filesystem.Filesystem/Move", post(move_))
        .route("/filesystem.Filesystem/Remove", post(remove))
        .route("/filesystem.Filesystem/WatchDir", post(super::watch_dir::watch_dir))
        .route("/filesystem.Filesystem/CreateWatcher", post(create_watcher))
        .route("/filesystem.Filesystem/GetWatcherEvents", post(get_watcher_events))
        .route("/filesystem.Filesystem/RemoveWatcher", post(remove_watcher))
        .layer(Extension(fs))
}

type Rpc = Result<Json<Value>, RpcError>;

#[derive(Deserialize)]
struct PathReq {
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct ListDirReq {
    #[serde(default)]
    path: String,
    #[serde(default)]
    depth: u32,
}

#[derive(Deserialize)]
struct MoveReq {
    #[serde(default)]
    source: String,
    #[serde(default)]
    destination: String,
}

#[derive(Deserialize)]
pub(super) struct WatchReq {
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
    #[serde(default, alias = "include_entry")]
    pub include_entry: bool,
    #[serde(default, alias = "allow_network_mounts")]
    #[allow(dead_code)]
    pub allow_network_mounts: bool,
}

#[derive(Deserialize)]
struct WatcherReq {
    #[serde(default, alias = "watcher_id", rename = "watcherId")]
    watcher_id: String,
}

fn gone(state: &AppState, c: &Caller, e: hearth_runtime::Error) -> RpcError {
    state.forget_if_gone(&c.id, &e);
    e.into()
}

async fn entry(state: &AppState, c: &Caller, path: &str) -> Result<EntryInfo, RpcError> {
    let info = c.sandbox.stat(path).await.map_err(|e| gone(state, c, e))?;
    Ok(entry_info(&info, path, &c.accounts))
}

fn non_empty(path: &str, what: &str) -> Result<(), RpcError> {
    if path.is_empty() {
        return Err(RpcError::new("invalid_argument", format!("{what} is empty")));
    }
    Ok(())
}

async fn stat(State(s): State<AppState>, Extension(fs): Extension<SharedFs>, h: HeaderMap, body: Bytes) -> Rpc {
    let req: PathReq = decode(&body)?;
    let c = caller(&s, &fs, &h, None).await?;
    let path = c.path(&req.path)?;
    Ok(Json(json!({"entry": entry(&s, &c, &path).await?})))
}

async fn list_dir(State(s): State<AppState>, Extension(fs): Extension<SharedFs>, h: HeaderMap, body: Bytes) -> Rpc {
    let req: ListDirReq = decode(&body)?;
    let c = caller(&s, &fs, &h, None).await?;
    let root = c.path(&req.path)?;
    let depth = req.depth.clamp(1, MAX_LIST_DEPTH);
    let top = entry(&s, &c, &root).await?;
    if top.file_type != super::entry::FILE_TYPE_DIRECTORY {
        return Err(RpcError::new("invalid_argument", format!("path {root} is not a directory")));
    }
    // Depth first, each directory's entries sorted by name then its
    // subdirectories' (as envd's walk).
    let mut out = Vec::new();
    let mut stack = vec![(root, 1u32)];
    while let Some((dir, level)) = stack.pop() {
        let entries = c.sandbox.list_dir(&dir).await.map_err(|e| gone(&s, &c, e))?;
        let mut subdirs = Vec::new();
        for info in &entries {
            let path = if dir == "/" { format!("/{}", info.name) } else { format!("{dir}/{}", info.name) };
            if info.kind == pb::FileKind::Dir as i32 && level < depth {
                subdirs.push(path.clone());
            }
            out.push(entry_info(info, &path, &c.accounts));
            if out.len() > MAX_LIST_ENTRIES {
                return Err(RpcError::new(
                    "resource_exhausted",
                    format!("more than {MAX_LIST_ENTRIES} entries under {dir}: list with a smaller depth"),
                ));
            }
        }
        for d in subdirs.into_iter().rev() {
            stack.push((d, level + 1));
        }
    }
    Ok(Json(json!({"entries": out})))
}

async fn make_dir(State(s): State<AppState>, Extension(fs): Extension<SharedFs>, h: HeaderMap, body: Bytes) -> Rpc {
    let req: PathReq = decode(&body)?;
    non_empty(&req.path, "path")?;
    let c = caller(&s, &fs, &h, None).await?;
    let path = c.path(&req.path)?;
    match c.sandbox.stat(&path).await {
        Ok(i) if i.kind == pb::FileKind::Dir as i32 => {
            return Err(RpcError::new("already_exists", format!("directory {path} already exists")))
        }
        Ok(_) => {
            return Err(RpcError::new(
                "invalid_argument",
                format!("path {path} already exists and is not a directory"),
            ))
        }
        Err(e) if e.remote_code() == Some(pb::ErrorCode::NotFound) => {}
        Err(e) => return Err(gone(&s, &c, e)),
    }
    let mut made = c.sandbox.make_parents(&path).await.map_err(|e| gone(&s, &c, e))?;
    match c.sandbox.mkdir(&path, 0o755, false).await {
        Ok(()) => {}
        Err(e) if e.remote_code() == Some(pb::ErrorCode::AlreadyExists) => {
            return Err(RpcError::new("already_exists", format!("directory {path} already exists")))
        }
        Err(e) => return Err(gone(&s, &c, e)),
    }
    made.push(path.clone());
    if c.owns_files() {
        c.sandbox.chown(&made, &c.user).await.map_err(|e| gone(&s, &c, e))?;
    }
    Ok(Json(json!({"entry": entry(&s, &c, &path).await?})))
}

async fn move_(State(s): State<AppState>, Extension(fs): Extension<SharedFs>, h: HeaderMap, body: Bytes) -> Rpc {
    let req: MoveReq = decode(&body)?;
    non_empty(&req.source, "source")?;
    non_empty(&req.destination, "destination")?;
    let c = caller(&s, &fs, &h, None).await?;
    let (from, to) = (c.path(&req.source)?, c.path(&req.destination)?);
    // A missing source is NOT_FOUND before any parent is made.
    c.sandbox.stat(&from).await.map_err(|e| gone(&s, &c, e))?;
    let made = c.sandbox.make_parents(&to).await.map_err(|e| gone(&s, &c, e))?;
    if c.owns_files() && !made.is_empty() {
        c.sandbox.chown(&made, &c.user).await.map_err(|e| gone(&s, &c, e))?;
    }
    c.sandbox.rename(&from, &to).await.map_err(|e| gone(&s, &c, e))?;
    Ok(Json(json!({"entry": entry(&s, &c, &to).await?})))
}

async fn remove(State(s): State<AppState>, Extension(fs): Extension<SharedFs>, h: HeaderMap, body: Bytes) -> Rpc {
    let req: PathReq = decode(&body)?;
    non_empty(&req.path, "path")?;
    let c = caller(&s, &fs, &h, None).await?;
    let path = c.path(&req.path)?;
    if path == "/" {
        return Err(RpcError::new("invalid_argument", "refusing to remove /"));
    }
    c.sandbox.remove(&path, true).await.map_err(|e| gone(&s, &c, e))?;
    Ok(Json(json!({})))
}

/// Opens a watch of a directory for `c` (NOT_FOUND, or INVALID_ARGUMENT
/// for a file).
pub(super) async fn open_watch(
    s: &AppState,
    c: &Caller,
    req: &WatchReq,
) -> Result<(hearth_runtime::Watch, WatchSpec), RpcError> {
    let root = c.path(&req.path)?;
    let top = entry(s, c, &root).await?;
    if top.file_type != super::entry::FILE_TYPE_DIRECTORY {
        return Err(RpcError::new("invalid_argument", format!("path {root} is not a directory")));
    }
    let watch = c.sandbox.watch(&root, req.recursive).await.map_err(|e| gone(s, c, e))?;
    let spec = WatchSpec {
        root,
        include_entry: req.include_entry,
        accounts: Arc::clone(&c.accounts),
    };
    Ok((watch, spec))
}

async fn create_watcher(State(s): State<AppState>, Extension(fs): Extension<SharedFs>, h: HeaderMap, body: Bytes) -> Rpc {
    let req: WatchReq = decode(&body)?;
    let c = caller(&s, &fs, &h, None).await?;
    let (watch, spec) = open_watch(&s, &c, &req).await?;
    let id = fs.watchers.create(&fs, Arc::clone(&c.sandbox), watch, spec)?;
    Ok(Json(json!({"watcherId": id})))
}

fn sandbox_header(h: &HeaderMap) -> &str {
    h.get("e2b-sandbox-id").and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// The sandbox id a watcher was made under: the request's key resolved
/// (the header may carry a name).
async fn sandbox_key(s: &AppState, h: &HeaderMap) -> Result<String, RpcError> {
    Ok(s.sandbox(sandbox_header(h)).await?.id().to_string())
}

async fn get_watcher_events(State(s): State<AppState>, Extension(fs): Extension<SharedFs>, h: HeaderMap, body: Bytes) -> Rpc {
    let req: WatcherReq = decode(&body)?;
    let id = sandbox_key(&s, &h).await?;
    let events = fs.watchers.poll(&id, &req.watcher_id)?;
    Ok(Json(json!({"events": events})))
}

async fn remove_watcher(State(s): State<AppState>, Extension(fs): Extension<SharedFs>, h: HeaderMap, body: Bytes) -> Rpc {
    let req: WatcherReq = decode(&body)?;
    let id = sandbox_key(&s, &h).await?;
    fs.watchers.remove(&id, &req.watcher_id)?;
    Ok(Json(json!({})))
}

/// A Connect streaming answer: `application/connect+json` envelopes.
pub(super) fn stream_response(body: Body) -> Response {
    ([(header::CONTENT_TYPE, "application/connect+json")], body).into_response()
}

/// The keepalive interval a stream request asks for
/// (`Keepalive-Ping-Interval`, seconds; default 50, within 1..=300).
pub(super) fn keepalive_interval(h: &HeaderMap) -> Duration {
    let secs = h
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(50);
    Duration::from_secs(secs.clamp(1, 300))
}

/// `Connect-Timeout-Ms`, if sent.
pub(super) fn connect_timeout(h: &HeaderMap) -> Option<Duration> {
    h.get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
}
