//! The guest side of snapshots, for the snapshot, restore and fork code to
//! call: [`Agent::notify_restored`] right after a restored or forked VM runs
//! again (generation, the host's clock, fresh entropy, a clone's hostname and
//! machine-id), [`Agent::freeze_fs`] before a snapshot and
//! [`Agent::thaw_fs`] after it (see `GUEST_RESTORED` and `FS_FREEZE` in
//! docs/protocol.md). [`Sandbox`] has the same methods.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_client::pb;

use crate::agent::Agent;
use crate::error::{Error, Result};
use crate::sandbox::Sandbox;

/// Bytes of host randomness sent with every restore.
const ENTROPY_BYTES: usize = 64;

/// What a restored or forked sandbox is told; the clock and the entropy are
/// filled in at the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreInfo {
    /// 1 or more: every restore or fork gets a new one (0 is the cold boot).
    pub generation: u64,
    /// A clone's own hostname (RFC 1123, at most 64 bytes).
    pub hostname: Option<String>,
    /// A clone's own machine-id (32 lowercase hex digits).
    pub machine_id: Option<String>,
}

impl RestoreInfo {
    /// Refuses what the agent would refuse, before anything is sent.
    pub fn validate(&self) -> Result<()> {
        let check = || -> std::result::Result<(), String> {
            if self.generation == 0 {
                return Err("generation 0 is the cold boot's; a restore is 1 or later".into());
            }
            if let Some(h) = &self.hostname {
                hearth_proto::restore::validate_hostname(h)?;
            }
            if let Some(id) = &self.machine_id {
                hearth_proto::restore::validate_machine_id(id)?;
            }
            Ok(())
        };
        check().map_err(Error::InvalidSpec)
    }

    /// A fresh random machine-id.
    pub fn random_machine_id() -> Result<String> {
        Ok(hex::encode(random_bytes(16)?))
    }
}

/// `n` bytes from the kernel's CSPRNG (getrandom(2)).
fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: getrandom writes at most `n - filled` bytes into our buffer.
        let rc = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(Error::io("reading host randomness", "getrandom(2)", e));
        }
        filled += rc as usize;
    }
    Ok(buf)
}

fn now_ns() -> Result<u64> {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .map_err(|e| Error::Internal(format!("the host clock is before 1970: {e}")))
}

impl Agent {
    /// Tells a restored or forked guest its generation, the host's wall
    /// clock and fresh entropy, and a clone's hostname and machine-id. Call
    /// it first on a new connection after the VM runs again: the agent ends
    /// the sessions of every other connection (the old host's), and thaws the
    /// filesystems the snapshot was taken with frozen.
    pub async fn notify_restored(&self, info: &RestoreInfo) -> Result<()> {
        info.validate()?;
        let req = pb::GuestRestored {
            generation: info.generation,
            realtime_ns: now_ns()?,
            entropy: random_bytes(ENTROPY_BYTES)?.into(),
            hostname: info.hostname.clone(),
            machine_id: info.machine_id.clone(),
        };
        self.client().guest_restored(req).await.map_err(|e| {
            Error::agent(
                format!(
                    "{}: telling the guest it was restored (generation {})",
                    self.label(),
                    info.generation
                ),
                e,
            )
        })
    }

    /// Syncs and freezes the guest's writable filesystems; the agent thaws
    /// them by itself after `auto_thaw` (at most 60 s) if no
    /// [`Agent::thaw_fs`] comes. Returns the frozen mount points: empty when
    /// there is nothing to freeze (a root that lives in guest memory, whose
    /// contents a memory snapshot holds anyway).
    pub async fn freeze_fs(&self, auto_thaw: Duration) -> Result<Vec<String>> {
        let max = Duration::from_millis(hearth_proto::restore::MAX_FREEZE_TIMEOUT_MS as u64);
        if auto_thaw > max || auto_thaw < Duration::from_millis(1) {
            return Err(Error::InvalidSpec(format!(
                "auto-thaw after {auto_thaw:?} is outside 1 ms..=60 s"
            )));
        }
        let context = || format!("{}: freezing the guest's filesystems", self.label());
        self.client()
            .fs_freeze(Vec::new(), auto_thaw)
            .await
            .map_err(|e| Error::agent(context(), e))?;
        let info = self
            .client()
            .system_info()
            .await
            .map_err(|e| Error::agent(context(), e))?;
        Ok(info.frozen)
    }

    /// Thaws what [`Agent::freeze_fs`] froze (nothing frozen is fine).
    pub async fn thaw_fs(&self) -> Result<()> {
        self.client().fs_thaw(Vec::new()).await.map_err(|e| {
            Error::agent(
                format!("{}: thawing the guest's filesystems", self.label()),
                e,
            )
        })
    }
}

impl Sandbox {
    /// See [`Agent::notify_restored`].
    pub async fn notify_restored(&self, info: &RestoreInfo) -> Result<()> {
        let agent = self.agent().await?;
        match agent.notify_restored(info).await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain(e).await),
        }
    }

    /// See [`Agent::freeze_fs`].
    pub async fn freeze_fs(&self, auto_thaw: Duration) -> Result<Vec<String>> {
        let agent = self.agent().await?;
        match agent.freeze_fs(auto_thaw).await {
            Ok(v) => Ok(v),
            Err(e) => Err(self.explain(e).await),
        }
    }

    /// See [`Agent::thaw_fs`].
    pub async fn thaw_fs(&self) -> Result<()> {
        let agent = self.agent().await?;
        match agent.thaw_fs().await {
            Ok(()) => Ok(()),
            Err(e) => Err(self.explain(e).await),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_info_is_checked_before_sending() {
        let ok = RestoreInfo {
            generation: 1,
            hostname: Some("clone-1".into()),
            machine_id: Some(RestoreInfo::random_machine_id().unwrap()),
        };
        ok.validate().unwrap();
        let bad = [
            RestoreInfo {
                generation: 0,
                ..ok.clone()
            },
            RestoreInfo {
                hostname: Some("no_underscores".into()),
                ..ok.clone()
            },
            RestoreInfo {
                machine_id: Some("XYZ".into()),
                ..ok.clone()
            },
        ];
        for b in bad {
            assert!(matches!(b.validate(), Err(Error::InvalidSpec(_))), "{b:?}");
        }
        assert_ne!(random_bytes(32).unwrap(), random_bytes(32).unwrap());
    }
}
