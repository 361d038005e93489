//! The per-request span and log line. Every request gets a request id (the
//! client's `X-Request-Id` when it is a sane token, else a new one), echoed in
//! the response; the span carries `request_id`, `method`, `path` and
//! `sandbox_id` (from `E2b-Sandbox-Id` or a `/sandboxes/{id}` path; a create
//! records it once the id exists), so every log line of the request names them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use crate::app::AppState;

static NEXT: AtomicU64 = AtomicU64::new(1);

fn sane(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The sandbox a request is about, from its header or its path.
pub fn sandbox_of(req: &Request) -> Option<String> {
    if let Some(v) = req
        .headers()
        .get("e2b-sandbox-id")
        .and_then(|v| v.to_str().ok())
    {
        return Some(v.to_string());
    }
    let mut parts = req.uri().path().split('/');
    while let Some(p) = parts.next() {
        if p == "sandboxes" {
            return parts.next().filter(|s| !s.is_empty()).map(str::to_string);
        }
    }
    None
}

/// Middleware: the span, the request id, the access log line and the HTTP metrics.
pub async fn request_span(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| sane(v))
        .map(str::to_string)
        .unwrap_or_else(|| {
            format!(
                "{}-{}",
                state.instance(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        });
    let sandbox = sandbox_of(&req);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        method = %req.method(),
        path = %req.uri().path(),
        sandbox_id = tracing::field::Empty,
    );
    if let Some(s) = &sandbox {
        span.record("sandbox_id", s.as_str());
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        req.headers_mut().insert("x-request-id", v);
    }
    let method = req.method().to_string();
    let start = Instant::now();
    let mut resp = next.run(req).instrument(span.clone()).await;
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    let m = state.metrics();
    m.http_requests
        .with_label_values(&[method.as_str(), &status.to_string()])
        .inc();
    m.http_seconds
        .with_label_values(&[method.as_str()])
        .observe(secs);
    span.in_scope(|| tracing::info!(status, ms = (secs * 1000.0).round() as u64, "answered"));
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, header: Option<&str>) -> Request {
        let mut b = axum::http::Request::builder().uri(path);
        if let Some(h) = header {
            b = b.header("e2b-sandbox-id", h);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[test]
    fn sandbox_ids_come_from_the_header_or_the_path() {
        assert_eq!(
            sandbox_of(&req("/v1/sandboxes/ab12/exec", None)).as_deref(),
            Some("ab12")
        );
        assert_eq!(
            sandbox_of(&req("/sandboxes/x9", None)).as_deref(),
            Some("x9")
        );
        assert_eq!(sandbox_of(&req("/v2/sandboxes", None)), None);
        assert_eq!(
            sandbox_of(&req("/files", Some("s1"))).as_deref(),
            Some("s1")
        );
        assert!(sane("abc-1") && !sane("a b") && !sane(""));
    }
}
