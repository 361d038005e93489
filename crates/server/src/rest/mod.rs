//! hearth's own REST API under `/v1` (one file per resource), and its OpenAPI
//! document at `/v1/openapi.json`.
//!
//! - [`sandboxes`]: create (plain, or SSE progress), list, get, delete,
//!   timeout, stop, start; [`pause`]: pause, resume. [`stats`], [`logs`]: per-sandbox reads.
//! - [`exec`]: collected, SSE and WebSocket execs, stdin, the live-exec registry.
//! - [`files`]: streaming download/upload, list, stat, mkdir, remove, rename.
//! - [`processes`]: background processes.
//! - [`snapshots`]: snapshot a sandbox, list/get/delete snapshots, restore, fork.
//! - [`model`]: shared response types; [`extract`]: extractors whose
//!   rejections are [`crate::ApiError`] JSON; [`openapi`]: the document.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{Extension, Router};

use crate::app::AppState;

pub mod exec;
pub mod extract;
pub mod files;
pub mod logs;
pub mod model;
pub mod openapi;
pub mod pause;
pub mod processes;
pub mod sandboxes;
pub mod snapshots;
pub mod stats;

/// The `/v1` routes that need an API token.
pub fn router() -> Router<AppState> {
    let sb = "/v1/sandboxes/{id}";
    Router::new()
        .route(
            "/v1/sandboxes",
            post(sandboxes::create).get(sandboxes::list),
        )
        .route(sb, get(sandboxes::get_one).delete(sandboxes::delete))
        .route(&format!("{sb}/timeout"), post(sandboxes::timeout))
        .route(&format!("{sb}/stop"), post(sandboxes::stop))
        .route(&format!("{sb}/start"), post(sandboxes::start))
        .route(&format!("{sb}/pause"), post(pause::pause))
        .route(&format!("{sb}/resume"), post(pause::resume))
        .route(&format!("{sb}/exec"), post(exec::exec))
        .route(&format!("{sb}/exec/stream"), post(exec::exec_stream))
        .route(&format!("{sb}/exec/ws"), get(exec::exec_ws))
        .route(&format!("{sb}/execs/{{exec_id}}/stdin"), post(exec::stdin))
        .route(
            &format!("{sb}/files"),
            get(files::download)
                .put(files::upload)
                .delete(files::remove),
        )
        .route(&format!("{sb}/files/list"), get(files::list))
        .route(&format!("{sb}/files/stat"), get(files::stat))
        .route(&format!("{sb}/files/mkdir"), post(files::mkdir))
        .route(&format!("{sb}/files/rename"), post(files::rename))
        .route(
            &format!("{sb}/processes"),
            get(processes::list).post(processes::start),
        )
        .route(
            &format!("{sb}/processes/{{pid_or_tag}}/attach"),
            get(processes::attach),
        )
        .route(
            &format!("{sb}/processes/{{pid_or_tag}}/kill"),
            post(processes::kill),
        )
        .route(&format!("{sb}/stats"), get(stats::stats))
        .route(&format!("{sb}/logs"), get(logs::logs))
        .route(&format!("{sb}/snapshots"), post(snapshots::create))
        .route(&format!("{sb}/fork"), post(snapshots::fork))
        .route("/v1/snapshots", get(snapshots::list))
        .route(
            "/v1/snapshots/{name}",
            get(snapshots::get_one).delete(snapshots::delete),
        )
        .route("/v1/snapshots/{name}/restore", post(snapshots::restore))
        .layer(DefaultBodyLimit::max(extract::JSON_LIMIT))
        .layer(Extension(Arc::new(exec::ExecRegistry::default())))
}

/// The `/v1` routes open to anyone (the OpenAPI document).
pub fn open_router() -> Router<AppState> {
    Router::new().route("/v1/openapi.json", get(openapi::serve))
}
