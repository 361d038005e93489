//! A follower: sends a [`Proc`]'s output from its ring to one connection,
//! from a cursor, within the host's output credit, then the exit.
//!
//! Used by `ATTACH` (each attacher its own cursor; a slow one falls behind
//! and the chunk offsets jump over what the ring overwrote) and by a
//! foreground pty session (lossless: the process is held back instead).

use std::sync::Arc;

use hearth_proto::{pb, Message};

use super::credit::Credit;
use super::exec::signal_group;
use super::lifecycle::Ctl;
use super::procs::Proc;
use super::writer::Writer;

pub struct Follow {
    pub proc: Arc<Proc>,
    /// First offset to send.
    pub from: u64,
    pub writer: Writer,
    pub seq: u32,
    pub credit: Arc<Credit>,
    /// The follower's own control (its route's).
    pub ctl: Arc<Ctl>,
    pub chunk_max: usize,
    /// A foreground session: lossless, and ending it ends the process.
    pub foreground: bool,
}

/// How following ended.
pub enum Ended {
    /// The process exited and everything up to its end was sent.
    Exit(pb::ExecExit),
    /// The connection is gone or the attach was ended.
    Gone,
}

pub async fn follow(f: Follow) -> Ended {
    let Follow {
        proc,
        from,
        writer,
        seq,
        credit,
        ctl,
        chunk_max,
        foreground,
    } = f;
    let mut rx = proc.subscribe();
    let mut cursor = from;
    let mut index = [0u64; 2];
    let mut gone = false;
    let mut ended = false;
    loop {
        rx.borrow_and_update();
        if credit.is_closed() && !gone {
            gone = true;
            if foreground {
                proc.release(None);
            }
        }
        if gone && !foreground {
            return Ended::Gone;
        }
        let max = if gone {
            chunk_max
        } else {
            (credit.available() as usize).min(chunk_max)
        };
        let (piece, exit) = {
            let s = proc.lock();
            let done = s.exit.is_some() && cursor.max(s.ring.start()) >= s.ring.end();
            (s.ring.read(cursor, max), s.exit.clone().filter(|_| done))
        };
        if let Some(p) = piece {
            let n = p.data.len() as u64;
            cursor = p.offset + n;
            if gone {
                continue;
            }
            credit.take(n);
            let k = p.is_stderr as usize;
            let chunk = pb::OutputChunk {
                index: index[k],
                data: p.data.into(),
                offset: p.offset,
            };
            index[k] += 1;
            let msg = if p.is_stderr {
                Message::ExecStderr(chunk)
            } else {
                Message::ExecStdout(chunk)
            };
            if writer.send_data(seq, &msg).await.is_err() {
                gone = true;
            }
            if foreground {
                proc.release(if gone { None } else { Some(cursor) });
            }
            continue;
        }
        if let Some(x) = exit {
            return if gone { Ended::Gone } else { Ended::Exit(x) };
        }
        tokio::select! {
            _ = rx.changed() => {}
            _ = credit.notified(), if !gone => {}
            _ = ctl.woken() => {
                let orders = ctl.take();
                for report in &orders.reports {
                    if !gone && writer.send(seq, report).await.is_err() {
                        gone = true;
                    }
                }
                if orders.kill && foreground {
                    // The host broke this session's input: the process goes.
                    signal_group(proc.pid, libc::SIGKILL);
                }
                if let (Some(grace), false) = (orders.end, ended) {
                    ended = true;
                    if foreground {
                        proc.ctl.end(grace);
                    } else {
                        return Ended::Gone;
                    }
                }
            }
        }
    }
}
