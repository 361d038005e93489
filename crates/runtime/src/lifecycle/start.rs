//! Booting a stopped (or failed) sandbox again with its disks.

use hearth_vmm::ProcessId;
use tokio_util::sync::CancellationToken;

use super::boot::{boot, BootOutcome};
use super::disks;
use crate::error::{Error, Result};
use crate::host::{admit, allocate_uid};
use crate::progress::SharedProgress;
use crate::runtime::{resolve, Runtime};
use crate::sandbox::Sandbox;
use crate::state::VmStatus;

impl Runtime {
    /// Boots a stopped or failed sandbox again; the initramfs is rebuilt when
    /// the guest binary changed.
    pub async fn start(&self, key: &str, progress: &SharedProgress) -> Result<Sandbox> {
        let r = self
            .start_inner(key, progress, &CancellationToken::new())
            .await;
        progress.done();
        r
    }

    /// [`Runtime::start`] that stops when `cancel` fires (the sandbox is then
    /// recorded as stopped again).
    pub async fn start_cancellable(
        &self,
        key: &str,
        progress: &SharedProgress,
        cancel: &CancellationToken,
    ) -> Result<Sandbox> {
        let r = self.start_inner(key, progress, cancel).await;
        progress.done();
        r
    }

    async fn start_inner(
        &self,
        key: &str,
        progress: &SharedProgress,
        cancel: &CancellationToken,
    ) -> Result<Sandbox> {
        let all = self.reconcile().await?;
        let rec = resolve(&all, key)?.clone();
        match rec.status {
            VmStatus::Stopped | VmStatus::Failed => {}
            VmStatus::Paused => return Err(Error::Paused { id: rec.id }),
            VmStatus::Running | VmStatus::Creating => {
                return Err(Error::WrongState {
                    id: rec.id,
                    status: rec.status,
                    hint: " already",
                })
            }
        }
        disks::check(&rec)?;
        let explicit = rec.kernel.is_file().then_some(rec.kernel.as_path());
        let kernel = crate::images::kernel(explicit, self.config())?;
        let initrd = if rec.custom_initrd {
            rec.initrd.clone()
        } else {
            self.ensure_initramfs(&kernel, progress).await?.path
        };
        let accel = self.backend().accel(&kernel.path).await?;
        let me = ProcessId::of_child(std::process::id());
        let host = self.host();
        let policy = self.config().admission.clone();
        let iso = self.config().isolation.clone();
        let (kpath, a) = (kernel.path.clone(), accel.clone());
        let (kkind, krel) = (kernel.kind, kernel.release.clone());
        let expected = rec.status;
        let rec = self
            .db()
            .update(&rec.id, move |others, r| {
                if r.status != expected {
                    return Err(Error::WrongState {
                        id: r.id.clone(),
                        status: r.status,
                        hint: " (changed by another process)",
                    });
                }
                admit(host, &policy, others, r)?;
                // A record from before the jail (a migrated one) gets its uid now.
                if let (None, Some(base)) = (r.vmm_uid, iso.vmm_uid_base) {
                    r.vmm_uid = Some(allocate_uid(base, iso.vmm_uid_count, others)?);
                }
                r.status = VmStatus::Creating;
                r.creator = me;
                r.backend = None;
                r.note = None;
                r.initrd = initrd;
                r.kernel = kpath;
                r.kernel_kind = Some(kkind);
                r.kernel_release = Some(krel);
                r.accel = Some(a);
                Ok(())
            })
            .await?;
        let id = rec.id.clone();
        match boot(self, rec, &accel, None, progress.as_ref(), cancel).await? {
            BootOutcome::Booted(s) => Ok(*s),
            BootOutcome::Cancelled => {
                self.db()
                    .update(&id, |_, r| {
                        r.status = VmStatus::Stopped;
                        r.creator = None;
                        r.note = Some("its start was cancelled".into());
                        Ok(())
                    })
                    .await?;
                Err(Error::Cancelled(format!("while booting vm {id}")))
            }
        }
    }
}
