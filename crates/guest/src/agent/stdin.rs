//! Feeding a child's stdin: the initial bytes of the request, then the
//! session's `EXEC_STDIN` data from its [`Input`] queue, returning input
//! credit with `WINDOW_UPDATE` as the child takes the bytes.
//!
//! A child that closes its stdin (EPIPE) does not stall the host: the rest of
//! the input is taken and dropped, and its credit returned, as the protocol
//! drops stdin for a finished session.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use bytes::Bytes;
use hearth_proto::{pb, Message};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

use super::input::{Consumer, Input, Next};
use super::writer::Writer;

/// Where returned input credit goes: the session's connection and seq.
pub type CreditTo = Option<(Writer, u32)>;

/// Starts the task that writes the child's stdin; `None` when there is
/// nothing to write (the child's stdin then reads end of file).
pub fn spawn(
    stdin: Option<OwnedFd>,
    initial: Bytes,
    more: Option<Arc<Input>>,
    credit_to: CreditTo,
) -> Option<JoinHandle<()>> {
    let fd = stdin?;
    if initial.is_empty() && more.is_none() {
        // Closing our end gives the child end of file.
        return None;
    }
    let w = match pipe::Sender::from_owned_fd_unchecked(fd) {
        Ok(w) => w,
        Err(e) => {
            tracing::debug!(error = %e, "registering the child's stdin failed");
            return None;
        }
    };
    Some(tokio::spawn(feed(
        w,
        initial,
        more.map(Consumer::new),
        credit_to,
    )))
}

async fn feed(mut w: pipe::Sender, initial: Bytes, more: Option<Consumer>, credit_to: CreditTo) {
    let mut broken = !initial.is_empty() && w.write_all(&initial).await.is_err();
    let Some(input) = more else { return };
    loop {
        let data = match input.next().await {
            Next::Data(d) => d,
            // Returning drops `w`: the child reads end of file.
            Next::Eof | Next::HungUp | Next::Aborted(_) => return,
        };
        let mut off = 0;
        while off < data.len() {
            let n = if broken {
                data.len() - off
            } else {
                match w.write(&data[off..]).await {
                    Ok(n) if n > 0 => n,
                    // EPIPE or a closed pipe: drop what the child will never read.
                    _ => {
                        broken = true;
                        continue;
                    }
                }
            };
            off += n;
            if let (Some(bytes), Some((writer, seq))) = (input.consumed(n), &credit_to) {
                let m = Message::WindowUpdate(pb::WindowUpdate { bytes });
                // A closed connection ends the session soon; nothing to do here.
                let _ = writer.send(*seq, &m).await;
            }
        }
    }
}
