//! Pause and resume: the guest's vCPUs stop (the VMM keeps running and keeps
//! the guest's memory), then run again. A paused sandbox is recorded as
//! [`VmStatus::Paused`] only after the backend paused it, and `running` again
//! only after it resumed.
//!
//! While paused the agent cannot answer, so everything that would connect to
//! it fails at once with [`Error::Paused`] instead of waiting for a timeout.
//! Stop and remove work on a paused sandbox (the backend resumes it first so
//! the guest can power off). Deadlines (the server's reaper) keep counting
//! while a sandbox is paused.

use crate::error::{Error, Result};
use crate::runtime::{resolve, Runtime};
use crate::sandbox::Sandbox;
use crate::state::{VmRecord, VmStatus};

impl Runtime {
    /// Pauses a running sandbox. A sandbox in another state (paused included)
    /// is refused with [`Error::WrongState`].
    #[tracing::instrument(skip(self), fields(sandbox_id = key))]
    pub async fn pause(&self, key: &str) -> Result<VmRecord> {
        let all = self.reconcile().await?;
        let rec = resolve(&all, key)?.clone();
        match rec.status {
            VmStatus::Running => {}
            VmStatus::Paused => {
                return Err(Error::WrongState {
                    id: rec.id,
                    status: rec.status,
                    hint: " already",
                })
            }
            VmStatus::Creating | VmStatus::Stopped | VmStatus::Failed => {
                return Err(Error::WrongState {
                    id: rec.id,
                    status: rec.status,
                    hint: " (only a running sandbox can be paused)",
                })
            }
        }
        let handle = backend_handle(&rec)?;
        self.backend().pause(&handle).await?;
        let expected = handle.clone();
        let updated = self
            .db()
            .update(&rec.id, move |_, r| {
                if r.status != VmStatus::Running || r.backend.as_ref() != Some(&expected) {
                    return Err(Error::WrongState {
                        id: r.id.clone(),
                        status: r.status,
                        hint: " (changed by another process while pausing)",
                    });
                }
                r.status = VmStatus::Paused;
                r.note = Some("paused by the user".into());
                Ok(())
            })
            .await;
        if updated.is_err() {
            // Leave the VM as its record says it is.
            if let Err(e) = self.backend().resume(&handle).await {
                tracing::debug!(error = %e, "cannot undo a pause");
            }
        }
        updated
    }

    /// Resumes a paused sandbox. A running one is refused with
    /// [`Error::WrongState`] — unless its VMM reports it paused (a pause whose
    /// record was never written), which is resumed.
    #[tracing::instrument(skip(self), fields(sandbox_id = key))]
    pub async fn resume(&self, key: &str) -> Result<VmRecord> {
        let all = self.reconcile().await?;
        let rec = resolve(&all, key)?.clone();
        let handle = match rec.status {
            VmStatus::Paused => backend_handle(&rec)?,
            VmStatus::Running => {
                let h = backend_handle(&rec)?;
                if !self.backend().is_paused(&h).await? {
                    return Err(Error::WrongState {
                        id: rec.id,
                        status: rec.status,
                        hint: " (not paused)",
                    });
                }
                h
            }
            VmStatus::Creating | VmStatus::Stopped | VmStatus::Failed => {
                return Err(Error::WrongState {
                    id: rec.id,
                    status: rec.status,
                    hint: " (only a paused sandbox can be resumed)",
                })
            }
        };
        self.backend().resume(&handle).await?;
        self.db()
            .update(&rec.id, move |_, r| {
                if !r.status.has_vmm() || r.backend.as_ref() != Some(&handle) {
                    return Err(Error::WrongState {
                        id: r.id.clone(),
                        status: r.status,
                        hint: " (changed by another process while resuming)",
                    });
                }
                r.status = VmStatus::Running;
                r.note = None;
                Ok(())
            })
            .await
    }
}

impl Sandbox {
    /// Pauses this sandbox (see [`Runtime::pause`]).
    pub async fn pause(&self) -> Result<VmRecord> {
        self.runtime().pause(self.id()).await
    }

    /// Resumes this sandbox (see [`Runtime::resume`]).
    pub async fn resume(&self) -> Result<VmRecord> {
        self.runtime().resume(self.id()).await
    }

    /// [`Error::Paused`] when this handle's record says paused, before any
    /// agent connection is tried.
    pub(crate) fn refuse_paused(&self) -> Result<()> {
        match self.status() {
            VmStatus::Paused => Err(Error::Paused {
                id: self.id().to_string(),
            }),
            VmStatus::Creating | VmStatus::Running | VmStatus::Stopped | VmStatus::Failed => Ok(()),
        }
    }
}

fn backend_handle(rec: &VmRecord) -> Result<hearth_vmm::BackendHandle> {
    rec.backend
        .clone()
        .ok_or_else(|| Error::Internal(format!("vm {} has no backend handle", rec.id)))
}
