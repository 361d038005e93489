//! The QEMU backend's agent transport: hearth's stream multiplexer
//! ([`hearth_proto::mux`]) over one virtio-serial port, which QEMU can
//! migrate (snapshots, restore, copy-on-write clones), unlike
//! vhost-user-vsock.
//!
//! Both ends live in this binary:
//! - [`guest`]: in the agent. Reads and writes the port
//!   (`/dev/vportNpM`, named `hearth.agent`), turns each stream the host
//!   opens to port 1000 into one agent connection (a socket pair, so the
//!   agent's fd-based connection code is unchanged), answers port 7 with an
//!   echo (the transport's raw baseline for benchmarks), refuses others.
//! - [`proxy`]: the `vm-proxy` role, run on the host next to QEMU. It is
//!   the other end of the port (QEMU's chardev socket) and serves host
//!   clients the Firecracker hybrid contract on `vsock.sock`
//!   (`CONNECT <port>\n` → `OK <port>\n`, then the stream), plus a control
//!   socket to suspend the link before a snapshot.
//!
//! This module has what both share: the stream table and the two pumps
//! between a local socket and the link ([`Link::attach`]), with credit-based
//! flow control in both directions.

pub mod guest;
pub mod proxy;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hearth_proto::mux::{MuxFrame, INITIAL_WINDOW, MAX_MUX_PAYLOAD};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;

/// The guest port of the agent.
pub const AGENT_PORT: u32 = hearth_proto::AGENT_VSOCK_PORT;
/// The guest port that echoes what it gets (benchmark baseline).
pub const ECHO_PORT: u32 = 7;
/// virtio-serial port name of the agent link (`-device virtserialport,name=…`).
pub const PORT_NAME: &str = "hearth.agent";

/// Where a link end's outgoing frames go: the writer of the pipe.
pub trait Sink: Send + std::marker::Sync + 'static {
    /// Sends `item`; `epoch` is the link's current generation (a frame of
    /// an older one must not be written).
    fn send(&self, item: Out, epoch: u64);
}

impl Sink for mpsc::UnboundedSender<Out> {
    fn send(&self, item: Out, _epoch: u64) {
        let _ = mpsc::UnboundedSender::send(self, item);
    }
}

/// What goes to the link's writer.
#[derive(Debug)]
pub enum Out {
    /// An encoded frame of link generation `epoch` (dropped if the link was
    /// reset since).
    Frame { epoch: u64, bytes: Vec<u8> },
    /// An encoded sync frame; after writing it the writer stops until the
    /// suspend is released ([`Parking`]).
    Park { bytes: Vec<u8> },
}

/// When a writer that wrote a suspend frame may go on. Suspends are
/// counted as they are requested ([`Parking::suspend`]) and all released at
/// once ([`Parking::release`]: a resume, a new host, a lost host); the
/// writer's k-th parking frame waits until k suspends were released, so a
/// resume that overtakes the writer is never lost.
#[derive(Debug, Default)]
pub struct Parking {
    /// (suspends requested, suspends released)
    counts: Mutex<(u64, u64)>,
    cv: std::sync::Condvar,
    notify: Notify,
}

impl Parking {
    /// Counts one more suspend; its parking frame is queued by the caller.
    pub fn suspend(&self) {
        self.counts.lock().unwrap().0 += 1;
    }

    /// Releases every suspend so far.
    pub fn release(&self) {
        let mut c = self.counts.lock().unwrap();
        c.1 = c.0;
        drop(c);
        self.cv.notify_all();
        self.notify.notify_waiters();
    }

    /// Blocks (a thread) until suspend number `k` (from 1) is released.
    pub fn wait_blocking(&self, k: u64) {
        let mut c = self.counts.lock().unwrap();
        while c.1 < k {
            c = self.cv.wait(c).unwrap();
        }
    }

    /// Waits (a task) until suspend number `k` is released.
    pub async fn wait(&self, k: u64) {
        loop {
            let n = self.notify.notified();
            if self.counts.lock().unwrap().1 >= k {
                return;
            }
            n.await;
        }
    }
}

/// Send credit of one stream.
#[derive(Debug, Default)]
struct Credit {
    avail: Mutex<u64>,
    notify: Notify,
}

impl Credit {
    fn new(n: u32) -> Self {
        Self {
            avail: Mutex::new(n as u64),
            notify: Notify::new(),
        }
    }

    fn add(&self, n: u32) {
        *self.avail.lock().unwrap() += n as u64;
        self.notify.notify_one();
    }

    /// Takes between 1 and `want` bytes of credit, waiting for some.
    async fn take(&self, want: usize) -> usize {
        loop {
            let notified = self.notify.notified();
            {
                let mut a = self.avail.lock().unwrap();
                if *a > 0 {
                    let n = (*a).min(want as u64);
                    *a -= n;
                    return n as usize;
                }
            }
            notified.await;
        }
    }
}

/// What a stream's inbound pump gets.
enum Inbound {
    Data(Vec<u8>),
    Fin,
}

/// The inbound side of a stream as the pipe's reader sees it. While nothing
/// is queued for the stream's inbound pump, the reader writes data straight
/// into the local socket (non-blocking, through its own dup of the socket)
/// and so saves a hand-off to the pump; only what does not fit is queued.
struct InSide {
    /// Items sent to the pump and not yet written by it.
    queued: usize,
    /// The stream is being removed: no more direct writes.
    closed: bool,
    /// `None` until the stream is attached to its socket.
    sock: Option<std::os::fd::OwnedFd>,
}

struct Entry {
    tx: mpsc::UnboundedSender<Inbound>,
    inside: Arc<Mutex<InSide>>,
    credit: Arc<Credit>,
    /// Bytes received and not yet written to the local socket.
    inflight: Arc<AtomicU32>,
    tasks: Vec<AbortHandle>,
}

/// The stream table of one end of the link.
pub struct Link {
    out: Box<dyn Sink>,
    streams: Mutex<HashMap<u32, Entry>>,
    epoch: AtomicU64,
    rt: tokio::runtime::Handle,
}

/// A registered stream waiting for its local socket ([`Link::attach`]).
pub struct Pending {
    stream: u32,
    rx: mpsc::UnboundedReceiver<Inbound>,
    inside: Arc<Mutex<InSide>>,
    credit: Arc<Credit>,
    inflight: Arc<AtomicU32>,
    epoch: u64,
}

impl Link {
    pub fn new(out: Box<dyn Sink>, rt: tokio::runtime::Handle) -> Arc<Self> {
        Arc::new(Self {
            out,
            streams: Mutex::new(HashMap::new()),
            epoch: AtomicU64::new(0),
            rt,
        })
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Queues `f` for the writer in the current generation.
    pub fn send(&self, f: &MuxFrame) {
        let epoch = self.epoch();
        self.out.send(
            Out::Frame {
                epoch,
                bytes: f.to_bytes(),
            },
            epoch,
        );
    }

    /// Queues a sync frame after which the writer parks.
    pub fn send_and_park(&self, f: &MuxFrame) {
        self.out.send(
            Out::Park {
                bytes: f.to_bytes(),
            },
            self.epoch(),
        );
    }

    pub fn len(&self) -> usize {
        self.streams.lock().unwrap().len()
    }

    pub fn contains(&self, stream: u32) -> bool {
        self.streams.lock().unwrap().contains_key(&stream)
    }

    /// Registers `stream`: data for it is queued until [`Link::attach`]
    /// gives it a socket.
    pub fn register(&self, stream: u32) -> Pending {
        let (tx, rx) = mpsc::unbounded_channel();
        let inside = Arc::new(Mutex::new(InSide {
            queued: 0,
            closed: false,
            sock: None,
        }));
        let credit = Arc::new(Credit::new(INITIAL_WINDOW));
        let inflight = Arc::new(AtomicU32::new(0));
        let mut t = self.streams.lock().unwrap();
        let epoch = self.epoch();
        t.insert(
            stream,
            Entry {
                tx,
                inside: inside.clone(),
                credit: credit.clone(),
                inflight: inflight.clone(),
                tasks: Vec::new(),
            },
        );
        Pending {
            stream,
            rx,
            inside,
            credit,
            inflight,
            epoch,
        }
    }

    /// Forgets `stream` and stops its pumps (which closes its socket).
    pub fn remove(&self, stream: u32) {
        let e = self.streams.lock().unwrap().remove(&stream);
        if let Some(e) = e {
            e.inside.lock().unwrap().closed = true;
            e.tasks.iter().for_each(AbortHandle::abort);
        }
    }

    /// Drops every stream (a new host, or the old one is gone) and starts a
    /// new generation: frames still queued for the old one are not written.
    pub fn reset(&self) -> usize {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let old: Vec<Entry> = self
            .streams
            .lock()
            .unwrap()
            .drain()
            .map(|(_, e)| e)
            .collect();
        for e in &old {
            e.inside.lock().unwrap().closed = true;
            e.tasks.iter().for_each(AbortHandle::abort);
        }
        old.len()
    }

    /// Starts the two pumps between `sock` and the link for `p`.
    pub fn attach(self: &Arc<Self>, p: Pending, sock: UnixStream) {
        let Pending {
            stream,
            mut rx,
            inside,
            credit,
            inflight,
            epoch,
        } = p;
        use std::os::fd::AsFd;
        match sock.as_fd().try_clone_to_owned() {
            Ok(fd) => inside.lock().unwrap().sock = Some(fd),
            Err(e) => {
                // Without the dup every byte goes through the pump.
                tracing::debug!(stream, error = %e, "cannot dup a stream's socket");
            }
        }
        let (mut rd, mut wr) = sock.into_split();
        let link = self.clone();
        let outbound = self.rt.spawn(async move {
            let mut buf = vec![0u8; MAX_MUX_PAYLOAD as usize];
            loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) => {
                        tracing::debug!(stream, error = %e, "reading a stream's socket failed");
                        link.send_in(epoch, &MuxFrame::Reset { stream });
                        link.remove(stream);
                        return;
                    }
                };
                let mut off = 0;
                while off < n {
                    let k = credit.take(n - off).await;
                    link.send_in(
                        epoch,
                        &MuxFrame::Data {
                            stream,
                            data: buf[off..off + k].to_vec(),
                        },
                    );
                    off += k;
                }
            }
            link.send_in(epoch, &MuxFrame::Fin { stream });
        });
        let link = self.clone();
        let pump_inside = inside.clone();
        let inbound = self.rt.spawn(async move {
            while let Some(ib) = rx.recv().await {
                match ib {
                    Inbound::Data(d) => {
                        if let Err(e) = wr.write_all(&d).await {
                            tracing::debug!(stream, error = %e, "writing a stream's socket failed");
                            link.send_in(epoch, &MuxFrame::Reset { stream });
                            link.remove(stream);
                            return;
                        }
                        pump_inside.lock().unwrap().queued -= 1;
                        link.credit_back(epoch, stream, &inflight, d.len());
                    }
                    Inbound::Fin => {
                        pump_inside.lock().unwrap().closed = true;
                        let _ = wr.shutdown().await;
                        break;
                    }
                }
            }
        });
        let (a, b) = (outbound.abort_handle(), inbound.abort_handle());
        let attached = {
            let mut t = self.streams.lock().unwrap();
            match t.get_mut(&stream) {
                Some(e) if self.epoch() == epoch => {
                    e.tasks = vec![a.clone(), b.clone()];
                    true
                }
                _ => false,
            }
        };
        if !attached {
            // Reset or removed while it was being attached.
            a.abort();
            b.abort();
            return;
        }
        // The stream is done when both directions are.
        let link = self.clone();
        self.rt.spawn(async move {
            let _ = outbound.await;
            let _ = inbound.await;
            if link.epoch() == epoch {
                link.streams.lock().unwrap().remove(&stream);
            }
        });
    }

    fn send_in(&self, epoch: u64, f: &MuxFrame) {
        self.out.send(
            Out::Frame {
                epoch,
                bytes: f.to_bytes(),
            },
            self.epoch(),
        );
    }

    /// `n` bytes of `stream` reached its socket: the peer may send them again.
    fn credit_back(&self, epoch: u64, stream: u32, inflight: &AtomicU32, n: usize) {
        inflight.fetch_sub(n as u32, Ordering::SeqCst);
        self.send_in(
            epoch,
            &MuxFrame::Credit {
                stream,
                bytes: n as u32,
            },
        );
    }

    /// Handles the stream frames both ends share; gives back the frames the
    /// caller must handle itself (open, opened, refused, sync).
    pub fn handle_common(&self, f: MuxFrame) -> Result<(), MuxFrame> {
        match f {
            MuxFrame::Data { stream, data } => {
                let t = self.streams.lock().unwrap();
                let Some(e) = t.get(&stream) else {
                    drop(t);
                    // Data for a stream that is gone: tell the sender once more.
                    self.send(&MuxFrame::Reset { stream });
                    return Ok(());
                };
                let len = data.len() as u32;
                let now = e.inflight.fetch_add(len, Ordering::SeqCst) + len;
                if now > INITIAL_WINDOW {
                    drop(t);
                    tracing::warn!(
                        stream,
                        now,
                        "peer sent past its credit; resetting the stream"
                    );
                    self.send(&MuxFrame::Reset { stream });
                    self.remove(stream);
                    return Ok(());
                }
                let (tx, inside, inflight) = (e.tx.clone(), e.inside.clone(), e.inflight.clone());
                drop(t);
                let mut ins = inside.lock().unwrap();
                if ins.closed {
                    return Ok(());
                }
                let mut data = data;
                if let (0, Some(sock)) = (ins.queued, &ins.sock) {
                    let n = write_nonblocking(sock, &data);
                    if n == data.len() {
                        drop(ins);
                        self.credit_back(self.epoch(), stream, &inflight, n);
                        return Ok(());
                    }
                    if n > 0 {
                        self.credit_back(self.epoch(), stream, &inflight, n);
                        data.drain(..n);
                    }
                }
                ins.queued += 1;
                let _ = tx.send(Inbound::Data(data));
            }
            MuxFrame::Credit { stream, bytes } => {
                if let Some(e) = self.streams.lock().unwrap().get(&stream) {
                    e.credit.add(bytes);
                }
            }
            MuxFrame::Fin { stream } => {
                if let Some(e) = self.streams.lock().unwrap().get(&stream) {
                    let _ = e.tx.send(Inbound::Fin);
                }
            }
            MuxFrame::Reset { stream } => self.remove(stream),
            other => return Err(other),
        }
        Ok(())
    }
}

/// Writes what fits of `data` into the non-blocking socket `fd` now.
fn write_nonblocking(fd: &std::os::fd::OwnedFd, data: &[u8]) -> usize {
    use std::os::fd::AsRawFd;
    // SAFETY: writing from a live buffer to an fd we own (a dup of the
    // stream's socket, which is non-blocking: tokio owns the original).
    let n = unsafe {
        libc::send(
            fd.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    n.max(0) as usize
}

/// Eight random bytes from the kernel.
pub fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most 8 bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 8, 0) };
    if n != 8 {
        // Not secret, only distinct: fall back to the clock.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        return t.as_nanos() as u64 ^ std::process::id() as u64;
    }
    u64::from_ne_bytes(b)
}
