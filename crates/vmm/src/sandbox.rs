//! What a sandbox is made of ([`SandboxConfig`]), for every backend.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{VmmError, MAX_CPUS, MIN_MEM_MIB};
use crate::guest_contract::LowerFs;

/// Guest networking policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// No NIC at all: the guest has only `lo`.
    #[default]
    None,
    /// One NIC on QEMU's user-mode network: outbound NAT, the host's loopback
    /// reachable as the gateway, QEMU's DNS forwarder as the resolver.
    AllowAll,
}

impl Network {
    pub fn as_str(self) -> &'static str {
        match self {
            Network::None => "none",
            Network::AllowAll => "allow_all",
        }
    }

    /// Parses a `--network` value.
    pub fn parse(s: &str) -> Result<Self, VmmError> {
        match s {
            "none" => Ok(Network::None),
            "allow_all" | "allow-all" => Ok(Network::AllowAll),
            other => Err(VmmError::UnsupportedNetwork(other.to_string())),
        }
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A root filesystem on disks: a read-only image (lower) under a per-VM ext4
/// disk (upper), overlaid by the guest's init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootDisks {
    pub image: PathBuf,
    pub fs: LowerFs,
    /// The writable ext4 disk, created beforehand (see `hearth_image::rootfs::create_ext4`).
    pub upper: PathBuf,
}

/// What a sandbox is made of. Built at the edge (CLI, API) and validated before boot.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub id: String,
    pub cpus: u32,
    pub mem_mib: u32,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Extra kernel command line words, after the backend's own.
    pub cmdline_extra: String,
    pub network: Network,
    /// `None` keeps the guest on its initramfs.
    pub root: Option<RootDisks>,
    /// An ext4 volume the guest mounts at `/persist`.
    pub persist: Option<PathBuf>,
    /// Directory owned by this sandbox (sockets, console log, pid files).
    pub dir: PathBuf,
    /// How long to wait for the agent's READY after the VMM starts.
    pub boot_timeout: Duration,
    /// Run the VMM and its helper processes as this uid (and the same gid), jailed
    /// to this sandbox's files. `None` runs them as the caller (no uid change).
    pub vmm_uid: Option<u32>,
    /// How big the console log may grow (two rotated files).
    pub console: crate::console_log::ConsoleLimits,
    /// The static `hearth-guest` binary, run on the host as the VM link's
    /// proxy (`hearth-guest vm-proxy`).
    pub vm_proxy: PathBuf,
    /// Describe the devices in ACPI tables (microvm's default). `false` boots
    /// with `acpi=off`: QEMU then names the virtio-mmio devices on the kernel
    /// command line and the firmware writes an MP table. hearth's own kernel
    /// boots that way (its ACPI table load fails: no PCI).
    pub acpi: bool,
}

impl SandboxConfig {
    /// Checks what can be checked without booting.
    pub fn validate(&self) -> Result<(), VmmError> {
        if self.mem_mib < MIN_MEM_MIB {
            return Err(VmmError::MemoryTooSmall {
                mem_mib: self.mem_mib,
                min: MIN_MEM_MIB,
            });
        }
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(VmmError::BadCpuCount {
                cpus: self.cpus,
                max: MAX_CPUS,
            });
        }
        if !self.kernel.is_file() {
            return Err(VmmError::KernelMissing(self.kernel.clone()));
        }
        if !self.initrd.is_file() {
            return Err(VmmError::InitrdMissing(self.initrd.clone()));
        }
        if let Some(root) = &self.root {
            if !root.image.is_file() {
                return Err(VmmError::DiskMissing {
                    what: "root image",
                    path: root.image.clone(),
                });
            }
            if !root.upper.is_file() {
                return Err(VmmError::DiskMissing {
                    what: "upper disk",
                    path: root.upper.clone(),
                });
            }
        }
        if let Some(p) = &self.persist {
            if !p.is_file() {
                return Err(VmmError::DiskMissing {
                    what: "persist volume",
                    path: p.clone(),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &std::path::Path) -> SandboxConfig {
        let kernel = dir.join("k");
        let initrd = dir.join("i");
        std::fs::write(&kernel, b"k").unwrap();
        std::fs::write(&initrd, b"i").unwrap();
        SandboxConfig {
            id: "t".into(),
            cpus: 1,
            mem_mib: 256,
            kernel,
            initrd,
            cmdline_extra: String::new(),
            network: Network::None,
            root: None,
            persist: None,
            dir: dir.into(),
            boot_timeout: Duration::from_secs(1),
            vmm_uid: None,
            console: Default::default(),
            vm_proxy: "/hearth-guest".into(),
            acpi: true,
        }
    }

    #[test]
    fn validate_rejects_small_memory_bad_cpus_and_missing_files() {
        let d = tempfile::tempdir().unwrap();
        assert!(cfg(d.path()).validate().is_ok());
        let mut c = cfg(d.path());
        c.mem_mib = 16;
        assert!(matches!(
            c.validate(),
            Err(VmmError::MemoryTooSmall { mem_mib: 16, .. })
        ));
        let mut c = cfg(d.path());
        c.cpus = 0;
        assert!(matches!(c.validate(), Err(VmmError::BadCpuCount { .. })));
        let mut c = cfg(d.path());
        c.kernel = "/nonexistent/kernel".into();
        assert!(matches!(c.validate(), Err(VmmError::KernelMissing(_))));
        let mut c = cfg(d.path());
        c.initrd = "/nonexistent/initrd".into();
        assert!(matches!(c.validate(), Err(VmmError::InitrdMissing(_))));
        let mut c = cfg(d.path());
        c.persist = Some(d.path().join("gone.ext4"));
        let e = c.validate().unwrap_err().to_string();
        assert!(
            e.contains("persist volume") && e.contains("gone.ext4"),
            "{e}"
        );
        let mut c = cfg(d.path());
        c.root = Some(RootDisks {
            image: d.path().join("k"),
            fs: LowerFs::Squashfs,
            upper: d.path().join("upper.ext4"),
        });
        assert!(matches!(
            c.validate(),
            Err(VmmError::DiskMissing {
                what: "upper disk",
                ..
            })
        ));
    }

    #[test]
    fn network_names_parse() {
        assert_eq!(Network::parse("none").unwrap(), Network::None);
        assert_eq!(Network::parse("allow_all").unwrap(), Network::AllowAll);
        assert_eq!(Network::AllowAll.as_str(), "allow_all");
        let e = Network::parse("bridge").unwrap_err().to_string();
        assert!(e.contains("bridge") && e.contains("none, allow_all"), "{e}");
    }
}
