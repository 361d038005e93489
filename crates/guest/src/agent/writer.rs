//! The one task that writes a connection's socket.
//!
//! Frames come through two bounded queues: `prio` for small control answers
//! (pongs, errors, results) and `data` for bulk output. The writer always drains
//! `prio` first, so an output flood cannot delay a pong by more than one
//! batch. Both queues are bounded: when the host stops reading, senders wait
//! (backpressure) instead of growing memory.
//!
//! The socket sits behind a lock that the writer task holds for a whole batch.
//! [`Writer::send`] (pongs, results, errors) writes straight from the caller
//! when the lock is free, no earlier `send` is still queued, and the socket
//! takes the frame at once, saving the hop to the writer task; otherwise it
//! queues on `prio`.
//!
//! Ordering: frames given to `send` go out in the order of the calls, and
//! before any frame given to `send_data` after them. (A `send` may overtake
//! `send_data` frames queued before it.)
//!
//! An output chunk may also come as a header plus a pipe to splice from
//! ([`Writer::send_splice`]): the writer writes what was queued before it,
//! the header, then moves the bytes pipe → socket without copying them
//! (see [`super::splice`]), all under the socket lock.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, Bytes, BytesMut};
use hearth_proto::{pb, Frame, Message};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

use super::splice::{self, ConnWrite};

/// Queued frames per queue. Data frames are at most one chunk (≤ 256 KiB), so
/// the data queue holds at most ~8 MiB per connection.
const DATA_QUEUE: usize = 32;
const PRIO_QUEUE: usize = 64;
/// Coalesce queued frames into one write up to about this many bytes.
const BATCH_BYTES: usize = 512 * 1024;
/// Frames at least this big are written from their own buffer (`writev`)
/// instead of being copied into the batch.
const COPY_BELOW: usize = 16 * 1024;
/// Most buffers handed to one `writev`.
const MAX_IOV: usize = 32;

enum Out {
    Frame(Frame),
    /// A frame already in wire format (header included).
    Wire(Bytes),
    /// A frame header, then `n` bytes spliced from `pipe`; `done` fires once
    /// they are all out.
    Splice {
        head: Bytes,
        pipe: Arc<OwnedFd>,
        n: usize,
        done: oneshot::Sender<()>,
    },
    Flush(oneshot::Sender<()>),
    Close,
}

/// The connection is gone; nothing more can be sent.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("connection writer is closed")]
pub struct Closed;

type Sink = Arc<tokio::sync::Mutex<Box<dyn ConnWrite>>>;

/// Cheap handle to the connection's writer.
#[derive(Clone)]
pub struct Writer {
    data: mpsc::Sender<Out>,
    prio: mpsc::Sender<Out>,
    sink: Sink,
    max_frame_len: u32,
    /// The socket takes spliced output (cleared for good on EINVAL/ENOSYS).
    splice_ok: Arc<AtomicBool>,
    /// Frames given to `send` and queued on `prio` but not yet written: while
    /// any is, `send` queues too, so sends keep their order.
    prio_pending: Arc<AtomicUsize>,
    /// Threads waiting in [`Writer::with_socket_blocking`]: while any is, the
    /// writer task hands the socket over at the next frame boundary of its batch.
    waiters: Arc<AtomicUsize>,
}

impl Writer {
    /// Starts the writer task on `sink`.
    pub fn spawn<W>(sink: W, max_frame_len: u32) -> Writer
    where
        W: ConnWrite + 'static,
    {
        let (data, data_rx) = mpsc::channel(DATA_QUEUE);
        let (prio, prio_rx) = mpsc::channel(PRIO_QUEUE);
        let splice_ok = Arc::new(AtomicBool::new(sink.can_splice()));
        let prio_pending = Arc::new(AtomicUsize::new(0));
        let waiters = Arc::new(AtomicUsize::new(0));
        let sink: Sink = Arc::new(tokio::sync::Mutex::new(Box::new(sink)));
        tokio::spawn(run(
            sink.clone(),
            Queues {
                data: data_rx,
                prio: prio_rx,
                prio_pending: prio_pending.clone(),
                waiters: waiters.clone(),
            },
            max_frame_len,
            splice_ok.clone(),
        ));
        Writer {
            data,
            prio,
            sink,
            max_frame_len,
            splice_ok,
            prio_pending,
            waiters,
        }
    }

    /// Whether output may be spliced into this connection's socket.
    pub fn can_splice(&self) -> bool {
        self.splice_ok.load(Ordering::Relaxed)
    }

    /// Sends the frame header `head` followed by exactly `n` bytes taken from
    /// `pipe` (which must hold at least `n` bytes, and nobody else may read it
    /// until this returns); waits until they are written.
    pub async fn send_splice(
        &self,
        head: Bytes,
        pipe: Arc<OwnedFd>,
        n: usize,
    ) -> Result<(), Closed> {
        let (done, rx) = oneshot::channel();
        self.data
            .send(Out::Splice {
                head,
                pipe,
                n,
                done,
            })
            .await
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Runs `f` holding the socket lock, from a thread outside the runtime
    /// (the connection's reader thread writes pongs this way): `f` may write
    /// whole frames to the socket's fd; nothing else writes meanwhile, and
    /// no frame of the writer is half-written when `f` starts.
    ///
    /// The writer task yields the lock at the next frame boundary of a batch
    /// in progress, so this waits for at most one frame of it.
    pub fn with_socket_blocking<R>(&self, f: impl FnOnce() -> R) -> R {
        self.waiters.fetch_add(1, Ordering::AcqRel);
        let sink = self.sink.blocking_lock();
        self.waiters.fetch_sub(1, Ordering::AcqRel);
        let r = f();
        drop(sink);
        r
    }

    /// Queues a bulk frame (output or file chunk); waits while the queue is full.
    pub async fn send_data(&self, seq: u32, msg: &Message) -> Result<(), Closed> {
        let frame = self.frame(seq, msg);
        self.data.send(Out::Frame(frame)).await.map_err(|_| Closed)
    }

    /// Queues a bulk frame already in wire format; waits while the queue is full.
    pub async fn send_wire(&self, wire: Bytes) -> Result<(), Closed> {
        self.data.send(Out::Wire(wire)).await.map_err(|_| Closed)
    }

    /// Sends a control frame (pong, result, error) ahead of bulk data:
    /// written from here when no batch is being written and the socket takes
    /// it now, else queued on the priority queue.
    pub async fn send(&self, seq: u32, msg: &Message) -> Result<(), Closed> {
        let frame = self.frame(seq, msg);
        // Under the socket lock a zero count means no earlier `send` is queued
        // or in a batch still being written (the writer counts down only
        // after writing), so writing now keeps the order.
        let locked = self.sink.clone().try_lock_owned().ok();
        if let Some(mut sink) = locked.filter(|_| self.prio_pending.load(Ordering::Acquire) == 0) {
            let mut wire = BytesMut::with_capacity(frame.wire_len() + 4);
            if frame.encode(&mut wire, self.max_frame_len).is_ok() {
                // One poll, without a waker: the writer task registers its own
                // the next time it writes (it cannot be waiting now: it would
                // hold the lock).
                let mut cx = Context::from_waker(Waker::noop());
                match Pin::new(&mut *sink).poll_write(&mut cx, &wire) {
                    Poll::Ready(Ok(n)) if n == wire.len() => {
                        let _ = Pin::new(&mut *sink).poll_flush(&mut cx);
                        return Ok(());
                    }
                    Poll::Ready(Ok(n)) if n > 0 => {
                        // Half a frame is out: finish it before anyone else writes.
                        let rest = wire.split_off(n);
                        tokio::spawn(async move {
                            let _ = sink.write_all(&rest).await;
                            let _ = sink.flush().await;
                        });
                        return Ok(());
                    }
                    Poll::Ready(_) => return Err(Closed),
                    Poll::Pending => {}
                }
            }
        }
        self.prio_pending.fetch_add(1, Ordering::AcqRel);
        self.prio.send(Out::Frame(frame)).await.map_err(|_| {
            self.prio_pending.fetch_sub(1, Ordering::AcqRel);
            Closed
        })
    }

    /// Waits until everything queued before this call has been written.
    pub async fn flush(&self) -> Result<(), Closed> {
        let (tx, rx) = oneshot::channel();
        self.data.send(Out::Flush(tx)).await.map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Writes what is queued, then shuts the socket's write side down.
    pub async fn close(&self) {
        let _ = self.data.send(Out::Close).await;
    }

    /// Encodes `msg`; a message too big for a frame becomes an `INTERNAL` error
    /// (callers size their answers, so this is a bug, not a host action).
    fn frame(&self, seq: u32, msg: &Message) -> Frame {
        let frame = msg.into_frame(seq);
        if frame.wire_len() <= self.max_frame_len as usize {
            return frame;
        }
        tracing::error!(seq, kind = ?msg.message_type(), len = frame.wire_len(), "answer exceeds the frame limit");
        hearth_proto::message::error(
            pb::ErrorCode::Internal,
            format!(
                "answer of {} bytes exceeds the frame limit",
                frame.wire_len()
            ),
            0,
        )
        .into_frame(seq)
    }
}

/// The writer task's ends of the queues.
struct Queues {
    data: mpsc::Receiver<Out>,
    prio: mpsc::Receiver<Out>,
    prio_pending: Arc<AtomicUsize>,
    waiters: Arc<AtomicUsize>,
}

async fn run(sink: Sink, queues: Queues, max_frame_len: u32, splice_flag: Arc<AtomicBool>) {
    let Queues {
        data: mut data_rx,
        prio: mut prio_rx,
        prio_pending,
        waiters,
    } = queues;
    // Small frames are encoded into `small`; a batch is the list of buffers
    // written with one `writev` (or a few, if the socket takes less).
    let mut small = BytesMut::new();
    let mut parts: VecDeque<Bytes> = VecDeque::new();
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    let mut prio_open = true;
    let mut data_open = true;
    let mut closing = false;
    let mut splice_ok = splice_flag.load(Ordering::Relaxed);
    while (prio_open || data_open) && !closing {
        let mut from_prio = 0usize;
        let first = tokio::select! {
            biased;
            m = prio_rx.recv(), if prio_open => match m {
                Some(m) => { from_prio += 1; Some(m) }
                None => { prio_open = false; None }
            },
            m = data_rx.recv(), if data_open => m.or_else(|| { data_open = false; None }),
        };
        let Some(first) = first else { continue };
        let mut next = Some(first);
        let mut batched = 0usize;
        let mut spliced = None;
        while let Some(out) = next.take() {
            match out {
                Out::Frame(f) => {
                    let before = small.len();
                    if let Err(e) = f.encode(&mut small, max_frame_len) {
                        tracing::error!(error = %e, "dropping unencodable frame");
                    }
                    batched += small.len() - before;
                }
                Out::Wire(b) if b.len() < COPY_BELOW => {
                    small.extend_from_slice(&b);
                    batched += b.len();
                }
                Out::Wire(b) => {
                    if !small.is_empty() {
                        parts.push_back(small.split().freeze());
                    }
                    batched += b.len();
                    parts.push_back(b);
                }
                Out::Splice {
                    head,
                    pipe,
                    n,
                    done,
                } => {
                    // The header goes out with the batch; the body right after
                    // it, ending the batch.
                    small.extend_from_slice(&head);
                    spliced = Some((pipe, n, done));
                    break;
                }
                Out::Flush(ack) => acks.push(ack),
                Out::Close => {
                    closing = true;
                    break;
                }
            }
            if batched >= BATCH_BYTES || parts.len() >= MAX_IOV - 1 {
                break;
            }
            next = match prio_rx.try_recv() {
                Ok(m) => {
                    from_prio += 1;
                    Some(m)
                }
                Err(_) => data_rx.try_recv().ok(),
            };
        }
        if !small.is_empty() {
            parts.push_back(small.split().freeze());
        }
        {
            let guard = sink.lock().await;
            let mut sink = match write_parts(&sink, guard, &mut parts, &waiters).await {
                Ok(g) => g,
                Err(e) => {
                    tracing::debug!(error = %e, "connection write failed");
                    return;
                }
            };
            if let Some((pipe, n, done)) = spliced.take() {
                let r = splice::body(&mut **sink, pipe.as_raw_fd(), n, &mut splice_ok).await;
                if !splice_ok {
                    splice_flag.store(false, Ordering::Relaxed);
                }
                if let Err(e) = r {
                    // Half a frame is out: the stream cannot be resynchronised.
                    tracing::debug!(error = %e, "spliced output failed, closing the connection");
                    let _ = sink.shutdown().await;
                    return;
                }
                let _ = done.send(());
            }
            if let Err(e) = sink.flush().await {
                tracing::debug!(error = %e, "connection flush failed");
                return;
            }
            // Still under the lock: a `send` that sees zero after this finds
            // these frames written.
            prio_pending.fetch_sub(from_prio, Ordering::AcqRel);
        }
        // Do not keep a large batch buffer around on an idle connection.
        if small.capacity() > BATCH_BYTES * 2 {
            small = BytesMut::new();
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
    let _ = sink.lock().await.shutdown().await;
}

/// Writes every buffer in `parts`, in order, with vectored writes. Every
/// buffer but the last ends at a frame boundary (only the last may end in a
/// spliced frame's header): there, when a thread waits for the socket
/// ([`Writer::with_socket_blocking`]), the lock is handed over and taken back.
async fn write_parts<'a>(
    lock: &'a Sink,
    mut guard: tokio::sync::MutexGuard<'a, Box<dyn ConnWrite>>,
    parts: &mut VecDeque<Bytes>,
    waiters: &AtomicUsize,
) -> std::io::Result<tokio::sync::MutexGuard<'a, Box<dyn ConnWrite>>> {
    while !parts.is_empty() {
        let sink = &mut **guard;
        let n = {
            let mut iov = [IoSlice::new(&[]); MAX_IOV];
            let mut k = 0;
            for (slot, p) in iov.iter_mut().zip(parts.iter()) {
                *slot = IoSlice::new(p);
                k += 1;
            }
            sink.write_vectored(&iov[..k]).await?
        };
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = n;
        let mut at_boundary = false;
        while left > 0 {
            let Some(front) = parts.front_mut() else {
                break;
            };
            if front.len() <= left {
                left -= front.len();
                parts.pop_front();
                at_boundary = left == 0;
            } else {
                front.advance(left);
                left = 0;
            }
        }
        if at_boundary && !parts.is_empty() && waiters.load(Ordering::Acquire) > 0 {
            sink.flush().await?;
            drop(guard);
            // tokio's mutex is fair: the waiting thread gets it before us.
            guard = lock.lock().await;
        }
    }
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::FrameDecoder;
    use tokio::io::AsyncReadExt;

    /// Frames given to `send` by one task reach the wire in call order, even
    /// when some are written directly and others queue (the socket is small
    /// and read slowly here, so both paths are taken).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_keep_their_order() {
        let (a, mut b) = tokio::io::duplex(64);
        let (_ra, wa) = tokio::io::split(a);
        let writer = Writer::spawn(wa, 1 << 20);
        const N: u32 = 2000;
        let sender = tokio::spawn({
            let writer = writer.clone();
            async move {
                for seq in 1..=N {
                    let ping = Message::Ping(pb::Ping { nonce: seq as u64 });
                    writer.send(seq, &ping).await.expect("send");
                    if seq % 7 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }
        });
        let dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut next = 1u32;
        while next <= N {
            match dec.decode(&mut buf).expect("frames decode") {
                Some(f) => {
                    assert_eq!(f.seq, next, "frame out of order");
                    next += 1;
                }
                None => {
                    let mut chunk = [0u8; 37];
                    let n = b.read(&mut chunk).await.expect("read");
                    assert_ne!(n, 0, "writer closed early");
                    buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
        sender.await.expect("sender");
    }
}
