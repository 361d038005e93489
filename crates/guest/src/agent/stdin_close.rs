//! `PROCESS_STDIN_CLOSE`: closes a running background process's stdin pipe
//! for good. The agent's own write end is dropped and every attach's copy
//! with it (each attach feeding the pipe gets end of input after what it
//! queued), so the process reads end of file once the last copy closes.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use hearth_proto::message::error;
use hearth_proto::{pb, Message};

use super::input::Input;
use tokio::sync::watch;

use super::procs::{Procs, Target};

/// `OK`, or `NOT_FOUND` (unknown or exited) / `INVALID_ARGUMENT` (no stdin
/// pipe, or closed already).
pub fn close(procs: &Procs, req: &pb::ProcessStdinClose) -> Message {
    let target = Target::new(req.pid, &req.tag);
    match procs.find(&target) {
        None => error(
            pb::ErrorCode::NotFound,
            format!("no background process with {target}"),
            0,
        ),
        Some(p) if !p.running() => error(
            pb::ErrorCode::NotFound,
            format!("background process {} ({target}) has already exited", p.pid),
            0,
        ),
        Some(p) if p.pty.is_some() => error(
            pb::ErrorCode::InvalidArgument,
            format!(
                "background process {} runs on a pty: it has no stdin pipe to close",
                p.pid
            ),
            0,
        ),
        Some(p) => {
            if p.close_stdin() {
                Message::Ok(pb::Ok {})
            } else {
                error(
                    pb::ErrorCode::InvalidArgument,
                    format!(
                        "background process {} has no open stdin (started without stdin_open, or closed already)",
                        p.pid
                    ),
                    0,
                )
            }
        }
    }
}

/// Resolves never; when the process's stdin is closed (`closed`, from
/// [`super::procs::Proc::stdin_closed`]), ends `input` (an attach's queue to the pipe) so
/// its feeder drops its copy of the pipe.
pub async fn on_close(mut closed: watch::Receiver<bool>, input: Option<Arc<Input>>) -> Infallible {
    if let Some(input) = input {
        if closed.wait_for(|c| *c).await.is_ok() {
            input.push(Bytes::new(), true);
        }
    }
    std::future::pending().await
}
