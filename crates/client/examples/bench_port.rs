//! Port-forward throughput through the real agent (over a Unix socket, as in
//! the agent tier) against baselines measured in the same run:
//!
//! - `raw unix`: the same bytes over plain Unix socket connections (the agent
//!   connection's transport, no protocol), as many connections as streams;
//! - `raw tcp`: straight to the same loopback TCP server, no hearth at all.
//!
//! Each figure is the median of `--runs` (default 3) samples; 1 stream and 8
//! parallel streams, guest → host (download) and host → guest (upload).
//!
//! cargo run --release -p hearth-client --example bench_port -- --agent target/release/hearth-guest [--mib N] [--runs N]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth_client::{Client, ConnectOptions, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

struct AgentProc(Child);

impl Drop for AgentProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

const BUF: usize = 256 * 1024;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let agent = arg(&args, "--agent")
        .map(PathBuf::from)
        .ok_or("usage: bench_port --agent PATH_TO_hearth-guest [--mib N] [--runs N]")?;
    let mib: u64 = arg(&args, "--mib").map_or(Ok(256), |v| v.parse())?;
    let runs: usize = arg(&args, "--runs").map_or(Ok(3), |v| v.parse())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run(agent, mib * 1024 * 1024, runs.max(1)))
}

/// A loopback server: to a connection whose first byte is `d` it sends the
/// requested number of bytes (8 more bytes, BE) and closes; for `u` it reads
/// to EOF and answers with the count.
async fn server() -> std::io::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(serve_one(s));
        }
    });
    Ok(port)
}

async fn serve_one<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
) -> std::io::Result<()> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await?;
    let n = u64::from_be_bytes(head[1..].try_into().expect("8 bytes"));
    let mut buf = vec![0x5au8; BUF];
    if head[0] == b'd' {
        let mut left = n;
        while left > 0 {
            let k = left.min(BUF as u64) as usize;
            s.write_all(&buf[..k]).await?;
            left -= k as u64;
        }
        s.shutdown().await?;
    } else {
        let mut got = 0u64;
        loop {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            got += k as u64;
        }
        s.write_all(&got.to_be_bytes()).await?;
        s.shutdown().await?;
    }
    Ok(())
}

/// One transfer over a connected stream: the client side of [`serve_one`].
async fn transfer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    download: bool,
    n: u64,
) -> std::io::Result<()> {
    let mut head = [0u8; 9];
    head[0] = if download { b'd' } else { b'u' };
    head[1..].copy_from_slice(&n.to_be_bytes());
    s.write_all(&head).await?;
    let mut buf = vec![0xa5u8; BUF];
    if download {
        let mut got = 0u64;
        loop {
            let k = s.read(&mut buf).await?;
            if k == 0 {
                break;
            }
            got += k as u64;
        }
        if got != n {
            return Err(std::io::Error::other(format!("got {got} of {n} bytes")));
        }
    } else {
        let mut left = n;
        while left > 0 {
            let k = left.min(BUF as u64) as usize;
            s.write_all(&buf[..k]).await?;
            left -= k as u64;
        }
        s.shutdown().await?;
        let mut ack = [0u8; 8];
        s.read_exact(&mut ack).await?;
        if u64::from_be_bytes(ack) != n {
            return Err(std::io::Error::other("short upload"));
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Path {
    Port,
    RawUnix,
    RawTcp,
}

struct Ctx {
    client: Client,
    port: u16,
    unix: PathBuf,
}

async fn one(ctx: &Ctx, path: Path, download: bool, n: u64) -> Result<(), String> {
    match path {
        Path::Port => {
            let s = ctx
                .client
                .port_connect(ctx.port)
                .await
                .map_err(|e| e.to_string())?;
            let (mine, theirs) = tokio::io::duplex(BUF);
            let pump = tokio::spawn(s.pump(theirs));
            transfer(mine, download, n)
                .await
                .map_err(|e| e.to_string())?;
            pump.await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
        }
        Path::RawUnix => {
            let s = UnixStream::connect(&ctx.unix)
                .await
                .map_err(|e| e.to_string())?;
            transfer(s, download, n).await.map_err(|e| e.to_string())?;
        }
        Path::RawTcp => {
            let s = TcpStream::connect(("127.0.0.1", ctx.port))
                .await
                .map_err(|e| e.to_string())?;
            let _ = s.set_nodelay(true);
            transfer(s, download, n).await.map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// MiB/s of `streams` parallel transfers of `total / streams` bytes each.
async fn sample(
    ctx: &std::sync::Arc<Ctx>,
    path: Path,
    download: bool,
    streams: u64,
    total: u64,
) -> Result<f64, String> {
    let per = total / streams;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..streams)
        .map(|_| {
            let ctx = ctx.clone();
            tokio::spawn(async move { one(&ctx, path, download, per).await })
        })
        .collect();
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    Ok((per * streams) as f64 / (1024.0 * 1024.0) / t0.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn run(agent: PathBuf, total: u64, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("agent.sock");
    let child = Command::new(&agent)
        .args(["agent", "--unix-socket"])
        .arg(&sock)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let _agent = AgentProc(child);
    let opts = ConnectOptions {
        timeout: Duration::from_secs(10),
        ..Default::default()
    };
    let endpoint = Endpoint::Unix(sock.clone());
    let client = Client::connect(&endpoint, &opts).await?;
    let port = server().await?;
    // The raw Unix baseline: the same server logic behind a Unix socket.
    let unix = dir.path().join("raw.sock");
    let ul = UnixListener::bind(&unix)?;
    tokio::spawn(async move {
        while let Ok((s, _)) = ul.accept().await {
            tokio::spawn(serve_one(s));
        }
    });
    let ctx = std::sync::Arc::new(Ctx { client, port, unix });
    println!(
        "port forward throughput, {} MiB per sample, median of {runs} (agent over a Unix socket)",
        total / (1024 * 1024)
    );
    println!(
        "{:<28} {:>12} {:>14} {:>12} {:>8}",
        "case", "port MiB/s", "raw unix MiB/s", "raw tcp MiB/s", "ratio"
    );
    for (name, download, streams) in [
        ("download, 1 stream", true, 1),
        ("download, 8 streams", true, 8),
        ("upload, 1 stream", false, 1),
        ("upload, 8 streams", false, 8),
    ] {
        let (mut p, mut u, mut t) = (Vec::new(), Vec::new(), Vec::new());
        // Interleaved, so drift affects figure and baselines alike.
        for _ in 0..runs {
            p.push(sample(&ctx, Path::Port, download, streams, total).await?);
            u.push(sample(&ctx, Path::RawUnix, download, streams, total).await?);
            t.push(sample(&ctx, Path::RawTcp, download, streams, total).await?);
        }
        let (p, u, t) = (median(p), median(u), median(t));
        println!("{name:<28} {p:>12.0} {u:>14.0} {t:>12.0} {:>7.2}x", p / u);
    }
    println!("ratio = port / raw unix (the transport the port streams ride on)");
    Ok(())
}
