//! Stopping a sandbox (the record stays) and removing one (directory, upper
//! disk, record, and its persist volume unless kept).

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::progress::{SharedProgress, Step};
use crate::runtime::{resolve, Runtime};
use crate::state::{VmRecord, VmStatus};

/// How long a guest may take to power off before its VMM is ended.
pub const GRACEFUL_STOP: Duration = Duration::from_secs(10);

/// What [`Runtime::remove`] did.
#[derive(Debug, Clone)]
pub struct Removed {
    pub record: VmRecord,
    /// The persist volume kept on the host (attach it again by name).
    pub kept_persist: Option<PathBuf>,
}

impl Runtime {
    /// Powers a running sandbox off: the guest's init gets TERM, forwards it to
    /// the workload, and powers off; after [`GRACEFUL_STOP`] the VMM is ended.
    /// Returns the record (unchanged if it was not running).
    pub async fn stop(&self, key: &str, progress: &SharedProgress) -> Result<VmRecord> {
        let all = self.reconcile().await?;
        let rec = resolve(&all, key)?.clone();
        let r = self.stop_record(&rec, progress).await;
        progress.done();
        r
    }

    async fn stop_record(&self, rec: &VmRecord, progress: &SharedProgress) -> Result<VmRecord> {
        match rec.status {
            // The backend resumes a paused guest so it can power off.
            VmStatus::Running | VmStatus::Paused => {}
            VmStatus::Creating => {
                return Err(Error::WrongState {
                    id: rec.id.clone(),
                    status: rec.status,
                    hint: " (still booting; try again when it is running or failed)",
                })
            }
            VmStatus::Stopped | VmStatus::Failed => return Ok(rec.clone()),
        }
        progress.step(Step::Stop { id: rec.id.clone() });
        if let Some(h) = &rec.backend {
            self.backend().stop(h, GRACEFUL_STOP).await?;
        }
        self.db()
            .update(&rec.id, |_, r| {
                r.status = VmStatus::Stopped;
                r.backend = None;
                r.note = Some("stopped by the user".into());
                Ok(())
            })
            .await
    }

    /// Stops a sandbox if it runs, then removes its directory (with its upper
    /// disk), its record, and its persist volume unless `keep_persist`.
    pub async fn remove(
        &self,
        key: &str,
        keep_persist: bool,
        progress: &SharedProgress,
    ) -> Result<Removed> {
        let all = self.reconcile().await?;
        let rec = resolve(&all, key)?.clone();
        let r = self.remove_record(rec, keep_persist, progress).await;
        progress.done();
        r
    }

    async fn remove_record(
        &self,
        rec: VmRecord,
        keep_persist: bool,
        progress: &SharedProgress,
    ) -> Result<Removed> {
        let rec = self.stop_record(&rec, progress).await?;
        match tokio::fs::remove_dir_all(&rec.dir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io("cannot remove", &rec.dir, e)),
        }
        self.db().remove(&rec.id).await?;
        let mut kept = None;
        if let Some(vol) = &rec.persist_volume {
            if keep_persist {
                kept = Some(vol.clone());
            } else {
                super::disks::remove_persist_volume(vol)?;
            }
        }
        Ok(Removed {
            record: rec,
            kept_persist: kept,
        })
    }
}
