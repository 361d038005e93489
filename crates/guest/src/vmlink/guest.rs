//! The guest end of the link, in the agent: two threads on the virtio-serial
//! port (a reader that decodes and dispatches, a writer that owns the
//! port's write side) and, per stream, the pumps of [`Link::attach`].
//!
//! The port behaves like a pipe whose other end comes and goes: while no
//! host is connected, `read` answers 0 at once and `write` blocks. So the
//! reader treats end-of-file as "the host is gone": it drops every stream
//! (their agent connections close, as a closed vsock connection would) and
//! polls until bytes arrive again, scanning them for a `HELLO`. A new host
//! always starts with `HELLO`; a restored snapshot was taken suspended at a
//! frame boundary, so its first frame from the new host is that `HELLO`
//! too, whichever way the guest noticed the change.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_proto::mux::{MuxDecoder, MuxFrame, Sync, MAX_STREAMS};
use tokio::net::UnixStream;
use tokio::sync::mpsc;

use super::{Link, Out, Parking, Sink, AGENT_PORT, ECHO_PORT, PORT_NAME};

/// The kernel command line word that makes the agent serve the link.
pub const CMDLINE_WORD: &str = "hearth.link=virtio-serial";

/// How often a reader without a host looks again.
const NO_HOST_POLL: Duration = Duration::from_millis(5);
/// Bytes read from the port at a time.
const READ_CHUNK: usize = 128 * 1024;

/// The port device named [`PORT_NAME`], found through sysfs (there is no
/// udev in the guest to make `/dev/virtio-ports/NAME`).
pub fn find_port() -> Option<PathBuf> {
    find_port_in(Path::new("/sys/class/virtio-ports"), Path::new("/dev"))
}

fn find_port_in(sys: &Path, dev: &Path) -> Option<PathBuf> {
    let entries = std::fs::read_dir(sys).ok()?;
    for e in entries.flatten() {
        let name = std::fs::read_to_string(e.path().join("name")).unwrap_or_default();
        if name.trim_end() == PORT_NAME {
            return Some(dev.join(e.file_name()));
        }
    }
    None
}

/// Agent connections made from streams the host opened to [`AGENT_PORT`].
pub type Accepted = mpsc::UnboundedReceiver<UnixStream>;

/// Opens the port at `path` and serves the link on it until the process
/// ends. Must be called within a tokio runtime (the pumps run on it).
pub fn start(path: &Path) -> io::Result<Accepted> {
    let port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)?;
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (acc_tx, acc_rx) = mpsc::unbounded_channel();
    let sink = Arc::new(PortSink {
        port: Mutex::new((0, port.try_clone()?)),
        queue: out_tx,
        host: AtomicBool::new(false),
        epoch: AtomicU64::new(0),
    });
    let link = Link::new(Box::new(sink.clone()), tokio::runtime::Handle::current());
    let parking = Arc::new(Parking::default());
    {
        let parking = parking.clone();
        let sink = sink.clone();
        std::thread::Builder::new()
            .name("hearth-link-w".into())
            .spawn(move || write_loop(&sink, out_rx, &parking))?;
    }
    std::thread::Builder::new()
        .name("hearth-link-r".into())
        .spawn(move || {
            raise_priority();
            read_loop(port, &link, &sink, &parking, &acc_tx)
        })?;
    Ok(acc_rx)
}

/// The port's write side. A frame is written at once by the caller when
/// nothing is queued, the link is not suspended and a host is there (the
/// port's `write` blocks only while the host side does not read, which the
/// proxy always does); otherwise it goes to the writer thread, in order.
/// That saves a thread hand-off per frame, which under software emulation
/// is most of a small round trip.
struct PortSink {
    /// (frames queued for the writer thread and not yet written, the port)
    port: Mutex<(usize, File)>,
    queue: mpsc::UnboundedSender<Out>,
    /// A host said HELLO and has not left since.
    host: AtomicBool,
    /// The newest link generation seen, for the writer thread's checks.
    epoch: AtomicU64,
}

impl Sink for Arc<PortSink> {
    fn send(&self, item: Out, current: u64) {
        self.epoch.store(current, Ordering::SeqCst);
        let mut g = self.port.lock().unwrap();
        if let Out::Frame { epoch, bytes } = &item {
            if *epoch != current {
                return;
            }
            if g.0 == 0 && self.host.load(Ordering::SeqCst) {
                if let Err(e) = g.1.write_all(bytes) {
                    tracing::warn!(error = %e, "writing the link port failed");
                }
                return;
            }
        }
        g.0 += 1;
        let _ = self.queue.send(item);
    }
}

fn write_loop(sink: &PortSink, mut rx: mpsc::UnboundedReceiver<Out>, parking: &Parking) {
    let mut parks = 0;
    while let Some(item) = rx.blocking_recv() {
        let (bytes, park) = match item {
            Out::Frame { epoch, bytes } => {
                if epoch != sink.epoch.load(Ordering::SeqCst) {
                    sink.port.lock().unwrap().0 -= 1;
                    continue;
                }
                (bytes, false)
            }
            Out::Park { bytes } => (bytes, true),
        };
        let mut g = sink.port.lock().unwrap();
        if let Err(e) = g.1.write_all(&bytes) {
            tracing::warn!(error = %e, "writing the link port failed");
        }
        if park {
            drop(g);
            parks += 1;
            parking.wait_blocking(parks);
            g = sink.port.lock().unwrap();
        }
        g.0 -= 1;
    }
}

/// Nice value of the link's reader: like the agent's connection readers
/// (`liveness`), ahead of a workload that saturates the guest's CPUs.
fn raise_priority() {
    // SAFETY: gettid has no preconditions; setpriority on our own thread id.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, -10)
    };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot raise the link reader's priority");
    }
}

fn read_loop(
    mut port: File,
    link: &Arc<Link>,
    sink: &PortSink,
    parking: &Parking,
    accepted: &mpsc::UnboundedSender<UnixStream>,
) {
    let mut dec = MuxDecoder::new();
    dec.scan_for(Sync::Hello, None);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut host = false;
    loop {
        let n = match port.read(&mut buf) {
            Ok(0) => {
                sink.host.store(false, Ordering::SeqCst);
                if host {
                    let dropped = link.reset();
                    tracing::info!(streams = dropped, "the host left the link");
                    host = false;
                    dec.scan_for(Sync::Hello, None);
                    parking.release();
                }
                std::thread::sleep(NO_HOST_POLL);
                continue;
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "reading the link port failed");
                std::thread::sleep(NO_HOST_POLL * 10);
                continue;
            }
        };
        dec.push(&buf[..n]);
        loop {
            match dec.next() {
                Ok(Some(f)) => {
                    if let MuxFrame::Sync {
                        sync: Sync::Hello, ..
                    } = f
                    {
                        host = true;
                        sink.host.store(true, Ordering::SeqCst);
                    }
                    on_frame(f, link, parking, accepted);
                }
                Ok(None) => break,
                Err(e) => {
                    // The decoder now scans for the next HELLO.
                    sink.host.store(false, Ordering::SeqCst);
                    let dropped = link.reset();
                    tracing::warn!(error = %e, streams = dropped, "the host broke the link's framing");
                    host = false;
                    parking.release();
                }
            }
        }
    }
}

fn on_frame(
    f: MuxFrame,
    link: &Arc<Link>,
    parking: &Parking,
    accepted: &mpsc::UnboundedSender<UnixStream>,
) {
    let f = match link.handle_common(f) {
        Ok(()) => return,
        Err(f) => f,
    };
    match f {
        MuxFrame::Sync { sync, nonce } => match sync {
            Sync::Hello => {
                let dropped = link.reset();
                parking.release();
                tracing::info!(streams = dropped, "a host joined the link");
                link.send(&MuxFrame::Sync {
                    sync: Sync::HelloAck,
                    nonce,
                });
            }
            Sync::Suspend => {
                tracing::info!("link suspended");
                parking.suspend();
                link.send_and_park(&MuxFrame::Sync {
                    sync: Sync::Suspended,
                    nonce,
                });
            }
            Sync::Resume => {
                tracing::info!("link resumed");
                parking.release();
            }
            other => tracing::warn!(?other, "unexpected sync frame from the host"),
        },
        MuxFrame::Open { stream, port } => open(stream, port, link, accepted),
        other => tracing::warn!(?other, "unexpected frame from the host"),
    }
}

fn open(stream: u32, port: u32, link: &Arc<Link>, accepted: &mpsc::UnboundedSender<UnixStream>) {
    let refuse = |reason: String| {
        link.send(&MuxFrame::Refused { stream, reason });
    };
    if link.contains(stream) {
        return refuse(format!("stream {stream} is already open"));
    }
    if link.len() >= MAX_STREAMS {
        return refuse(format!("{MAX_STREAMS} streams are open already"));
    }
    if port != AGENT_PORT && port != ECHO_PORT {
        return refuse(format!("nothing listens on guest port {port}"));
    }
    let pair = std::os::unix::net::UnixStream::pair().and_then(|(a, b)| {
        a.set_nonblocking(true)?;
        b.set_nonblocking(true)?;
        let _guard = link.rt.enter();
        Ok((UnixStream::from_std(a)?, UnixStream::from_std(b)?))
    });
    let (ours, theirs) = match pair {
        Ok(p) => p,
        Err(e) => return refuse(format!("cannot make a socket pair: {e}")),
    };
    let pending = link.register(stream);
    link.attach(pending, ours);
    link.send(&MuxFrame::Opened { stream });
    if port == ECHO_PORT {
        link.rt.spawn(echo(theirs));
    } else if accepted.send(theirs).is_err() {
        link.remove(stream);
    }
}

async fn echo(s: UnixStream) {
    let (mut r, mut w) = s.into_split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_is_found_by_its_sysfs_name() {
        let d = tempfile::tempdir().unwrap();
        for (dev, name) in [("vport0p1", "other"), ("vport0p2", PORT_NAME)] {
            std::fs::create_dir(d.path().join(dev)).unwrap();
            std::fs::write(d.path().join(dev).join("name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            find_port_in(d.path(), Path::new("/dev")),
            Some(PathBuf::from("/dev/vport0p2"))
        );
        std::fs::remove_dir_all(d.path().join("vport0p2")).unwrap();
        assert_eq!(find_port_in(d.path(), Path::new("/dev")), None);
    }
}
