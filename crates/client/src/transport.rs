//! Connecting to each kind of endpoint, with bounded retries and backoff under
//! one overall deadline (the deadline also covers READY).

use std::time::Duration;

use tokio::net::UnixStream;
use tokio::time::Instant;
use tracing::debug;

use crate::conn::{Client, ConnectOptions};
use crate::endpoint::Endpoint;
use crate::error::ClientError;
use crate::hybrid::{handshake, HandshakeFailure};

const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

impl Client {
    /// Connects to `ep`, retrying while the agent is not there yet, until
    /// `opts.timeout` has passed.
    pub async fn connect(ep: &Endpoint, opts: &ConnectOptions) -> Result<Client, ClientError> {
        let deadline = Instant::now() + opts.timeout;
        let mut backoff = FIRST_BACKOFF;
        let mut attempt = 0u32;
        let mut previous: Option<ClientError> = None;
        loop {
            attempt += 1;
            let left = deadline.saturating_duration_since(Instant::now());
            let once = ConnectOptions {
                timeout: left,
                max_frame_len: opts.max_frame_len,
            };
            let err = match tokio::time::timeout(left, connect_once(ep, &once)).await {
                Ok(Ok(c)) => return Ok(c),
                Ok(Err(e)) if e.is_retryable() => e,
                Ok(Err(e)) => return Err(e),
                // An attempt cut short by the deadline says less than the
                // previous attempt's error (e.g. "not listening").
                Err(_) => match previous.take() {
                    Some(e) if left < FIRST_BACKOFF => e,
                    _ => ClientError::ReadyTimeout { timeout: left },
                },
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ClientError::ConnectTimeout {
                    endpoint: ep.to_string(),
                    timeout: opts.timeout,
                    last: format!("{} (after {attempt} attempts)", chain(&err)),
                });
            }
            debug!(endpoint = %ep, attempt, error = %err, "retrying connect");
            previous = Some(err);
            tokio::time::sleep(backoff.min(left)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

async fn connect_once(ep: &Endpoint, opts: &ConnectOptions) -> Result<Client, ClientError> {
    let cerr = |source| ClientError::Connect {
        endpoint: ep.to_string(),
        source,
    };
    match ep {
        Endpoint::Unix(path) => {
            let s = UnixStream::connect(path).await.map_err(cerr)?;
            Client::from_stream(s, opts).await
        }
        Endpoint::Hybrid { path, port } => {
            let mut s = UnixStream::connect(path).await.map_err(cerr)?;
            match handshake(&mut s, *port).await {
                Ok(_) => {}
                Err(HandshakeFailure::NotListening(detail)) => {
                    return Err(ClientError::NotListening {
                        endpoint: ep.to_string(),
                        detail,
                    })
                }
                Err(HandshakeFailure::Bad(source)) => {
                    return Err(ClientError::Handshake {
                        endpoint: ep.to_string(),
                        source,
                    })
                }
                Err(HandshakeFailure::Io(e)) => return Err(cerr(e)),
            }
            Client::from_stream(s, opts).await
        }
        Endpoint::Vsock { cid, port } => {
            let addr = tokio_vsock::VsockAddr::new(*cid, *port);
            let s = tokio_vsock::VsockStream::connect(addr)
                .await
                .map_err(cerr)?;
            Client::from_stream(s, opts).await
        }
    }
}

/// An error and its sources, joined with `: `.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}
