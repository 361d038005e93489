//! The NIC (`hearth.net`) and the resolver file (`hearth.dns`), without any
//! external tool: the interface is configured with the classic ioctls
//! (`SIOCSIFADDR`, `SIOCSIFNETMASK`, `SIOCSIFFLAGS`) and the default route
//! with `SIOCADDRT`.
//!
//! The interface is the first one in `/sys/class/net` that is not `lo` (the
//! host attaches at most one NIC, `eth0`).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use super::cmdline::NetSpec;
use super::InitError;

/// How long the NIC may take to appear after virtio_net loaded.
const NIC_WAIT: Duration = Duration::from_secs(5);

/// The non-loopback interfaces under `sys_class_net`, sorted.
pub fn nics(sys_class_net: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(sys_class_net) else {
        return Vec::new();
    };
    let mut out: Vec<String> = dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    out.sort();
    out
}

/// `/etc/resolv.conf` text for `servers`.
pub fn resolv_conf(servers: &[IpAddr]) -> String {
    let mut text = String::from("# written by hearth-init from hearth.dns\n");
    for s in servers {
        text.push_str(&format!("nameserver {s}\n"));
    }
    text
}

/// Replaces `/etc/resolv.conf` of the current root (a symlink is replaced, not
/// followed). Written to a temporary name and renamed into place.
pub fn write_resolv_conf(servers: &[IpAddr]) -> Result<(), InitError> {
    let etc = Path::new("/etc");
    super::mounts::ensure_dir(etc, 0o755)?;
    let tmp = etc.join(".resolv.conf.hearth");
    let what = || "write /etc/resolv.conf".to_owned();
    std::fs::write(&tmp, resolv_conf(servers)).map_err(|e| InitError::io(what(), e))?;
    std::fs::rename(&tmp, etc.join("resolv.conf")).map_err(|e| InitError::io(what(), e))
}

/// Waits for the NIC, gives it `spec`'s address, brings it up and adds the
/// default route. Returns the interface name.
pub fn configure(spec: &NetSpec) -> Result<String, InitError> {
    let deadline = Instant::now() + NIC_WAIT;
    let name = loop {
        if let Some(n) = nics(Path::new("/sys/class/net")).into_iter().next() {
            break n;
        }
        if Instant::now() > deadline {
            return Err(InitError::io(
                "find the network interface for hearth.net",
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!(
                        "no interface but lo appeared within {} s (is a virtio-net device attached?)",
                        NIC_WAIT.as_secs()
                    ),
                ),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let sock = inet_socket().map_err(|e| InitError::io("open an AF_INET socket", e))?;
    let step = |what: &str, r: std::io::Result<()>| {
        r.map_err(|e| InitError::io(format!("{what} on {name}"), e))
    };
    step(
        &format!("set address {}", spec.addr),
        set_addr(&sock, &name, libc::SIOCSIFADDR, spec.addr),
    )?;
    step(
        &format!("set netmask {}", spec.netmask()),
        set_addr(&sock, &name, libc::SIOCSIFNETMASK, spec.netmask()),
    )?;
    step("bring the interface up", set_up(&sock, &name))?;
    if let Some(gw) = spec.gateway {
        step(
            &format!("add default route via {gw}"),
            add_default_route(&sock, gw),
        )?;
    }
    Ok(name)
}

fn inet_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the returned fd is checked and then owned.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh, valid fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn ifreq_for(name: &str) -> std::io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() || name.contains('\0') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes of plain data; the
    // kernel reads a sockaddr_in back out of it for AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl<T>(sock: &OwnedFd, request: libc::c_ulong, arg: &mut T) -> std::io::Result<()> {
    // SAFETY: every caller passes the argument type its request expects
    // (ifreq or rtentry), owned and properly sized, for the duration of the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, arg as *mut T) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// SIOCSIFADDR or SIOCSIFNETMASK: both take the address in `ifr_addr`'s slot.
fn set_addr(
    sock: &OwnedFd,
    name: &str,
    request: libc::c_ulong,
    addr: Ipv4Addr,
) -> std::io::Result<()> {
    let mut req = ifreq_for(name)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ioctl(sock, request, &mut req)
}

fn set_up(sock: &OwnedFd, name: &str) -> std::io::Result<()> {
    let mut req = ifreq_for(name)?;
    ioctl(sock, libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: ifru_flags is the union member SIOCGIFFLAGS just filled in.
    unsafe {
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    }
    ioctl(sock, libc::SIOCSIFFLAGS, &mut req)
}

/// `struct rtentry` from `<linux/route.h>` (the libc crate has it only for
/// musl/uclibc); x86_64 layout.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// `ip route add default via GW` (the kernel picks the interface whose subnet
/// holds the gateway).
fn add_default_route(sock: &OwnedFd, gw: Ipv4Addr) -> std::io::Result<()> {
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_in(gw),
        rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: std::ptr::null_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    ioctl(sock, libc::SIOCADDRT, &mut rt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtentry_matches_the_kernel_layout() {
        // <linux/route.h> on x86_64: 120 bytes, rt_flags at 56, rt_dev at 88.
        assert_eq!(std::mem::size_of::<RtEntry>(), 120);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_flags), 56);
        assert_eq!(std::mem::offset_of!(RtEntry, rt_dev), 88);
    }

    #[test]
    fn sockaddr_carries_family_and_network_order_address() {
        let sa = sockaddr_in(Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(sa.sa_family, libc::AF_INET as libc::sa_family_t);
        // sa_data: 2 bytes of port, then the address in network order.
        let data: Vec<u8> = sa.sa_data[..6].iter().map(|&b| b as u8).collect();
        assert_eq!(data, [0, 0, 10, 0, 2, 15]);
    }

    #[test]
    fn resolv_conf_lists_every_server_in_order() {
        let text = resolv_conf(&["10.0.2.3".parse().unwrap(), "fd00::3".parse().unwrap()]);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(lines, ["nameserver 10.0.2.3", "nameserver fd00::3"]);
    }

    #[test]
    fn nics_skip_lo_and_sort() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["lo", "eth1", "eth0"] {
            std::fs::create_dir(dir.path().join(n)).unwrap();
        }
        assert_eq!(nics(dir.path()), ["eth0", "eth1"]);
        std::fs::remove_dir(dir.path().join("eth0")).unwrap();
        std::fs::remove_dir(dir.path().join("eth1")).unwrap();
        assert!(nics(dir.path()).is_empty());
        assert!(nics(&dir.path().join("absent")).is_empty());
    }

    #[test]
    fn interface_names_are_bounded() {
        assert!(ifreq_for("eth0").is_ok());
        assert!(ifreq_for("0123456789abcdef").is_err());
        assert!(ifreq_for("a\0b").is_err());
    }
}
