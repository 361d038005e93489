//! Sandbox lifetimes: the deadline in each record (set at create from
//! [`crate::CreateSpec::lifetime`]), changed with [`Runtime::set_deadline`],
//! and [`Runtime::expired`], the records whose deadline has passed. Enforcing
//! them is a long-running front end's job (`hearth serve`'s reaper); the CLI
//! has no daemon and ignores them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::Result;
use crate::runtime::Runtime;
use crate::state::VmRecord;

fn millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Runtime {
    /// Sets (or with `None` clears) the deadline of the sandbox `key`, in one
    /// transaction. Returns the updated record.
    pub async fn set_deadline(&self, key: &str, deadline: Option<SystemTime>) -> Result<VmRecord> {
        let id = self.get(key).await?.id().to_string();
        let ms = deadline.map(millis);
        self.db()
            .update(&id, move |_, rec| {
                rec.deadline_ms = ms;
                Ok(())
            })
            .await
    }

    /// Sets the deadline of `key` to `lifetime` from now.
    pub async fn extend(&self, key: &str, lifetime: Duration) -> Result<VmRecord> {
        self.set_deadline(key, Some(SystemTime::now() + lifetime))
            .await
    }

    /// The stored records whose deadline is at or before `now`, whatever
    /// their status (a stopped or failed sandbox expires too).
    pub async fn expired(&self, now: SystemTime) -> Result<Vec<VmRecord>> {
        let now = millis(now);
        Ok(self
            .records()
            .await?
            .into_iter()
            .filter(|r| r.deadline_ms.is_some_and(|d| d <= now))
            .collect())
    }

    /// The earliest deadline of any stored record.
    pub async fn next_deadline(&self) -> Result<Option<SystemTime>> {
        Ok(self
            .records()
            .await?
            .iter()
            .filter_map(VmRecord::deadline)
            .min())
    }
}
