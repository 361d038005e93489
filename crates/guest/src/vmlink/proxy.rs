//! `hearth-guest vm-proxy`: the host end of the link, one process per VM
//! next to QEMU (it replaces vhost-device-vsock).
//!
//! ```text
//! hearth-guest vm-proxy --qemu-socket DIR/agent.sock --listen DIR/vsock.sock --control DIR/link.ctl
//! ```
//!
//! - `--qemu-socket`: QEMU's chardev socket behind the virtio-serial port
//!   (QEMU is the server). The proxy connects, sends `HELLO(nonce)` and
//!   ignores what the guest sends until `HELLO_ACK(nonce)`. It exits when
//!   QEMU closes the socket (the VM is gone).
//! - `--listen`: the Firecracker hybrid socket for host clients, made to
//!   appear only once it listens. A client writes `CONNECT <port>\n`; the
//!   proxy opens a stream to that guest port and answers `OK <port>\n` once
//!   the guest accepted it, or closes the connection if the guest refused
//!   (as Firecracker does when nothing listens).
//! - `--control`: a line protocol for the host's snapshot code. `SUSPEND`
//!   → `SUSPENDED` once both directions stand still at a frame boundary
//!   (the state a snapshot must capture); `RESUME` → `RESUMED`. A control
//!   connection that closes while it holds the link suspended resumes it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use hearth_proto::mux::{MuxDecoder, MuxFrame, Sync, MAX_STREAMS};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::{random_u64, Link, Out, Parking};
use crate::agent::listen;

/// How long the proxy waits for QEMU's socket to accept.
const QEMU_WAIT: Duration = Duration::from_secs(30);
/// How long a CONNECT waits for the guest to answer the open.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SUSPEND waits for the guest's SUSPENDED.
const SUSPEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest `CONNECT` line (hybrid contract).
const MAX_LINE: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opts {
    pub qemu_socket: PathBuf,
    pub listen: PathBuf,
    pub control: PathBuf,
}

impl Opts {
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let (mut q, mut l, mut c) = (None, None, None);
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let slot = match a.as_str() {
                "--qemu-socket" => &mut q,
                "--listen" => &mut l,
                "--control" => &mut c,
                other => bail!("unknown argument {other:?}"),
            };
            *slot = Some(PathBuf::from(
                it.next().with_context(|| format!("{a} needs a value"))?,
            ));
        }
        Ok(Self {
            qemu_socket: q.context("--qemu-socket is required")?,
            listen: l.context("--listen is required")?,
            control: c.context("--control is required")?,
        })
    }
}

/// The role's entry point.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let opts = Opts::parse(args)?;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HEARTH_PROXY_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(run(opts))
}

struct Host {
    link: Arc<Link>,
    parking: Arc<Parking>,
    synced: watch::Sender<bool>,
    opens: Mutex<HashMap<u32, oneshot::Sender<Result<(), String>>>>,
    suspends: Mutex<HashMap<u64, oneshot::Sender<()>>>,
    next: AtomicU32,
}

async fn connect_qemu(path: &Path) -> anyhow::Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + QEMU_WAIT;
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::trace!(error = %e, "qemu's socket is not there yet");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("connecting to qemu's socket {}", path.display()))
            }
        }
    }
}

pub async fn run(opts: Opts) -> anyhow::Result<()> {
    let pipe = connect_qemu(&opts.qemu_socket).await?;
    let (mut rd, wr) = pipe.into_split();
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let link = Link::new(Box::new(out_tx), tokio::runtime::Handle::current());
    let parking = Arc::new(Parking::default());
    let host = Arc::new(Host {
        link: link.clone(),
        parking: parking.clone(),
        synced: watch::channel(false).0,
        opens: Mutex::new(HashMap::new()),
        suspends: Mutex::new(HashMap::new()),
        next: AtomicU32::new(1),
    });
    tokio::spawn(write_loop(wr, out_rx, link.clone(), parking));
    let clients = Arc::new(listen::bind(&opts.listen)?);
    let control = Arc::new(listen::bind(&opts.control)?);
    tracing::info!(listen = %opts.listen.display(), "vm proxy listening");
    {
        let host = host.clone();
        tokio::spawn(accept_loop(clients.clone(), host, |h, s| {
            tokio::spawn(client(h, s));
        }));
    }
    {
        let host = host.clone();
        tokio::spawn(accept_loop(control.clone(), host, |h, s| {
            tokio::spawn(control_conn(h, s));
        }));
    }
    let mut dec = MuxDecoder::new();
    let mut nonce = hello(&host, &mut dec);
    let mut buf = vec![0u8; 128 * 1024];
    loop {
        let n = rd.read(&mut buf).await.context("reading qemu's socket")?;
        if n == 0 {
            tracing::info!("qemu closed the link; exiting");
            clients.remove();
            control.remove();
            return Ok(());
        }
        dec.push(&buf[..n]);
        loop {
            match dec.next() {
                Ok(Some(f)) => on_frame(&host, f, nonce),
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "the guest broke the link's framing; starting over");
                    nonce = hello(&host, &mut dec);
                }
            }
        }
    }
}

async fn accept_loop(l: Arc<listen::Bound>, host: Arc<Host>, each: fn(Arc<Host>, UnixStream)) {
    loop {
        match l.listener.accept().await {
            Ok((s, _)) => each(host.clone(), s),
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Drops every stream and greets the guest anew.
fn hello(host: &Host, dec: &mut MuxDecoder) -> u64 {
    let _ = host.synced.send_replace(false);
    let dropped = host.link.reset();
    host.opens.lock().unwrap().clear();
    let nonce = random_u64();
    dec.scan_for(Sync::HelloAck, Some(nonce));
    host.link.send(&MuxFrame::Sync {
        sync: Sync::Hello,
        nonce,
    });
    tracing::debug!(dropped, nonce, "hello sent");
    nonce
}

fn on_frame(host: &Host, f: MuxFrame, nonce: u64) {
    let f = match host.link.handle_common(f) {
        Ok(()) => return,
        Err(f) => f,
    };
    match f {
        MuxFrame::Sync {
            sync: Sync::HelloAck,
            nonce: n,
        } if n == nonce => {
            tracing::info!("the guest joined the link");
            let _ = host.synced.send_replace(true);
        }
        MuxFrame::Sync {
            sync: Sync::Suspended,
            nonce: token,
        } => {
            if let Some(tx) = host.suspends.lock().unwrap().remove(&token) {
                let _ = tx.send(());
            }
        }
        MuxFrame::Opened { stream } => {
            if let Some(tx) = host.opens.lock().unwrap().remove(&stream) {
                let _ = tx.send(Ok(()));
            }
        }
        MuxFrame::Refused { stream, reason } => {
            host.link.remove(stream);
            if let Some(tx) = host.opens.lock().unwrap().remove(&stream) {
                let _ = tx.send(Err(reason));
            }
        }
        other => tracing::warn!(?other, "unexpected frame from the guest"),
    }
}

async fn write_loop(
    mut wr: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Out>,
    link: Arc<Link>,
    parking: Arc<Parking>,
) {
    let mut parks = 0;
    while let Some(item) = rx.recv().await {
        let (bytes, park) = match item {
            Out::Frame { epoch, bytes } if epoch == link.epoch() => (bytes, false),
            Out::Frame { .. } => continue,
            Out::Park { bytes } => (bytes, true),
        };
        if let Err(e) = wr.write_all(&bytes).await {
            tracing::warn!(error = %e, "writing qemu's socket failed");
            return;
        }
        if park {
            parks += 1;
            parking.wait(parks).await;
        }
    }
}

impl Host {
    fn alloc(&self) -> Option<u32> {
        for _ in 0..=MAX_STREAMS {
            let id = self.next.fetch_add(1, Ordering::Relaxed);
            if id != 0 && !self.link.contains(id) {
                return Some(id);
            }
        }
        None
    }

    async fn wait_synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// Reads one `\n`-terminated line of at most [`MAX_LINE`] bytes, byte by
/// byte, so nothing after it is consumed.
async fn read_line(s: &mut UnixStream) -> Result<String, String> {
    let mut line = Vec::new();
    loop {
        let mut b = [0u8; 1];
        match s.read(&mut b).await {
            Ok(0) => return Err("end of stream before a newline".into()),
            Ok(_) if b[0] == b'\n' => break,
            Ok(_) if line.len() >= MAX_LINE => return Err(format!("a line over {MAX_LINE} bytes")),
            Ok(_) => line.push(b[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    String::from_utf8(line).map_err(|_| "a line that is not UTF-8".into())
}

/// The port of a `CONNECT <port>` line.
fn parse_connect(line: &str) -> Result<u32, String> {
    let port = line
        .strip_prefix("CONNECT ")
        .ok_or_else(|| format!("expected \"CONNECT <port>\", got {line:?}"))?;
    port.parse()
        .map_err(|_| format!("bad port {port:?} in {line:?}"))
}

async fn client(host: Arc<Host>, mut sock: UnixStream) {
    let port = match read_line(&mut sock).await.and_then(|l| parse_connect(&l)) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "bad handshake");
            return;
        }
    };
    host.wait_synced().await;
    let Some(stream) = host.alloc() else {
        tracing::warn!("no free stream id");
        return;
    };
    let (tx, rx) = oneshot::channel();
    host.opens.lock().unwrap().insert(stream, tx);
    let pending = host.link.register(stream);
    host.link.send(&MuxFrame::Open { stream, port });
    match tokio::time::timeout(OPEN_TIMEOUT, rx).await {
        Ok(Ok(Ok(()))) => {
            if sock
                .write_all(format!("OK {port}\n").as_bytes())
                .await
                .is_ok()
            {
                host.link.attach(pending, sock);
            } else {
                host.link.send(&MuxFrame::Reset { stream });
                host.link.remove(stream);
            }
        }
        Ok(Ok(Err(reason))) => tracing::debug!(port, %reason, "the guest refused a stream"),
        Ok(Err(_)) => tracing::debug!(port, "the link was reset during an open"),
        Err(_) => {
            tracing::warn!(port, stream, "the guest did not answer an open");
            host.opens.lock().unwrap().remove(&stream);
            host.link.send(&MuxFrame::Reset { stream });
            host.link.remove(stream);
        }
    }
}

async fn control_conn(host: Arc<Host>, sock: UnixStream) {
    let (rd, mut wr) = sock.into_split();
    let mut lines = BufReader::new(rd).take(64 * 1024).lines();
    let mut held = false;
    while let Ok(Some(line)) = lines.next_line().await {
        let reply = match line.trim() {
            "SUSPEND" if held => {
                "ERROR this connection holds the link suspended already".to_string()
            }
            "SUSPEND" => match suspend(&host).await {
                Ok(()) => {
                    held = true;
                    "SUSPENDED".to_string()
                }
                Err(e) => format!("ERROR {e}"),
            },
            "RESUME" if held => {
                resume(&host);
                held = false;
                "RESUMED".to_string()
            }
            "RESUME" => "ERROR the link is not suspended by this connection".to_string(),
            "STATUS" => format!(
                "OK synced={} streams={}",
                *host.synced.borrow(),
                host.link.len()
            ),
            other => format!("ERROR unknown command {other:?}"),
        };
        if wr.write_all(format!("{reply}\n").as_bytes()).await.is_err() {
            break;
        }
    }
    if held {
        tracing::info!("the suspending control connection closed; resuming the link");
        resume(&host);
    }
}

async fn suspend(host: &Host) -> Result<(), String> {
    if !*host.synced.borrow() {
        host.wait_synced().await;
    }
    let token = random_u64();
    let (tx, rx) = oneshot::channel();
    host.suspends.lock().unwrap().insert(token, tx);
    host.parking.suspend();
    host.link.send_and_park(&MuxFrame::Sync {
        sync: Sync::Suspend,
        nonce: token,
    });
    match tokio::time::timeout(SUSPEND_TIMEOUT, rx).await {
        Ok(Ok(())) => Ok(()),
        _ => {
            host.suspends.lock().unwrap().remove(&token);
            resume(host);
            Err(format!(
                "the guest did not answer SUSPEND within {} s",
                SUSPEND_TIMEOUT.as_secs()
            ))
        }
    }
}

fn resume(host: &Host) {
    host.parking.release();
    host.link.send(&MuxFrame::Sync {
        sync: Sync::Resume,
        nonce: 0,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_lines_parse_and_bad_ones_say_why() {
        assert_eq!(parse_connect("CONNECT 1000"), Ok(1000));
        assert!(parse_connect("CONNECT x")
            .unwrap_err()
            .contains("bad port \"x\""));
        assert!(parse_connect("HELLO").unwrap_err().contains("expected"));
    }

    #[test]
    fn options_need_all_three_sockets() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let o = Opts::parse(&s(&[
            "--qemu-socket",
            "a",
            "--listen",
            "b",
            "--control",
            "c",
        ]))
        .unwrap();
        assert_eq!(o.listen, PathBuf::from("b"));
        let e = Opts::parse(&s(&["--qemu-socket", "a"]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--listen is required"), "{e}");
        assert!(Opts::parse(&s(&["--bogus"])).is_err());
    }
}
