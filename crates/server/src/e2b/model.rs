//! The E2B control plane's JSON, as the SDKs' generated clients
//! (`e2b/api/client/models/*.py`) send and parse it, and the body extractor
//! that turns bad JSON into an [`ApiError`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The `envdVersion` every sandbox reports: new enough that the 2.x SDKs
/// take their newest paths (default user, octet-stream uploads, file
/// metadata, entry info in watch events).
pub const ENVD_VERSION: &str = "0.6.13";

/// The `clientID` every sandbox reports (E2B's names the node).
pub const CLIENT_ID: &str = "hearth";

/// A JSON request body; an empty body is `{}`. Bad JSON is a 400 naming
/// the problem, in the JSON error body every answer uses.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &body
        };
        serde_json::from_slice(body)
            .map(ApiJson)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
    }
}

/// `POST /sandboxes`, `POST /v2/sandboxes` (`NewSandbox`, `NewSandboxV2`).
/// Unknown keys are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct NewSandbox {
    #[serde(rename = "templateID", default)]
    pub template_id: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub timeout: Option<i64>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(rename = "envVars", default)]
    pub env_vars: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub allow_internet_access: Option<bool>,
    #[serde(default)]
    pub network: Option<NetworkConfig>,
    /// Accepted; hearth has no pause yet, so a sandbox is removed at its timeout.
    #[serde(rename = "autoPause", default)]
    pub auto_pause: Option<bool>,
}

/// `SandboxNetworkConfig`: only what decides NIC or no NIC is read.
#[derive(Debug, Default, Deserialize)]
pub struct NetworkConfig {
    #[serde(rename = "allowOut", default)]
    pub allow_out: Option<Vec<String>>,
    #[serde(rename = "denyOut", default)]
    pub deny_out: Option<Vec<String>>,
}

/// `POST /sandboxes/{id}/timeout` (`SandboxTimeoutRequest`).
#[derive(Debug, Deserialize)]
pub struct TimeoutRequest {
    pub timeout: i64,
}

/// `POST /v2/sandboxes/{id}/connect` (`ConnectSandboxV2`).
#[derive(Debug, Default, Deserialize)]
pub struct ConnectRequest {
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// `Sandbox`: the answer to create and connect.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxOut {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(rename = "envdAccessToken")]
    pub envd_access_token: String,
    pub domain: String,
}

/// `SandboxDetail` (`GET /sandboxes/{id}`) and, without the token and
/// domain, `ListedSandbox`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxDetail {
    #[serde(rename = "templateID")]
    pub template_id: String,
    #[serde(rename = "sandboxID")]
    pub sandbox_id: String,
    #[serde(rename = "clientID")]
    pub client_id: String,
    /// RFC 3339.
    #[serde(rename = "startedAt")]
    pub started_at: String,
    /// RFC 3339: when the server removes it unless extended.
    #[serde(rename = "endAt")]
    pub end_at: String,
    #[serde(rename = "envdVersion")]
    pub envd_version: String,
    #[serde(rename = "envdAccessToken", skip_serializing_if = "Option::is_none")]
    pub envd_access_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(rename = "cpuCount")]
    pub cpu_count: u32,
    #[serde(rename = "memoryMB")]
    pub memory_mb: u32,
    #[serde(rename = "diskSizeMB")]
    pub disk_size_mb: u64,
    pub metadata: BTreeMap<String, String>,
    /// `running` or `paused`: E2B knows only these, and stopped or failed
    /// hearth sandboxes are not shown to E2B clients.
    pub state: String,
    #[serde(
        rename = "allowInternetAccess",
        skip_serializing_if = "Option::is_none"
    )]
    pub allow_internet_access: Option<bool>,
}

/// `SandboxMetric`: nine keys, memory and disk in bytes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SandboxMetric {
    pub timestamp: String,
    #[serde(rename = "timestampUnix")]
    pub timestamp_unix: i64,
    #[serde(rename = "cpuCount")]
    pub cpu_count: u32,
    #[serde(rename = "cpuUsedPct")]
    pub cpu_used_pct: f64,
    #[serde(rename = "memUsed")]
    pub mem_used: u64,
    #[serde(rename = "memTotal")]
    pub mem_total: u64,
    #[serde(rename = "memCache")]
    pub mem_cache: u64,
    #[serde(rename = "diskUsed")]
    pub disk_used: u64,
    #[serde(rename = "diskTotal")]
    pub disk_total: u64,
}

/// RFC 3339 (UTC, milliseconds) of a time given in milliseconds since the epoch.
pub fn rfc3339_ms(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

/// Milliseconds since the epoch of `t`.
pub fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Parses an RFC 3339 time (any offset) to milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A request's `timeout` in seconds as a lifetime: positive, capped at `max`.
pub fn lifetime(secs: i64, max: Duration) -> Result<Duration, ApiError> {
    if secs <= 0 {
        return Err(ApiError::bad_request(format!(
            "timeout {secs} s is out of range (1..={} s)",
            max.as_secs()
        )));
    }
    Ok(Duration::from_secs(secs as u64).min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let s = rfc3339_ms(1_764_600_000_123);
        assert_eq!(s, "2025-12-01T14:40:00.123Z");
        assert_eq!(parse_rfc3339_ms(&s), Some(1_764_600_000_123));
        assert_eq!(
            parse_rfc3339_ms("2025-12-01T15:40:00.123+01:00"),
            Some(1_764_600_000_123)
        );
        assert_eq!(parse_rfc3339_ms("yesterday"), None);
    }

    #[test]
    fn timeouts_are_positive_and_capped() {
        let max = Duration::from_secs(3600);
        assert_eq!(lifetime(5, max).unwrap(), Duration::from_secs(5));
        assert_eq!(lifetime(86_400, max).unwrap(), max);
        let e = lifetime(0, max).unwrap_err();
        assert!(e.message.contains("timeout 0 s"), "{}", e.message);
        assert!(lifetime(-3, max).is_err());
    }

    #[test]
    fn create_body_ignores_unknown_keys() {
        let b: NewSandbox = serde_json::from_str(
            r#"{"templateID":"base","timeout":5,"metadata":{"a":"b"},"envVars":{},"autoPause":false,
                "allow_internet_access":true,"volumeMounts":[],"mcp":null,"network":{"allowOut":["1.1.1.1"]}}"#,
        )
        .unwrap();
        assert_eq!(b.template_id.as_deref(), Some("base"));
        assert_eq!(b.timeout, Some(5));
        assert_eq!(b.allow_internet_access, Some(true));
    }
}
