//! `filesystem.Filesystem/WatchDir`: a Connect server stream. The answer is
//! `{"start":{}}`, then one `{"filesystem": FilesystemEvent}` per event (and
//! `{"keepalive":{}}` at the asked interval), then the end of the stream:
//! `{}` when the watched directory goes, the error when the watch fails,
//! `deadline_exceeded` after `Connect-Timeout-Ms`, `unavailable` when the
//! server shuts down. A client that leaves drops the stream, which ends the
//! guest's watch.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use serde_json::{json, Value};

use super::connect::{
    read_stream_request, server_stream, stream_error, CallMeta, ConnectError, StreamOptions,
};
use super::filesystem::{open_watch, WatchReq};
use super::fs_rpc::{caller, SharedFs};
use super::user::Users;
use crate::app::AppState;

pub async fn watch_dir(
    State(s): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    Extension(users): Extension<Users>,
    h: HeaderMap,
    body: Body,
) -> Response {
    match open(&s, &fs, &users, &h, body).await {
        Ok(r) => r,
        Err(e) => stream_error(e),
    }
}

async fn open(
    s: &AppState,
    fs: &SharedFs,
    users: &Users,
    h: &HeaderMap,
    body: Body,
) -> Result<Response, ConnectError> {
    let meta = CallMeta::from_headers(h)?;
    let req: WatchReq = read_stream_request(h, body).await?;
    let c = caller(s, fs, users, h, None).await?;
    let (mut watch, spec) = open_watch(s, &c, &req).await?;
    let sbx = c.sandbox.clone();
    let messages = async_stream::stream! {
        yield Ok::<Value, ConnectError>(json!({"start": {}}));
        loop {
            match watch.next().await {
                Ok(Some(ev)) => {
                    for e in spec.events(&sbx, &ev).await {
                        yield Ok(json!({"filesystem": e}));
                    }
                }
                Ok(None) => return,
                Err(e) => {
                    yield Err(ConnectError::from(e));
                    return;
                }
            }
        }
    };
    let opts = StreamOptions {
        meta,
        shutdown: s.shutdown().clone(),
        keepalive: Some(json!({"keepalive": {}})),
    };
    Ok(server_stream(opts, messages))
}
