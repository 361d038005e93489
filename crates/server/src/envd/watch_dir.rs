//! `filesystem.Filesystem/WatchDir`: a Connect server stream. The request
//! is one envelope; the answer is `{"start":{}}`, then one
//! `{"filesystem": FilesystemEvent}` per event and `{"keepalive":{}}` at the
//! asked interval, then the end-of-stream envelope (`{}`, or `{"error"}` when
//! the watch failed or `Connect-Timeout-Ms` passed). It ends when the
//! watched directory goes, the client leaves (the guest watch ends with the
//! dropped stream) or the server shuts down.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};

use super::filesystem::{connect_timeout, keepalive_interval, open_watch, stream_response, WatchReq};
use super::fs_rpc::{caller, decode, RpcError, SharedFs};
use crate::app::AppState;

/// Envelope flag of the end-of-stream message.
const END_STREAM: u8 = 0x02;
/// Envelope flag of a compressed message.
const COMPRESSED: u8 = 0x01;

/// One Connect envelope: `[flags][len u32 BE][json]`.
pub fn envelope(flags: u8, msg: &Value) -> Bytes {
    let data = serde_json::to_vec(msg).unwrap_or_else(|_| b"{}".to_vec());
    let mut out = Vec::with_capacity(5 + data.len());
    out.push(flags);
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(&data);
    Bytes::from(out)
}

/// The message of the first envelope of a stream request body.
pub fn first_message(body: &[u8]) -> Result<&[u8], RpcError> {
    if body.len() < 5 {
        return Err(RpcError::new(
            "invalid_argument",
            format!("a stream request needs a Connect envelope ({} bytes sent)", body.len()),
        ));
    }
    if body[0] & COMPRESSED != 0 {
        return Err(RpcError::new("unimplemented", "compressed Connect envelopes are not supported"));
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    body.get(5..5 + len).ok_or_else(|| {
        RpcError::new(
            "invalid_argument",
            format!("the envelope says {len} bytes but {} follow", body.len() - 5),
        )
    })
}

/// An answer of one end-of-stream envelope carrying `e` (Connect streams
/// report errors with HTTP 200).
fn stream_error(e: RpcError) -> Response {
    let end = envelope(END_STREAM, &json!({"error": e.json()}));
    stream_response(Body::from(end))
}

pub async fn watch_dir(
    State(s): State<AppState>,
    Extension(fs): Extension<SharedFs>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    match open(&s, &fs, &h, &body).await {
        Ok(r) => r,
        Err(e) => stream_error(e),
    }
}

async fn open(s: &AppState, fs: &SharedFs, h: &HeaderMap, body: &[u8]) -> Result<Response, RpcError> {
    let req: WatchReq = decode(first_message(body)?)?;
    let c = caller(s, fs, h, None).await?;
    let (mut watch, spec) = open_watch(s, &c, &req).await?;
    let sbx = c.sandbox.clone();
    let every = keepalive_interval(h);
    let deadline = connect_timeout(h).map(|t| tokio::time::Instant::now() + t);
    let shutdown = s.shutdown().clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    let _ = tx.send(envelope(0, &json!({"start": {}}))).await;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
        let end: Value = loop {
            tokio::select! {
                _ = tx.closed() => return,
                _ = shutdown.cancelled() => break json!({}),
                _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
                    break json!({"error": {"code": "deadline_exceeded", "message": "the watch reached its Connect-Timeout-Ms"}});
                }
                _ = tick.tick() => {
                    if tx.send(envelope(0, &json!({"keepalive": {}}))).await.is_err() {
                        return;
                    }
                }
                ev = watch.next() => match ev {
                    Ok(Some(ev)) => {
                        for e in spec.events(&sbx, &ev).await {
                            if tx.send(envelope(0, &json!({"filesystem": e}))).await.is_err() {
                                return;
                            }
                        }
                    }
                    Ok(None) => break json!({}),
                    Err(e) => {
                        let e = RpcError::from(e);
                        break json!({"error": e.json()});
                    }
                }
            }
        };
        let _ = tx.send(envelope(END_STREAM, &end)).await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
    });
    Ok(stream_response(Body::from_stream(stream)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip() {
        let e = envelope(0, &json!({"path": "/x"}));
        assert_eq!(e[0], 0);
        assert_eq!(u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize, e.len() - 5);
        assert_eq!(first_message(&e).unwrap(), br#"{"path":"/x"}"#);
        let err = first_message(&e[..7]).unwrap_err();
        assert!(err.message.contains("envelope says"), "{}", err.message);
        assert_eq!(first_message(b"").unwrap_err().code, "invalid_argument");
        let mut c = e.to_vec();
        c[0] = COMPRESSED;
        assert_eq!(first_message(&c).unwrap_err().code, "unimplemented");
        assert_eq!(envelope(END_STREAM, &json!({}))[..], [2, 0, 0, 0, 2, b'{', b'}']);
    }
}
