//! The kernel command line contract between the host and the guest's init.
//!
//! The host attaches disks and a NIC and tells init what they are with
//! `hearth.*` words on the kernel command line; init (crates/guest/src/init)
//! parses the same words. This file is the host's half, in one place:
//!
//! | word | meaning |
//! |---|---|
//! | `hearth.hostname=ID` | the guest's host name (the VM id) |
//! | `hearth.root=overlay:serial:hearth-lower:serial:hearth-upper` | root = overlay of the read-only disk whose virtio-blk serial is `hearth-lower` and the ext4 disk with serial `hearth-upper` (init finds them through `/sys/block/vd*/serial`) |
//! | `hearth.lowerfs=squashfs\|ext4` | filesystem of the lower disk |
//! | `hearth.persist=serial:hearth-persist` | an ext4 volume init mounts at `/persist` |
//! | `hearth.link=virtio-serial` | the agent serves the VM link (hearth's stream multiplexer on the virtio-serial port named `hearth.agent`) instead of vsock port 1000 |
//! | `hearth.net=10.0.2.15/24,10.0.2.2` | configure the NIC: address/prefix, gateway |
//! | `hearth.dns=10.0.2.3` | the resolver written to `/etc/resolv.conf` |
//!
//! Without `hearth.root` the guest stays on its initramfs; without `hearth.net`
//! it has no network configuration (and the host attaches no NIC).
//! The addresses are those of QEMU's user-mode network (slirp): the gateway
//! 10.0.2.2 is the host (its loopback), 10.0.2.3 the built-in DNS forwarder.

/// The start of the console line the agent prints once it listens on vsock
/// (crates/guest/src/agent/mod.rs): the host waits for it before its first
/// vsock `CONNECT`, so the first attempt finds the agent listening.
pub const AGENT_READY_MARKER: &str = "hearth-agent: listening";

/// virtio-blk serial of the read-only root image.
pub const LOWER_SERIAL: &str = "hearth-lower";
/// virtio-blk serial of the per-VM writable ext4 disk.
pub const UPPER_SERIAL: &str = "hearth-upper";
/// virtio-blk serial of the `--persist` volume (also its ext4 label).
pub const PERSIST_SERIAL: &str = "hearth-persist";

/// The guest's address and prefix on the user-mode network.
pub const GUEST_ADDR: &str = "10.0.2.15/24";
/// The user-mode network's gateway; connections to it reach the host's loopback.
pub const GATEWAY: &str = "10.0.2.2";
/// The user-mode network's DNS forwarder.
pub const DNS: &str = "10.0.2.3";

/// Filesystem of a read-only root image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LowerFs {
    Squashfs,
    Ext4,
}

impl LowerFs {
    pub fn as_str(self) -> &'static str {
        match self {
            LowerFs::Squashfs => "squashfs",
            LowerFs::Ext4 => "ext4",
        }
    }

    /// Parses the `mount(2)` type name (`squashfs`, `ext4`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "squashfs" => Some(LowerFs::Squashfs),
            "ext4" => Some(LowerFs::Ext4),
            _ => None,
        }
    }
}

impl std::fmt::Display for LowerFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the guest is told at boot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GuestSpec {
    pub hostname: Option<String>,
    /// `Some` boots into an overlay root made of the lower and upper disks.
    pub lowerfs: Option<LowerFs>,
    pub persist: bool,
    pub network: bool,
    /// The agent serves the VM link (a virtio-serial port) instead of vsock.
    pub link: bool,
}

/// `serial:NAME`, the device reference init resolves through sysfs.
pub fn serial_ref(serial: &str) -> String {
    format!("serial:{serial}")
}

/// The `hearth.*` words for `spec`, in a fixed order.
pub fn kernel_args(spec: &GuestSpec) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(h) = &spec.hostname {
        v.push(format!("hearth.hostname={h}"));
    }
    if let Some(fs) = spec.lowerfs {
        v.push(format!(
            "hearth.root=overlay:{}:{}",
            serial_ref(LOWER_SERIAL),
            serial_ref(UPPER_SERIAL)
        ));
        v.push(format!("hearth.lowerfs={fs}"));
    }
    if spec.persist {
        v.push(format!("hearth.persist={}", serial_ref(PERSIST_SERIAL)));
    }
    if spec.network {
        v.push(format!("hearth.net={GUEST_ADDR},{GATEWAY}"));
        v.push(format!("hearth.dns={DNS}"));
    }
    if spec.link {
        v.push(LINK_WORD.to_string());
    }
    v
}

/// Tells the agent to serve the VM link (the QEMU backend's transport).
pub const LINK_WORD: &str = "hearth.link=virtio-serial";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_initramfs_gets_only_the_hostname() {
        let spec = GuestSpec {
            hostname: Some("ab12cd34".into()),
            ..Default::default()
        };
        assert_eq!(kernel_args(&spec), ["hearth.hostname=ab12cd34"]);
        assert!(kernel_args(&GuestSpec::default()).is_empty());
    }

    #[test]
    fn full_spec_matches_the_contract_words_exactly() {
        let spec = GuestSpec {
            hostname: Some("vm1".into()),
            lowerfs: Some(LowerFs::Squashfs),
            persist: true,
            network: true,
            link: true,
        };
        assert_eq!(
            kernel_args(&spec),
            [
                "hearth.hostname=vm1",
                "hearth.root=overlay:serial:hearth-lower:serial:hearth-upper",
                "hearth.lowerfs=squashfs",
                "hearth.persist=serial:hearth-persist",
                "hearth.net=10.0.2.15/24,10.0.2.2",
                "hearth.dns=10.0.2.3",
                "hearth.link=virtio-serial",
            ]
        );
    }

    #[test]
    fn ext4_lower_and_no_network() {
        let spec = GuestSpec {
            hostname: None,
            lowerfs: Some(LowerFs::Ext4),
            persist: false,
            network: false,
            link: false,
        };
        let words = kernel_args(&spec);
        assert!(words.contains(&"hearth.lowerfs=ext4".to_string()));
        assert!(!words.iter().any(|w| w.starts_with("hearth.net")
            || w.starts_with("hearth.dns")
            || w.starts_with("hearth.persist")));
    }

    #[test]
    fn lowerfs_names_round_trip() {
        for fs in [LowerFs::Squashfs, LowerFs::Ext4] {
            assert_eq!(LowerFs::parse(fs.as_str()), Some(fs));
        }
        assert_eq!(LowerFs::parse("xfs"), None);
    }
}
