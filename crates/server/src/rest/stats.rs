//! `GET /v1/sandboxes/{id}/stats`: one sample of the guest's resource use.

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::extract::Path;
use crate::app::AppState;
use crate::error::{ApiResult, ErrorBody};

#[derive(Debug, Serialize, ToSchema)]
pub struct CpuView {
    pub cpu_count: u32,
    /// Seconds in each state since boot, summed over CPUs.
    pub user_s: f64,
    pub nice_s: f64,
    pub system_s: f64,
    pub idle_s: f64,
    pub iowait_s: f64,
    pub irq_s: f64,
    pub softirq_s: f64,
    pub steal_s: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryView {
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub cached_bytes: u64,
    pub free_bytes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DiskView {
    pub path: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub total_inodes: u64,
    pub used_inodes: u64,
    pub free_inodes: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NetView {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
}

/// One sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatsView {
    pub uptime_ms: u64,
    pub cpu: CpuView,
    pub memory: MemoryView,
    /// `/`, then `/persist` when mounted.
    pub disks: Vec<DiskView>,
    /// 1, 5 and 15 minute load averages.
    pub load: Vec<f64>,
    pub processes: u32,
    pub net: Vec<NetView>,
}

impl From<hearth_runtime::Stats> for StatsView {
    fn from(s: hearth_runtime::Stats) -> Self {
        let c = s.cpu;
        let m = s.memory;
        Self {
            uptime_ms: u64::try_from(s.uptime.as_millis()).unwrap_or(u64::MAX),
            cpu: CpuView {
                cpu_count: c.cpu_count,
                user_s: c.user_s,
                nice_s: c.nice_s,
                system_s: c.system_s,
                idle_s: c.idle_s,
                iowait_s: c.iowait_s,
                irq_s: c.irq_s,
                softirq_s: c.softirq_s,
                steal_s: c.steal_s,
            },
            memory: MemoryView {
                total_bytes: m.total_bytes,
                available_bytes: m.available_bytes,
                used_bytes: m.used_bytes,
                cached_bytes: m.cached_bytes,
                free_bytes: m.free_bytes,
            },
            disks: s
                .disks
                .into_iter()
                .map(|d| DiskView {
                    path: d.path,
                    total_bytes: d.total_bytes,
                    used_bytes: d.used_bytes,
                    free_bytes: d.free_bytes,
                    total_inodes: d.total_inodes,
                    used_inodes: d.used_inodes,
                    free_inodes: d.free_inodes,
                })
                .collect(),
            load: s.load.to_vec(),
            processes: s.processes,
            net: s
                .net
                .into_iter()
                .map(|n| NetView {
                    name: n.name,
                    rx_bytes: n.rx_bytes,
                    rx_packets: n.rx_packets,
                    tx_bytes: n.tx_bytes,
                    tx_packets: n.tx_packets,
                })
                .collect(),
        }
    }
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}/stats", operation_id = "sandbox_stats", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id or name")),
    responses(
        (status = 200, description = "One sample", body = StatsView),
        (status = 401, description = "No or bad API token", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is not running", body = ErrorBody),
        (status = 502, description = "The sandbox or its agent failed", body = ErrorBody),
    ))]
pub async fn stats(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<axum::Json<StatsView>> {
    let s = state.sandbox(&id).await?;
    let st = s
        .stats()
        .await
        .inspect_err(|e| state.forget_if_gone(s.id(), e))?;
    Ok(axum::Json(st.into()))
}
