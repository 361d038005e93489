//! `EXEC_START` with `pty` (and without `detach`): a foreground session on a
//! pseudo-terminal. Like a pipe session it ends with its connection (TERM,
//! grace, KILL) and its output waits for the host's credit; unlike one, the
//! output is the terminal's (all `EXEC_STDOUT`), stdin goes to the terminal
//! and `PTY_RESIZE` resizes it.
//!
//! The process runs under [`procs::run`] with a small lossless ring and one
//! [`follow`]er that sends it to the host.

use std::sync::Arc;
use std::time::Duration;

use hearth_proto::{pb, Message};

use super::credit::Credit;
use super::follow::{self, Ended, Follow};
use super::input::Input;
use super::lifecycle::{Ctl, Registered};
use super::procs::{self, Proc};
use super::routes::{Route, Routes};
use super::writer::Writer;
use super::{detach, stdin};

/// Ring of a foreground session: output read ahead of the host's credit.
const RING: usize = 256 * 1024;

pub struct Params {
    pub window: u64,
    pub input_window: Option<u64>,
    pub chunk_max: usize,
}

/// Starts the session (the caller checked the seq and registered `ctl`).
/// The child is spawned and the route listed before this returns, so stream
/// frames the host sends right after `EXEC_START` (a `PTY_RESIZE`, stdin)
/// find it; the rest runs in its own task.
pub fn start(
    req: pb::ExecStart,
    seq: u32,
    writer: Writer,
    routes: Routes,
    registered: Registered,
    ctl: Arc<Ctl>,
    params: Params,
) {
    let s = match detach::spawn(&req) {
        Ok(s) => s,
        Err(ns) => {
            tracing::debug!(seq, argv0 = %req.argv[0], message = %ns.message, "pty exec never started");
            let exit = Message::ExecExit(pb::ExecExit {
                outcome: Some(pb::ExecOutcome {
                    kind: Some(pb::exec_outcome::Kind::NeverStarted(ns)),
                }),
                ..Default::default()
            });
            tokio::spawn(async move {
                let _registered = registered;
                let _ = writer.send_data(seq, &exit).await;
            });
            return;
        }
    };
    let pid = s.pid;
    let proc = Proc::new(
        pid,
        String::new(),
        req.argv.clone(),
        RING,
        s.master.clone(),
        None,
        true,
    );
    let credit = Credit::new(params.window);
    let input = req.stdin_open.then(|| Input::new(params.input_window));
    routes.insert(
        seq,
        Route::Exec {
            ctl: ctl.clone(),
            credit: credit.clone(),
            pgid: pid,
            stdin: input.clone(),
            pty: s.master.clone(),
        },
    );
    tokio::spawn(run(
        req, seq, writer, routes, registered, ctl, params, proc, s, credit, input,
    ));
}

#[allow(clippy::too_many_arguments)]
async fn run(
    req: pb::ExecStart,
    seq: u32,
    writer: Writer,
    routes: Routes,
    registered: Registered,
    ctl: Arc<Ctl>,
    params: Params,
    proc: Arc<Proc>,
    s: detach::Started,
    credit: Arc<Credit>,
    input: Option<Arc<Input>>,
) {
    let pid = proc.pid;
    let started = Message::ExecStarted(pb::ExecStarted { pid: pid as u32 });
    let _ = writer.send(seq, &started).await;
    let feed = stdin::spawn(
        detach::input_fd(&proc),
        req.stdin.clone(),
        input,
        Some((writer.clone(), seq)),
    );
    let timeout = (req.timeout_ms > 0).then(|| Duration::from_millis(req.timeout_ms));
    let runner = tokio::spawn(procs::run(
        proc.clone(),
        s.pidfd,
        s.output,
        s.started,
        timeout,
        registered,
        s.cgroup,
    ));
    let ended = follow::follow(Follow {
        proc,
        from: 0,
        writer: writer.clone(),
        seq,
        credit,
        ctl,
        chunk_max: params.chunk_max,
        foreground: true,
    })
    .await;
    if let Some(t) = feed {
        t.abort();
        let _ = t.await;
    }
    let _ = runner.await;
    routes.remove(seq);
    if let Ended::Exit(x) = ended {
        tracing::debug!(seq, pid, "pty session ended");
        let _ = writer.send_data(seq, &Message::ExecExit(x)).await;
    }
}
