//! The host's capacity and admission control: refuse a sandbox the host cannot
//! hold, with an error that names the host's figure.

use crate::config::Admission;
use crate::error::{Error, Result};
use crate::state::VmRecord;

/// What the host has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCapacity {
    pub mem_mib: u64,
    pub cpus: u32,
}

impl HostCapacity {
    /// Reads `/proc/meminfo` and the CPUs this process may run on.
    pub fn probe() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/meminfo")
            .map_err(|e| Error::io("cannot read", "/proc/meminfo", e))?;
        let mem_kib = parse_meminfo_total(&text)
            .ok_or_else(|| Error::Internal("no MemTotal line in /proc/meminfo".into()))?;
        let cpus = std::thread::available_parallelism()
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
            .unwrap_or(1);
        Ok(Self {
            mem_mib: mem_kib / 1024,
            cpus,
        })
    }
}

/// `MemTotal:` in KiB.
pub fn parse_meminfo_total(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Refuses one sandbox larger than the whole host (checked before any work).
pub fn check_shape(host: HostCapacity, policy: &Admission, cpus: u32, mem_mib: u32) -> Result<()> {
    let usable_mib = host.mem_mib.saturating_sub(policy.reserve_mib);
    if u64::from(mem_mib) > usable_mib {
        return Err(Error::Admission(format!(
            "memory {mem_mib} MiB does not fit on this host: it has {} MiB, of which {usable_mib} MiB can go to sandboxes",
            host.mem_mib
        )));
    }
    if cpus > host.cpus {
        return Err(Error::Admission(format!(
            "{cpus} vCPUs is more than this host's {} CPUs",
            host.cpus
        )));
    }
    Ok(())
}

/// Accepts `new` if the host holds it beside the active sandboxes in `others`.
pub fn admit(
    host: HostCapacity,
    policy: &Admission,
    others: &[VmRecord],
    new: &VmRecord,
) -> Result<()> {
    check_shape(host, policy, new.cpus, new.mem_mib)?;
    let usable_mib = host.mem_mib.saturating_sub(policy.reserve_mib);
    let active: Vec<&VmRecord> = others
        .iter()
        .filter(|r| r.status.is_active() && r.id != new.id)
        .collect();
    let mem_used: u64 = active.iter().map(|r| u64::from(r.mem_mib)).sum();
    let mem_limit = (usable_mib as f64 * policy.mem_overcommit) as u64;
    if mem_used + u64::from(new.mem_mib) > mem_limit {
        return Err(Error::Admission(format!(
            "memory {} MiB does not fit: {} running vms already hold {mem_used} MiB of the {mem_limit} MiB this host allows \
             ({} MiB usable × overcommit {})",
            new.mem_mib,
            active.len(),
            usable_mib,
            policy.mem_overcommit
        )));
    }
    let cpu_used: u64 = active.iter().map(|r| u64::from(r.cpus)).sum();
    let cpu_limit = (f64::from(host.cpus) * policy.cpu_overcommit) as u64;
    if cpu_used + u64::from(new.cpus) > cpu_limit {
        return Err(Error::Admission(format!(
            "{} vCPUs do not fit: {} running vms already hold {cpu_used} of the {cpu_limit} vCPUs this host allows \
             ({} CPUs × overcommit {})",
            new.cpus,
            active.len(),
            host.cpus,
            policy.cpu_overcommit
        )));
    }
    Ok(())
}

/// The lowest uid of the range not held by any record (stopped ones keep
/// their files, owned by their uid).
pub fn allocate_uid(base: u32, count: u32, others: &[VmRecord]) -> Result<u32> {
    let used: std::collections::HashSet<u32> = others.iter().filter_map(|r| r.vmm_uid).collect();
    (0..count)
        .map(|i| base.saturating_add(i))
        .find(|u| !used.contains(u))
        .ok_or_else(|| {
            Error::Admission(format!(
                "all {count} VMM uids from {base} are taken; clean some vms"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::rec;
    use crate::state::VmStatus;

    const HOST: HostCapacity = HostCapacity {
        mem_mib: 24_000,
        cpus: 2,
    };

    #[test]
    fn meminfo_total_parses() {
        assert_eq!(
            parse_meminfo_total("MemFree: 5 kB\nMemTotal:       24576000 kB\n"),
            Some(24_576_000)
        );
        assert_eq!(parse_meminfo_total("garbage"), None);
    }

    #[test]
    fn more_memory_or_cpus_than_the_host_has_is_refused_naming_the_figure() {
        let p = Admission::default();
        let mut r = rec("n", VmStatus::Creating);
        r.mem_mib = 100_000;
        let e = admit(HOST, &p, &[], &r).unwrap_err().to_string();
        assert!(e.contains("100000 MiB") && e.contains("24000 MiB"), "{e}");
        r.mem_mib = 256;
        r.cpus = 64;
        let e = admit(HOST, &p, &[], &r).unwrap_err().to_string();
        assert!(e.contains("64 vCPUs") && e.contains("2 CPUs"), "{e}");
        r.cpus = 2;
        admit(HOST, &p, &[], &r).unwrap();
    }

    #[test]
    fn running_vms_count_and_stopped_ones_do_not() {
        let p = Admission {
            mem_overcommit: 1.0,
            cpu_overcommit: 2.0,
            reserve_mib: 0,
        };
        let mut big = rec("a", VmStatus::Running);
        big.mem_mib = 20_000;
        let mut new = rec("n", VmStatus::Creating);
        new.mem_mib = 5_000;
        let e = admit(HOST, &p, &[big.clone()], &new)
            .unwrap_err()
            .to_string();
        assert!(e.contains("20000 MiB") && e.contains("overcommit 1"), "{e}");
        big.status = VmStatus::Stopped;
        admit(HOST, &p, &[big], &new).unwrap();
        let mut cpus = rec("c", VmStatus::Running);
        cpus.cpus = 2;
        let mut c2 = cpus.clone();
        c2.id = "d".into();
        new.mem_mib = 256;
        let e = admit(HOST, &p, &[cpus, c2], &new).unwrap_err().to_string();
        assert!(e.contains("of the 4 vCPUs"), "{e}");
    }

    #[test]
    fn uids_are_unique_per_record() {
        let mut a = rec("a", VmStatus::Stopped);
        a.vmm_uid = Some(100);
        assert_eq!(allocate_uid(100, 3, &[a.clone()]).unwrap(), 101);
        let mut b = rec("b", VmStatus::Running);
        b.vmm_uid = Some(101);
        assert_eq!(allocate_uid(100, 3, &[a.clone(), b.clone()]).unwrap(), 102);
        assert!(allocate_uid(100, 2, &[a, b]).is_err());
    }
}
