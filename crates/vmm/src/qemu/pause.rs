//! Pausing and resuming a VM's vCPUs through its QMP monitor
//! (`<dir>/qmp.sock`). A paused QEMU process stays alive and keeps its
//! memory; its guest runs no code, so the agent does not answer until
//! [`VmHandle::resume`].

use std::time::Duration;

use super::qmp::{Qmp, QmpError};
use super::{files, VmHandle};
use crate::error::VmmError;

/// Timeout of one monitor request made for pause, resume or status.
pub const QMP_TIMEOUT: Duration = Duration::from_secs(5);

impl VmHandle {
    /// A new monitor connection (greeting and capabilities done).
    pub async fn qmp(&self) -> Result<Qmp, VmmError> {
        if !self.is_running() {
            return Err(VmmError::NotRunning {
                id: self.id.clone(),
            });
        }
        let path = self.dir.join(files::QMP_SOCK);
        match Qmp::connect(&path, QMP_TIMEOUT).await {
            Ok(q) => Ok(q),
            Err(QmpError::Connect { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err(VmmError::NoMonitor {
                    id: self.id.clone(),
                    path,
                })
            }
            Err(source) => Err(self.qmp_err(source)),
        }
    }

    fn qmp_err(&self, source: QmpError) -> VmmError {
        VmmError::Qmp {
            id: self.id.clone(),
            source,
        }
    }

    /// Stops the vCPUs; a paused VM stays paused.
    pub async fn pause(&self) -> Result<(), VmmError> {
        let mut q = self.qmp().await?;
        q.stop().await.map_err(|e| self.qmp_err(e))
    }

    /// Lets the vCPUs run again; a running VM stays running.
    pub async fn resume(&self) -> Result<(), VmmError> {
        let mut q = self.qmp().await?;
        q.cont().await.map_err(|e| self.qmp_err(e))
    }

    /// Whether QEMU reports its vCPUs stopped (`query-status`).
    pub async fn is_paused(&self) -> Result<bool, VmmError> {
        let mut q = self.qmp().await?;
        let st = q.query_status().await.map_err(|e| self.qmp_err(e))?;
        Ok(!st.running)
    }

    /// Before a stop: resumes a paused guest so it can answer SHUTDOWN. A VM
    /// without a monitor, or one whose monitor fails, is left as it is (the
    /// stop then ends QEMU after its grace period).
    pub(crate) async fn resume_for_stop(&self) {
        let mut q = match self.qmp().await {
            Ok(q) => q,
            Err(e) => {
                tracing::debug!(id = %self.id, error = %e, "no monitor to resume through before stop");
                return;
            }
        };
        match q.query_status().await {
            Ok(st) if st.running => {}
            Ok(_) => {
                if let Err(e) = q.cont().await {
                    tracing::warn!(id = %self.id, error = %e, "cannot resume a paused vm before stopping it");
                }
            }
            Err(e) => tracing::debug!(id = %self.id, error = %e, "query-status failed before stop"),
        }
    }
}
