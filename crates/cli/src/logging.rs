//! Logging setup: human-readable to stderr, JSON lines to `--log-file`.

use std::path::Path;

use anyhow::Context;
use tracing_subscriber::{fmt, layer::SubscriberExt, util::SubscriberInitExt, EnvFilter, Layer};

/// Keeps the log file open for the life of the process.
pub struct Guard(#[allow(dead_code)] Option<std::sync::Arc<std::fs::File>>);

/// `json_stderr`: JSON lines on stderr too, each with the fields of every
/// span it is in (`hearth serve`: `request_id`, `sandbox_id`).
pub fn init(level: &str, file: Option<&Path>, json_stderr: bool) -> anyhow::Result<Guard> {
    let filter =
        |lvl: &str| EnvFilter::try_new(lvl).with_context(|| format!("bad --log-level {lvl:?}"));
    let stderr: Box<dyn Layer<_> + Send + Sync> = if json_stderr {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .with_writer(std::io::stderr)
            .with_filter(filter(level)?)
            .boxed()
    } else {
        fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_filter(filter(level)?)
            .boxed()
    };
    let (file_layer, keep) = match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            let f = std::sync::Arc::new(f);
            let layer = fmt::layer()
                .json()
                .with_writer(f.clone())
                .with_filter(filter(level)?);
            (Some(layer), Some(f))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .try_init()
        .context("cannot install the log subscriber")?;
    Ok(Guard(keep))
}
