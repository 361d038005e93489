//! `EXEC`: a session whose output is collected into one `EXEC_RESULT`.

use std::sync::Arc;

use hearth_proto::{pb, Message};

use super::exec;
use super::lifecycle::{Ctl, Registered};
use super::routes::Routes;
use super::session::{self, Credit, Io, Limits, Sink};
use super::writer::Writer;

/// Default cap per stream for one-shot execs.
pub const DEFAULT_CAP: u64 = 1024 * 1024;
/// Room left in the frame for everything but the output bytes.
const RESULT_OVERHEAD: u64 = 4096;

/// Caps for stdout and stderr such that both together fit in one frame.
pub fn clamp_caps(stdout: u64, stderr: u64, max_frame_len: u32) -> (u64, u64) {
    let budget = (max_frame_len as u64).saturating_sub(RESULT_OVERHEAD);
    let so = if stdout == 0 { DEFAULT_CAP } else { stdout };
    let se = if stderr == 0 { DEFAULT_CAP } else { stderr };
    if so.saturating_add(se) <= budget {
        return (so, se);
    }
    let half = budget / 2;
    match (so <= half, se <= half) {
        (true, _) => (so, budget - so),
        (_, true) => (budget - se, se),
        _ => (half, budget - half),
    }
}

/// Runs the one-shot exec listed as `seq` in `routes` and answers it.
pub async fn run(
    req: pb::Exec,
    seq: u32,
    ctl: Arc<Ctl>,
    writer: Writer,
    routes: Routes,
    registered: Registered,
) {
    let result = execute(req, writer.max_frame_len(), ctl).await;
    routes.remove(seq);
    let _ = writer.send(seq, &Message::ExecResult(result)).await;
    drop(registered);
}

async fn execute(req: pb::Exec, max_frame_len: u32, ctl: Arc<Ctl>) -> pb::ExecResult {
    let never = |ns: pb::NeverStarted| pb::ExecResult {
        outcome: Some(pb::ExecOutcome {
            kind: Some(pb::exec_outcome::Kind::NeverStarted(ns)),
        }),
        ..Default::default()
    };
    let spec = match exec::prepare(
        &req.argv,
        &req.env,
        &req.cwd,
        req.user.as_ref(),
        req.clear_env,
    ) {
        Ok(s) => s,
        Err(ns) => return never(ns),
    };
    let spawned = match exec::spawn_limited(&spec, !req.stdin.is_empty(), req.limits.as_ref()) {
        Ok(s) => s,
        Err(ns) => return never(ns),
    };
    let (max_stdout, max_stderr) =
        clamp_caps(req.max_stdout_bytes, req.max_stderr_bytes, max_frame_len);
    let limits = Limits {
        max_stdout,
        max_stderr,
        timeout: (req.timeout_ms > 0).then(|| std::time::Duration::from_millis(req.timeout_ms)),
    };
    let mut sink = Sink::Collect {
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    let io = Io {
        stdin: req.stdin,
        more_stdin: None,
        credit: Credit::new(u64::MAX),
        ctl,
    };
    let summary = session::run(spawned, io, limits, &mut sink, session::MAX_CHUNK).await;
    let (stdout, stderr) = match sink {
        Sink::Collect { stdout, stderr } => (stdout, stderr),
        Sink::Stream { .. } => (Vec::new(), Vec::new()),
    };
    pb::ExecResult {
        outcome: Some(pb::ExecOutcome {
            kind: Some(summary.outcome),
        }),
        stdout: stdout.into(),
        stderr: stderr.into(),
        stdout_truncated: summary.stdout_truncated,
        stderr_truncated: summary.stderr_truncated,
        duration_us: summary.duration_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_default_to_one_mib_and_fit_the_frame() {
        assert_eq!(clamp_caps(0, 0, 4 << 20), (DEFAULT_CAP, DEFAULT_CAP));
        let (a, b) = clamp_caps(10 << 20, 10 << 20, 4 << 20);
        assert!(a + b + RESULT_OVERHEAD <= 4 << 20, "{a} {b}");
        assert_eq!(a, b);
        let (a, b) = clamp_caps(3 << 20, 0, 4 << 20);
        assert_eq!(b, DEFAULT_CAP);
        assert_eq!(a + b, (4 << 20) - RESULT_OVERHEAD);
        let (a, b) = clamp_caps(0, 0, 1 << 20);
        assert_eq!(a + b, (1 << 20) - RESULT_OVERHEAD);
    }
}
