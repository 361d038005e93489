//! Ping latency while every session floods output, against the real agent
//! binary over a Unix socket. Baseline: pings on the idle agent, same run.
//!
//! Phases: idle; 8 sessions of `cat /dev/zero` read as fast as the client
//! can; the same 8 read slowly (10 ms pause per chunk, so their credit runs
//! out and the agent holds output back). Pings share the flooded connection,
//! as a heartbeat does. Each phase prints p50/p99/max and the ratio of its
//! p99 to the idle p99; the target is max ≤ 100 ms.
//!
//! cargo run --release -p hearth-client --example bench_ping_flood -- --agent PATH [--compare PATH] [--pings N]
//! cargo run --release -p hearth-client --example bench_ping_flood -- --connect hybrid:VMDIR/vsock.sock:1000 [--compare ENDPOINT]
//!
//! With `--connect` it measures an agent that already runs (a VM's); the
//! flood there is `cat /dev/zero` inside the guest.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth_client::{pb, Client, ConnectOptions, Endpoint, ExecEvent};

struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const SESSIONS: usize = 8;
const TARGET: Duration = Duration::from_millis(100);

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let target = match (arg(&args, "--agent"), arg(&args, "--connect")) {
        (Some(p), None) => Target::Spawn(PathBuf::from(p)),
        (None, Some(e)) => Target::Connect(e),
        _ => return Err("usage: bench_ping_flood (--agent PATH | --connect ENDPOINT) [--compare PATH|ENDPOINT] [--pings N]".into()),
    };
    let pings: usize = arg(&args, "--pings").map_or(Ok(300), |v| v.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let compare = arg(&args, "--compare").map(|o| match &target {
            Target::Spawn(_) => Target::Spawn(PathBuf::from(o)),
            Target::Connect(_) => Target::Connect(o),
        });
        bench(&target, pings).await?;
        if let Some(other) = compare {
            println!();
            bench(&other, pings).await?;
        }
        Ok(())
    })
}

enum Target {
    Spawn(PathBuf),
    Connect(String),
}

#[derive(Clone, Copy, PartialEq)]
enum Reading {
    Fast,
    Slow,
}

struct Figures {
    p50: Duration,
    p99: Duration,
    max: Duration,
}

fn figures(mut v: Vec<Duration>) -> Figures {
    v.sort();
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    Figures {
        p50: at(0.5),
        p99: at(0.99),
        max: v[v.len() - 1],
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

async fn ping_series(c: &Client, n: usize) -> Result<Vec<Duration>, Box<dyn std::error::Error>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(c.ping().await?);
        // A heartbeat-like pace, so the flood runs between pings.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(v)
}

async fn flood(
    c: &Client,
    reading: Reading,
    stop: Arc<AtomicBool>,
    bytes: Arc<AtomicU64>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, Box<dyn std::error::Error>> {
    let mut tasks = Vec::new();
    for _ in 0..SESSIONS {
        let mut h = c
            .exec_stream(pb::ExecStart {
                argv: vec!["/bin/cat".into(), "/dev/zero".into()],
                ..Default::default()
            })
            .await?;
        let (stop, bytes) = (stop.clone(), bytes.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match h.next_event().await {
                    Ok(Some(ExecEvent::Stdout(b))) => {
                        bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
                        if reading == Reading::Slow {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                    Ok(Some(ExecEvent::Exit(_))) | Ok(None) | Err(_) => return,
                    Ok(Some(_)) => {}
                }
            }
            h.control().signal(9).await;
            while let Ok(Some(ev)) = h.next_event().await {
                if matches!(ev, ExecEvent::Exit(_)) {
                    break;
                }
            }
        }));
    }
    Ok(tasks)
}

async fn bench(target: &Target, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let (endpoint, _agent, what) = match target {
        Target::Spawn(agent_path) => {
            let sock = dir.path().join("agent.sock");
            let child = Command::new(agent_path)
                .args(["agent", "--unix-socket"])
                .arg(&sock)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", agent_path.display()))?;
            (
                Endpoint::Unix(sock),
                Some(AgentProc(child)),
                agent_path.display().to_string(),
            )
        }
        Target::Connect(e) => (e.parse::<Endpoint>()?, None, e.clone()),
    };
    let opts = ConnectOptions::default();
    let t0 = Instant::now();
    let c = loop {
        match Client::connect(&endpoint, &opts).await {
            Ok(c) => break c,
            Err(_) if t0.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    println!(
        "agent {} ({}), {} client, {n} pings per phase, {SESSIONS} flooding sessions",
        c.ready().agent_version,
        what,
        if cfg!(debug_assertions) {
            "DEBUG"
        } else {
            "release"
        }
    );
    for _ in 0..50 {
        c.ping().await?;
    }
    let idle = figures(ping_series(&c, n).await?);
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>14} {:>12}",
        "phase", "p50", "p99", "max", "p99 / idle", "output"
    );
    println!(
        "{:<26} {:>10} {:>10} {:>10} {:>14} {:>12}",
        "idle (baseline)",
        ms(idle.p50),
        ms(idle.p99),
        ms(idle.max),
        "1.0",
        "-"
    );
    for (name, reading) in [
        ("flood, fast readers", Reading::Fast),
        ("flood, slow readers", Reading::Slow),
    ] {
        let stop = Arc::new(AtomicBool::new(false));
        let bytes = Arc::new(AtomicU64::new(0));
        let tasks = flood(&c, reading, stop.clone(), bytes.clone()).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        let b0 = bytes.load(Ordering::Relaxed);
        let f = figures(ping_series(&c, n).await?);
        let rate = (bytes.load(Ordering::Relaxed) - b0) as f64 / t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        println!(
            "{:<26} {:>10} {:>10} {:>10} {:>14} {:>12} {}",
            name,
            ms(f.p50),
            ms(f.p99),
            ms(f.max),
            format!("{:.1}", f.p99.as_secs_f64() / idle.p99.as_secs_f64()),
            format!("{:.0} MiB/s", rate / (1024.0 * 1024.0)),
            if f.max <= TARGET {
                "ok (max ≤ 100 ms)"
            } else {
                "OVER 100 ms"
            }
        );
    }
    Ok(())
}
