//! [`VmRecord`]: one sandbox as stored in the state DB (schema version 2).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hearth_vmm::{BackendHandle, LowerFs, Network, ProcessId};
use serde::{Deserialize, Serialize};

/// Where a sandbox is in its life. Recorded only once true: `running` after
/// the agent said READY.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmStatus {
    Creating,
    Running,
    Stopped,
    Failed,
    /// The VMM runs but the guest's vCPUs are stopped (`hearth vm pause`);
    /// its agent does not answer until it is resumed.
    Paused,
}

impl VmStatus {
    pub const ALL: [VmStatus; 5] = [
        VmStatus::Creating,
        VmStatus::Running,
        VmStatus::Stopped,
        VmStatus::Failed,
        VmStatus::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Creating => "creating",
            VmStatus::Running => "running",
            VmStatus::Stopped => "stopped",
            VmStatus::Failed => "failed",
            VmStatus::Paused => "paused",
        }
    }

    /// Whether it holds host resources (memory, CPUs) now. A paused VM keeps
    /// its memory.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            VmStatus::Creating | VmStatus::Running | VmStatus::Paused
        )
    }

    /// Whether its VMM process is meant to run (its backend handle is live).
    pub fn has_vmm(self) -> bool {
        matches!(self, VmStatus::Running | VmStatus::Paused)
    }
}

impl std::fmt::Display for VmStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for VmStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        VmStatus::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!("unknown status {s:?} (creating, running, stopped, failed, paused)")
            })
    }
}

/// File name of the writable upper disk inside a VM's directory.
pub const UPPER_DISK: &str = "upper.ext4";

/// One sandbox, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    pub id: String,
    pub name: Option<String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub status: VmStatus,
    pub cpus: u32,
    pub mem_mib: u32,
    /// `none`, a language name, or `custom` for a user's image.
    pub language: String,
    /// The boot initramfs (guest binary + modules).
    pub initrd: PathBuf,
    /// `initrd` was given by the user (kept on start instead of rebuilt).
    #[serde(default)]
    pub custom_initrd: bool,
    pub kernel: PathBuf,
    /// Where `kernel` came from (hearth's own, the cloud kernel, explicit);
    /// `None` in records from before it was kept.
    #[serde(default)]
    pub kernel_kind: Option<hearth_image::KernelKind>,
    /// `uname -r` of `kernel` inside the guest.
    #[serde(default)]
    pub kernel_release: Option<String>,
    /// The accelerator of its last boot (`tcg`, `kvm`).
    #[serde(default)]
    pub accel: Option<String>,
    /// How the backend finds its processes again; set once it booted.
    #[serde(default)]
    pub backend: Option<BackendHandle>,
    /// The process that is booting it (status `creating`).
    #[serde(default)]
    pub creator: Option<ProcessId>,
    pub dir: PathBuf,
    /// Why it failed or stopped, when known.
    #[serde(default)]
    pub note: Option<String>,
    /// The read-only root image; `None` for the bare initramfs guest.
    #[serde(default)]
    pub rootfs: Option<PathBuf>,
    #[serde(default)]
    pub lowerfs: Option<LowerFs>,
    /// Recipe hash of a language image.
    #[serde(default)]
    pub image_hash: Option<String>,
    /// Size of the writable upper disk (`<dir>/upper.ext4`).
    #[serde(default)]
    pub disk_mib: u64,
    #[serde(default)]
    pub network: Network,
    /// The persist volume mounted at `/persist`.
    #[serde(default)]
    pub persist_volume: Option<PathBuf>,
    /// Environment every exec gets (the image's).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The command printing hello world through the image's runtime.
    #[serde(default)]
    pub hello: Vec<String>,
    /// The uid its jailed VMM runs as (one per sandbox).
    #[serde(default)]
    pub vmm_uid: Option<u32>,
    /// The user commands run as unless a request names one (the image's;
    /// `None` is root).
    #[serde(default)]
    pub user: Option<String>,
    /// Free-form labels given at create (the server's list filters use them).
    #[serde(default)]
    pub metadata: std::collections::BTreeMap<String, String>,
    /// When the server's reaper removes it, in milliseconds since the Unix
    /// epoch (`None`: never). Kept here so it survives a server restart.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    /// The warm-start template it was restored from at create (`None`: it
    /// was cold-booted). See [`crate::warm`].
    #[serde(default)]
    pub warm_template: Option<String>,
}

impl VmRecord {
    pub fn upper_disk(&self) -> Option<PathBuf> {
        self.rootfs.as_ref().map(|_| self.dir.join(UPPER_DISK))
    }

    /// The persist volume's name (its file stem).
    pub fn persist_name(&self) -> Option<String> {
        self.persist_volume
            .as_deref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
    }

    /// The deadline as a time.
    pub fn deadline(&self) -> Option<SystemTime> {
        self.deadline_ms
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// Whether `key` is this record's id or name.
    pub fn is_called(&self, key: &str) -> bool {
        self.id == key || self.name.as_deref() == Some(key)
    }
}
