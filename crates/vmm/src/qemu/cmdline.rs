//! The QEMU `microvm` and `vhost-device-vsock` argument vectors, as pure functions.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::Accel;

/// Kernel command line every boot gets (see VM-NOTES: the timer flags keep TCG boots
/// from hanging on a loaded host).
pub const BASE_KERNEL_CMDLINE: &str =
    "console=ttyS0 panic=-1 tsc_early_khz=2000000 lpj=8000000 no_timer_check quiet";

/// Size of QEMU's translated-code cache under software emulation. QEMU's
/// default (1 GiB) lets an idle VM hold 80+ MiB of anonymous memory after boot
/// and grow further under load; 32 MiB measured 66 MiB after boot at ~4% more
/// boot time, 16 MiB 47 MiB but ~14% slower boots (retranslation).
pub const TCG_TB_SIZE_MIB: u32 = 32;

/// QEMU's seccomp filter, on for every VMM (root or not): besides the default
/// deny list it refuses obsolete system calls, privilege changes (setuid and
/// friends), spawning processes (fork/exec) and resource control (scheduler,
/// affinity, priorities). Accepted by Debian's QEMU 7.2 and upstream 10.
pub const SECCOMP_SANDBOX: &str =
    "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// Where the guest's serial console goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Serial {
    /// QEMU writes it to this file itself (unbounded: only for short probes).
    File(PathBuf),
    /// QEMU's stdout, a pipe to the console logger
    /// ([`crate::console_log`]), which timestamps, bounds and rotates it.
    Stdio,
}

/// Everything the QEMU argv depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuArgs {
    pub accel: Accel,
    pub cpus: u32,
    pub mem_mib: u32,
    pub kernel: PathBuf,
    /// `None` boots the kernel alone (the KVM probe does this).
    pub initrd: Option<PathBuf>,
    /// Appended after [`BASE_KERNEL_CMDLINE`].
    pub cmdline_extra: String,
    pub serial: Serial,
    /// The vhost-user socket served by vhost-device-vsock; `None` for no vsock.
    pub vhost_socket: Option<PathBuf>,
    /// virtio-blk disks, in order.
    pub drives: Vec<Drive>,
    /// Attach a virtio-net NIC on QEMU's user-mode network (slirp). `false`
    /// means no NIC at all (`-nodefaults` removes QEMU's default one).
    pub user_net: bool,
    /// `false` adds `acpi=off` to the machine (see `SandboxConfig::acpi`).
    pub acpi: bool,
}

/// Host page cache policy of a disk.
///
/// `Writeback` (QEMU's default) is used for every writable disk: writes go
/// through the host page cache and a guest flush (fsync, journal commit, the
/// sync init does before power-off) becomes a host `fdatasync`, so what the
/// guest made durable survives a host crash. `unsafe` would drop those
/// flushes: a little faster, but an upper layer or `/persist` volume could be
/// left corrupt by a host crash, which a persistent volume must not risk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskCache {
    Writeback,
}

impl DiskCache {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskCache::Writeback => "writeback",
        }
    }
}

/// One virtio-blk disk on the microvm's virtio-mmio bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// QEMU drive id (letters, digits, `-`, `_`).
    pub id: String,
    pub file: PathBuf,
    /// The virtio-blk serial the guest finds the disk by (at most 20 bytes).
    pub serial: String,
    pub readonly: bool,
    pub cache: DiskCache,
}

/// Escapes a value for a QEMU `-drive`/`-device` option list (`,` → `,,`).
fn qemu_opt_value(p: &std::ffi::OsStr) -> OsString {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::with_capacity(p.len());
    for &b in p.as_bytes() {
        out.push(b);
        if b == b',' {
            out.push(b',');
        }
    }
    OsString::from_vec(out)
}

/// `-drive …` and `-device virtio-blk-device,…` for one disk.
pub fn drive_args(d: &Drive) -> [OsString; 4] {
    let mut drive = OsString::from(format!("id={},file=", d.id));
    drive.push(qemu_opt_value(d.file.as_os_str()));
    drive.push(",format=raw,if=none");
    if d.readonly {
        drive.push(",readonly=on");
    } else {
        drive.push(format!(",cache={}", d.cache.as_str()));
    }
    [
        os("-drive"),
        drive,
        os("-device"),
        os(format!(
            "virtio-blk-device,drive={},serial={}",
            d.id, d.serial
        )),
    ]
}

fn os(s: impl Into<OsString>) -> OsString {
    s.into()
}

fn path_arg(prefix: &str, p: &Path) -> OsString {
    let mut s = OsString::from(prefix);
    s.push(p.as_os_str());
    s
}

/// The full kernel command line.
pub fn kernel_cmdline(extra: &str) -> String {
    let extra = extra.trim();
    if extra.is_empty() {
        BASE_KERNEL_CMDLINE.to_string()
    } else {
        format!("{BASE_KERNEL_CMDLINE} {extra}")
    }
}

/// QEMU's argv (without the program name).
pub fn qemu_argv(a: &QemuArgs) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        os("-M"),
        os(if a.acpi {
            "microvm,pit=on,pic=on,rtc=on,memory-backend=mem"
        } else {
            "microvm,pit=on,pic=on,rtc=on,memory-backend=mem,acpi=off"
        }),
        os("-object"),
        os(format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            a.mem_mib
        )),
        os("-m"),
        os(format!("{}", a.mem_mib)),
        os("-smp"),
        os(format!("{}", a.cpus)),
    ];
    match a.accel {
        Accel::Kvm => v.extend([os("-accel"), os("kvm"), os("-cpu"), os("host")]),
        Accel::Tcg => v.extend([
            os("-accel"),
            os(format!("tcg,tb-size={TCG_TB_SIZE_MIB}")),
            os("-cpu"),
            os("max"),
        ]),
    }
    v.extend([
        os("-sandbox"),
        os(SECCOMP_SANDBOX),
        os("-nodefaults"),
        os("-no-user-config"),
        os("-nographic"),
        os("-no-reboot"),
        os("-serial"),
        match &a.serial {
            Serial::File(p) => path_arg("file:", p),
            Serial::Stdio => os("stdio"),
        },
        os("-kernel"),
        os(a.kernel.as_os_str()),
    ]);
    if let Some(initrd) = &a.initrd {
        v.extend([os("-initrd"), os(initrd.as_os_str())]);
    }
    v.extend([os("-append"), os(kernel_cmdline(&a.cmdline_extra))]);
    if let Some(sock) = &a.vhost_socket {
        v.extend([
            os("-chardev"),
            path_arg("socket,id=vs,path=", sock),
            os("-device"),
            os("vhost-user-vsock-device,chardev=vs"),
        ]);
    }
    for d in &a.drives {
        v.extend(drive_args(d));
    }
    if a.user_net {
        v.extend([
            os("-netdev"),
            os("user,id=n0"),
            os("-device"),
            os("virtio-net-device,netdev=n0"),
        ]);
    }
    v
}

/// vhost-device-vsock's argv: one VM, guest CID 3, the vhost-user socket for QEMU and
/// the Firecracker-style hybrid socket for the host.
pub fn vhost_argv(vhost_socket: &Path, uds_path: &Path) -> Vec<OsString> {
    let mut spec = OsString::from("guest-cid=3,socket=");
    spec.push(vhost_socket.as_os_str());
    spec.push(",uds-path=");
    spec.push(uds_path.as_os_str());
    vec![os("--vm"), spec]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> QemuArgs {
        QemuArgs {
            accel: Accel::Tcg,
            cpus: 2,
            mem_mib: 256,
            kernel: "/boot/vmlinuz".into(),
            initrd: Some("/cache/initrd.cpio.gz".into()),
            cmdline_extra: "hearth.debug=1".into(),
            serial: Serial::File("/vm/console.log".into()),
            vhost_socket: Some("/vm/vhost.sock".into()),
            drives: Vec::new(),
            user_net: false,
            acpi: true,
        }
    }

    fn strs(v: &[OsString]) -> Vec<String> {
        v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    fn value_after(v: &[String], flag: &str) -> Vec<String> {
        v.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .collect()
    }

    #[test]
    fn acpi_off_is_a_machine_option() {
        let a = QemuArgs {
            acpi: false,
            ..args()
        };
        assert_eq!(
            value_after(&strs(&qemu_argv(&a)), "-M"),
            ["microvm,pit=on,pic=on,rtc=on,memory-backend=mem,acpi=off"]
        );
    }

    #[test]
    fn tcg_argv_has_shared_memory_sizes_cpus_and_vsock() {
        let v = strs(&qemu_argv(&args()));
        assert_eq!(
            value_after(&v, "-M"),
            ["microvm,pit=on,pic=on,rtc=on,memory-backend=mem"]
        );
        assert_eq!(
            value_after(&v, "-object"),
            ["memory-backend-memfd,id=mem,size=256M,share=on"]
        );
        assert_eq!(value_after(&v, "-m"), ["256"]);
        assert_eq!(value_after(&v, "-smp"), ["2"]);
        assert_eq!(value_after(&v, "-accel"), ["tcg,tb-size=32"]);
        assert_eq!(value_after(&v, "-cpu"), ["max"]);
        assert_eq!(
            value_after(&v, "-sandbox"),
            ["on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"]
        );
        assert_eq!(value_after(&v, "-serial"), ["file:/vm/console.log"]);
        assert_eq!(value_after(&v, "-kernel"), ["/boot/vmlinuz"]);
        assert_eq!(value_after(&v, "-initrd"), ["/cache/initrd.cpio.gz"]);
        assert_eq!(
            value_after(&v, "-chardev"),
            ["socket,id=vs,path=/vm/vhost.sock"]
        );
        assert_eq!(
            value_after(&v, "-device"),
            ["vhost-user-vsock-device,chardev=vs"]
        );
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(v.iter().any(|a| a == flag), "missing {flag}");
        }
        let append = value_after(&v, "-append");
        assert_eq!(append.len(), 1);
        for word in [
            "console=ttyS0",
            "panic=-1",
            "tsc_early_khz=2000000",
            "lpj=8000000",
            "no_timer_check",
            "hearth.debug=1",
        ] {
            assert!(
                append[0].split(' ').any(|w| w == word),
                "cmdline lacks {word}: {}",
                append[0]
            );
        }
    }

    #[test]
    fn kvm_uses_host_cpu_and_probe_boot_has_no_initrd_or_vsock() {
        let mut a = args();
        a.accel = Accel::Kvm;
        a.initrd = None;
        a.vhost_socket = None;
        let v = strs(&qemu_argv(&a));
        assert_eq!(value_after(&v, "-accel"), ["kvm"]);
        assert_eq!(value_after(&v, "-cpu"), ["host"]);
        assert_eq!(value_after(&v, "-sandbox"), [SECCOMP_SANDBOX]);
        assert!(!v
            .iter()
            .any(|x| x == "-initrd" || x == "-chardev" || x == "-device"));
    }

    fn disks() -> Vec<Drive> {
        vec![
            Drive {
                id: "lower".into(),
                file: "/cache/rootfs/python-0123.squashfs".into(),
                serial: "hearth-lower".into(),
                readonly: true,
                cache: DiskCache::Writeback,
            },
            Drive {
                id: "upper".into(),
                file: "/vm,1/upper.ext4".into(),
                serial: "hearth-upper".into(),
                readonly: false,
                cache: DiskCache::Writeback,
            },
        ]
    }

    #[test]
    fn disks_are_virtio_blk_with_serials_readonly_lower_and_escaped_paths() {
        let mut a = args();
        a.drives = disks();
        let v = strs(&qemu_argv(&a));
        assert_eq!(
            value_after(&v, "-drive"),
            [
                "id=lower,file=/cache/rootfs/python-0123.squashfs,format=raw,if=none,readonly=on",
                "id=upper,file=/vm,,1/upper.ext4,format=raw,if=none,cache=writeback",
            ]
        );
        assert_eq!(
            value_after(&v, "-device"),
            [
                "vhost-user-vsock-device,chardev=vs",
                "virtio-blk-device,drive=lower,serial=hearth-lower",
                "virtio-blk-device,drive=upper,serial=hearth-upper",
            ]
        );
        assert!(!v.iter().any(|x| x == "-netdev"));
    }

    #[test]
    fn user_net_adds_one_virtio_nic_and_none_adds_nothing() {
        let mut a = args();
        a.user_net = true;
        let v = strs(&qemu_argv(&a));
        assert_eq!(value_after(&v, "-netdev"), ["user,id=n0"]);
        assert!(value_after(&v, "-device")
            .iter()
            .any(|d| d == "virtio-net-device,netdev=n0"));
        a.user_net = false;
        let v = strs(&qemu_argv(&a));
        assert!(!v.iter().any(|x| x == "-netdev" || x.contains("virtio-net")));
        // -nodefaults keeps QEMU from adding a NIC of its own.
        assert!(v.iter().any(|x| x == "-nodefaults"));
    }

    #[test]
    fn empty_extra_leaves_base_cmdline() {
        assert_eq!(kernel_cmdline("  "), BASE_KERNEL_CMDLINE);
    }

    #[test]
    fn vhost_argv_names_both_sockets() {
        let v = strs(&vhost_argv(
            Path::new("/d/vhost.sock"),
            Path::new("/d/vsock.sock"),
        ));
        assert_eq!(
            v,
            [
                "--vm",
                "guest-cid=3,socket=/d/vhost.sock,uds-path=/d/vsock.sock"
            ]
        );
    }
}
