//! hearth-server: `hearth serve`, a long-running HTTP server over
//! hearth-runtime. The CLI binary mounts it; it holds no lifecycle logic of
//! its own (that is the runtime's).
//!
//! Module map:
//! - [`serve`]: [`ServeConfig`], the listener, graceful shutdown on SIGTERM.
//! - [`app`]: [`AppState`] (the runtime, cached sandbox handles, auth,
//!   metrics) and the router: requests carrying `E2b-Sandbox-Id` go to the
//!   sandbox gateway ([`envd`]), all others to the control routes.
//! - [`auth`]: API tokens (kept only as sha256 hashes) and per-sandbox access
//!   tokens (HMAC of the sandbox id under a server secret).
//! - [`error`]: [`ApiError`], the one mapping from runtime errors to an HTTP
//!   status and a JSON body `{"code", "kind", "message"}`.
//! - [`metrics`]: Prometheus `/metrics`. [`telemetry`]: request ids and the
//!   per-request span (`request_id`, `sandbox_id`).
//! - [`lifetime`]: sandbox deadlines (stored in the state DB) and the reaper.
//! - [`rest`]: hearth's own REST API under `/v1`, and its OpenAPI document.
//! - [`e2b`]: the E2B control plane (`/sandboxes`, `/v2/sandboxes`).
//! - [`envd`]: the E2B sandbox surface: the Connect-protocol Process and
//!   Filesystem services, `/files`, `/health`, translated to hearth's agent.

pub mod app;
pub mod auth;
pub mod e2b;
pub mod envd;
pub mod error;
pub mod lifetime;
pub mod metrics;
pub mod rest;
pub mod serve;
pub mod telemetry;

pub use app::AppState;
pub use auth::{ApiTokens, TokenFileError};
pub use error::ApiError;
pub use serve::{serve, ServeConfig};
