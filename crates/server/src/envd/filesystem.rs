//! envd's Filesystem service (Connect, JSON): `Stat`, `ListDir`, `MakeDir`,
//! `Move`, `Remove`, the streaming `WatchDir` and the polling watcher trio,
//! on hearth's agent file operations. Paths resolve against the user's home;
//! what is made for a user belongs to that user.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use axum::{Extension, Router};
use hearth_runtime::pb;
use serde::Deserialize;
use serde_json::{json, Value};

use super::connect::{read_unary, Code, ConnectError, Unary};
use super::entry::{entry_info, EntryInfo};
use super::fs_rpc::{caller, Caller, FsState, SharedFs};
use super::user::Users;
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
        .route(
            "/filesystem.Filesystem/WatchDir",
            post(super::watch_dir::watch_dir),
        )
        .route("/filesystem.Filesystem/CreateWatcher", post(create_watcher))
        .route(
            "/filesystem.Filesystem/GetWatcherEvents",
            post(get_watcher_events),
        )
        .route("/filesystem.Filesystem/RemoveWatcher", post(remove_watcher))
        .layer(Extension(fs))
}

type Rpc = Result<Unary<Value>, ConnectError>;

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

async fn entry(state: &AppState, c: &Caller, path: &str) -> Result<EntryInfo, ConnectError> {
    let info = c.sandbox.stat(path).await.map_err(|e| c.err(state, e))?;
    Ok(entry_info(&info, path, &c.accounts))
}

fn non_empty(path: &str, what: &str) -> Result<(), ConnectError> {
    if path.is_empty() {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            format!("{what} is empty"),
        ));
    }
    Ok(())
}

async fn stat(
    State(s): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    Extension(u): Extension<Users>,
    h: HeaderMap,
    body: Body,
) -> Rpc {
    let req: PathReq = read_unary(&h, body).await?;
    let c = caller(&s, &fs, &u, &h, None).await?;
    let path = c.path(&req.path)?;
    Ok(Unary(json!({"entry": entry(&s, &c, &path).await?})))
}

async fn list_dir(
    State(s): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    Extension(u): Extension<Users>,
    h: HeaderMap,
    body: Body,
) -> Rpc {
    let req: ListDirReq = read_unary(&h, body).await?;
    let c = caller(&s, &fs, &u, &h, None).await?;
    let root = c.path(&req.path)?;
    let depth = req.depth.clamp(1, MAX_LIST_DEPTH);
    let top = entry(&s, &c, &root).await?;
    if top.file_type != super::entry::FILE_TYPE_DIRECTORY {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            format!("path {root} is not a directory"),
        ));
    }
    // Depth first, each directory's entries sorted by name then its
    // subdirectories' (as envd's walk).
    let mut out = Vec::new();
    let mut stack = vec![(root, 1u32)];
    while let Some((dir, level)) = stack.pop() {
        let entries = c.sandbox.list_dir(&dir).await.map_err(|e| c.err(&s, e))?;
        let mut subdirs = Vec::new();
        for info in &entries {
            let path = if dir == "/" {
                format!("/{}", info.name)
            } else {
                format!("{dir}/{}", info.name)
            };
            if info.kind == pb::FileKind::Dir as i32 && level < depth {
                subdirs.push(path.clone());
            }
            out.push(entry_info(info, &path, &c.accounts));
            if out.len() > MAX_LIST_ENTRIES {
                return Err(ConnectError::new(
                    Code::ResourceExhausted,
                    format!("more than {MAX_LIST_ENTRIES} entries under {dir}: list with a smaller depth"),
                ));
            }
        }
        for d in subdirs.into_iter().rev() {
            stack.push((d, level + 1));
        }
    }
    Ok(Unary(json!({"entries": out})))
}

async fn make_dir(
    State(s): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    Extension(u): Extension<Users>,
    h: HeaderMap,
    body: Body,
) -> Rpc {
    let req: PathReq = read_unary(&h, body).await?;
    non_empty(&req.path, "path")?;
    let c = caller(&s, &fs, &u, &h, None).await?;
    let path = c.path(&req.path)?;
    match c.sandbox.stat(&path).await {
        Ok(i) if i.kind == pb::FileKind::Dir as i32 => {
            return Err(ConnectError::new(
                Code::AlreadyExists,
                format!("directory {path} already exists"),
            ))
        }
        Ok(_) => {
            return Err(ConnectError::new(
                Code::InvalidArgument,
                format!("path {path} already exists and is not a directory"),
            ))
        }
        Err(e) if e.remote_code() == Some(pb::ErrorCode::NotFound) => {}
        Err(e) => return Err(c.err(&s, e)),
    }
    let mut made = c
        .sandbox
        .make_parents(&path)
        .await
        .map_err(|e| c.err(&s, e))?;
    match c.sandbox.mkdir(&path, 0o755, false).await {
        Ok(()) => {}
        Err(e) if e.remote_code() == Some(pb::ErrorCode::AlreadyExists) => {
            return Err(ConnectError::new(
                Code::AlreadyExists,
                format!("directory {path} already exists"),
            ))
        }
        Err(e) => return Err(c.err(&s, e)),
    }
    made.push(path.clone());
    if c.owns_files() {
        c.sandbox
            .chown(&made, &c.user)
            .await
            .map_err(|e| c.err(&s, e))?;
    }
    Ok(Unary(json!({"entry": entry(&s, &c, &path).await?})))
}

async fn move_(
    State(s): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    Extension(u): Extension<Users>,
    h: HeaderMap,
    body: Body,
) -> Rpc {
    let req: MoveReq = read_unary(&h, body).await?;
    non_empty(&req.source, "source")?;
    non_empty(&req.destination, "destination")?;
    let c = caller(&s, &fs, &u, &h, None).await?;
    let (from, to) = (c.path(&req.source)?, c.path(&req.destination)?);
    // A missing source is NOT_FOUND before any parent is made.
    c.sandbox.stat(&from).await.map_err(|e| c.err(&s, e))?;
    let made = c
        .sandbox
        .make_parents(&to)
        .await
        .map_err(|e| c.err(&s, e))?;
    if c.owns_files() && !made.is_empty() {
        c.sandbox
            .chown(&made, &c.user)
            .await
            .map_err(|e| c.err(&s, e))?;
    }
    c.sandbox
        .rename(&from, &to)
        .await
        .map_err(|e| c.err(&s, e))?;
    Ok(Unary(json!({"entry": entry(&s, &c, &to).await?})))
}

async fn remove(
    State(s): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    Extension(u): Extension<Users>,
    h: HeaderMap,
    body: Body,
) -> Rpc {
    let req: PathReq = read_unary(&h, body).await?;
    non_empty(&req.path, "path")?;
    let c = caller(&s, &fs, &u, &h, None).await?;
    let path = c.path(&req.path)?;
    if path == "/" {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            "refusing to remove /",
        ));
    }
    c.sandbox
        .remove(&path, true)
        .await
        .map_err(|e| c.err(&s, e))?;
    Ok(Unary(json!({})))
}

/// Opens a watch of a directory for `c` (NOT_FOUND, or INVALID_ARGUMENT
/// for a file).
pub(super) async fn open_watch(
    s: &AppState,
    c: &Caller,
    req: &WatchReq,
) -> Result<(hearth_runtime::Watch, WatchSpec), ConnectError> {
    let root = c.path(&req.path)?;
    let top = entry(s, c, &root).await?;
    if top.file_type != super::entry::FILE_TYPE_DIRECTORY {
        return Err(ConnectError::new(
            Code::InvalidArgument,
            format!("path {root} is not a directory"),
        ));
    }
    let watch = c
        .sandbox
        .watch(&root, req.recursive)
        .await
        .map_err(|e| c.err(s, e))?;
    let spec = WatchSpec {
        root,
        include_entry: req.include_entry,
        accounts: Arc::clone(&c.accounts),
    };
    Ok((watch, spec))
}

async fn create_watcher(
    State(s): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    Extension(u): Extension<Users>,
    h: HeaderMap,
    body: Body,
) -> Rpc {
    let req: WatchReq = read_unary(&h, body).await?;
    let c = caller(&s, &fs, &u, &h, None).await?;
    let (watch, spec) = open_watch(&s, &c, &req).await?;
    let id = fs
        .watchers
        .create(&fs, Arc::clone(&c.sandbox), watch, spec)?;
    Ok(Unary(json!({"watcherId": id})))
}

/// The sandbox id a watcher was made under: the request's key resolved
/// (the header may carry a name).
async fn sandbox_key(s: &AppState, h: &HeaderMap) -> Result<String, ConnectError> {
    Ok(super::sandbox(s, h).await?.id().to_string())
}

async fn get_watcher_events(
    State(s): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    h: HeaderMap,
    body: Body,
) -> Rpc {
    let req: WatcherReq = read_unary(&h, body).await?;
    let id = sandbox_key(&s, &h).await?;
    let events = fs.watchers.poll(&id, &req.watcher_id)?;
    Ok(Unary(json!({"events": events})))
}

async fn remove_watcher(
    State(s): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    h: HeaderMap,
    body: Body,
) -> Rpc {
    let req: WatcherReq = read_unary(&h, body).await?;
    let id = sandbox_key(&s, &h).await?;
    fs.watchers.remove(&id, &req.watcher_id)?;
    Ok(Unary(json!({})))
}
