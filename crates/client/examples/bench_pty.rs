//! Benchmark of PTY sessions and background-process attach against the real
//! agent binary over a Unix socket, each figure with the ping round trip of
//! the same run as its baseline.
//!
//! cargo run --release -p hearth-client --example bench_pty -- --agent target/release/hearth-guest [--n 200]
//!
//! - attach → first replayed byte: `ATTACH` of a background process whose
//!   output is already in its ring, until the first `EXEC_STDOUT` arrives;
//! - keystroke echo: one byte written to a pty session running
//!   `stty raw -echo; cat`, until cat's copy comes back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hearth_client::{pb, Client, ConnectOptions, Detached, Endpoint, ExecEvent, ProcessRef};

struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let agent = arg("--agent")
        .map(PathBuf::from)
        .ok_or("usage: bench_pty --agent PATH_TO_hearth-guest [--n N]")?;
    let n: usize = arg("--n").map_or(Ok(200), |v| v.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(agent, n))
}

async fn run(agent: PathBuf, n: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("agent.sock");
    let child = Command::new(&agent)
        .args(["agent", "--unix-socket"])
        .arg(&sock)
        .stdin(Stdio::null())
        .spawn()?;
    let _agent = AgentProc(child);
    let opts = ConnectOptions::default();
    let c = Client::connect(&Endpoint::Unix(sock.clone()), &opts).await?;

    let mut ping = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.ping().await?;
        ping.push(t.elapsed());
    }
    let ping = median(ping);

    // Attach → first replayed byte.
    let pid = match c
        .exec_detached(pb::ExecStart {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo ready; exec sleep 1000".into(),
            ],
            ..Default::default()
        })
        .await?
    {
        Detached::Started { pid } => pid,
        Detached::NeverStarted(x) => return Err(format!("never started: {x:?}").into()),
    };
    let target = ProcessRef::Pid(pid);
    while c.processes().await?.iter().all(|p| p.output_bytes < 6) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut attach = Vec::with_capacity(n);
    for _ in 0..n {
        // A fresh connection per attach, so dropped attaches do not pile up.
        let c2 = Client::connect(&Endpoint::Unix(sock.clone()), &opts).await?;
        let t = Instant::now();
        let mut h = c2.attach(&target, Some(0)).await?;
        match h.next_event().await? {
            Some(ExecEvent::Stdout(d)) if !d.is_empty() => {}
            other => return Err(format!("expected replayed output, got {other:?}").into()),
        }
        attach.push(t.elapsed());
    }
    let attach = median(attach);
    c.kill_process(&target, 9).await?;

    // Keystroke echo through a pty and cat.
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "stty raw -echo; echo go; exec cat".into(),
            ],
            stdin_open: true,
            pty: Some(pb::PtySpec::default()),
            ..Default::default()
        })
        .await?;
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("go") {
        if let Some(ExecEvent::Stdout(d)) = h.next_event().await? {
            seen.extend_from_slice(&d);
        }
    }
    let mut echo = Vec::with_capacity(n);
    for i in 0..n {
        let b = b'a' + (i % 26) as u8;
        let t = Instant::now();
        h.write_stdin(Bytes::copy_from_slice(&[b])).await?;
        loop {
            match h.next_event().await? {
                Some(ExecEvent::Stdout(d)) if d.contains(&b) => break,
                Some(ExecEvent::Stdout(_)) | Some(ExecEvent::Started { .. }) => {}
                other => return Err(format!("echo: {other:?}").into()),
            }
        }
        echo.push(t.elapsed());
    }
    let echo = median(echo);
    h.signal(9).await;

    println!(
        "{:<34} {:>12} {:>14} {:>7}",
        "figure (median)", "value", "ping baseline", "ratio"
    );
    for (name, v) in [
        ("attach → first replayed byte", attach),
        ("pty keystroke echo (cat)", echo),
    ] {
        println!(
            "{name:<34} {:>12} {:>14} {:>6.1}x",
            us(v),
            us(ping),
            v.as_secs_f64() / ping.as_secs_f64()
        );
    }
    Ok(())
}
