//! The backend trait the runtime drives: boot a sandbox, tell whether it still
//! runs, reach its agent, stop it. QEMU implements it today
//! ([`crate::QemuBackend`]); another VMM fits by implementing it and
//! choosing its own [`BackendHandle`] contents, without touching the runtime.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use hearth_client::Client;
use serde::{Deserialize, Serialize};

use crate::error::VmmError;
use crate::sandbox::SandboxConfig;

/// What a runtime stores to find a running sandbox again from another process:
/// the backend's name, the version of its `state` layout, and the state itself,
/// opaque to everyone but that backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendHandle {
    pub backend: String,
    pub version: u32,
    pub state: serde_json::Value,
}

/// What a backend sees of a sandbox's processes, without changing anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Every process the sandbox depends on runs.
    Running,
    /// The VMM runs but a process it depends on is gone (a device helper):
    /// the sandbox is unusable. `reason` names what is gone.
    Broken { reason: String },
    /// The VMM process exited (the guest powered off, or it was killed);
    /// helpers may still run until [`Backend::kill`] ends them.
    Exited,
}

/// A booted sandbox: its durable handle and a live connection to its agent.
pub struct Booted {
    pub handle: BackendHandle,
    pub client: Client,
}

/// What a snapshot took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStats {
    /// How long the vCPUs were stopped.
    pub paused_ms: u64,
    /// Bytes of the state file (device state and guest RAM).
    pub state_bytes: u64,
    /// Bytes of disk data copied (holes are not copied).
    pub disk_bytes: u64,
}

/// One VMM backend.
#[async_trait]
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The name stored in [`BackendHandle::backend`].
    fn name(&self) -> &'static str;

    /// Boots a sandbox and returns once its agent answered READY. On failure
    /// nothing it started is left running.
    async fn boot(&self, config: &SandboxConfig) -> Result<Booted, VmmError>;

    /// How the sandbox's processes are; reads only.
    fn health(&self, handle: &BackendHandle) -> Result<Health, VmmError>;

    /// A new connection to the sandbox's agent.
    async fn connect(&self, handle: &BackendHandle, timeout: Duration) -> Result<Client, VmmError>;

    /// Asks the guest to power off (waiting up to `graceful`), then makes sure
    /// every process of the sandbox is gone.
    async fn stop(&self, handle: &BackendHandle, graceful: Duration) -> Result<(), VmmError>;

    /// Stops the guest's vCPUs; the VMM keeps running and holding its memory.
    /// Pausing a paused sandbox is not an error.
    async fn pause(&self, handle: &BackendHandle) -> Result<(), VmmError>;

    /// Lets a paused guest run again; resuming a running one is not an error.
    async fn resume(&self, handle: &BackendHandle) -> Result<(), VmmError>;

    /// Whether the VMM reports the guest's vCPUs stopped (asks the VMM).
    async fn is_paused(&self, handle: &BackendHandle) -> Result<bool, VmmError>;

    /// Ends whatever of the sandbox still runs, at once.
    async fn kill(&self, handle: &BackendHandle) -> Result<(), VmmError>;

    /// Ends processes a boot started in `dir` before its handle was recorded
    /// (a boot interrupted by a crash or a cancel).
    async fn kill_leftovers(&self, dir: &Path);

    /// The host processes of a sandbox, by role (`qemu`, `proxy`), for display.
    fn processes(&self, handle: &BackendHandle) -> Vec<(&'static str, u32)>;

    /// Snapshots a running sandbox: its state to `state` (a new file) and
    /// each `(disk, copy)`, consistent with each other. With `resume` it
    /// runs on afterwards; without, it is left stopped for [`Backend::kill`].
    async fn snapshot(
        &self,
        handle: &BackendHandle,
        state: &Path,
        disks: &[(std::path::PathBuf, std::path::PathBuf)],
        resume: bool,
    ) -> Result<SnapshotStats, VmmError>;

    /// Starts a sandbox from a snapshot's `state` (its disks already in
    /// place as `config` names them) and returns once its agent answered.
    /// On failure nothing it started is left running.
    async fn restore(&self, config: &SandboxConfig, state: &Path) -> Result<Booted, VmmError>;

    /// The accelerator it boots with (`kvm`, `tcg`, …), for display.
    async fn accel(&self, kernel: &Path) -> Result<String, VmmError>;
}

impl BackendHandle {
    /// Checks that the handle belongs to backend `name` and decodes its state,
    /// refusing versions other than `version`.
    pub fn decode<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        version: u32,
    ) -> Result<T, VmmError> {
        if self.backend != name || self.version != version {
            return Err(VmmError::ForeignHandle {
                backend: self.backend.clone(),
                version: self.version,
                expected: format!("{name} v{version}"),
            });
        }
        serde_json::from_value(self.state.clone()).map_err(|e| VmmError::BadHandle {
            backend: name.to_string(),
            reason: e.to_string(),
        })
    }
}
