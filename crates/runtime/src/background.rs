//! Background processes and pseudo-terminals: [`DetachSpec`] starts a process
//! that outlives the connection, [`ProcessInfo`] lists them, [`AttachStream`]
//! follows one (its retained output, then live, with [`AttachEvent::Dropped`]
//! where a ring buffer overwrote bytes), and [`PtySize`] asks for a terminal.

use bytes::Bytes;
pub use hearth_client::ProcessRef;
use hearth_client::{pb, Detached, ExecControl, ExecEvent, ExecHandle};

use crate::agent::Agent;
use crate::error::{Error, Result};
use crate::exec::{ExecExit, ExecSpec, Outcome};

/// A terminal's size and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
    /// `TERM` for the command (empty: the agent's default, `xterm`).
    pub term: String,
}

impl PtySize {
    pub(crate) fn to_pb(&self) -> pb::PtySpec {
        pb::PtySpec {
            rows: self.rows as u32,
            cols: self.cols as u32,
            term: self.term.clone(),
        }
    }
}

/// A background process to start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DetachSpec {
    /// What to run (its `timeout` applies; `stdin_open` keeps a stdin that
    /// attachers write to).
    pub exec: ExecSpec,
    /// A name unique among running processes.
    pub tag: Option<String>,
    /// Output ring buffer in bytes (0: the agent's default, 1 MiB).
    pub buffer_bytes: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessState {
    Running,
    Exited,
}

impl ProcessState {
    pub fn as_str(self) -> &'static str {
        match self {
            ProcessState::Running => "running",
            ProcessState::Exited => "exited",
        }
    }
}

/// One background process as the agent lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    pub pid: u32,
    pub tag: Option<String>,
    pub argv: Vec<String>,
    pub state: ProcessState,
    pub started_unix_ms: u64,
    /// Set once it exited.
    pub outcome: Option<Outcome>,
    pub pty: bool,
    /// Bytes of output so far.
    pub output_bytes: u64,
    /// Offset of the oldest byte still retained.
    pub retained_from: u64,
    pub buffer_bytes: u32,
}

impl ProcessInfo {
    fn from_pb(p: pb::ProcessInfo) -> Self {
        let exited = p.state == pb::ProcessState::Exited as i32;
        ProcessInfo {
            pid: p.pid,
            tag: (!p.tag.is_empty()).then_some(p.tag),
            argv: p.argv,
            state: if exited {
                ProcessState::Exited
            } else {
                ProcessState::Running
            },
            started_unix_ms: p.started_unix_ms,
            outcome: p.outcome.as_ref().map(|o| Outcome::from_pb(Some(o))),
            pty: p.pty,
            output_bytes: p.output_bytes,
            retained_from: p.retained_from,
            buffer_bytes: p.buffer_bytes,
        }
    }
}

/// One event of an attach.
#[derive(Debug, Clone, PartialEq)]
pub enum AttachEvent {
    Stdout(Bytes),
    Stderr(Bytes),
    /// This many bytes were overwritten before they could be sent.
    Dropped(u64),
    Exit(ExecExit),
}

/// Where an attach started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    pub pid: u32,
    pub tag: Option<String>,
    /// Offset of the first byte that follows.
    pub offset: u64,
    /// Bytes asked for that were already overwritten.
    pub dropped: u64,
    pub pty: bool,
    pub stdin_open: bool,
}

/// An attach to a background process. Dropping it leaves the process running.
pub struct AttachStream {
    handle: ExecHandle,
    label: String,
    attached: Attached,
    pending: Option<AttachEvent>,
}

impl AttachStream {
    pub fn attached(&self) -> &Attached {
        &self.attached
    }

    /// Offset of the next byte expected.
    pub fn next_offset(&self) -> u64 {
        self.handle.next_offset()
    }

    /// Stdin (when the process takes it) and signals to its group.
    pub fn control(&self) -> ExecControl {
        self.handle.control()
    }

    /// Resizes the process's pty.
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        resize(&self.handle.control(), &self.label, rows, cols).await
    }

    /// The next event; `None` after the exit.
    pub async fn next(&mut self) -> Result<Option<AttachEvent>> {
        if let Some(ev) = self.pending.take() {
            return Ok(Some(ev));
        }
        let ev = self
            .handle
            .next_event()
            .await
            .map_err(|e| Error::agent(format!("{}: the attach failed", self.label), e))?;
        let ev = match ev {
            Some(ExecEvent::Stdout(b)) => AttachEvent::Stdout(b),
            Some(ExecEvent::Stderr(b)) => AttachEvent::Stderr(b),
            Some(ExecEvent::Exit(x)) => return Ok(Some(AttachEvent::Exit(ExecExit::from_pb(&x)))),
            Some(ExecEvent::Started { .. }) => {
                return Err(Error::Internal(format!(
                    "{}: a second ATTACHED",
                    self.label
                )))
            }
            None => return Ok(None),
        };
        let gap = self.handle.gap();
        if gap > 0 {
            self.pending = Some(ev);
            return Ok(Some(AttachEvent::Dropped(gap)));
        }
        Ok(Some(ev))
    }
}

pub(crate) async fn resize(ctl: &ExecControl, label: &str, rows: u16, cols: u16) -> Result<()> {
    ctl.resize(rows, cols)
        .await
        .map_err(|e| Error::agent(format!("{label}: resizing the pty"), e))
}

impl Agent {
    /// Starts a background process; returns its pid.
    pub async fn exec_detached(&self, spec: &DetachSpec) -> Result<u32> {
        spec.exec.validate()?;
        if !spec.exec.stdin_inline() {
            return Err(Error::InvalidSpec(format!(
                "a background process takes at most {} bytes of initial stdin",
                crate::exec::INLINE_STDIN_MAX
            )));
        }
        let mut req = spec.exec.to_start(self.base_env(), self.default_user());
        req.stdin_open = spec.exec.stdin_open;
        req.tag = spec.tag.clone().unwrap_or_default();
        req.buffer_bytes = spec.buffer_bytes;
        let label = self.label().to_string();
        match self.client().exec_detached(req).await {
            Ok(Detached::Started { pid }) => Ok(pid),
            Ok(Detached::NeverStarted(x)) => Err(Error::InvalidSpec(format!(
                "{:?} {}",
                spec.exec.argv[0],
                Outcome::from_pb(x.outcome.as_ref())
            ))),
            Err(e) => Err(Error::agent(
                format!(
                    "{label}: cannot start {:?} in the background",
                    spec.exec.argv[0]
                ),
                e,
            )),
        }
    }

    pub async fn processes(&self) -> Result<Vec<ProcessInfo>> {
        let v = self
            .client()
            .processes()
            .await
            .map_err(|e| Error::agent(format!("{}: listing processes", self.label()), e))?;
        Ok(v.into_iter().map(ProcessInfo::from_pb).collect())
    }

    pub async fn attach(
        &self,
        target: &ProcessRef,
        from_offset: Option<u64>,
    ) -> Result<AttachStream> {
        let handle = self
            .client()
            .attach(target, from_offset)
            .await
            .map_err(|e| Error::agent(format!("{}: attaching to {target}", self.label()), e))?;
        let a = handle.attached().cloned().unwrap_or_default();
        Ok(AttachStream {
            handle,
            label: self.label().to_string(),
            attached: Attached {
                pid: a.pid,
                tag: (!a.tag.is_empty()).then_some(a.tag),
                offset: a.offset,
                dropped: a.dropped,
                pty: a.pty,
                stdin_open: a.stdin_open,
            },
            pending: None,
        })
    }

    pub async fn kill_process(&self, target: &ProcessRef, signal: i32) -> Result<()> {
        self.client()
            .kill_process(target, signal)
            .await
            .map_err(|e| Error::agent(format!("{}: signalling {target}", self.label()), e))
    }
}
