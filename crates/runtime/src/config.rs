//! [`RuntimeConfig`]: everything the runtime needs to know about the host,
//! built at the edge (CLI flags and environment, a server's config file) and
//! passed down. Nothing below it reads environment variables.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hearth_vmm::console_log::ConsoleLimits;
use hearth_vmm::{Accel, QemuConfig};

/// How much of the host sandboxes may take.
#[derive(Debug, Clone, PartialEq)]
pub struct Admission {
    /// Sum of guest memory over running sandboxes, as a multiple of the host's
    /// total memory (after `reserve_mib`). 1.0 means no overcommit.
    pub mem_overcommit: f64,
    /// Sum of vCPUs over running sandboxes, as a multiple of the host's CPUs.
    /// One sandbox never gets more vCPUs than the host has.
    pub cpu_overcommit: f64,
    /// Host memory kept for everything else (QEMU itself, the host's services).
    pub reserve_mib: u64,
}

impl Default for Admission {
    fn default() -> Self {
        Self {
            mem_overcommit: 1.0,
            cpu_overcommit: 8.0,
            reserve_mib: 512,
        }
    }
}

/// How VMM processes are confined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// First uid of the range handed out one per sandbox (gid = uid); the VMM
    /// and its helpers run as that uid, jailed to the sandbox's files. `None`
    /// runs them as the caller (the only choice without root).
    pub vmm_uid_base: Option<u32>,
    /// How many uids the range holds.
    pub vmm_uid_count: u32,
}

/// Uids handed to jailed VMMs start here: far above any real account, below
/// the 32-bit limit and the overflow uid.
pub const DEFAULT_VMM_UID_BASE: u32 = 2_100_000_000;

impl Isolation {
    /// Jailed under root, unjailed otherwise.
    pub fn for_current_user() -> Self {
        Self {
            vmm_uid_base: nix::unistd::geteuid()
                .is_root()
                .then_some(DEFAULT_VMM_UID_BASE),
            vmm_uid_count: 65_536,
        }
    }
}

/// The runtime's configuration.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// State dir: the DB, per-VM directories, persist volumes (made 0700).
    pub state_dir: PathBuf,
    /// Image cache: initramfs files and language images (`rootfs/`).
    pub image_cache: PathBuf,
    /// The static guest binary (init + agent) that goes into the initramfs.
    /// Needed only to boot.
    pub guest_binary: Option<PathBuf>,
    /// A static busybox for a shell in the bare guest; `None` for no shell.
    pub busybox: Option<PathBuf>,
    /// The guest kernel: a path, or the words `own` / `cloud` (see
    /// [`crate::images::kernel`]); `None` picks hearth's own kernel when it is
    /// built, else the newest `/boot/vmlinuz-*-cloud-amd64`.
    pub kernel: Option<PathBuf>,
    /// Where `scripts/kernel.sh` caches hearth's own kernel
    /// (`<dir>/hearth-kernel-<hash>/vmlinux`); `None` never uses it.
    pub own_kernel_cache: Option<PathBuf>,
    /// Extra guest kernel command line words.
    pub kernel_cmdline_extra: String,
    /// How long a boot may take before it counts as failed; `None` is 60 s
    /// under software emulation and 15 s under KVM.
    pub boot_timeout: Option<Duration>,
    /// How long to wait for another process holding the state DB.
    pub db_lock_timeout: Duration,
    /// The QEMU backend's programs and accelerator.
    pub qemu: QemuConfig,
    pub admission: Admission,
    pub isolation: Isolation,
    /// How big each sandbox's console log may grow (two rotated files).
    pub console: ConsoleLimits,
    /// Let creates restore from a cached post-boot template
    /// ([`crate::warm`]); default true.
    pub warm_start: bool,
}

impl RuntimeConfig {
    /// Defaults for a state dir; the image cache is `<state>/images`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        Self {
            image_cache: state_dir.join("images"),
            qemu: QemuConfig {
                cache_dir: state_dir.clone(),
                ..Default::default()
            },
            state_dir,
            guest_binary: None,
            busybox: Some(PathBuf::from("/bin/busybox")),
            kernel: None,
            own_kernel_cache: Some(PathBuf::from(hearth_image::own_kernel::DEFAULT_CACHE_ROOT)),
            kernel_cmdline_extra: String::new(),
            boot_timeout: None,
            db_lock_timeout: Duration::from_secs(10),
            admission: Admission::default(),
            isolation: Isolation::for_current_user(),
            console: ConsoleLimits::default(),
            warm_start: true,
        }
    }

    /// The boot deadline for an accelerator.
    pub fn boot_timeout_for(&self, accel: &str) -> Duration {
        self.boot_timeout
            .unwrap_or(if accel == Accel::Kvm.as_str() {
                Duration::from_secs(15)
            } else {
                Duration::from_secs(60)
            })
    }

    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join(crate::state::DB_FILE)
    }

    pub fn vms_dir(&self) -> PathBuf {
        self.state_dir.join("vms")
    }

    pub fn vm_dir(&self, id: &str) -> PathBuf {
        self.vms_dir().join(id)
    }

    /// `--persist` volumes: `<state>/persist/<name>.ext4`.
    pub fn persist_dir(&self) -> PathBuf {
        self.state_dir.join("persist")
    }

    pub fn persist_volume(&self, name: &str) -> PathBuf {
        self.persist_dir().join(format!("{name}.ext4"))
    }

    pub fn image_cache(&self) -> &Path {
        &self.image_cache
    }
}
