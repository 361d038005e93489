//! `PROCESS_LIST` and `PROCESS_KILL`: the agent's background processes.

use hearth_proto::message::error;
use hearth_proto::{pb, Message};

use super::exec::signal_group;
use super::procs::{Procs, Target};

/// `PROCESS_LIST_RESULT`: running and recently exited processes, by pid.
pub fn list(procs: &Procs) -> Message {
    Message::ProcessListResult(pb::ProcessListResult {
        processes: procs.list(),
    })
}

/// `PROCESS_KILL`: the signal goes to the process's whole group; `OK`, or
/// `NOT_FOUND` for an unknown or exited process.
pub fn kill(procs: &Procs, req: &pb::ProcessKill) -> Message {
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
        Some(p) => {
            signal_group(p.pid, req.signal);
            Message::Ok(pb::Ok {})
        }
    }
}
