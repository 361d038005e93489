//! Background processes (`CAPABILITY_BACKGROUND`): starting one detached,
//! listing, attaching (replay then live, through an [`ExecHandle`]) and
//! signalling them.

use std::sync::atomic::AtomicI64;
use std::sync::Arc;

use hearth_proto::{pb, Message};

use crate::conn::{unexpected, Client, StreamKind, StreamSpec};
use crate::error::ClientError;
use crate::exec::{ExecHandle, DEFAULT_EXEC_WINDOW};

/// How a detached start ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Detached {
    Started {
        pid: u32,
    },
    /// It never ran (the `EXEC_EXIT` with `never_started`).
    NeverStarted(pb::ExecExit),
}

/// Names a background process: a pid or a tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessRef {
    Pid(u32),
    Tag(String),
}

impl ProcessRef {
    /// A number is a pid, anything else a tag (tags are never all digits).
    pub fn parse(s: &str) -> ProcessRef {
        match s.parse::<u32>() {
            Ok(p) if p > 0 => ProcessRef::Pid(p),
            _ => ProcessRef::Tag(s.to_string()),
        }
    }

    pub(crate) fn parts(&self) -> (u32, String) {
        match self {
            ProcessRef::Pid(p) => (*p, String::new()),
            ProcessRef::Tag(t) => (0, t.clone()),
        }
    }
}

impl std::fmt::Display for ProcessRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessRef::Pid(p) => write!(f, "pid {p}"),
            ProcessRef::Tag(t) => write!(f, "tag {t:?}"),
        }
    }
}

impl Client {
    /// Starts a background process (`req.detach` is set here); it outlives
    /// this connection.
    pub async fn exec_detached(&self, mut req: pb::ExecStart) -> Result<Detached, ClientError> {
        self.require(pb::Capability::Background, "background processes")?;
        if req.pty.is_some() {
            self.require(pb::Capability::Pty, "exec on a pty")?;
        }
        req.detach = true;
        req.input_credit = false;
        match self.request(Message::ExecStart(req)).await? {
            Message::ExecStarted(s) => Ok(Detached::Started { pid: s.pid }),
            Message::ExecExit(x) => Ok(Detached::NeverStarted(x)),
            m => Err(unexpected("detached exec", m)),
        }
    }

    /// Background processes, running and recently exited.
    pub async fn processes(&self) -> Result<Vec<pb::ProcessInfo>, ClientError> {
        self.require(pb::Capability::Background, "background processes")?;
        match self
            .request(Message::ProcessList(pb::ProcessList {}))
            .await?
        {
            Message::ProcessListResult(r) => Ok(r.processes),
            m => Err(unexpected("process list", m)),
        }
    }

    /// Sends `signal` to a background process's group.
    pub async fn kill_process(&self, target: &ProcessRef, signal: i32) -> Result<(), ClientError> {
        self.require(pb::Capability::Background, "background processes")?;
        let (pid, tag) = target.parts();
        match self
            .request(Message::ProcessKill(pb::ProcessKill { pid, tag, signal }))
            .await?
        {
            Message::Ok(_) => Ok(()),
            m => Err(unexpected("process kill", m)),
        }
    }

    /// Attaches to a background process from `from_offset` (`None`: the
    /// oldest byte retained). Returns once the agent answered `ATTACHED`
    /// ([`ExecHandle::attached`]); an unknown process is an error here.
    /// Output events follow ([`ExecHandle::gap`] tells the bytes overwritten
    /// before each), then the exit. Dropping the handle leaves the process
    /// running.
    pub async fn attach(
        &self,
        target: &ProcessRef,
        from_offset: Option<u64>,
    ) -> Result<ExecHandle, ClientError> {
        self.require(pb::Capability::Background, "background processes")?;
        let (pid, tag) = target.parts();
        let window = DEFAULT_EXEC_WINDOW;
        let credit = self
            .flow_control()
            .then(|| Arc::new(AtomicI64::new(window as i64)));
        let input = self.input_credit();
        let req = pb::Attach {
            pid,
            tag,
            from_offset,
            window,
            input_credit: input.is_some(),
        };
        let spec = StreamSpec {
            kind: StreamKind::Exec { started: false },
            credit: credit.clone(),
            input: input.clone(),
        };
        let (seq, rx) = self.open_stream(Message::Attach(req), spec).await?;
        let mut h = ExecHandle::new(self.clone(), seq, rx, (credit, input, window), true);
        h.next_offset = from_offset.unwrap_or(0);
        match h.next_event().await? {
            Some(crate::ExecEvent::Started { .. }) if h.attached().is_some() => Ok(h),
            other => Err(ClientError::Protocol {
                reason: format!("attach: expected ATTACHED, got {other:?}"),
            }),
        }
    }
}
