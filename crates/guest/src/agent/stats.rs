//! `STATS`: one sample of the guest's resource use — CPU time (/proc/stat),
//! memory (/proc/meminfo), disks (statvfs of `/` and `/persist`), load,
//! processes, network counters (/proc/net/dev), uptime.
//!
//! The parsers are pure functions over the files' text; `collect` reads them.

use hearth_proto::{pb, Message};

use super::sysinfo::{loadavg, uptime_ms};
use super::writer::Writer;

/// Mount points reported, in order; `/persist` only when it is mounted.
const DISKS: [&str; 2] = ["/", "/persist"];

/// The aggregate `cpu` line of /proc/stat and the number of `cpuN` lines.
pub fn cpu(stat: &str) -> pb::CpuStats {
    let mut out = pb::CpuStats {
        ticks_per_second: ticks_per_second(),
        ..Default::default()
    };
    for line in stat.lines() {
        let mut it = line.split_whitespace();
        match it.next() {
            Some("cpu") => {
                let v: Vec<u64> = it.map(|x| x.parse().unwrap_or(0)).collect();
                let f = |i: usize| v.get(i).copied().unwrap_or(0);
                out.user = f(0);
                out.nice = f(1);
                out.system = f(2);
                out.idle = f(3);
                out.iowait = f(4);
                out.irq = f(5);
                out.softirq = f(6);
                out.steal = f(7);
            }
            Some(c) if c.starts_with("cpu") => out.cpu_count += 1,
            _ => {}
        }
    }
    out
}

fn ticks_per_second() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u32
    } else {
        100
    }
}

/// Memory figures from /proc/meminfo text, in bytes.
pub fn memory(meminfo: &str) -> pb::MemoryStats {
    let kib = |key: &str| {
        meminfo
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |k| k * 1024)
    };
    let total = kib("MemTotal");
    let free = kib("MemFree");
    let buffers = kib("Buffers");
    let cached = kib("Cached") + kib("SReclaimable");
    pb::MemoryStats {
        total_bytes: total,
        available_bytes: kib("MemAvailable"),
        used_bytes: total.saturating_sub(free + buffers + cached),
        cached_bytes: cached,
        free_bytes: free,
        buffers_bytes: buffers,
    }
}

/// Interfaces from /proc/net/dev text (two header lines, then
/// `name: rx_bytes rx_packets … (8 rx fields) tx_bytes tx_packets …`).
pub fn net(dev: &str) -> Vec<pb::NetStats> {
    dev.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|x| x.parse().unwrap_or(0))
                .collect();
            if v.len() < 10 {
                return None;
            }
            Some(pb::NetStats {
                name: name.trim().to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                tx_bytes: v[8],
                tx_packets: v[9],
            })
        })
        .collect()
}

/// Whether `path` is a mount point (its device differs from its parent's,
/// or it is `/`).
fn is_mount_point(path: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    if path == "/" {
        return true;
    }
    let (Ok(m), Ok(parent)) = (
        std::fs::metadata(path),
        std::fs::metadata(std::path::Path::new(path).join("..")),
    ) else {
        return false;
    };
    m.dev() != parent.dev() || m.ino() == parent.ino()
}

fn disk(path: &str) -> Option<pb::DiskStats> {
    let s = nix::sys::statvfs::statvfs(path).ok()?;
    let frag = s.fragment_size() as u64;
    let (blocks, free, avail) = (
        s.blocks() as u64,
        s.blocks_free() as u64,
        s.blocks_available() as u64,
    );
    let (files, ffree) = (s.files() as u64, s.files_free() as u64);
    Some(pb::DiskStats {
        path: path.to_string(),
        total_bytes: blocks * frag,
        used_bytes: blocks.saturating_sub(free) * frag,
        free_bytes: avail * frag,
        total_inodes: files,
        used_inodes: files.saturating_sub(ffree),
        free_inodes: ffree,
    })
}

/// Processes (numeric entries) in /proc.
fn processes() -> u32 {
    std::fs::read_dir("/proc").map_or(0, |d| {
        d.flatten()
            .filter(|e| {
                let n = e.file_name();
                let b = n.as_encoded_bytes();
                !b.is_empty() && b.iter().all(u8::is_ascii_digit)
            })
            .count() as u32
    })
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Takes one sample (blocking: small /proc reads and two statvfs calls).
pub fn collect() -> pb::StatsResult {
    let (load1, load5, load15) = loadavg(&read("/proc/loadavg"));
    pb::StatsResult {
        uptime_ms: uptime_ms(&read("/proc/uptime")),
        cpu: Some(cpu(&read("/proc/stat"))),
        memory: Some(memory(&read("/proc/meminfo"))),
        disks: DISKS
            .iter()
            .filter(|p| is_mount_point(p))
            .filter_map(|p| disk(p))
            .collect(),
        load1,
        load5,
        load15,
        processes: processes(),
        net: net(&read("/proc/net/dev")),
    }
}

/// Answers `STATS` for `seq` from a blocking task.
pub fn answer(seq: u32, writer: Writer) {
    tokio::spawn(async move {
        let answer = tokio::task::spawn_blocking(collect)
            .await
            .map(Message::StatsResult)
            .unwrap_or_else(|e| {
                hearth_proto::message::error(
                    pb::ErrorCode::Internal,
                    format!("collecting stats failed: {e}"),
                    0,
                )
            });
        let _ = writer.send(seq, &answer).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat() {
        let t = "cpu  10 1 20 300 4 5 6 7 0 0\ncpu0 5 0 10 150 2 2 3 3 0 0\ncpu1 5 1 10 150 2 3 3 4 0 0\nintr 1 2\nctxt 9\n";
        let c = cpu(t);
        assert_eq!(c.cpu_count, 2);
        assert_eq!(
            (c.user, c.nice, c.system, c.idle, c.iowait, c.irq, c.softirq, c.steal),
            (10, 1, 20, 300, 4, 5, 6, 7)
        );
        assert!(c.ticks_per_second > 0);
    }

    #[test]
    fn parses_meminfo() {
        let t = "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\nBuffers: 50 kB\nCached: 300 kB\nSwapCached: 0 kB\nSReclaimable: 20 kB\n";
        let m = memory(t);
        assert_eq!(m.total_bytes, 1000 * 1024);
        assert_eq!(m.available_bytes, 600 * 1024);
        assert_eq!(m.cached_bytes, 320 * 1024);
        assert_eq!(m.used_bytes, (1000 - 100 - 50 - 320) * 1024);
    }

    #[test]
    fn parses_net_dev() {
        let t = "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  1234      10    0    0    0     0          0         0     1234      10    0    0    0     0       0          0\n  eth0: 99 3 0 0 0 0 0 0 77 2 0 0 0 0 0 0\nbroken: 1 2\n";
        let n = net(t);
        assert_eq!(n.len(), 2);
        assert_eq!(
            (
                n[1].name.as_str(),
                n[1].rx_bytes,
                n[1].rx_packets,
                n[1].tx_bytes,
                n[1].tx_packets
            ),
            ("eth0", 99, 3, 77, 2)
        );
    }

    #[test]
    fn collects_root_disk() {
        let s = collect();
        assert_eq!(s.disks.first().map(|d| d.path.as_str()), Some("/"));
        assert!(s.disks[0].total_bytes > 0, "{:?}", s.disks);
        assert!(s.processes > 0);
    }
}
