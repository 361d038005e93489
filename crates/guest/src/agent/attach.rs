//! `ATTACH`: follows a background process from an offset — the retained
//! output first, then live, with no gap or repeat at the seam (one cursor
//! over one ring). `ATTACHED` says where it starts and how many asked-for
//! bytes were already overwritten; chunks carry their offsets; the
//! process's `EXEC_EXIT` ends it. `EXEC_STDIN`, `EXEC_SIGNAL`,
//! `WINDOW_UPDATE` and `PTY_RESIZE` on the attach's seq work as for a
//! session. Closing the connection ends the attach, not the process.

use std::sync::Arc;

use hearth_proto::message::error;
use hearth_proto::{pb, Message};

use super::credit::Credit;
use super::follow::{self, Ended, Follow};
use super::input::Input;
use super::lifecycle::Ctl;
use super::procs::Target;
use super::routes::{Route, Routes};
use super::writer::Writer;
use super::{detach, stdin, stdin_close, Shared};

pub struct Params {
    pub window: u64,
    pub input_window: u64,
    pub chunk_max: usize,
}

pub async fn run(
    req: pb::Attach,
    seq: u32,
    writer: Writer,
    routes: Routes,
    shared: Arc<Shared>,
    params: Params,
) {
    let target = Target::new(req.pid, &req.tag);
    let Some(proc) = shared.procs.find(&target) else {
        let lost = match target {
            Target::Pid(pid) => shared.restore.lost_reason(pid),
            Target::Tag(_) => None,
        };
        let msg = lost.unwrap_or_else(|| format!("no background process with {target}"));
        let err = error(pb::ErrorCode::NotFound, msg, 0);
        let _ = writer.send(seq, &err).await;
        return;
    };
    let (start, end) = {
        let s = proc.lock();
        (s.ring.start(), s.ring.end())
    };
    let want = req.from_offset.unwrap_or(start);
    if want > end {
        let err = error(
            pb::ErrorCode::InvalidArgument,
            format!(
                "from_offset {want} is beyond the {end} bytes process {} has written",
                proc.pid
            ),
            0,
        );
        let _ = writer.send(seq, &err).await;
        return;
    }
    let from = want.max(start);
    let takes_input = proc.pty.is_some() || proc.stdin().is_some();
    let credit = Credit::new(params.window);
    let input_window = req.input_credit.then_some(params.input_window);
    let input = takes_input.then(|| Input::new(input_window));
    let ctl = Ctl::new();
    if !routes.insert(
        seq,
        Route::Exec {
            ctl: ctl.clone(),
            credit: credit.clone(),
            pgid: proc.pid,
            stdin: input.clone(),
            pty: proc.pty.clone(),
        },
    ) {
        let err = error(
            pb::ErrorCode::DuplicateSeq,
            format!("seq {seq} is already in flight"),
            0,
        );
        let _ = writer.send(seq, &err).await;
        return;
    }
    let attached = Message::Attached(pb::Attached {
        pid: proc.pid as u32,
        tag: proc.tag.clone(),
        offset: from,
        dropped: from - want,
        pty: proc.pty.is_some(),
        stdin_open: takes_input,
    });
    let _ = writer.send(seq, &attached).await;
    let feed = match &input {
        Some(_) => stdin::spawn(
            detach::input_fd(&proc),
            Default::default(),
            input.clone(),
            Some((writer.clone(), seq)),
        ),
        None => None,
    };
    tracing::debug!(seq, pid = proc.pid, from, "attached");
    // PROCESS_STDIN_CLOSE ends this attach's input too, so its copy of the
    // pipe closes and the process reads end of file.
    let closed = stdin_close::on_close(
        proc.stdin_closed(),
        input.clone().filter(|_| proc.pty.is_none()),
    );
    let follow = follow::follow(Follow {
        proc,
        from,
        writer: writer.clone(),
        seq,
        credit,
        ctl,
        chunk_max: params.chunk_max,
        foreground: false,
    });
    let ended = tokio::select! {
        biased;
        ended = follow => ended,
        never = closed => match never {},
    };
    if let Some(t) = feed {
        t.abort();
        let _ = t.await;
    }
    routes.remove(seq);
    if let Ended::Exit(x) = ended {
        let _ = writer.send_data(seq, &Message::ExecExit(x)).await;
    }
}
