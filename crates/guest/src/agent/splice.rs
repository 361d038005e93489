//! Zero-copy output: `splice(2)` moves a child's pipe pages straight into
//! the connection socket, so an output chunk never passes through the
//! agent's memory. Only the connection writer calls this, as one item after
//! the frame header, so frames never interleave.
//!
//! [`ConnWrite`] is the writer's view of a socket: an `AsyncWrite` that may
//! also take spliced bytes. Unix sockets can; other sinks (vsock, whose tokio
//! wrapper exposes no writability, and test pipes) use the copy path.

use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::task::{Context, Poll};

use tokio::io::{AsyncWrite, AsyncWriteExt};

/// Largest read of the copy fallback.
const COPY_BUF: usize = 64 * 1024;

/// A connection's write side.
pub trait ConnWrite: AsyncWrite + Send + Unpin {
    /// Whether [`ConnWrite::poll_splice`] may work at all.
    fn can_splice(&self) -> bool {
        false
    }

    /// Moves up to `n` bytes (at least one) from the non-blocking `pipe` into
    /// the socket, waiting for writability. An `Unsupported` error or
    /// EINVAL/ENOSYS means the socket cannot take spliced bytes.
    fn poll_splice(
        &mut self,
        _cx: &mut Context<'_>,
        _pipe: RawFd,
        _n: usize,
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::Unsupported.into()))
    }
}

impl ConnWrite for tokio::net::unix::OwnedWriteHalf {
    fn can_splice(&self) -> bool {
        true
    }

    fn poll_splice(
        &mut self,
        cx: &mut Context<'_>,
        pipe: RawFd,
        n: usize,
    ) -> Poll<io::Result<usize>> {
        let sock: &tokio::net::UnixStream = self.as_ref();
        loop {
            std::task::ready!(sock.poll_write_ready(cx))?;
            match sock.try_io(tokio::io::Interest::WRITABLE, || {
                splice_once(pipe, sock.as_raw_fd(), n)
            }) {
                // The socket is full: `try_io` cleared its readiness.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }
}

impl ConnWrite for tokio_vsock::OwnedWriteHalf {}

impl<T: tokio::io::AsyncRead + AsyncWrite + Send> ConnWrite for tokio::io::WriteHalf<T> {}

/// Bytes waiting in a pipe (FIONREAD); 0 if unknown.
pub fn pipe_pending(pipe: RawFd) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD on a pipe fd the caller keeps open writes one c_int.
    let rc = unsafe { libc::ioctl(pipe, libc::FIONREAD, &mut n) };
    if rc < 0 {
        0
    } else {
        n.max(0) as usize
    }
}

/// One non-blocking `splice(2)` of up to `n` bytes. `WouldBlock` only when the
/// socket is full: an empty pipe inside a frame is an error (the caller made
/// sure the bytes were there, and only it reads the pipe).
fn splice_once(pipe: RawFd, sock: RawFd, n: usize) -> io::Result<usize> {
    loop {
        // SAFETY: both fds are open for the duration of the call (the caller
        // holds the pipe and the socket); null offsets are required for pipes
        // and sockets, and splice touches no memory of ours.
        let r = unsafe {
            libc::splice(
                pipe,
                std::ptr::null_mut(),
                sock,
                std::ptr::null_mut(),
                n,
                libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
            )
        };
        if r >= 0 {
            return Ok(r as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) if pipe_pending(pipe) == 0 => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "child pipe emptied inside a spliced frame",
                ))
            }
            _ => return Err(e),
        }
    }
}

fn unsupported(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::Unsupported
        || matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOSYS))
}

/// Writes exactly `n` bytes of `pipe` to `sink` after a frame header already
/// written: spliced while `*splice_ok`, copied otherwise. A socket that cannot
/// take spliced bytes clears `*splice_ok` and the rest of the frame is copied.
/// Any error leaves the frame incomplete: the connection must close.
pub async fn body<W>(sink: &mut W, pipe: RawFd, n: usize, splice_ok: &mut bool) -> io::Result<()>
where
    W: ConnWrite + ?Sized,
{
    let mut left = n;
    while left > 0 && *splice_ok {
        match poll_fn(|cx| sink.poll_splice(cx, pipe, left)).await {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "child pipe ended inside a spliced frame",
                ))
            }
            Ok(k) => left -= k.min(left),
            Err(e) if unsupported(&e) => {
                tracing::info!(error = %e, "socket cannot take spliced output, copying from now on");
                *splice_ok = false;
            }
            Err(e) => return Err(e),
        }
    }
    if left == 0 {
        return Ok(());
    }
    let mut buf = vec![0u8; left.min(COPY_BUF)];
    while left > 0 {
        let want = left.min(buf.len());
        // SAFETY: read(2) writes at most `want` ≤ `buf.len()` bytes into `buf`.
        let r = unsafe { libc::read(pipe, buf.as_mut_ptr().cast(), want) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "child pipe ended inside a frame",
            ));
        }
        let k = r as usize;
        sink.write_all(&buf[..k]).await?;
        left -= k;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::pin::Pin;
    use tokio::io::AsyncReadExt;

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        assert_eq!(
            unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) },
            0
        );
        // SAFETY: pipe2 succeeded, so both fds are open and ours alone.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    fn fill(w: &OwnedFd, data: &[u8]) {
        // SAFETY: write(2) reads `data.len()` bytes from `data`.
        let r = unsafe { libc::write(w.as_raw_fd(), data.as_ptr().cast(), data.len()) };
        assert_eq!(r, data.len() as isize, "pipe write");
    }

    /// A sink that splices `first` bytes by copying, then reports EINVAL.
    struct Refuses {
        out: Vec<u8>,
        first: usize,
    }

    impl AsyncWrite for Refuses {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<io::Result<usize>> {
            self.out.extend_from_slice(b);
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    impl ConnWrite for Refuses {
        fn poll_splice(
            &mut self,
            _: &mut Context<'_>,
            pipe: RawFd,
            n: usize,
        ) -> Poll<io::Result<usize>> {
            if self.first == 0 {
                return Poll::Ready(Err(io::Error::from_raw_os_error(libc::EINVAL)));
            }
            let k = n.min(self.first);
            let mut b = vec![0u8; k];
            // SAFETY: read(2) writes at most `k` bytes into `b`.
            let r = unsafe { libc::read(pipe, b.as_mut_ptr().cast(), k) };
            assert_eq!(r, k as isize);
            self.out.extend_from_slice(&b);
            self.first -= k;
            Poll::Ready(Ok(k))
        }
    }

    #[tokio::test]
    async fn splices_exactly_n_bytes_into_a_unix_socket() {
        let (r, w) = pipe();
        let data: Vec<u8> = (0..50_000u32).map(|i| (i * 13 + 1) as u8).collect();
        fill(&w, &data);
        let (a, b) = tokio::net::UnixStream::pair().expect("socketpair");
        let (_ar, mut aw) = a.into_split();
        let mut ok = aw.can_splice();
        assert!(ok, "unix sockets must offer splice");
        body(&mut aw, r.as_raw_fd(), 30_000, &mut ok)
            .await
            .expect("splice");
        assert!(ok, "splice into a unix socket fell back to copying");
        drop(aw);
        let mut got = Vec::new();
        let mut b = b;
        b.read_to_end(&mut got).await.expect("read");
        assert_eq!(got, data[..30_000], "spliced bytes differ");
        assert_eq!(pipe_pending(r.as_raw_fd()), 20_000, "splice took too much");
    }

    #[tokio::test]
    async fn einval_mid_frame_finishes_the_frame_by_copying() {
        let (r, w) = pipe();
        let data: Vec<u8> = (0..40_000u32).map(|i| (i * 7 + 5) as u8).collect();
        fill(&w, &data);
        let mut sink = Refuses {
            out: Vec::new(),
            first: 1000,
        };
        let mut ok = true;
        body(&mut sink, r.as_raw_fd(), 35_000, &mut ok)
            .await
            .expect("body");
        assert!(!ok, "EINVAL did not switch the connection to copying");
        assert_eq!(sink.out, data[..35_000], "fallback bytes differ");
        assert_eq!(pipe_pending(r.as_raw_fd()), 5_000);
    }
}
