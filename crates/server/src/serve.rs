//! [`serve`]: bind, serve until told to stop, then drain.
//!
//! On shutdown (SIGTERM or SIGINT in the CLI) the server stops accepting,
//! ends its long streams (they see [`AppState::shutdown`]), lets in-flight
//! requests finish for up to [`ServeConfig::drain`], and returns. Sandboxes
//! keep running: they are detached VMs in the state DB, and a restarted
//! server serves them (and enforces their deadlines) again.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use hearth_runtime::Runtime;

use crate::app::{router, AppState, Settings};
use crate::auth::{AccessSecret, ApiTokens, TokenFileError};

/// How to run the server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// The API tokens (from `--token-file`). Without them the server makes
    /// one for this run and reports it; a non-loopback listener needs them.
    pub tokens: Option<ApiTokens>,
    pub settings: Settings,
    /// How long in-flight requests may take to finish after shutdown begins.
    pub drain: Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            tokens: None,
            settings: Settings::default(),
            drain: Duration::from_secs(30),
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("refusing to listen on {0} without API tokens: give --token-file (make one with `hearth serve token create`)")]
    NoTokens(SocketAddr),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Secret(#[from] TokenFileError),
    #[error("the server failed")]
    Serve(#[source] std::io::Error),
}

/// What a started server tells its caller.
#[derive(Debug, Clone)]
pub struct Started {
    pub addr: SocketAddr,
    /// The token made for this run when no token file was given.
    pub generated_token: Option<String>,
}

/// Serves until `shutdown` completes. `started` is called once the listener
/// is bound (with the real port when `listen` had port 0).
pub async fn serve(
    runtime: Runtime,
    config: ServeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    started: impl FnOnce(&Started),
) -> Result<(), ServeError> {
    let (tokens, generated_token) = match config.tokens.clone() {
        Some(t) => (t, None),
        None if config.listen.ip().is_loopback() => {
            let t = format!(
                "hearth_{}",
                crate::auth::random_hex().map_err(|source| TokenFileError::Write {
                    path: "/dev/urandom".into(),
                    source
                })?
            );
            (ApiTokens::single(&t), Some(t))
        }
        None => return Err(ServeError::NoTokens(config.listen)),
    };
    let secret = AccessSecret::load_or_create(&runtime.config().state_dir.join("server"))?;
    let state = AppState::new(runtime, tokens, secret, config.settings.clone());
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: config.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.listen,
        source,
    })?;
    tracing::info!(%addr, "listening");
    started(&Started {
        addr,
        generated_token,
    });
    let reaper = tokio::spawn(crate::lifetime::reaper(state.clone()));
    let stop = state.shutdown().clone();
    let app = router(state.clone());
    // No Nagle: a streamed body's last chunk would otherwise wait for the
    // client's delayed ACK of the one before (~40 ms per download).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    let server = axum::serve(listener, app).with_graceful_shutdown({
        let stop = stop.clone();
        async move {
            shutdown.await;
            tracing::info!("shutting down: no new connections; in-flight requests finish");
            stop.cancel();
        }
    });
    let server = tokio::spawn(async move { server.await });
    tokio::pin!(server);
    let result = tokio::select! {
        r = &mut server => r,
        _ = async {
            stop.cancelled().await;
            tokio::time::sleep(config.drain).await;
        } => {
            tracing::warn!(drain_secs = config.drain.as_secs(), "requests still running after the drain time; stopping anyway");
            server.abort();
            Ok(Ok(()))
        }
    };
    stop.cancel();
    reaper.abort();
    match result {
        Ok(r) => r.map_err(ServeError::Serve),
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => Err(ServeError::Serve(std::io::Error::other(e.to_string()))),
    }
}
