//! Cost of the guest side of snapshots in a real VM, against a ping and a
//! SYSTEM_INFO on the same connection in the same run (the baselines: one
//! round trip, and one round trip with blocking work in the agent):
//! `notify_restored` (clock, RNDADDENTROPY + RNDRESEEDCRNG, hostname and
//! machine-id files, generation; and without hostname and machine-id, to
//! tell the file writes from the clock and entropy), and `freeze_fs` + `thaw_fs` of the root's
//! upper ext4 (FS_FREEZE ×2 plus the SYSTEM_INFO `freeze_fs` reads). Prints
//! one JSON object of medians in milliseconds.
//!
//! ```sh
//! cargo run --release -p hearth-runtime --example bench_restore_hooks -- \
//!     --samples 30 --language python \
//!     --guest target/x86_64-unknown-linux-gnu/release/hearth-guest
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_runtime::{CreateSpec, NoProgress, RestoreInfo, Runtime, RuntimeConfig, SharedProgress};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2] * 1000.0 * 100.0).round() / 100.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let state = std::env::temp_dir().join(format!("hearth-bench-hooks-{}", std::process::id()));
    let mut config = RuntimeConfig::new(&state);
    config.guest_binary =
        Some(PathBuf::from(arg("--guest").unwrap_or_else(|| {
            "target/x86_64-unknown-linux-gnu/release/hearth-guest".into()
        })));
    config.image_cache = arg("--image-cache")
        .unwrap_or_else(|| "/var/tmp/hearth-test-images".into())
        .into();
    let samples: usize = arg("--samples").and_then(|v| v.parse().ok()).unwrap_or(30);
    let spec = CreateSpec {
        language: Some(arg("--language").unwrap_or_else(|| "python".into())),
        mem_mib: 512,
        network: hearth_runtime::Network::None,
        ..Default::default()
    };
    let progress: SharedProgress = Arc::new(NoProgress);
    let rt = Runtime::open(config).await?;
    let sb = rt.create(&spec, &progress).await?;
    let result = async {
        let (mut ping, mut info, mut restored, mut freeze) = (vec![], vec![], vec![], vec![]);
        let mut bare = vec![];
        let mut frozen = Vec::new();
        for i in 0..samples {
            let t = Instant::now();
            sb.agent().await?.ping().await?;
            ping.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            sb.system_info().await?;
            info.push(t.elapsed().as_secs_f64());
            let r = RestoreInfo {
                generation: i as u64 + 1,
                hostname: Some(format!("clone-{i}")),
                machine_id: Some(RestoreInfo::random_machine_id()?),
            };
            let t = Instant::now();
            sb.notify_restored(&r).await?;
            restored.push(t.elapsed().as_secs_f64());
            let r = RestoreInfo {
                generation: i as u64 + 1,
                ..Default::default()
            };
            let t = Instant::now();
            sb.notify_restored(&r).await?;
            bare.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            frozen = sb.freeze_fs(Duration::from_secs(10)).await?;
            sb.thaw_fs().await?;
            freeze.push(t.elapsed().as_secs_f64());
        }
        let report = serde_json::json!({
            "samples": samples,
            "language": spec.language,
            "frozen": frozen,
            "ping_ms": median_ms(ping),
            "system_info_ms": median_ms(info),
            "notify_restored_ms": median_ms(restored),
            "notify_restored_without_names_ms": median_ms(bare),
            "freeze_and_thaw_ms": median_ms(freeze),
        });
        println!("{report}");
        Ok::<_, Box<dyn std::error::Error>>(())
    }
    .await;
    rt.remove(sb.id(), false, &progress).await?;
    let _ = std::fs::remove_dir_all(&state);
    result
}
