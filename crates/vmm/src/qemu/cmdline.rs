//! The QEMU `microvm` and `hearth-guest vm-proxy` argument vectors, as pure functions.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::Accel;

/// Kernel command line every boot gets (see VM-NOTES: the timer flags keep TCG boots
/// from hanging on a loaded host), before `tsc_early_khz` ([`tsc_khz`]).
pub const BASE_KERNEL_CMDLINE: &str = "console=ttyS0 panic=-1 lpj=8000000 no_timer_check quiet";

/// Clock words of a software-emulated guest (see [`qemu_argv`]): measured
/// 10.20 s of guest time over 10.14 s of host time with them, 9.18 s over
/// 10.1 s (refined-jiffies) without.
pub const TCG_CLOCK_WORDS: &str = "tsc=reliable clocksource=tsc";

/// Used when the host's TSC frequency cannot be read.
pub const FALLBACK_TSC_KHZ: u64 = 2_000_000;

/// The TSC frequency the guest is told (`tsc_early_khz`). Under software
/// emulation the guest's TSC is the host's, so it must be the host's real
/// frequency: a made-up one (hearth used 2 GHz on a 2.6 GHz host) makes the
/// guest mark its TSC unstable and calibrate its timer wrong, and its clock
/// then ran 16% fast. Read from `/proc/cpuinfo` (`cpu MHz`, which is the TSC
/// rate on the constant-TSC hosts hearth runs on).
pub fn tsc_khz() -> u64 {
    static KHZ: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *KHZ.get_or_init(|| {
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| parse_cpu_mhz(&t))
            .unwrap_or(FALLBACK_TSC_KHZ)
    })
}

/// kHz from the first `cpu MHz` line of `/proc/cpuinfo`.
fn parse_cpu_mhz(cpuinfo: &str) -> Option<u64> {
    let line = cpuinfo.lines().find(|l| l.starts_with("cpu MHz"))?;
    let mhz: f64 = line.split(':').nth(1)?.trim().parse().ok()?;
    (100.0..100_000.0)
        .contains(&mhz)
        .then(|| (mhz * 1000.0).round() as u64)
}

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
    /// The chardev socket QEMU serves behind the agent's virtio-serial port
    /// (the VM link, see [`link_args`]); `None` for no link.
    pub link_socket: Option<PathBuf>,
    /// virtio-blk disks, in order.
    pub drives: Vec<Drive>,
    /// Attach a virtio-net NIC on QEMU's user-mode network (slirp). `false`
    /// means no NIC at all (`-nodefaults` removes QEMU's default one).
    pub user_net: bool,
    /// The QMP monitor socket QEMU listens on (`-qmp unix:PATH,server=on,wait=off`,
    /// see [`super::qmp`]); `None` for no monitor.
    pub qmp_socket: Option<PathBuf>,
    /// Start with `-incoming defer`: the VM's state comes from a snapshot
    /// (QMP `migrate-incoming`), not from booting.
    pub incoming: bool,
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
    let base = format!("{BASE_KERNEL_CMDLINE} tsc_early_khz={}", tsc_khz());
    let extra = extra.trim();
    if extra.is_empty() {
        base
    } else {
        format!("{base} {extra}")
    }
}

/// QEMU's argv (without the program name).
pub fn qemu_argv(a: &QemuArgs) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec![
        os("-M"),
        os(if a.acpi {
            "microvm,pit=on,pic=on,rtc=on"
        } else {
            "microvm,pit=on,pic=on,rtc=on,acpi=off"
        }),
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
    let mut cmdline = kernel_cmdline(&a.cmdline_extra);
    if a.accel == Accel::Tcg {
        // The guest's TSC is the host's (constant) one: use it as the clock
        // without the watchdog, which otherwise falls back to jiffies that
        // lose ticks whenever the vCPU thread waits for a host CPU.
        cmdline = format!("{cmdline} {TCG_CLOCK_WORDS}");
    }
    v.extend([os("-append"), os(cmdline)]);
    if let Some(sock) = &a.link_socket {
        v.extend(link_args(sock));
    }
    for d in &a.drives {
        v.extend(drive_args(d));
    }
    if a.incoming {
        v.extend([os("-incoming"), os("defer")]);
    }
    if let Some(sock) = &a.qmp_socket {
        v.extend([os("-qmp"), qmp_arg(sock)]);
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

/// `unix:PATH,server=on,wait=off`: QEMU creates and listens on the socket
/// itself and never waits for a client.
pub fn qmp_arg(sock: &Path) -> OsString {
    let mut s = path_arg("unix:", sock);
    s.push(",server=on,wait=off");
    s
}

/// Name of the agent's virtio-serial port (the guest finds it by this name).
pub const LINK_PORT_NAME: &str = "hearth.agent";

/// The VM link: a virtio-serial device with one port named
/// [`LINK_PORT_NAME`] whose host side is a chardev socket QEMU serves at
/// `sock` (`wait=off`: QEMU runs before the proxy connects). Unlike
/// vhost-user-vsock it migrates, and it needs no shared guest memory.
pub fn link_args(sock: &Path) -> [OsString; 6] {
    [
        os("-device"),
        os("virtio-serial-device,max_ports=2"),
        os("-chardev"),
        path_arg("socket,id=link,server=on,wait=off,path=", sock),
        os("-device"),
        os(format!("virtserialport,chardev=link,name={LINK_PORT_NAME}")),
    ]
}

/// The link proxy's argv (`hearth-guest vm-proxy`): QEMU's chardev socket,
/// the hybrid socket for host clients and the control socket.
pub fn proxy_argv(qemu_socket: &Path, listen: &Path, control: &Path) -> Vec<OsString> {
    vec![
        os("vm-proxy"),
        os("--qemu-socket"),
        os(qemu_socket.as_os_str()),
        os("--listen"),
        os(listen.as_os_str()),
        os("--control"),
        os(control.as_os_str()),
    ]
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
            link_socket: Some("/vm/link.sock".into()),
            drives: Vec::new(),
            user_net: false,
            qmp_socket: Some("/vm/qmp.sock".into()),
            incoming: false,
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
            ["microvm,pit=on,pic=on,rtc=on,acpi=off"]
        );
    }

    #[test]
    fn tcg_argv_has_sizes_cpus_and_the_link() {
        let v = strs(&qemu_argv(&args()));
        assert_eq!(value_after(&v, "-M"), ["microvm,pit=on,pic=on,rtc=on"]);
        assert!(
            value_after(&v, "-object").is_empty(),
            "no shared memory backend"
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
            ["socket,id=link,server=on,wait=off,path=/vm/link.sock"]
        );
        assert_eq!(
            value_after(&v, "-device"),
            [
                "virtio-serial-device,max_ports=2",
                "virtserialport,chardev=link,name=hearth.agent"
            ]
        );
        for flag in ["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"] {
            assert!(v.iter().any(|a| a == flag), "missing {flag}");
        }
        let append = value_after(&v, "-append");
        assert_eq!(append.len(), 1);
        for word in [
            "console=ttyS0",
            "panic=-1",
            &format!("tsc_early_khz={}", tsc_khz()),
            "tsc=reliable",
            "clocksource=tsc",
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
        a.link_socket = None;
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
                "virtio-serial-device,max_ports=2",
                "virtserialport,chardev=link,name=hearth.agent",
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
    fn qmp_socket_is_a_listening_unix_server_that_never_waits() {
        let v = strs(&qemu_argv(&args()));
        assert_eq!(
            value_after(&v, "-qmp"),
            ["unix:/vm/qmp.sock,server=on,wait=off"]
        );
        let mut a = args();
        a.qmp_socket = None;
        assert!(!strs(&qemu_argv(&a)).iter().any(|x| x == "-qmp"));
    }

    #[test]
    fn empty_extra_leaves_base_cmdline() {
        assert_eq!(
            kernel_cmdline("  "),
            format!("{BASE_KERNEL_CMDLINE} tsc_early_khz={}", tsc_khz())
        );
    }

    #[test]
    fn the_tsc_rate_comes_from_cpuinfo() {
        assert_eq!(
            parse_cpu_mhz("processor\t: 0\ncpu MHz\t\t: 2596.148\n"),
            Some(2_596_148)
        );
        assert_eq!(parse_cpu_mhz("cpu MHz : 0.5\n"), None);
        assert_eq!(parse_cpu_mhz("no such line"), None);
    }

    #[test]
    fn proxy_argv_names_the_three_sockets() {
        let v = strs(&proxy_argv(
            Path::new("/vm/link.sock"),
            Path::new("/vm/vsock.sock"),
            Path::new("/vm/link.ctl"),
        ));
        assert_eq!(
            v,
            [
                "vm-proxy",
                "--qemu-socket",
                "/vm/link.sock",
                "--listen",
                "/vm/vsock.sock",
                "--control",
                "/vm/link.ctl"
            ]
        );
    }
}
