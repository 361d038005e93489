//! `STATS`: the guest's resource use.

use hearth_proto::{pb, Message};

use crate::conn::{unexpected, Client};
use crate::error::ClientError;

impl Client {
    /// One sample of the guest's CPU, memory, disk, load, process and
    /// network counters. Needs `CAPABILITY_STATS`.
    pub async fn stats(&self) -> Result<pb::StatsResult, ClientError> {
        self.require(pb::Capability::Stats, "guest stats")?;
        match self.request(Message::Stats(pb::Stats {})).await? {
            Message::StatsResult(r) => Ok(r),
            m => Err(unexpected("stats", m)),
        }
    }
}
