//! Port expose: a host listener (TCP on the host, or a Unix socket) whose
//! connections are forwarded to 127.0.0.1:PORT in the guest, each as its own
//! port stream over the sandbox's one agent connection (so no guest NIC is
//! needed). [`Exposure`] owns the listener and the forwarding tasks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hearth_client::{pb, Client};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::error::{Error, Result};

/// How often a live exposure checks that the agent still answers.
const PING_EVERY: Duration = Duration::from_secs(2);
/// A ping slower than this means the sandbox is gone.
const PING_TIMEOUT: Duration = Duration::from_secs(15);
/// Events kept for a consumer that is slow to take them; more are dropped.
const EVENT_QUEUE: usize = 1024;

/// Where the host listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// `ADDR:PORT`; port 0 picks a free one.
    Tcp(SocketAddr),
    /// `unix:PATH` (must not exist yet; removed again when the exposure ends).
    Unix(PathBuf),
}

impl Default for Listen {
    fn default() -> Self {
        Listen::Tcp(SocketAddr::from(([127, 0, 0, 1], 0)))
    }
}

impl std::str::FromStr for Listen {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err(Error::InvalidSpec("unix: needs a socket path".into()));
            }
            return Ok(Listen::Unix(PathBuf::from(p)));
        }
        s.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
            Error::InvalidSpec(format!(
                "listen address {s:?} is neither ADDR:PORT (e.g. 127.0.0.1:8080) nor unix:PATH"
            ))
        })
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// What happened to one forwarded connection.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ExposeEvent {
    /// The guest accepted the connection.
    Opened { conn: u64, peer: String },
    /// The guest refused (nothing listens on the port, …); the host
    /// connection was closed.
    Refused {
        conn: u64,
        peer: String,
        reason: String,
    },
    /// The connection ended.
    Closed {
        conn: u64,
        to_guest: u64,
        from_guest: u64,
        reason: String,
    },
}

/// A running port forward. Stop it with [`Exposure::stop`]; dropping it stops
/// it too.
pub struct Exposure {
    local: Listen,
    guest_port: u16,
    events: mpsc::Receiver<ExposeEvent>,
    cancel: CancellationToken,
    task: Option<JoinHandle<Result<()>>>,
    unix_path: Option<PathBuf>,
}

impl std::fmt::Debug for Exposure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposure")
            .field("local", &self.local)
            .field("guest_port", &self.guest_port)
            .finish()
    }
}

impl Exposure {
    /// Where the host listens (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> &Listen {
        &self.local
    }

    pub fn guest_port(&self) -> u16 {
        self.guest_port
    }

    /// The next connection event; `None` once the exposure has ended (then
    /// [`Exposure::finish`] says why).
    pub async fn next_event(&mut self) -> Option<ExposeEvent> {
        self.events.recv().await
    }

    /// Stops listening and ends every forwarded connection.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Waits for the exposure to end: `Ok` after [`Exposure::stop`], an error
    /// when the sandbox's agent stopped answering (pass it to
    /// [`crate::Sandbox::explain`] to learn whether the VM died).
    pub async fn finish(mut self) -> Result<()> {
        let r = match self.task.take() {
            Some(t) => t
                .await
                .unwrap_or_else(|e| Err(Error::Internal(format!("expose task failed: {e}")))),
            None => Ok(()),
        };
        self.remove_socket();
        r
    }

    fn remove_socket(&mut self) {
        if let Some(p) = self.unix_path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Exposure {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.remove_socket();
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Agent {
    /// Listens on `listen` and forwards each connection to `guest_port` in
    /// the guest (see [`Exposure`]).
    pub async fn expose(&self, guest_port: u16, listen: &Listen) -> Result<Exposure> {
        if guest_port == 0 {
            return Err(Error::InvalidSpec("guest port 0 is not a port".into()));
        }
        if !hearth_proto::has_capability(self.ready().capabilities, pb::Capability::PortForward) {
            return Err(Error::agent(
                format!("{}: cannot expose port {guest_port}", self.label()),
                hearth_client::ClientError::Unsupported {
                    what: "port forwarding",
                    agent_version: self.ready().agent_version.clone(),
                },
            ));
        }
        let (listener, local, unix_path) = match listen {
            Listen::Tcp(a) => {
                let l = TcpListener::bind(a)
                    .await
                    .map_err(|e| Error::io("cannot listen on", a.to_string(), e))?;
                let real = l
                    .local_addr()
                    .map_err(|e| Error::io("cannot read the address of", a.to_string(), e))?;
                (Listener::Tcp(l), Listen::Tcp(real), None)
            }
            Listen::Unix(p) => {
                let l = UnixListener::bind(p).map_err(|e| Error::io("cannot listen on", p, e))?;
                (Listener::Unix(l), Listen::Unix(p.clone()), Some(p.clone()))
            }
        };
        let (tx, events) = mpsc::channel(EVENT_QUEUE);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(
            self.client().clone(),
            self.label().to_string(),
            guest_port,
            listener,
            tx,
            cancel.clone(),
        ));
        tracing::info!(agent = %self.label(), %local, guest_port, "exposing guest port");
        Ok(Exposure {
            local,
            guest_port,
            events,
            cancel,
            task: Some(task),
            unix_path,
        })
    }
}

async fn serve(
    client: Client,
    label: String,
    guest_port: u16,
    listener: Listener,
    tx: mpsc::Sender<ExposeEvent>,
    cancel: CancellationToken,
) -> Result<()> {
    let mut conns = JoinSet::new();
    let mut next_id = 0u64;
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dead = |e: hearth_client::ClientError| {
        Error::agent(
            format!("{label}: the agent stopped answering while exposing port {guest_port}"),
            e,
        )
    };
    let result = loop {
        tokio::select! {
            _ = cancel.cancelled() => break Ok(()),
            _ = ping.tick() => {
                match tokio::time::timeout(PING_TIMEOUT, client.ping()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => break Err(dead(e)),
                    Err(_) => break Err(dead(hearth_client::ClientError::ConnectionClosed {
                        reason: format!("no answer to a ping within {PING_TIMEOUT:?}"),
                    })),
                }
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = accept(&listener) => match accepted {
                Ok((conn, peer)) => {
                    next_id += 1;
                    conns.spawn(forward(client.clone(), guest_port, conn, next_id, peer, tx.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    };
    // Dropping each forward's port stream closes it in the guest.
    conns.shutdown().await;
    result
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    Unix(tokio::net::UnixStream),
}

async fn accept(l: &Listener) -> std::io::Result<(Conn, String)> {
    match l {
        Listener::Tcp(l) => {
            let (s, a) = l.accept().await?;
            let _ = s.set_nodelay(true);
            Ok((Conn::Tcp(s), a.to_string()))
        }
        Listener::Unix(l) => {
            let (s, _) = l.accept().await?;
            Ok((Conn::Unix(s), "unix".to_string()))
        }
    }
}

async fn forward(
    client: Client,
    guest_port: u16,
    conn: Conn,
    id: u64,
    peer: String,
    tx: mpsc::Sender<ExposeEvent>,
) {
    let emit = |e: ExposeEvent| {
        if tx.try_send(e).is_err() {
            tracing::debug!(conn = id, "expose event dropped (consumer is slow)");
        }
    };
    let stream = match client.port_connect(guest_port).await {
        Ok(s) => s,
        Err(e) => {
            // The host connection is dropped (closed) here.
            emit(ExposeEvent::Refused {
                conn: id,
                peer,
                reason: e.to_string(),
            });
            return;
        }
    };
    emit(ExposeEvent::Opened {
        conn: id,
        peer: peer.clone(),
    });
    let r = match conn {
        Conn::Tcp(s) => stream.pump(s).await,
        Conn::Unix(s) => stream.pump(s).await,
    };
    let ev = match r {
        Ok(end) => ExposeEvent::Closed {
            conn: id,
            to_guest: end.to_guest,
            from_guest: end.from_guest,
            reason: end_reason(&end),
        },
        Err(e) => ExposeEvent::Closed {
            conn: id,
            to_guest: 0,
            from_guest: 0,
            reason: e.to_string(),
        },
    };
    emit(ev);
}

fn end_reason(end: &hearth_client::PortEnd) -> String {
    use pb::StreamEndReason as R;
    let base = match R::try_from(end.end.reason) {
        Ok(R::Finished) => "finished".to_string(),
        Ok(R::Closed) => "closed by the host side".to_string(),
        Ok(R::Failed) => format!("failed in the guest: {}", end.end.message),
        _ => end.end.message.clone(),
    };
    match &end.report {
        Some(r) => format!("{base} ({r})"),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse() {
        assert_eq!(
            "127.0.0.1:0".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            "unix:/tmp/x.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/tmp/x.sock".into())
        );
        for bad in ["", "unix:", "8080", "localhost:x"] {
            let e = bad.parse::<Listen>().unwrap_err();
            assert!(
                e.to_string().contains("listen") || e.to_string().contains("unix"),
                "{e}"
            );
        }
    }
}
