//! Host memory of an idle VM, from /proc (part of the `bench_vm` example).

use std::collections::BTreeMap;

use anyhow::Context;

/// `/proc/PID/status` memory fields in KiB.
fn proc_status(pid: u64) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb = v.trim().strip_suffix(" kB")?.trim().parse().ok()?;
            Some((k.to_string(), kb))
        })
        .collect())
}

/// `/proc/PID/smaps_rollup` in KiB.
fn smaps_rollup(pid: u64) -> anyhow::Result<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .with_context(|| format!("cannot read /proc/{pid}/smaps_rollup"))?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            let kb = v.trim().strip_suffix(" kB")?.trim().parse().ok()?;
            Some((k.to_string(), kb))
        })
        .collect())
}

/// Host memory of one idle VM, in MiB.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Mem {
    pub qemu_rss: f64,
    /// QEMU's resident shared memory: the guest RAM pages it has touched (memfd).
    pub qemu_shmem: f64,
    pub qemu_anon: f64,
    pub qemu_file: f64,
    pub vhost_rss: f64,
    /// Shared pages of the link proxy (none: it maps no guest RAM).
    pub vhost_shmem: f64,
    /// (qemu_rss − qemu_shmem) + (vhost_rss − vhost_shmem).
    pub beyond_guest: f64,
    /// Like `beyond_guest` but with PSS from smaps_rollup (`Pss − Pss_Shmem`), so
    /// pages of QEMU's shared libraries count once across all QEMU processes.
    pub pss_beyond_guest: f64,
}

pub fn vm_memory(list: &serde_json::Value, id: &str) -> anyhow::Result<Mem> {
    let rec = list
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|r| r.get("id").and_then(|x| x.as_str()) == Some(id))
        })
        .with_context(|| format!("vm {id} is not in vm list --json"))?;
    let pid = |k: &str| {
        rec.get(k)
            .and_then(|x| x.as_u64())
            .with_context(|| format!("vm {id} has no {k}"))
    };
    let (qp, vp) = (pid("qemu_pid")?, pid("proxy_pid")?);
    let q = proc_status(qp)?;
    let v = proc_status(vp)?;
    let qs = smaps_rollup(qp)?;
    let vs = smaps_rollup(vp)?;
    let g = |m: &BTreeMap<String, u64>, k: &str| m.get(k).copied().unwrap_or(0) as f64 / 1024.0;
    let (qemu_rss, qemu_shmem) = (g(&q, "VmRSS"), g(&q, "RssShmem"));
    let (vhost_rss, vhost_shmem) = (g(&v, "VmRSS"), g(&v, "RssShmem"));
    Ok(Mem {
        qemu_rss,
        qemu_shmem,
        qemu_anon: g(&q, "RssAnon"),
        qemu_file: g(&q, "RssFile"),
        vhost_rss,
        vhost_shmem,
        beyond_guest: (qemu_rss - qemu_shmem) + (vhost_rss - vhost_shmem),
        pss_beyond_guest: (g(&qs, "Pss") - g(&qs, "Pss_Shmem"))
            + (g(&vs, "Pss") - g(&vs, "Pss_Shmem")),
    })
}
