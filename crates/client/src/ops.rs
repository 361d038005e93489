//! Small requests: ping, system info, shutdown.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hearth_proto::{pb, Message};

use crate::conn::{unexpected, Client};
use crate::error::ClientError;

static NONCE: AtomicU64 = AtomicU64::new(1);

impl Client {
    /// One PING/PONG round trip.
    pub async fn ping(&self) -> Result<Duration, ClientError> {
        let nonce = NONCE.fetch_add(1, Ordering::Relaxed);
        let t0 = Instant::now();
        match self.request(Message::Ping(pb::Ping { nonce })).await? {
            Message::Pong(p) if p.nonce == nonce => Ok(t0.elapsed()),
            Message::Pong(p) => Err(ClientError::Protocol {
                reason: format!("pong carries nonce {}, expected {nonce}", p.nonce),
            }),
            m => Err(unexpected("ping", m)),
        }
    }

    pub async fn system_info(&self) -> Result<pb::SystemInfoResult, ClientError> {
        self.require(pb::Capability::SystemInfo, "system info")?;
        match self.request(Message::SystemInfo(pb::SystemInfo {})).await? {
            Message::SystemInfoResult(r) => Ok(r),
            m => Err(unexpected("system_info", m)),
        }
    }

    /// Asks the guest to power off (or a stand-alone agent to exit).
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        self.require(pb::Capability::Shutdown, "shutdown")?;
        match self
            .request(Message::Shutdown(pb::Shutdown { reboot: false }))
            .await?
        {
            Message::Ok(_) => Ok(()),
            m => Err(unexpected("shutdown", m)),
        }
    }
}
