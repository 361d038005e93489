//! Pure parser for the hearth options on the kernel command line (`/proc/cmdline`).
//!
//! Recognised (all others are ignored; the last occurrence wins, as in the kernel):
//! - `hearth.hostname=NAME` — RFC 1123 host name, at most 64 bytes
//! - `hearth.root=initramfs` (default) or `hearth.root=overlay:LOWER:UPPER`
//!   (LOWER: read-only image, UPPER: ext4 device for the writable layer)
//! - `hearth.lowerfs=squashfs|ext4` — filesystem of LOWER (default squashfs)
//! - `hearth.persist=DEV` — an ext4 volume mounted at `/persist`
//! - `hearth.net=ADDR/PREFIX[,GATEWAY]` — IPv4 address of the first NIC and
//!   its default route
//! - `hearth.dns=IP[,IP...]` — resolvers written to `/etc/resolv.conf` (at most 3)
//! - `hearth.debug=1` — more console output from init
//!
//! A device (DEV, LOWER, UPPER) is either a `/dev/...` path or `serial:NAME`,
//! the virtio-blk serial the host gave the disk (found in `/sys/block/vd*/serial`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// virtio-blk serials are at most 20 bytes (`VIRTIO_BLK_ID_BYTES`).
pub const MAX_SERIAL_LEN: usize = 20;
/// glibc's resolver reads at most this many `nameserver` lines (`MAXNS`).
pub const MAX_DNS: usize = 3;

/// A block device named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceRef {
    /// A device node, e.g. `/dev/vda`.
    Path(PathBuf),
    /// The disk whose virtio-blk serial is this name.
    Serial(String),
}

impl std::fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceRef::Path(p) => write!(f, "{}", p.display()),
            DeviceRef::Serial(s) => write!(f, "serial:{s}"),
        }
    }
}

/// Filesystem of the read-only lower layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LowerFs {
    #[default]
    Squashfs,
    Ext4,
}

impl LowerFs {
    /// The `mount(2)` type name.
    pub fn fstype(self) -> &'static str {
        match self {
            LowerFs::Squashfs => "squashfs",
            LowerFs::Ext4 => "ext4",
        }
    }
}

/// Where the root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RootSpec {
    /// Stay on the initramfs (the kernel's rootfs).
    #[default]
    Initramfs,
    /// Read-only `lower` + ext4 `upper` combined with overlayfs, then switched into.
    Overlay { lower: DeviceRef, upper: DeviceRef },
}

/// `hearth.net`: the NIC's address and default route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetSpec {
    pub addr: Ipv4Addr,
    /// Prefix length, 1-32.
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
}

impl NetSpec {
    pub fn netmask(&self) -> Ipv4Addr {
        prefix_to_mask(self.prefix)
    }
}

/// `/24` → `255.255.255.0`.
pub fn prefix_to_mask(prefix: u8) -> Ipv4Addr {
    let bits = match prefix {
        0 => 0,
        p if p >= 32 => u32::MAX,
        p => u32::MAX << (32 - u32::from(p)),
    };
    Ipv4Addr::from(bits)
}

/// The hearth options found on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cmdline {
    pub hostname: Option<String>,
    pub root: RootSpec,
    pub lowerfs: LowerFs,
    pub persist: Option<DeviceRef>,
    pub net: Option<NetSpec>,
    pub dns: Vec<IpAddr>,
    pub debug: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("invalid hearth.hostname {0:?} (letters, digits, '-' and '.', 1-64 bytes)")]
    Hostname(String),
    #[error(
        "invalid hearth.root {0:?} (want initramfs or overlay:LOWER:UPPER, each /dev/NAME or serial:NAME, distinct)"
    )]
    Root(String),
    #[error("invalid hearth.lowerfs {0:?} (want squashfs or ext4)")]
    LowerFs(String),
    #[error("invalid hearth.persist {0:?} (want /dev/NAME or serial:NAME)")]
    Persist(String),
    #[error("hearth.persist {0} is also a disk of hearth.root")]
    PersistIsRoot(String),
    #[error("invalid hearth.net {value:?}: {why} (want ADDR/PREFIX[,GATEWAY], e.g. 10.0.2.15/24,10.0.2.2)")]
    Net { value: String, why: &'static str },
    #[error("invalid hearth.dns {0:?} (want 1-3 comma-separated IP addresses)")]
    Dns(String),
    #[error("unterminated quote in kernel command line")]
    Quote,
}

/// Splits like the kernel does: whitespace separates, double quotes group.
fn tokens(text: &str) -> Result<Vec<String>, CmdlineError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut has_token = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quote = !in_quote;
                has_token = true;
            }
            c if c.is_whitespace() && !in_quote => {
                if has_token {
                    out.push(std::mem::take(&mut cur));
                    has_token = false;
                }
            }
            c => {
                cur.push(c);
                has_token = true;
            }
        }
    }
    if in_quote {
        return Err(CmdlineError::Quote);
    }
    if has_token {
        out.push(cur);
    }
    Ok(out)
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
}

fn valid_serial(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERIAL_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Takes one device from `:`-separated parts: `/dev/X` or `serial` `NAME`.
fn take_device<'a>(parts: &mut impl Iterator<Item = &'a str>) -> Option<DeviceRef> {
    match parts.next()? {
        "serial" => {
            let name = parts.next()?;
            valid_serial(name).then(|| DeviceRef::Serial(name.to_owned()))
        }
        p if p.starts_with('/') && p.len() > 1 => Some(DeviceRef::Path(p.into())),
        _ => None,
    }
}

/// One whole device reference (`hearth.persist`).
fn parse_device(value: &str) -> Option<DeviceRef> {
    let mut parts = value.split(':');
    let dev = take_device(&mut parts)?;
    parts.next().is_none().then_some(dev)
}

fn parse_root(value: &str) -> Result<RootSpec, CmdlineError> {
    if value == "initramfs" {
        return Ok(RootSpec::Initramfs);
    }
    let bad = || CmdlineError::Root(value.to_owned());
    let rest = value.strip_prefix("overlay:").ok_or_else(bad)?;
    let mut parts = rest.split(':');
    let lower = take_device(&mut parts).ok_or_else(bad)?;
    let upper = take_device(&mut parts).ok_or_else(bad)?;
    if parts.next().is_some() || lower == upper {
        return Err(bad());
    }
    Ok(RootSpec::Overlay { lower, upper })
}

fn parse_lowerfs(value: &str) -> Result<LowerFs, CmdlineError> {
    match value {
        "squashfs" => Ok(LowerFs::Squashfs),
        "ext4" => Ok(LowerFs::Ext4),
        _ => Err(CmdlineError::LowerFs(value.to_owned())),
    }
}

fn parse_net(value: &str) -> Result<NetSpec, CmdlineError> {
    let bad = |why| CmdlineError::Net {
        value: value.to_owned(),
        why,
    };
    let (cidr, gateway) = match value.split_once(',') {
        Some((c, g)) => (c, Some(g)),
        None => (value, None),
    };
    let (addr, prefix) = cidr.split_once('/').ok_or_else(|| bad("missing /PREFIX"))?;
    let addr: Ipv4Addr = addr.parse().map_err(|_| bad("bad IPv4 address"))?;
    if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
        return Err(bad("address is not a unicast address"));
    }
    let prefix: u8 = prefix.parse().map_err(|_| bad("prefix must be 1-32"))?;
    if !(1..=32).contains(&prefix) {
        return Err(bad("prefix must be 1-32"));
    }
    let gateway = match gateway {
        None => None,
        Some(g) => {
            let g: Ipv4Addr = g.parse().map_err(|_| bad("bad IPv4 gateway"))?;
            let mask = u32::from(prefix_to_mask(prefix));
            if g == addr {
                return Err(bad("gateway equals the address"));
            }
            if u32::from(g) & mask != u32::from(addr) & mask {
                return Err(bad("gateway is outside the address's subnet"));
            }
            Some(g)
        }
    };
    Ok(NetSpec {
        addr,
        prefix,
        gateway,
    })
}

fn parse_dns(value: &str) -> Result<Vec<IpAddr>, CmdlineError> {
    let bad = || CmdlineError::Dns(value.to_owned());
    let list = value
        .split(',')
        .map(|s| s.parse::<IpAddr>().map_err(|_| bad()))
        .collect::<Result<Vec<_>, _>>()?;
    if list.len() > MAX_DNS {
        return Err(bad());
    }
    Ok(list)
}

/// Parses the full `/proc/cmdline` text.
pub fn parse(text: &str) -> Result<Cmdline, CmdlineError> {
    let mut out = Cmdline::default();
    for tok in tokens(text)? {
        let (key, value) = tok.split_once('=').unwrap_or((tok.as_str(), ""));
        match key {
            "hearth.hostname" => {
                if !valid_hostname(value) {
                    return Err(CmdlineError::Hostname(value.to_owned()));
                }
                out.hostname = Some(value.to_owned());
            }
            "hearth.root" => out.root = parse_root(value)?,
            "hearth.lowerfs" => out.lowerfs = parse_lowerfs(value)?,
            "hearth.persist" => {
                let dev =
                    parse_device(value).ok_or_else(|| CmdlineError::Persist(value.to_owned()))?;
                out.persist = Some(dev);
            }
            "hearth.net" => out.net = Some(parse_net(value)?),
            "hearth.dns" => out.dns = parse_dns(value)?,
            "hearth.debug" => out.debug = !matches!(value, "0" | "false" | "no"),
            _ => {}
        }
    }
    if let (Some(p), RootSpec::Overlay { lower, upper }) = (&out.persist, &out.root) {
        if p == lower || p == upper {
            return Err(CmdlineError::PersistIsRoot(p.to_string()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serial(s: &str) -> DeviceRef {
        DeviceRef::Serial(s.into())
    }

    fn path(p: &str) -> DeviceRef {
        DeviceRef::Path(p.into())
    }

    #[test]
    fn defaults_when_no_hearth_options() {
        let c = parse("console=ttyS0 panic=-1 quiet\n").unwrap();
        assert_eq!(c, Cmdline::default());
        assert_eq!(c.root, RootSpec::Initramfs);
        assert_eq!(c.lowerfs, LowerFs::Squashfs);
        assert_eq!((c.persist, c.net, c.dns.len()), (None, None, 0));
    }

    #[test]
    fn reads_hostname_root_and_debug() {
        let c = parse(
            "console=ttyS0 hearth.hostname=sbx-1.local hearth.root=overlay:/dev/vda:/dev/vdb hearth.debug",
        )
        .unwrap();
        assert_eq!(c.hostname.as_deref(), Some("sbx-1.local"));
        assert_eq!(
            c.root,
            RootSpec::Overlay {
                lower: path("/dev/vda"),
                upper: path("/dev/vdb"),
            }
        );
        assert!(c.debug);
        assert!(!parse("hearth.debug=0").unwrap().debug);
    }

    /// The exact words the host writes (crates/vmm/src/guest_contract.rs).
    #[test]
    fn parses_the_full_host_contract() {
        let c = parse(
            "console=ttyS0 panic=-1 hearth.hostname=vm1 \
             hearth.root=overlay:serial:hearth-lower:serial:hearth-upper \
             hearth.lowerfs=squashfs hearth.persist=serial:hearth-persist \
             hearth.net=10.0.2.15/24,10.0.2.2 hearth.dns=10.0.2.3",
        )
        .unwrap();
        assert_eq!(
            c,
            Cmdline {
                hostname: Some("vm1".into()),
                root: RootSpec::Overlay {
                    lower: serial("hearth-lower"),
                    upper: serial("hearth-upper"),
                },
                lowerfs: LowerFs::Squashfs,
                persist: Some(serial("hearth-persist")),
                net: Some(NetSpec {
                    addr: Ipv4Addr::new(10, 0, 2, 15),
                    prefix: 24,
                    gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                }),
                dns: vec!["10.0.2.3".parse().unwrap()],
                debug: false,
            }
        );
        assert_eq!(c.net.unwrap().netmask(), Ipv4Addr::new(255, 255, 255, 0));
    }

    #[test]
    fn devices_mix_paths_and_serials() {
        let table: &[(&str, DeviceRef, DeviceRef)] = &[
            ("overlay:serial:a:/dev/vdb", serial("a"), path("/dev/vdb")),
            ("overlay:/dev/vda:serial:b", path("/dev/vda"), serial("b")),
            (
                "overlay:serial:x_1.2-y:serial:abcdefghij0123456789",
                serial("x_1.2-y"),
                serial("abcdefghij0123456789"),
            ),
        ];
        for (value, lower, upper) in table {
            let c = parse(&format!("hearth.root={value}")).unwrap();
            assert_eq!(
                c.root,
                RootSpec::Overlay {
                    lower: lower.clone(),
                    upper: upper.clone()
                },
                "{value}"
            );
        }
        assert_eq!(
            parse("hearth.persist=/dev/vdc").unwrap().persist,
            Some(path("/dev/vdc"))
        );
        assert_eq!(serial("p").to_string(), "serial:p");
    }

    #[test]
    fn lowerfs_net_and_dns_variants() {
        assert_eq!(parse("hearth.lowerfs=ext4").unwrap().lowerfs, LowerFs::Ext4);
        assert_eq!(LowerFs::Ext4.fstype(), "ext4");
        assert_eq!(LowerFs::Squashfs.fstype(), "squashfs");
        let n = parse("hearth.net=192.168.7.9/16").unwrap().net.unwrap();
        assert_eq!((n.prefix, n.gateway), (16, None));
        assert_eq!(n.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        let n = parse("hearth.net=10.1.2.3/32").unwrap().net.unwrap();
        assert_eq!(n.netmask(), Ipv4Addr::BROADCAST);
        let d = parse("hearth.dns=1.2.3.4,fd00::3,10.0.2.3").unwrap().dns;
        assert_eq!(d.len(), 3);
        assert_eq!(d[1], "fd00::3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn prefix_masks() {
        for (p, mask) in [
            (0, "0.0.0.0"),
            (1, "128.0.0.0"),
            (8, "255.0.0.0"),
            (20, "255.255.240.0"),
            (31, "255.255.255.254"),
            (32, "255.255.255.255"),
        ] {
            assert_eq!(prefix_to_mask(p), mask.parse::<Ipv4Addr>().unwrap(), "/{p}");
        }
    }

    #[test]
    fn last_occurrence_wins_and_quotes_group() {
        let c = parse(r#"hearth.hostname=a hearth.hostname="b" x="1 2" hearth.root=initramfs"#)
            .unwrap();
        assert_eq!(c.hostname.as_deref(), Some("b"));
        assert_eq!(tokens(r#"a "b c" d"#).unwrap(), ["a", "b c", "d"]);
        assert_eq!(parse(r#"x="open"#), Err(CmdlineError::Quote));
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            "hearth.hostname=",
            "hearth.hostname=a/b",
            "hearth.hostname=-x",
            "hearth.hostname=\"a b\"",
        ] {
            assert!(
                matches!(parse(bad), Err(CmdlineError::Hostname(_))),
                "{bad} accepted"
            );
        }
        let long = format!("hearth.hostname={}", "a".repeat(65));
        assert!(parse(&long).is_err());
        for bad in [
            "hearth.root=",
            "hearth.root=tmpfs",
            "hearth.root=overlay:/dev/vda",
            "hearth.root=overlay:vda:/dev/vdb",
            "hearth.root=overlay:/dev/vda:/dev/vda",
            "hearth.root=overlay:/dev/vda:/dev/vdb:/dev/vdc",
            "hearth.root=overlay:serial:a:serial:a",
            "hearth.root=overlay:serial:a:serial",
            "hearth.root=overlay:serial::/dev/vdb",
            "hearth.root=overlay:serial:a b:/dev/vdb",
            "hearth.root=overlay:serial:a/b:/dev/vdb",
            "hearth.root=overlay:serial:abcdefghij0123456789X:/dev/vdb",
            "hearth.root=overlay:serial:a:serial:b:extra",
            "hearth.root=overlay:/:/dev/vdb",
        ] {
            assert!(
                matches!(parse(bad), Err(CmdlineError::Root(_))),
                "{bad} accepted"
            );
        }
    }

    #[test]
    fn rejects_bad_lowerfs_persist_net_and_dns() {
        type Check = fn(&CmdlineError) -> bool;
        let table: &[(&str, Check)] = &[
            ("hearth.lowerfs=", |e| matches!(e, CmdlineError::LowerFs(_))),
            ("hearth.lowerfs=xfs", |e| {
                matches!(e, CmdlineError::LowerFs(_))
            }),
            ("hearth.lowerfs=SQUASHFS", |e| {
                matches!(e, CmdlineError::LowerFs(_))
            }),
            ("hearth.persist=", |e| matches!(e, CmdlineError::Persist(_))),
            ("hearth.persist=vdc", |e| {
                matches!(e, CmdlineError::Persist(_))
            }),
            ("hearth.persist=serial:", |e| {
                matches!(e, CmdlineError::Persist(_))
            }),
            ("hearth.persist=serial:a:b", |e| {
                matches!(e, CmdlineError::Persist(_))
            }),
            (
                "hearth.root=overlay:serial:l:serial:u hearth.persist=serial:u",
                |e| matches!(e, CmdlineError::PersistIsRoot(_)),
            ),
            ("hearth.net=", |e| matches!(e, CmdlineError::Net { .. })),
            ("hearth.net=10.0.2.15", |e| {
                matches!(
                    e,
                    CmdlineError::Net {
                        why: "missing /PREFIX",
                        ..
                    }
                )
            }),
            ("hearth.net=10.0.2/24", |e| {
                matches!(
                    e,
                    CmdlineError::Net {
                        why: "bad IPv4 address",
                        ..
                    }
                )
            }),
            ("hearth.net=fd00::1/64", |e| {
                matches!(
                    e,
                    CmdlineError::Net {
                        why: "bad IPv4 address",
                        ..
                    }
                )
            }),
            ("hearth.net=0.0.0.0/24", |e| {
                matches!(e, CmdlineError::Net { .. })
            }),
            ("hearth.net=224.0.0.1/24", |e| {
                matches!(e, CmdlineError::Net { .. })
            }),
            ("hearth.net=10.0.2.15/0", |e| {
                matches!(
                    e,
                    CmdlineError::Net {
                        why: "prefix must be 1-32",
                        ..
                    }
                )
            }),
            ("hearth.net=10.0.2.15/33", |e| {
                matches!(
                    e,
                    CmdlineError::Net {
                        why: "prefix must be 1-32",
                        ..
                    }
                )
            }),
            ("hearth.net=10.0.2.15/x", |e| {
                matches!(
                    e,
                    CmdlineError::Net {
                        why: "prefix must be 1-32",
                        ..
                    }
                )
            }),
            ("hearth.net=10.0.2.15/24,", |e| {
                matches!(
                    e,
                    CmdlineError::Net {
                        why: "bad IPv4 gateway",
                        ..
                    }
                )
            }),
            ("hearth.net=10.0.2.15/24,10.0.3.2", |e| {
                matches!(
                    e,
                    CmdlineError::Net {
                        why: "gateway is outside the address's subnet",
                        ..
                    }
                )
            }),
            ("hearth.net=10.0.2.15/24,10.0.2.15", |e| {
                matches!(
                    e,
                    CmdlineError::Net {
                        why: "gateway equals the address",
                        ..
                    }
                )
            }),
            ("hearth.net=10.0.2.15/24,10.0.2.2,x", |e| {
                matches!(e, CmdlineError::Net { .. })
            }),
            ("hearth.dns=", |e| matches!(e, CmdlineError::Dns(_))),
            ("hearth.dns=10.0.2", |e| matches!(e, CmdlineError::Dns(_))),
            ("hearth.dns=10.0.2.3,", |e| {
                matches!(e, CmdlineError::Dns(_))
            }),
            ("hearth.dns=dns.example", |e| {
                matches!(e, CmdlineError::Dns(_))
            }),
            ("hearth.dns=1.1.1.1,2.2.2.2,3.3.3.3,4.4.4.4", |e| {
                matches!(e, CmdlineError::Dns(_))
            }),
        ];
        for (text, is_expected) in table {
            match parse(text) {
                Ok(c) => panic!("{text} accepted as {c:?}"),
                Err(e) => {
                    assert!(is_expected(&e), "{text}: unexpected error {e:?}");
                    // Every message names the offending option's value.
                    let msg = e.to_string();
                    let value = text.rsplit('=').next().unwrap();
                    assert!(msg.contains(value), "{text}: message {msg:?}");
                }
            }
        }
    }
}
