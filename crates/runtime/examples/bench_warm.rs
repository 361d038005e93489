//! Warm start against a cold boot, same run: create → first exec result
//! (`true` through the image's shell) for `CreateSpec.cold` and for a warm
//! create (restore of the shape's template), interleaved, each sample removed
//! before the next. The template is built once before the samples (its build
//! time is printed apart). Prints one JSON object: medians in milliseconds
//! and cold/warm.
//!
//! ```sh
//! cargo run --release -p hearth-runtime --example bench_warm -- \
//!     --samples 5 --language python \
//!     --guest target/x86_64-unknown-linux-gnu/release/hearth-guest
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use hearth_runtime::{CreateSpec, ExecSpec, NoProgress, Runtime, RuntimeConfig, SharedProgress};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2] * 1000.0 * 10.0).round() / 10.0
}

/// Create → first exec result, then remove; returns (seconds, warm?).
async fn sample(
    rt: &Runtime,
    spec: &CreateSpec,
    p: &SharedProgress,
) -> Result<(f64, bool), Box<dyn std::error::Error>> {
    let t = Instant::now();
    let sb = rt.create(spec, p).await?;
    let out = sb.exec(&ExecSpec::shell("true")).await?;
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(out.exit.outcome.exit_code(), 0);
    let warm = sb.record().warm_template.is_some();
    let id = sb.id().to_string();
    drop(sb);
    rt.remove(&id, false, p).await?;
    Ok((dt, warm))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let state = std::env::temp_dir().join(format!("hearth-bench-warm-{}", std::process::id()));
    let mut config = RuntimeConfig::new(&state);
    config.guest_binary =
        Some(PathBuf::from(arg("--guest").unwrap_or_else(|| {
            "target/x86_64-unknown-linux-gnu/release/hearth-guest".into()
        })));
    config.image_cache = arg("--image-cache")
        .unwrap_or_else(|| "/var/tmp/hearth-test-images".into())
        .into();
    let samples: usize = arg("--samples").and_then(|v| v.parse().ok()).unwrap_or(5);
    let language = arg("--language").unwrap_or_else(|| "python".into());
    let warm = CreateSpec {
        language: Some(language.clone()),
        ..Default::default()
    };
    let cold = CreateSpec {
        cold: true,
        ..warm.clone()
    };
    let p: SharedProgress = Arc::new(NoProgress);
    let rt = Runtime::open(config).await?;
    let result = async {
        // First warm create: builds the template unless it is cached.
        let (first, first_warm) = sample(&rt, &warm, &p).await?;
        let (mut c, mut w) = (vec![], vec![]);
        for _ in 0..samples {
            let (dt, was_warm) = sample(&rt, &cold, &p).await?;
            assert!(!was_warm, "a --cold create was warm");
            c.push(dt);
            let (dt, was_warm) = sample(&rt, &warm, &p).await?;
            assert!(was_warm, "a warm create booted cold (see the warnings)");
            w.push(dt);
        }
        let (cm, wm) = (median_ms(c), median_ms(w));
        println!(
            "{}",
            serde_json::json!({
                "language": language,
                "samples": samples,
                "first_create_ms": (first * 1000.0).round(),
                "first_create_warm": first_warm,
                "cold_create_to_first_exec_ms": cm,
                "warm_create_to_first_exec_ms": wm,
                "cold_over_warm": ((cm / wm) * 100.0).round() / 100.0,
            })
        );
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    let _ = std::fs::remove_dir_all(&state);
    result
}
