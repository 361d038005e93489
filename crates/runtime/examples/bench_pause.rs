//! Pause/resume latency through hearth-runtime, each against a baseline
//! measured in the same run (figures, not pass/fail). One bare-initramfs
//! sandbox; per round:
//!
//! - backend pause / resume (QMP connect + greeting + `stop` / `cont`) vs
//!   `query-status` over a fresh monitor connection (the bare QMP round
//!   trip, [`hearth_vmm::Backend::is_paused`]);
//! - `Runtime::pause` / `Runtime::resume` (reconcile + QMP + state DB write)
//!   vs `Runtime::get` (reconcile) and `Runtime::extend` (reconcile + one DB
//!   write);
//! - resume → first exec result (`true`, a fresh agent handle) vs an exec of
//!   `true` on the running sandbox with a fresh handle.
//!
//! ```sh
//! cargo run --release -p hearth-runtime --example bench_pause -- \
//!     --rounds 20 --guest /var/tmp/hearth-guest-aa0dad1
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

fn median_ms(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.get(v.len() / 2).copied().unwrap_or(f64::NAN);
    (m * 1e4).round() / 10.0
}

fn p90_ms(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len().saturating_sub(1)) as f64 * 0.9).round() as usize;
    let m = v.get(i).copied().unwrap_or(f64::NAN);
    (m * 1e4).round() / 10.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = arg("--rounds").and_then(|v| v.parse().ok()).unwrap_or(20);
    let state = tempfile::Builder::new()
        .prefix("hearth-bench-pause-")
        .tempdir()?;
    let mut config = RuntimeConfig::new(state.path());
    config.guest_binary = arg("--guest").map(PathBuf::from);
    if let Some(c) = std::env::var_os("HEARTH_IMAGE_CACHE") {
        config.image_cache = PathBuf::from(c);
    }
    let rt = Runtime::open(config).await?;
    let progress: SharedProgress = Arc::new(NoProgress);
    let spec = CreateSpec {
        mem_mib: 256,
        ..Default::default()
    };
    let sb = rt.create(&spec, &progress).await?;
    let id = sb.id().to_string();
    let handle = sb
        .record()
        .backend
        .clone()
        .ok_or_else(|| anyhow::anyhow!("no backend handle"))?;
    let be = rt.backend();
    let t = ExecSpec::argv(["true"]);
    let (mut qs, mut bp, mut br, mut rp, mut rr, mut first, mut warm) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut get, mut write) = (vec![], vec![]);
    let result = async {
        for _ in 0..rounds {
            let t0 = Instant::now();
            be.is_paused(&handle).await?;
            qs.push(t0.elapsed().as_secs_f64());

            let t0 = Instant::now();
            be.pause(&handle).await?;
            bp.push(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            be.resume(&handle).await?;
            br.push(t0.elapsed().as_secs_f64());

            let t0 = Instant::now();
            rt.get(&id).await?.exec(&t).await?;
            warm.push(t0.elapsed().as_secs_f64());

            let t0 = Instant::now();
            rt.get(&id).await?;
            get.push(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            rt.extend(&id, std::time::Duration::from_secs(3600)).await?;
            write.push(t0.elapsed().as_secs_f64());

            let t0 = Instant::now();
            rt.pause(&id).await?;
            rp.push(t0.elapsed().as_secs_f64());
            let t0 = Instant::now();
            rt.resume(&id).await?;
            rr.push(t0.elapsed().as_secs_f64());
            rt.get(&id).await?.exec(&t).await?;
            first.push(t0.elapsed().as_secs_f64());
        }
        anyhow::Ok(())
    }
    .await;
    let removed = rt.remove(&id, false, &progress).await;
    result?;
    removed?;
    let out = serde_json::json!({
        "rounds": rounds,
        "qmp_query_status_ms": {"p50": median_ms(&mut qs), "p90": p90_ms(&mut qs)},
        "backend_pause_ms": {"p50": median_ms(&mut bp), "p90": p90_ms(&mut bp)},
        "backend_resume_ms": {"p50": median_ms(&mut br), "p90": p90_ms(&mut br)},
        "runtime_pause_ms": {"p50": median_ms(&mut rp), "p90": p90_ms(&mut rp)},
        "runtime_resume_ms": {"p50": median_ms(&mut rr), "p90": p90_ms(&mut rr)},
        "resume_to_first_exec_ms": {"p50": median_ms(&mut first), "p90": p90_ms(&mut first)},
        "runtime_get_ms (reconcile, baseline)": {"p50": median_ms(&mut get), "p90": p90_ms(&mut get)},
        "runtime_extend_ms (reconcile + one DB write, baseline)": {"p50": median_ms(&mut write), "p90": p90_ms(&mut write)},
        "exec_true_running_ms": {"p50": median_ms(&mut warm), "p90": p90_ms(&mut warm)},
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
