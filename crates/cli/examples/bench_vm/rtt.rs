//! Round trips through a running VM's hybrid vsock socket: raw echo, ping, exec
//! and guest-local spawns (part of the `bench_vm` example).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use hearth_client::{hybrid, pb, Client, ConnectOptions, Endpoint, ExecEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const ECHO_PORT: u32 = 1001;
const AGENT_PORT: u32 = 1000;
const SPAWN_LOOP: usize = 40;

/// Round-trip samples in µs.
#[derive(Default)]
pub struct Rtt {
    pub echo1: Vec<f64>,
    pub echo9: Vec<f64>,
    pub ping: Vec<f64>,
    pub exec: Vec<f64>,
    /// The agent's own spawn-to-exit time of each exec (`ExecResult.duration_us`,
    /// guest clock: coarse under TCG, where the guest falls back to jiffies).
    pub exec_guest: Vec<f64>,
    /// fork+exec of /bin/true inside the guest by a shell loop, per spawn, µs.
    pub guest_spawn: Vec<f64>,
}

async fn echo_once(s: &mut tokio::net::UnixStream, msg: &[u8]) -> anyhow::Result<f64> {
    let mut back = [0u8; 16];
    let t = Instant::now();
    s.write_all(msg).await?;
    s.read_exact(&mut back[..msg.len()]).await?;
    let us = t.elapsed().as_secs_f64() * 1e6;
    if back[..msg.len()] != *msg {
        bail!("echo returned {:?} for {msg:?}", &back[..msg.len()]);
    }
    Ok(us)
}

/// Starts `vsock-echo` in the guest through an exec session and waits until it listens.
pub async fn start_echo(client: &Client) -> anyhow::Result<hearth_client::ExecHandle> {
    let mut last = None;
    for exe in ["/init", "/proc/self/exe"] {
        let mut h = client
            .exec_stream(pb::ExecStart {
                argv: vec![
                    exe.into(),
                    "vsock-echo".into(),
                    "--port".into(),
                    ECHO_PORT.to_string(),
                ],
                stdin_open: true,
                ..Default::default()
            })
            .await?;
        let mut err = Vec::new();
        let waited = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                match h.next_event().await? {
                    Some(ExecEvent::Stdout(b)) if b.starts_with(b"listening") => {
                        return anyhow::Ok(true)
                    }
                    Some(ExecEvent::Stderr(b)) => err.extend_from_slice(&b),
                    Some(ExecEvent::Exit(x)) => {
                        last = Some(format!(
                            "{exe} vsock-echo: {} {}",
                            hearth_client::describe_outcome(x.outcome.as_ref()),
                            String::from_utf8_lossy(&err)
                        ));
                        return Ok(false);
                    }
                    Some(_) => {}
                    None => return Ok(false),
                }
            }
        })
        .await
        .context("vsock-echo did not report listening within 20 s")??;
        if waited {
            return Ok(h);
        }
    }
    bail!(
        "cannot start vsock-echo in the guest: {}",
        last.unwrap_or_default()
    )
}

/// Guest-local spawn cost per `/bin/true`: a shell loop of [`SPAWN_LOOP`] ×
/// `/bin/true` (the slash forces fork+exec even in busybox) minus the same exec
/// with an empty loop, over the count. µs.
async fn guest_spawn_once(client: &Client) -> anyhow::Result<f64> {
    let mut t = [0f64; 2];
    for (k, n) in [0, SPAWN_LOOP].into_iter().enumerate() {
        let req = pb::Exec {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!("i=0; while [ $i -lt {n} ]; do /bin/true; i=$((i+1)); done"),
            ],
            ..Default::default()
        };
        let t0 = Instant::now();
        let res = client.exec(req).await?;
        t[k] = t0.elapsed().as_secs_f64() * 1e6;
        if hearth_client::exit_code(res.outcome.as_ref()) != 0 {
            bail!(
                "guest shell loop failed: {} {}",
                hearth_client::describe_outcome(res.outcome.as_ref()),
                String::from_utf8_lossy(&res.stderr)
            );
        }
    }
    Ok((t[1] - t[0]) / SPAWN_LOOP as f64)
}

pub async fn rtt_bench(vm_dir: &Path, rounds: usize, iters: usize) -> anyhow::Result<Rtt> {
    let sock = vm_dir.join("vsock.sock");
    let opts = ConnectOptions {
        timeout: Duration::from_secs(20),
        ..Default::default()
    };
    let ep = Endpoint::Hybrid {
        path: sock.clone(),
        port: AGENT_PORT,
    };
    let client = Client::connect(&ep, &opts).await?;
    let echo = start_echo(&client).await?;
    let mut raw = tokio::net::UnixStream::connect(&sock)
        .await
        .with_context(|| format!("cannot connect to {}", sock.display()))?;
    hybrid::handshake(&mut raw, ECHO_PORT)
        .await
        .map_err(|e| anyhow::anyhow!("hybrid handshake to port {ECHO_PORT}: {e:?}"))?;
    let exec_req = || pb::Exec {
        argv: vec!["/bin/true".into()],
        ..Default::default()
    };
    // Warm-up of every path (first exec pages in /bin/true, first echo the buffers).
    for _ in 0..5 {
        echo_once(&mut raw, b"w").await?;
        client.ping().await?;
        client.exec(exec_req()).await?;
    }
    let mut r = Rtt::default();
    let nine = *b"123456789";
    for _ in 0..rounds {
        for _ in 0..iters {
            r.echo1.push(echo_once(&mut raw, b"x").await?);
        }
        for _ in 0..iters {
            r.echo9.push(echo_once(&mut raw, &nine).await?);
        }
        for _ in 0..iters {
            let t = Instant::now();
            client.ping().await?;
            r.ping.push(t.elapsed().as_secs_f64() * 1e6);
        }
        for _ in 0..(iters / 5).max(1) {
            let t = Instant::now();
            let res = client.exec(exec_req()).await?;
            r.exec.push(t.elapsed().as_secs_f64() * 1e6);
            match res.outcome.as_ref().and_then(|o| o.kind.as_ref()) {
                Some(pb::exec_outcome::Kind::Exited(e)) if e.code == 0 => {}
                _ => bail!(
                    "/bin/true did not exit 0: {}",
                    hearth_client::describe_outcome(res.outcome.as_ref())
                ),
            }
            r.exec_guest.push(res.duration_us as f64);
        }
        r.guest_spawn.push(guest_spawn_once(&client).await?);
    }
    drop(raw);
    drop(echo);
    Ok(r)
}
