//! Guest resource use: [`Stats`], one sample from the agent (`STATS`), and
//! [`cpu_percent`] between two samples.

use std::time::Duration;

use hearth_client::pb;
use serde::Serialize;

/// Cumulative CPU time of all guest CPUs since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuTimes {
    pub cpu_count: u32,
    /// Seconds in each state, summed over CPUs.
    pub user_s: f64,
    pub nice_s: f64,
    pub system_s: f64,
    pub idle_s: f64,
    pub iowait_s: f64,
    pub irq_s: f64,
    pub softirq_s: f64,
    pub steal_s: f64,
}

impl CpuTimes {
    fn busy(&self) -> f64 {
        self.user_s + self.nice_s + self.system_s + self.irq_s + self.softirq_s + self.steal_s
    }
    fn total(&self) -> f64 {
        self.busy() + self.idle_s + self.iowait_s
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Memory {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub cached_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Disk {
    pub path: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub total_inodes: u64,
    pub used_inodes: u64,
    pub free_inodes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Net {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// One sample of the guest's resource use.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Guest uptime when sampled.
    #[serde(serialize_with = "millis")]
    pub uptime: Duration,
    pub cpu: CpuTimes,
    pub memory: Memory,
    /// `/`, then `/persist` when mounted.
    pub disks: Vec<Disk>,
    pub load: [f64; 3],
    pub processes: u32,
    pub net: Vec<Net>,
}

fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Stats {
    pub fn from_pb(r: &pb::StatsResult) -> Self {
        let c = r.cpu.unwrap_or_default();
        let hz = if c.ticks_per_second == 0 {
            100.0
        } else {
            c.ticks_per_second as f64
        };
        let s = |t: u64| t as f64 / hz;
        let m = r.memory.unwrap_or_default();
        Stats {
            uptime: Duration::from_millis(r.uptime_ms),
            cpu: CpuTimes {
                cpu_count: c.cpu_count,
                user_s: s(c.user),
                nice_s: s(c.nice),
                system_s: s(c.system),
                idle_s: s(c.idle),
                iowait_s: s(c.iowait),
                irq_s: s(c.irq),
                softirq_s: s(c.softirq),
                steal_s: s(c.steal),
            },
            memory: Memory {
                total_bytes: m.total_bytes,
                available_bytes: m.available_bytes,
                used_bytes: m.used_bytes,
                cached_bytes: m.cached_bytes,
                free_bytes: m.free_bytes,
            },
            disks: r
                .disks
                .iter()
                .map(|d| Disk {
                    path: d.path.clone(),
                    total_bytes: d.total_bytes,
                    used_bytes: d.used_bytes,
                    free_bytes: d.free_bytes,
                    total_inodes: d.total_inodes,
                    used_inodes: d.used_inodes,
                    free_inodes: d.free_inodes,
                })
                .collect(),
            load: [r.load1, r.load5, r.load15],
            processes: r.processes,
            net: r
                .net
                .iter()
                .map(|n| Net {
                    name: n.name.clone(),
                    rx_bytes: n.rx_bytes,
                    rx_packets: n.rx_packets,
                    tx_bytes: n.tx_bytes,
                    tx_packets: n.tx_packets,
                })
                .collect(),
        }
    }

    pub fn disk(&self, path: &str) -> Option<&Disk> {
        self.disks.iter().find(|d| d.path == path)
    }
}

/// Busy share of all CPUs between two samples, 0–100 (100 = every CPU busy);
/// `None` when no CPU time passed (same sample, or counters went back).
pub fn cpu_percent(before: &Stats, after: &Stats) -> Option<f64> {
    let total = after.cpu.total() - before.cpu.total();
    let busy = after.cpu.busy() - before.cpu.busy();
    (total > 0.0 && busy >= 0.0).then(|| (busy / total * 100.0).clamp(0.0, 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(user: u64, idle: u64) -> Stats {
        Stats::from_pb(&pb::StatsResult {
            cpu: Some(pb::CpuStats {
                cpu_count: 2,
                ticks_per_second: 100,
                user,
                idle,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    #[test]
    fn cpu_percent_between_samples() {
        let a = sample(100, 100);
        let b = sample(150, 250);
        assert_eq!(cpu_percent(&a, &b), Some(25.0));
        assert_eq!(cpu_percent(&a, &a), None);
        assert_eq!(cpu_percent(&b, &a), None);
        assert_eq!(b.cpu.user_s, 1.5);
    }
}
