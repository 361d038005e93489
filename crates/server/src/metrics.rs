//! Prometheus metrics, served at `/metrics` in the text format.
//!
//! - `hearth_sandboxes{state}`: sandboxes by state, read from the state DB at
//!   each scrape.
//! - `hearth_sandbox_create_seconds{outcome}`: create latency (`ok`, `error`).
//! - `hearth_exec_seconds{api}`: latency of one command, start to end.
//! - `hearth_boot_failures_total`: creates that failed while booting.
//! - `hearth_http_requests_total{method,status}` and
//!   `hearth_http_request_seconds{method}`.
//! - `hearth_sandboxes_expired_total`: sandboxes the reaper removed.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// Every metric the server keeps.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub sandboxes: IntGaugeVec,
    pub create_seconds: HistogramVec,
    pub exec_seconds: HistogramVec,
    pub boot_failures: IntCounter,
    pub http_requests: IntCounterVec,
    pub http_seconds: HistogramVec,
    pub expired: IntCounter,
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let sandboxes = IntGaugeVec::new(
            Opts::new("hearth_sandboxes", "sandboxes by state"),
            &["state"],
        )
        .expect("valid metric");
        let create_seconds = HistogramVec::new(
            HistogramOpts::new("hearth_sandbox_create_seconds", "sandbox create latency")
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["outcome"],
        )
        .expect("valid metric");
        let exec_seconds = HistogramVec::new(
            HistogramOpts::new(
                "hearth_exec_seconds",
                "latency of one command, start to end",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["api"],
        )
        .expect("valid metric");
        let boot_failures =
            IntCounter::new("hearth_boot_failures_total", "creates that failed to boot")
                .expect("valid metric");
        let http_requests = IntCounterVec::new(
            Opts::new("hearth_http_requests_total", "HTTP requests answered"),
            &["method", "status"],
        )
        .expect("valid metric");
        let http_seconds = HistogramVec::new(
            HistogramOpts::new(
                "hearth_http_request_seconds",
                "HTTP request latency to the head",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method"],
        )
        .expect("valid metric");
        let expired = IntCounter::new(
            "hearth_sandboxes_expired_total",
            "sandboxes removed because their timeout passed",
        )
        .expect("valid metric");
        for c in [
            Box::new(sandboxes.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(create_seconds.clone()),
            Box::new(exec_seconds.clone()),
            Box::new(boot_failures.clone()),
            Box::new(http_requests.clone()),
            Box::new(http_seconds.clone()),
            Box::new(expired.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Self {
            registry,
            sandboxes,
            create_seconds,
            exec_seconds,
            boot_failures,
            http_requests,
            http_seconds,
            expired,
        }
    }

    /// Sets `hearth_sandboxes` from the records.
    pub fn set_sandbox_counts(&self, records: &[hearth_runtime::VmRecord]) {
        for s in hearth_runtime::VmStatus::ALL {
            let n = records.iter().filter(|r| r.status == s).count();
            self.sandboxes
                .with_label_values(&[s.as_str()])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
