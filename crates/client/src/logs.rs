//! The agent's own log (`AGENT_LOG`): a snapshot, or a follow stream.

use hearth_proto::{pb, Message};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::conn::{unexpected, Client, Reply, StreamKind, StreamSpec};
use crate::error::ClientError;

/// Lines the agent logged; `dropped` counts lines a follower missed because
/// they fell out of the agent's ring first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentLogBatch {
    pub lines: Vec<pb::LogLine>,
    pub dropped: u64,
}

/// A followed agent log: [`AgentLogFollow::next`] gives each batch as the
/// agent logs it. Dropping it leaves the agent's follower running until the
/// connection closes (use a connection of its own for a follow).
pub struct AgentLogFollow {
    rx: UnboundedReceiver<Reply>,
}

impl AgentLogFollow {
    /// The next batch; `None` once the stream ended.
    pub async fn next(&mut self) -> Option<Result<AgentLogBatch, ClientError>> {
        match self.rx.recv().await? {
            Ok(Message::AgentLogLines(b)) => Some(Ok(AgentLogBatch {
                lines: b.lines,
                dropped: b.dropped,
            })),
            Ok(m) => Some(Err(unexpected("agent_log", m))),
            Err(e) => Some(Err(e)),
        }
    }
}

impl Client {
    /// The agent's retained log lines: the last `tail` (0 = all) logged at or
    /// after `since_ms` (0 = any time).
    pub async fn agent_log(
        &self,
        tail: u32,
        since_ms: i64,
    ) -> Result<Vec<pb::LogLine>, ClientError> {
        let mut follow = self.open_agent_log(tail, since_ms, false).await?;
        let mut lines = Vec::new();
        while let Some(batch) = follow.rx.recv().await {
            match batch? {
                Message::AgentLogLines(b) => {
                    lines.extend(b.lines);
                    if b.end {
                        return Ok(lines);
                    }
                }
                m => return Err(unexpected("agent_log", m)),
            }
        }
        Err(ClientError::ConnectionClosed {
            reason: "the agent log ended without its last frame".into(),
        })
    }

    /// Like [`Client::agent_log`], then every new line until the connection closes.
    pub async fn follow_agent_log(
        &self,
        tail: u32,
        since_ms: i64,
    ) -> Result<AgentLogFollow, ClientError> {
        self.open_agent_log(tail, since_ms, true).await
    }

    async fn open_agent_log(
        &self,
        tail: u32,
        since_ms: i64,
        follow: bool,
    ) -> Result<AgentLogFollow, ClientError> {
        self.require(pb::Capability::AgentLog, "the agent log")?;
        let req = Message::AgentLog(pb::AgentLog {
            tail,
            since_ms: since_ms.max(0),
            follow,
        });
        let spec = StreamSpec {
            kind: StreamKind::Log,
            credit: None,
            input: None,
        };
        let (_seq, rx) = self.open_stream(req, spec).await?;
        Ok(AgentLogFollow { rx })
    }
}
