//! `PORT_OPEN`: one TCP connection to 127.0.0.1:PORT in the guest, carried as
//! `PORT_DATA` both ways on the agent connection.
//!
//! Guest-to-host bytes follow the output credit the host grants (`window`,
//! host `WINDOW_UPDATE`): at zero the agent stops reading the socket, so the
//! guest program blocks in `write(2)`. Host-to-guest bytes follow the input
//! credit (`Ready.input_window`, agent `WINDOW_UPDATE`s as the socket takes
//! them), queued in an [`Input`] so the connection reader never waits on
//! this socket. `eof` each way is a half-close (`shutdown(SHUT_WR)`); once
//! both directions are finished the stream ends with `STREAM_END FINISHED`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hearth_proto::message::error;
use hearth_proto::{os_error_text, pb, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::conn::chunk_max;
use super::credit::Credit;
use super::files::code_for_errno;
use super::input::{Consumer, Input, Next};
use super::routes::Routes;
use super::writer::Writer;

/// Default output credit of a port stream.
pub const DEFAULT_WINDOW: u64 = 256 * 1024;
/// Largest guest-to-host chunk.
const CHUNK: usize = 64 * 1024;
/// Bound on connecting to the guest port.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How one direction ended.
enum Half {
    /// Its `eof` went through.
    Done,
    /// The host sent `STREAM_CLOSE` (its `STREAM_END` is the payload).
    Closed(Box<Message>),
    /// The socket failed, or the host's input was refused.
    Failed(String),
    /// The agent connection is gone: nothing more to send.
    Gone,
}

fn end(reason: pb::StreamEndReason, message: impl Into<String>) -> Message {
    Message::StreamEnd(pb::StreamEnd {
        reason: reason as i32,
        message: message.into(),
    })
}

fn connect_error(port: u16, e: &std::io::Error) -> Message {
    let errno = e.raw_os_error().unwrap_or(0);
    let code = if errno == 0 {
        pb::ErrorCode::Io
    } else {
        code_for_errno(errno)
    };
    error(
        code,
        format!("connect 127.0.0.1:{port}: {}", os_error_text(e)),
        errno,
    )
}

/// Runs port stream `seq` (see the module doc).
pub async fn run(
    req: pb::PortOpen,
    seq: u32,
    credit: Arc<Credit>,
    input: Arc<Input>,
    writer: Writer,
    routes: Routes,
) {
    let port = req.port as u16;
    let consumer = Consumer::new(input);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(("127.0.0.1", port)));
    let stream = tokio::select! {
        r = connected => match r {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return finish(&routes, seq, &writer, connect_error(port, &e)).await,
            Err(_) => {
                let e = std::io::Error::from_raw_os_error(libc::ETIMEDOUT);
                return finish(&routes, seq, &writer, connect_error(port, &e)).await;
            }
        },
        _ = closed(&credit) => {
            return match credit.take_abort() {
                Some(m) => finish(&routes, seq, &writer, m).await,
                None => routes.remove(seq),
            };
        }
    };
    let _ = stream.set_nodelay(true);
    tracing::debug!(seq, port, "port stream connected");
    if writer
        .send_data(seq, &Message::PortOpened(pb::PortOpened {}))
        .await
        .is_err()
    {
        return routes.remove(seq);
    }
    let (rd, wr) = stream.into_split();
    let chunk = chunk_max(writer.max_frame_len()).min(CHUNK);
    let down = down(rd, seq, &credit, &writer, chunk);
    let up = up(wr, seq, &consumer, &writer);
    tokio::pin!(down, up);
    let (mut down_done, mut up_done) = (false, false);
    let outcome = loop {
        let h = tokio::select! {
            h = &mut down, if !down_done => { down_done = true; h }
            h = &mut up, if !up_done => { up_done = true; h }
        };
        match h {
            Half::Done if down_done && up_done => {
                break end(pb::StreamEndReason::Finished, "");
            }
            Half::Done => {}
            Half::Closed(m) => break *m,
            Half::Failed(why) => break end(pb::StreamEndReason::Failed, why),
            Half::Gone => return routes.remove(seq),
        }
    };
    tracing::debug!(seq, port, "port stream ended");
    finish(&routes, seq, &writer, outcome).await;
}

/// Resolves once the stream's credit is closed (`STREAM_CLOSE` or the
/// connection went away).
async fn closed(credit: &Credit) {
    loop {
        let n = credit.notified();
        if credit.is_closed() {
            return;
        }
        n.await;
    }
}

/// Guest socket → host, within the output credit.
async fn down(
    mut rd: OwnedReadHalf,
    seq: u32,
    credit: &Credit,
    writer: &Writer,
    chunk: usize,
) -> Half {
    let mut buf = vec![0u8; chunk];
    loop {
        let notified = credit.notified();
        if credit.is_closed() {
            return match credit.take_abort() {
                Some(m) => Half::Closed(Box::new(m)),
                None => Half::Gone,
            };
        }
        let avail = credit.available().min(chunk as u64) as usize;
        if avail == 0 {
            notified.await;
            continue;
        }
        let n = tokio::select! {
            r = rd.read(&mut buf[..avail]) => match r {
                Ok(n) => n,
                Err(e) => return Half::Failed(format!("reading the guest socket: {}", os_error_text(&e))),
            },
            _ = notified => continue,
        };
        let msg = Message::PortData(pb::PortData {
            data: Bytes::copy_from_slice(&buf[..n]),
            eof: n == 0,
        });
        credit.take(n as u64);
        if writer.send_data(seq, &msg).await.is_err() {
            return Half::Gone;
        }
        if n == 0 {
            return Half::Done;
        }
    }
}

/// Host → guest socket, returning input credit as the socket takes bytes.
async fn up(mut wr: OwnedWriteHalf, seq: u32, input: &Consumer, writer: &Writer) -> Half {
    loop {
        match input.next().await {
            Next::Data(d) => {
                if let Err(e) = wr.write_all(&d).await {
                    return Half::Failed(format!(
                        "writing the guest socket: {}",
                        os_error_text(&e)
                    ));
                }
                if let Some(bytes) = input.consumed(d.len()) {
                    let w = Message::WindowUpdate(pb::WindowUpdate { bytes });
                    if writer.send(seq, &w).await.is_err() {
                        return Half::Gone;
                    }
                }
            }
            Next::Eof => {
                // Half-close: the guest program reads EOF, and can still answer.
                let _ = wr.shutdown().await;
                return Half::Done;
            }
            Next::HungUp => return Half::Gone,
            Next::Aborted(m) if matches!(*m, Message::StreamEnd(_)) => return Half::Closed(m),
            Next::Aborted(err) => {
                let why = match &*err {
                    Message::Error(e) => e.message.clone(),
                    other => other.message_type().name().to_string(),
                };
                // The host learns why before the end.
                let _ = writer.send_data(seq, &err).await;
                return Half::Failed(why);
            }
        }
    }
}

/// Sends the terminal frame after forgetting the route.
async fn finish(routes: &Routes, seq: u32, writer: &Writer, msg: Message) {
    routes.remove(seq);
    let _ = writer.send_data(seq, &msg).await;
}
