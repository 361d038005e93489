//! [`AppState`] and the router.
//!
//! One listener serves everything. A request that carries `E2b-Sandbox-Id`
//! is sandbox traffic and goes to the envd gateway ([`crate::envd`]), checked
//! with the sandbox's access token; every other request goes to the control
//! routes (hearth's `/v1`, the E2B control plane, `/metrics`), checked with an
//! API token. `/healthz` and `/v1/openapi.json` need no token. Unknown routes
//! answer a JSON 404 like every other error.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hearth_runtime::{Runtime, Sandbox, VmStatus};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::auth::{AccessSecret, ApiTokens};
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// Settings of the server itself (not of the runtime).
#[derive(Debug, Clone)]
pub struct Settings {
    /// A sandbox's lifetime when the create request names none (E2B: 300 s).
    pub default_timeout: Duration,
    /// The longest lifetime a request may ask for.
    pub max_timeout: Duration,
    /// The `domain` E2B responses carry (`get_host` builds `{port}-{id}.{domain}`).
    pub domain: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_timeout: Duration::from_secs(300),
            max_timeout: hearth_runtime::lifecycle::create::MAX_LIFETIME,
            domain: "localhost".into(),
        }
    }
}

struct Inner {
    runtime: Runtime,
    tokens: ApiTokens,
    secret: AccessSecret,
    metrics: Metrics,
    settings: Settings,
    /// Fires when the server shuts down: long streams end on it.
    shutdown: CancellationToken,
    /// Handles of running sandboxes, each holding one agent connection that
    /// every request to that sandbox shares.
    handles: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// Distinguishes this server's request ids from a restarted one's.
    instance: String,
}

/// What every route handler gets. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl AppState {
    pub fn new(
        runtime: Runtime,
        tokens: ApiTokens,
        secret: AccessSecret,
        settings: Settings,
    ) -> Self {
        let instance = crate::auth::random_hex()
            .map(|h| h[..8].to_string())
            .unwrap_or_else(|_| format!("{:x}", std::process::id()));
        Self(Arc::new(Inner {
            runtime,
            tokens,
            secret,
            metrics: Metrics::new(),
            settings,
            shutdown: CancellationToken::new(),
            handles: Mutex::new(HashMap::new()),
            instance,
        }))
    }

    pub fn runtime(&self) -> &Runtime {
        &self.0.runtime
    }

    pub fn metrics(&self) -> &Metrics {
        &self.0.metrics
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn secret(&self) -> &AccessSecret {
        &self.0.secret
    }

    pub fn tokens(&self) -> &ApiTokens {
        &self.0.tokens
    }

    /// Cancelled when the server begins to shut down.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    pub(crate) fn instance(&self) -> &str {
        &self.0.instance
    }

    /// The running sandbox `key` (id or name), sharing one agent connection
    /// across requests. A sandbox that is not running is `WrongState`, an
    /// unknown one `NotFound`.
    pub async fn sandbox(&self, key: &str) -> ApiResult<Arc<Sandbox>> {
        if let Some(s) = self.cached(key) {
            return Ok(s);
        }
        let s = self.runtime().get(key).await?;
        if s.status() == VmStatus::Paused {
            return Err(hearth_runtime::Error::Paused {
                id: s.id().to_string(),
            }
            .into());
        }
        if s.status() != VmStatus::Running {
            return Err(hearth_runtime::Error::WrongState {
                id: s.id().to_string(),
                status: s.status(),
                hint: "",
            }
            .into());
        }
        let s = Arc::new(s);
        let mut map = self.0.handles.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(map.entry(s.id().to_string()).or_insert(s)))
    }

    fn cached(&self, key: &str) -> Option<Arc<Sandbox>> {
        let map = self.0.handles.lock().unwrap_or_else(|p| p.into_inner());
        map.get(key)
            .or_else(|| map.values().find(|s| s.name() == Some(key)))
            .cloned()
    }

    /// Drops the cached handle of `id` (after it was removed or stopped, or
    /// its connection failed), so the next request looks again.
    pub fn forget(&self, id: &str) {
        let mut map = self.0.handles.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(id);
        map.retain(|_, s| s.name() != Some(id));
    }

    /// Forgets the handle when `e` says the sandbox or its connection is gone.
    pub fn forget_if_gone(&self, id: &str, e: &hearth_runtime::Error) {
        use hearth_runtime::Error as E;
        if matches!(e, E::Died { .. } | E::NotFound(_) | E::WrongState { .. })
            || (matches!(e, E::Agent { .. }) && e.remote_code().is_none())
        {
            self.forget(id);
        }
    }
}

/// The whole application: routing by header, auth, telemetry.
pub fn router(state: AppState) -> Router {
    let control = Router::new()
        .merge(crate::rest::router())
        .merge(crate::e2b::router())
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_token,
        ))
        .route("/healthz", get(healthz))
        .merge(crate::rest::open_router())
        .fallback(no_route)
        .with_state(state.clone());
    // The fallback is inside the layer: unknown sandbox routes need the token too.
    let sandbox = crate::envd::router()
        .fallback(crate::envd::no_route)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::envd::require_access_token,
        ))
        .with_state(state.clone());
    Router::new()
        .fallback(move |req: Request| {
            let to_sandbox = req.headers().contains_key("e2b-sandbox-id");
            let (control, sandbox) = (control.clone(), sandbox.clone());
            async move {
                let r = if to_sandbox {
                    sandbox.oneshot(req).await
                } else {
                    control.oneshot(req).await
                };
                match r {
                    Ok(r) => r,
                    Err(never) => match never {},
                }
            }
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::telemetry::request_span,
        ))
        .with_state(state)
}

/// Middleware: the request must carry an API token the server accepts.
async fn require_api_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let presented = ApiTokens::from_headers(req.headers());
    if presented.iter().any(|t| state.tokens().accepts(t)) {
        return next.run(req).await;
    }
    if presented.is_empty() {
        ApiError::unauthorized(
            "missing API token: send `Authorization: Bearer <token>` or `X-API-Key: <token>`",
        )
        .into_response()
    } else {
        ApiError::unauthorized("invalid API token").into_response()
    }
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

async fn metrics(State(state): State<AppState>) -> ApiResult<Response> {
    let records = state.runtime().records().await?;
    state.metrics().set_sandbox_counts(&records);
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics().render(),
    )
        .into_response())
}

async fn no_route(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no route for {} {}", req.method(), req.uri().path()),
    )
}
