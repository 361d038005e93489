//! The snapshot hooks: `GUEST_RESTORED` after a restore or fork
//! (`CAPABILITY_RESTORE_HOOKS`) and `FS_FREEZE` around a snapshot
//! (`CAPABILITY_FS_FREEZE`), both answered by OK.

use std::time::Duration;

use hearth_proto::{pb, Message};

use crate::conn::{unexpected, Client};
use crate::error::ClientError;

impl Client {
    /// Tells the agent it was restored (generation, clock, entropy, and a
    /// clone's hostname and machine-id). Sent first on a new connection
    /// after the restore: the agent ends every other connection's sessions.
    pub async fn guest_restored(&self, req: pb::GuestRestored) -> Result<(), ClientError> {
        self.require(
            pb::Capability::RestoreHooks,
            "telling the guest it was restored",
        )?;
        match self.request(Message::GuestRestored(req)).await? {
            Message::Ok(_) => Ok(()),
            m => Err(unexpected("guest restored", m)),
        }
    }

    /// Syncs and freezes `paths` (empty: every writable filesystem the agent
    /// can freeze); the agent thaws by itself after `auto_thaw` (0: 10 s,
    /// at most 60 s).
    pub async fn fs_freeze(
        &self,
        paths: Vec<String>,
        auto_thaw: Duration,
    ) -> Result<(), ClientError> {
        self.require(pb::Capability::FsFreeze, "freezing guest filesystems")?;
        let req = pb::FsFreeze {
            action: pb::FsFreezeAction::Freeze as i32,
            paths,
            timeout_ms: u32::try_from(auto_thaw.as_millis()).unwrap_or(u32::MAX),
        };
        match self.request(Message::FsFreeze(req)).await? {
            Message::Ok(_) => Ok(()),
            m => Err(unexpected("fs freeze", m)),
        }
    }

    /// Thaws what the agent froze, and `paths` too.
    pub async fn fs_thaw(&self, paths: Vec<String>) -> Result<(), ClientError> {
        self.require(pb::Capability::FsFreeze, "thawing guest filesystems")?;
        let req = pb::FsFreeze {
            action: pb::FsFreezeAction::Thaw as i32,
            paths,
            timeout_ms: 0,
        };
        match self.request(Message::FsFreeze(req)).await? {
            Message::Ok(_) => Ok(()),
            m => Err(unexpected("fs thaw", m)),
        }
    }
}

#[cfg(test)]
mod tests {
    use hearth_proto::{capability_bit, pb, Message};
    use tokio::io::AsyncWriteExt;

    use crate::{Client, ClientError, ConnectOptions};

    #[tokio::test]
    async fn refuses_when_the_agent_lacks_the_capabilities() {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let ready = Message::Ready(pb::Ready {
            protocol_version: hearth_proto::PROTOCOL_VERSION,
            agent_version: "old".into(),
            capabilities: capability_bit(pb::Capability::SystemInfo),
            max_frame_len: 1 << 20,
            ..Default::default()
        });
        b.write_all(&ready.into_frame(0).to_bytes(u32::MAX).unwrap())
            .await
            .unwrap();
        let c = Client::from_stream(a, &ConnectOptions::default())
            .await
            .unwrap();
        let restored = c.guest_restored(pb::GuestRestored::default()).await;
        let freeze = c.fs_freeze(Vec::new(), std::time::Duration::ZERO).await;
        let thaw = c.fs_thaw(Vec::new()).await;
        for r in [restored, freeze, thaw] {
            match r {
                Err(e @ ClientError::Unsupported { .. }) => {
                    assert!(e.to_string().contains("unsupported by agent old"), "{e}")
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
