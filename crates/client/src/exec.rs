//! Exec: the one-shot `EXEC` and the streaming session behind [`ExecHandle`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use hearth_proto::{pb, Message, MessageType};
use tokio::sync::mpsc;
use tracing::debug;

use crate::conn::{unexpected, Client, Reply, StreamKind, StreamSpec};
use crate::credit::{Ended, InputCredit};
use crate::error::ClientError;

/// Largest stdin frame sent under input credit: a few per window, so the
/// agent's returns keep the pipe full.
const CREDITED_STDIN_CHUNK: usize = 256 * 1024;

/// The agent's default exec window when `ExecStart.window` is 0.
pub const DEFAULT_EXEC_WINDOW: u32 = 256 * 1024;

/// One event of a streaming exec session.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    Started { pid: u32 },
    Stdout(Bytes),
    Stderr(Bytes),
    Exit(pb::ExecExit),
}

/// A running exec session. Dropping it before the exit kills the process group.
pub struct ExecHandle {
    client: Client,
    seq: u32,
    rx: mpsc::UnboundedReceiver<Reply>,
    credit: Option<Arc<AtomicI64>>,
    /// Stdin credit granted by the agent, when it grants any.
    input: Option<Arc<InputCredit>>,
    window: u32,
    /// Data handed to the caller whose credit has not been returned yet.
    consumed: u32,
    next_index: [u64; 2],
    started: bool,
    finished: bool,
    /// An attach: chunk offsets are checked, and dropping the handle leaves
    /// the process running.
    pub(crate) attach: bool,
    pub(crate) next_offset: u64,
    /// The `ATTACHED` answer of an attach.
    pub(crate) attached: Option<pb::Attached>,
    /// Bytes the last chunk's offset jumped over (an attach that fell behind).
    pub(crate) gap: u64,
}

impl Client {
    /// Runs a command and collects its output (one `EXEC`/`EXEC_RESULT` pair).
    pub async fn exec(&self, req: pb::Exec) -> Result<pb::ExecResult, ClientError> {
        self.require(pb::Capability::OneshotExec, "one-shot exec")?;
        if req.limits.is_some() {
            self.require(pb::Capability::ExecLimits, "exec resource limits")?;
        }
        match self.request(Message::Exec(req)).await? {
            Message::ExecResult(r) => Ok(r),
            m => Err(unexpected("exec", m)),
        }
    }

    /// Opens a streaming exec session. With `stdin_open`, stdin written
    /// through [`ExecControl::write_stdin`] follows the agent's input credit
    /// when it grants one (`CAPABILITY_INPUT_FLOW_CONTROL`).
    pub async fn exec_stream(&self, mut req: pb::ExecStart) -> Result<ExecHandle, ClientError> {
        self.require(pb::Capability::ExecStream, "streaming exec")?;
        if req.pty.is_some() {
            self.require(pb::Capability::Pty, "exec on a pty")?;
        }
        if req.detach {
            return Err(ClientError::Protocol {
                reason: "a detached exec is started with exec_detached".into(),
            });
        }
        if req.limits.is_some() {
            self.require(pb::Capability::ExecLimits, "exec resource limits")?;
        }
        let window = if req.window == 0 {
            DEFAULT_EXEC_WINDOW
        } else {
            req.window
        };
        let credit = self
            .flow_control()
            .then(|| Arc::new(AtomicI64::new(window as i64)));
        let input = if req.stdin_open {
            self.input_credit()
        } else {
            None
        };
        req.input_credit = input.is_some();
        let spec = StreamSpec {
            kind: StreamKind::Exec { started: false },
            credit: credit.clone(),
            input: input.clone(),
        };
        let (seq, rx) = self.open_stream(Message::ExecStart(req), spec).await?;
        Ok(ExecHandle::new(
            self.clone(),
            seq,
            rx,
            (credit, input, window),
            false,
        ))
    }
}

/// Sends stdin and signals to a session from another task; cheap to clone.
#[derive(Clone, Debug)]
pub struct ExecControl {
    client: Client,
    seq: u32,
    input: Option<Arc<InputCredit>>,
}

impl ExecControl {
    /// Sends bytes to the child's stdin (the session must have `stdin_open`).
    ///
    /// Under input credit this waits while the agent's window is used up, so
    /// a child that stops reading stalls this call (and only this session).
    /// Once the session has ended, the rest is dropped (as the agent drops
    /// stdin for a finished session) and this returns `Ok`.
    pub async fn write_stdin(&self, data: Bytes) -> Result<(), ClientError> {
        // Leave room for the protobuf framing of the field.
        let mut chunk = self.client.max_payload().saturating_sub(64).max(1);
        if self.input.is_some() {
            chunk = chunk.min(CREDITED_STDIN_CHUNK);
        }
        let mut rest = data;
        while !rest.is_empty() {
            let want = rest.len().min(chunk);
            let n = match &self.input {
                None => want,
                Some(input) => match input.reserve(want).await {
                    Ok(n) => n,
                    Err(Ended::Finished) => {
                        debug!(
                            seq = self.seq,
                            left = rest.len(),
                            "session ended; stdin dropped"
                        );
                        return Ok(());
                    }
                    Err(Ended::Closed(reason)) => {
                        return Err(ClientError::ConnectionClosed { reason })
                    }
                },
            };
            let part = rest.split_to(n);
            let m = Message::ExecStdin(pb::StdinData {
                data: part,
                eof: false,
            });
            self.client.send_frame(m.into_frame(self.seq)).await?;
        }
        Ok(())
    }

    /// Closes the child's stdin.
    pub async fn close_stdin(&self) {
        let m = Message::ExecStdin(pb::StdinData {
            data: Bytes::new(),
            eof: true,
        });
        if let Err(e) = self.client.send_frame(m.into_frame(self.seq)).await {
            debug!(seq = self.seq, error = %e, "close_stdin not sent");
        }
    }

    /// Sends `sig` to the session's process group.
    pub async fn signal(&self, sig: i32) {
        let m = Message::ExecSignal(pb::ExecSignal { signal: sig });
        if let Err(e) = self.client.send_frame(m.into_frame(self.seq)).await {
            debug!(seq = self.seq, error = %e, "signal not sent");
        }
    }

    /// Resizes the session's pty (`PTY_RESIZE`); the agent answers an error
    /// (as a report) when it has none.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<(), ClientError> {
        self.client.require(pb::Capability::Pty, "resizing a pty")?;
        let m = Message::PtyResize(pb::PtyResize {
            rows: rows as u32,
            cols: cols as u32,
        });
        self.client.send_frame(m.into_frame(self.seq)).await
    }
}

/// Output and input credit of a stream: (output, input, window).
pub(crate) type Credits = (Option<Arc<AtomicI64>>, Option<Arc<InputCredit>>, u32);

impl ExecHandle {
    pub(crate) fn new(
        client: Client,
        seq: u32,
        rx: mpsc::UnboundedReceiver<Reply>,
        (credit, input, window): Credits,
        attach: bool,
    ) -> Self {
        ExecHandle {
            client,
            seq,
            rx,
            credit,
            input,
            window,
            consumed: 0,
            next_index: [0, 0],
            started: false,
            finished: false,
            attach,
            next_offset: 0,
            attached: None,
            gap: 0,
        }
    }

    /// A handle for stdin and signals that can move to another task.
    pub fn control(&self) -> ExecControl {
        ExecControl {
            client: self.client.clone(),
            seq: self.seq,
            input: self.input.clone(),
        }
    }

    /// The session's seq on the connection.
    pub fn seq(&self) -> u32 {
        self.seq
    }

    /// The next event, or `None` after `Exit` was returned. Returns flow-control
    /// credit to the agent as output is handed out.
    ///
    /// An `ERROR` the agent sends about a frame of a running session (a
    /// signal out of range, stdin beyond the credit) comes back as
    /// [`ClientError::Remote`] while the session goes on: calling again
    /// continues to its `Exit` (a dropped handle kills the session).
    pub async fn next_event(&mut self) -> Result<Option<ExecEvent>, ClientError> {
        if self.finished {
            return Ok(None);
        }
        let msg = match self.rx.recv().await {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                self.finished = true;
                return Err(e);
            }
            None => {
                self.finished = true;
                return Err(ClientError::ConnectionClosed {
                    reason: "the session's route was dropped".into(),
                });
            }
        };
        let ev = match msg {
            Message::ExecStarted(s) => {
                self.started = true;
                ExecEvent::Started { pid: s.pid }
            }
            Message::Attached(a) if self.attach && !self.started => {
                self.started = true;
                self.next_offset = a.offset;
                let pid = a.pid;
                self.attached = Some(a);
                ExecEvent::Started { pid }
            }
            Message::Error(e) if self.started => return Err(ClientError::remote("exec", e)),
            Message::ExecStdout(c) => {
                self.check_index(0, MessageType::ExecStdout, c.index)?;
                self.consume(c.data.len()).await?;
                self.track_offset(c.offset, c.data.len());
                ExecEvent::Stdout(c.data)
            }
            Message::ExecStderr(c) => {
                self.check_index(1, MessageType::ExecStderr, c.index)?;
                self.consume(c.data.len()).await?;
                self.track_offset(c.offset, c.data.len());
                ExecEvent::Stderr(c.data)
            }
            Message::ExecExit(x) => {
                self.finished = true;
                ExecEvent::Exit(x)
            }
            m => {
                self.finished = true;
                return Err(unexpected("exec", m));
            }
        };
        Ok(Some(ev))
    }

    /// For an attach: records how far a chunk's offset jumped past the
    /// expected one (bytes overwritten before they could be sent).
    fn track_offset(&mut self, offset: u64, len: usize) {
        if !self.attach {
            return;
        }
        self.gap = offset.saturating_sub(self.next_offset);
        self.next_offset = offset.max(self.next_offset) + len as u64;
    }

    /// For an attach: the `ATTACHED` answer, once the first event came.
    pub fn attached(&self) -> Option<&pb::Attached> {
        self.attached.as_ref()
    }

    /// For an attach: the bytes overwritten just before the output event
    /// last returned (0 when it followed on without a gap).
    pub fn gap(&self) -> u64 {
        self.gap
    }

    /// For an attach: the offset of the next byte expected.
    pub fn next_offset(&self) -> u64 {
        self.next_offset
    }

    fn check_index(&mut self, i: usize, t: MessageType, index: u64) -> Result<(), ClientError> {
        if index != self.next_index[i] {
            self.finished = true;
            return Err(ClientError::Protocol {
                reason: format!(
                    "session {}: {} chunk index {index}, expected {}",
                    self.seq,
                    t.name(),
                    self.next_index[i]
                ),
            });
        }
        self.next_index[i] += 1;
        Ok(())
    }

    async fn consume(&mut self, n: usize) -> Result<(), ClientError> {
        let Some(credit) = &self.credit else {
            return Ok(());
        };
        self.consumed = self.consumed.saturating_add(n as u32);
        if self.consumed >= self.window / 4 {
            let bytes = std::mem::take(&mut self.consumed);
            credit.fetch_add(bytes as i64, Ordering::AcqRel);
            let m = Message::WindowUpdate(pb::WindowUpdate { bytes });
            self.client.send_frame(m.into_frame(self.seq)).await?;
        }
        Ok(())
    }

    /// Sends bytes to the child's stdin (the session must have `stdin_open`).
    pub async fn write_stdin(&self, data: Bytes) -> Result<(), ClientError> {
        self.control().write_stdin(data).await
    }

    /// Closes the child's stdin.
    pub async fn close_stdin(&self) {
        self.control().close_stdin().await
    }

    /// Sends `sig` to the session's process group.
    pub async fn signal(&self, sig: i32) {
        self.control().signal(sig).await
    }

    /// Drains the output and returns the exit.
    pub async fn wait(mut self) -> Result<pb::ExecExit, ClientError> {
        loop {
            match self.next_event().await? {
                Some(ExecEvent::Exit(x)) => return Ok(x),
                Some(_) => {}
                None => {
                    return Err(ClientError::Protocol {
                        reason: format!("session {} ended without EXEC_EXIT", self.seq),
                    })
                }
            }
        }
    }
}

impl Drop for ExecHandle {
    fn drop(&mut self) {
        if !self.finished {
            if self.attach {
                // The process goes on; the agent stops sending for want of
                // credit, and ends the attach with the connection.
                return;
            }
            let m = Message::ExecSignal(pb::ExecSignal { signal: SIGKILL });
            self.client.try_send_frame(m.into_frame(self.seq));
            // Let the agent drain the dying group without waiting for credit.
            if self.credit.is_some() {
                let m = Message::WindowUpdate(pb::WindowUpdate {
                    bytes: u32::MAX / 2,
                });
                if let Some(c) = &self.credit {
                    c.fetch_add((u32::MAX / 2) as i64, Ordering::AcqRel);
                }
                self.client.try_send_frame(m.into_frame(self.seq));
            }
        }
    }
}

/// SIGKILL on Linux (the guest is always Linux).
const SIGKILL: i32 = 9;

/// Shell-style exit code for an outcome: the code when it exited, 128+signal
/// when killed (137 when the OOM killer did it), 124 on timeout, 127 when it never started (126 when the
/// program was not executable), 1 when the outcome is missing.
pub fn exit_code(outcome: Option<&pb::ExecOutcome>) -> i32 {
    use pb::exec_outcome::Kind;
    match outcome.and_then(|o| o.kind.as_ref()) {
        Some(Kind::Exited(e)) => e.code,
        Some(Kind::Killed(k)) => 128 + k.signal,
        Some(Kind::TimedOut(_)) => 124,
        Some(Kind::OomKilled(_)) => 128 + SIGKILL,
        Some(Kind::NeverStarted(n)) => {
            if n.kind == pb::SpawnErrorKind::PermissionDenied as i32 {
                126
            } else {
                127
            }
        }
        None => 1,
    }
}

/// The text for a guest errno, e.g. `No such file or directory`.
pub fn errno_text(errno: i32) -> String {
    hearth_proto::errno_text(errno)
}

/// A one-line description of an outcome, e.g. `exited with code 3`.
pub fn describe_outcome(outcome: Option<&pb::ExecOutcome>) -> String {
    use pb::exec_outcome::Kind;
    match outcome.and_then(|o| o.kind.as_ref()) {
        Some(Kind::Exited(e)) => format!("exited with code {}", e.code),
        Some(Kind::Killed(k)) => format!(
            "killed by signal {}{}",
            k.signal,
            if k.core_dumped { " (core dumped)" } else { "" }
        ),
        Some(Kind::TimedOut(t)) => format!("timed out (ended by signal {})", t.signal),
        Some(Kind::OomKilled(o)) => format!(
            "killed by the OOM killer (memory limit {})",
            crate::limits::format_bytes(o.memory_max_bytes)
        ),
        Some(Kind::NeverStarted(n)) => {
            let kind = pb::SpawnErrorKind::try_from(n.kind)
                .map(|k| k.as_str_name().to_string())
                .unwrap_or_else(|_| format!("kind {}", n.kind));
            let message = crate::error::with_errno_text(&n.message, n.errno);
            if n.errno == 0 {
                format!("never started: {kind}: {message}")
            } else {
                format!("never started: {kind}, errno {}: {message}", n.errno)
            }
        }
        None => "no outcome reported".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::exec_outcome::Kind;

    fn o(k: Kind) -> pb::ExecOutcome {
        pb::ExecOutcome { kind: Some(k) }
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(Some(&o(Kind::Exited(pb::Exited { code: 3 })))), 3);
        assert_eq!(
            exit_code(Some(&o(Kind::Killed(pb::Killed {
                signal: 9,
                core_dumped: false
            })))),
            137
        );
        assert_eq!(
            exit_code(Some(&o(Kind::TimedOut(pb::TimedOut { signal: 15 })))),
            124
        );
        let ns = |kind: pb::SpawnErrorKind| {
            o(Kind::NeverStarted(pb::NeverStarted {
                kind: kind as i32,
                errno: 2,
                message: String::new(),
            }))
        };
        assert_eq!(exit_code(Some(&ns(pb::SpawnErrorKind::NotFound))), 127);
        assert_eq!(
            exit_code(Some(&ns(pb::SpawnErrorKind::PermissionDenied))),
            126
        );
        assert_eq!(exit_code(None), 1);
    }

    #[test]
    fn never_started_names_the_errno_once() {
        for message in [
            // This agent: the OS text, no number.
            "/nope: No such file or directory",
            // Older agents: Rust's `(os error N)` suffix too.
            "/nope: No such file or directory (os error 2)",
        ] {
            let d = describe_outcome(Some(&o(Kind::NeverStarted(pb::NeverStarted {
                kind: pb::SpawnErrorKind::NotFound as i32,
                errno: 2,
                message: message.into(),
            }))));
            assert_eq!(
                d,
                "never started: SPAWN_ERROR_KIND_NOT_FOUND, errno 2: /nope: No such file or directory"
            );
        }
    }
}
