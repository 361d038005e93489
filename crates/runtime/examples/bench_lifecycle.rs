//! The same-run baseline of `scripts/bench_serve.sh`: N concurrent clients,
//! each creating a sandbox through hearth-runtime directly (no HTTP), running
//! M commands the way the E2B SDK's `commands.run` does (`/bin/bash -l -c CMD`
//! as the image's default user), and removing it. Prints one JSON object with
//! p50/p99 of create and of one command, and the failures.
//!
//! ```sh
//! cargo run --release -p hearth-runtime --example bench_lifecycle -- \
//!     --clients 32 --commands 20 --language base --mem 512 \
//!     --guest target/x86_64-unknown-linux-gnu/release/hearth-guest
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_runtime::{CreateSpec, ExecSpec, NoProgress, Runtime, RuntimeConfig, SharedProgress};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn num(name: &str, default: u64) -> u64 {
    arg(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The q-quantile (0..=1) of sorted seconds, in milliseconds.
fn quantile_ms(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    (sorted[i] * 1000.0 * 10.0).round() / 10.0
}

#[derive(Default)]
struct Client {
    create: Option<f64>,
    commands: Vec<f64>,
    errors: Vec<String>,
}

async fn one_client(rt: Runtime, spec: CreateSpec, commands: u64, i: u64) -> Client {
    let progress: SharedProgress = Arc::new(NoProgress);
    let mut c = Client::default();
    let t = Instant::now();
    let sb = match rt.create(&spec, &progress).await {
        Ok(s) => s,
        Err(e) => {
            c.errors.push(format!("create: {e}"));
            return c;
        }
    };
    c.create = Some(t.elapsed().as_secs_f64());
    for n in 0..commands {
        let mut e = ExecSpec::argv(["/bin/bash", "-l", "-c", &format!("echo client-{i}-{n}")]);
        e.cwd = Some(
            sb.record()
                .user
                .as_ref()
                .map(|u| format!("/home/{u}"))
                .unwrap_or_else(|| "/root".into()),
        );
        let t = Instant::now();
        match sb.exec(&e).await {
            Ok(out) if out.stdout == format!("client-{i}-{n}\n").as_bytes() => {
                c.commands.push(t.elapsed().as_secs_f64())
            }
            Ok(out) => c.errors.push(format!(
                "command {n}: {} stdout {:?}",
                out.exit.outcome,
                String::from_utf8_lossy(&out.stdout)
            )),
            Err(e) => c.errors.push(format!("command {n}: {e}")),
        }
    }
    if let Err(e) = rt.remove(sb.id(), false, &progress).await {
        c.errors.push(format!("remove: {e}"));
    }
    c
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = std::env::temp_dir().join(format!("hearth-bench-{}", std::process::id()));
    let state = arg("--state").map(PathBuf::from).unwrap_or(tmp.clone());
    let mut config = RuntimeConfig::new(&state);
    config.guest_binary = Some(
        arg("--guest")
            .unwrap_or_else(|| "target/x86_64-unknown-linux-gnu/release/hearth-guest".into())
            .into(),
    );
    config.image_cache = arg("--image-cache")
        .unwrap_or_else(|| "/var/tmp/hearth-test-images".into())
        .into();
    config.admission.cpu_overcommit = num("--cpu-overcommit", 16) as f64;
    config.boot_timeout = Some(Duration::from_secs(num("--boot-timeout", 300)));
    let clients = num("--clients", 32);
    let commands = num("--commands", 20);
    let spec = CreateSpec {
        language: Some(arg("--language").unwrap_or_else(|| "base".into())),
        mem_mib: num("--mem", 512) as u32,
        network: hearth_runtime::Network::None,
        ..Default::default()
    };
    let rt = Runtime::open(config).await?;
    // Build (or find) the image first, so creates measure boots only.
    rt.ensure_language_image(
        spec.language.as_deref().unwrap_or("base"),
        &(Arc::new(NoProgress) as SharedProgress),
    )
    .await?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|i| tokio::spawn(one_client(rt.clone(), spec.clone(), commands, i)))
        .collect();
    let mut creates = Vec::new();
    let mut cmds = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        let c = t.await?;
        creates.extend(c.create);
        cmds.extend(c.commands);
        errors.extend(c.errors);
    }
    let wall = start.elapsed().as_secs_f64();
    creates.sort_by(f64::total_cmp);
    cmds.sort_by(f64::total_cmp);
    let report = serde_json::json!({
        "via": "hearth-runtime",
        "clients": clients,
        "commands_per_client": commands,
        "creates_ok": creates.len(),
        "commands_ok": cmds.len(),
        "errors": errors,
        "create_p50_ms": quantile_ms(&creates, 0.5),
        "create_p99_ms": quantile_ms(&creates, 0.99),
        "command_p50_ms": quantile_ms(&cmds, 0.5),
        "command_p99_ms": quantile_ms(&cmds, 0.99),
        "wall_s": (wall * 10.0).round() / 10.0,
    });
    println!("{report}");
    if state == tmp {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}
