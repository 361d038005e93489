//! A connection's reader on its own OS thread, which also answers `PING`.
//!
//! LESSONS: output floods starved the heartbeat when both ran on one async
//! executor. Here the socket's read side is never polled by tokio: a plain
//! thread (`hearth-conn`) waits in `poll(2)`, reads, decodes frames, answers
//! each valid `PING` itself — the `PONG` written straight to the socket under
//! the writer's socket lock, so frames never interleave — and hands every
//! other frame to the connection's async dispatcher through a bounded channel.
//! A busy executor (eight sessions flooding output) then delays a pong only
//! by the frame being written to the socket, never by task scheduling.
//!
//! A `WINDOW_UPDATE` for a session or file read in flight is applied here
//! too (credit is commutative, so it may overtake frames still queued for
//! the dispatcher; one for a seq not in flight goes to the dispatcher in
//! order): output credit then returns without a hop through the executor.
//!
//! The thread runs at nice -10, so a guest whose CPUs the workload saturates
//! still schedules it promptly.
//!
//! The channel is bounded: when the dispatcher falls behind, the thread stops
//! reading (the host's frames wait in the socket), as the async reader did.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use bytes::BytesMut;
use hearth_proto::{pb, DecodeError, Frame, FrameDecoder, Message, MessageType, VERSION};
use tokio::sync::mpsc;

use super::routes::Routes;
use super::writer::Writer;

/// Frames handed to the dispatcher and not yet taken.
const QUEUE: usize = 64;
/// Read buffer kept between frames; larger ones are released.
const READ_BUF: usize = 64 * 1024;
/// Stack of the reader thread (decoding is all on the heap).
const STACK: usize = 128 * 1024;
/// A pong that cannot be written for this long means the host stopped
/// reading; the thread gives up on the connection.
const WRITE_STALL: Duration = Duration::from_secs(30);

/// What the reader thread reports.
pub enum Event {
    Frame(Frame),
    /// The host closed the connection (or reading failed).
    Closed,
    /// The byte stream broke framing; the connection must close.
    Bad(DecodeError),
}

/// Starts the reader thread on `fd` (the connection's socket, which `keep`
/// holds open for the thread's life). Pongs go out through `writer`'s socket
/// lock on the same `fd`.
pub fn spawn<K: Send + 'static>(
    fd: RawFd,
    keep: K,
    max_frame_len: u32,
    writer: Writer,
    routes: Routes,
) -> io::Result<mpsc::Receiver<Event>> {
    let (tx, rx) = mpsc::channel(QUEUE);
    std::thread::Builder::new()
        .name("hearth-conn".into())
        .stack_size(STACK)
        .spawn(move || {
            let _keep = keep;
            raise_priority();
            read_loop(fd, max_frame_len, &writer, &routes, &tx);
        })?;
    Ok(rx)
}

/// Nice value of the reader thread: ahead of the workload (nice 0) and of
/// the executor's workers when the guest's CPUs are saturated. It sleeps in
/// `poll(2)` otherwise, so it takes no CPU from anyone.
const NICE: libc::c_int = -10;

/// Best effort (needs CAP_SYS_NICE, which the agent has as root in the guest).
fn raise_priority() {
    // SAFETY: gettid has no preconditions; setpriority on our own thread id.
    let r = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, NICE)
    };
    if r != 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "cannot raise the reader thread's priority");
    }
}

fn read_loop(
    fd: RawFd,
    max_frame_len: u32,
    writer: &Writer,
    routes: &Routes,
    tx: &mpsc::Sender<Event>,
) {
    let decoder = FrameDecoder::new(max_frame_len);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                if buf.is_empty() && buf.capacity() > READ_BUF {
                    buf = BytesMut::with_capacity(8 * 1024);
                }
                if let Some(pong) = pong_for(&frame) {
                    if let Err(e) = write_frame(fd, writer, &pong) {
                        tracing::debug!(error = %e, "writing a pong failed");
                        let _ = tx.blocking_send(Event::Closed);
                        return;
                    }
                    continue;
                }
                if frame.kind == MessageType::WindowUpdate as u8 {
                    if let (Ok(Message::WindowUpdate(w)), Some(credit)) =
                        (Message::from_frame(&frame), routes.credit(frame.seq))
                    {
                        credit.add(w.bytes as u64);
                        continue;
                    }
                }
                if tx.blocking_send(Event::Frame(frame)).is_err() {
                    return;
                }
            }
            Ok(None) => {
                if buf.capacity() - buf.len() < 4096 {
                    buf.reserve(8 * 1024);
                }
                match read_some(fd, &mut buf) {
                    Ok(0) => {
                        tracing::debug!("connection closed by the host");
                        let _ = tx.blocking_send(Event::Closed);
                        return;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::debug!(error = %e, "connection read failed");
                        let _ = tx.blocking_send(Event::Closed);
                        return;
                    }
                }
            }
            Err(e) => {
                let _ = tx.blocking_send(Event::Bad(e));
                return;
            }
        }
    }
}

/// The `PONG` frame answering `frame` when it is a valid `PING`. Anything
/// else (including a `PING` that does not decode) goes to the dispatcher,
/// which answers it as before.
fn pong_for(frame: &Frame) -> Option<Frame> {
    if frame.kind != MessageType::Ping as u8 {
        return None;
    }
    let Ok(Message::Ping(p)) = Message::from_frame(frame) else {
        return None;
    };
    Some(
        Message::Pong(pb::Pong {
            nonce: p.nonce,
            agent_version: VERSION.to_string(),
        })
        .into_frame(frame.seq),
    )
}

/// Waits for `fd` to be ready for `events`, up to `timeout` (`None` = forever).
fn wait(fd: RawFd, events: libc::c_short, timeout: Option<Duration>) -> io::Result<bool> {
    let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as libc::c_int);
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    loop {
        // SAFETY: poll(2) on one pollfd we own.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r >= 0 {
            return Ok(r > 0);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// One `read(2)` into the spare capacity of `buf`, waiting until the
/// (non-blocking) socket has data. 0 = end of stream.
fn read_some(fd: RawFd, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        let spare = buf.spare_capacity_mut();
        // SAFETY: read(2) writes at most `spare.len()` bytes into memory we own.
        let n = unsafe { libc::read(fd, spare.as_mut_ptr().cast(), spare.len()) };
        if n >= 0 {
            // SAFETY: read(2) initialised `n` bytes after the old length.
            unsafe { buf.set_len(buf.len() + n as usize) };
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => {}
            io::ErrorKind::WouldBlock => {
                wait(fd, libc::POLLIN, None)?;
            }
            _ => return Err(e),
        }
    }
}

/// Writes one whole frame to `fd` under the writer's socket lock.
fn write_frame(fd: RawFd, writer: &Writer, frame: &Frame) -> io::Result<()> {
    let mut wire = BytesMut::with_capacity(frame.wire_len() + 4);
    frame
        .encode(&mut wire, writer.max_frame_len())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    writer.with_socket_blocking(|| {
        let mut off = 0;
        while off < wire.len() {
            let rest = &wire[off..];
            // SAFETY: write(2) reads `rest.len()` bytes from memory we own.
            let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
            if n >= 0 {
                off += n as usize;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock => {
                    if !wait(fd, libc::POLLOUT, Some(WRITE_STALL))? {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the host stopped reading",
                        ));
                    }
                }
                _ => return Err(e),
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_pings_are_answered_here() {
        let ping = Message::Ping(pb::Ping { nonce: 7 }).into_frame(3);
        let pong = pong_for(&ping).expect("a pong");
        assert_eq!((pong.kind, pong.seq), (MessageType::Pong as u8, 3));
        match Message::from_frame(&pong) {
            Ok(Message::Pong(p)) => assert_eq!(p.nonce, 7),
            other => panic!("{other:?}"),
        }
        let broken = Frame::new(
            MessageType::Ping as u8,
            4,
            bytes::Bytes::from_static(&[0xff]),
        );
        assert!(pong_for(&broken).is_none());
        let other = Message::Stats(pb::Stats {}).into_frame(5);
        assert!(pong_for(&other).is_none());
    }
}
