//! `hearth vm list`: the VMs in the state DB, reconciled with reality.

use super::common::select;
use crate::state::{State, VmStatus};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only VMs in this state (creating, running, stopped, failed).
    #[arg(long)]
    pub status: Option<String>,
    /// Include stopped and failed VMs.
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(state: &State, a: Args) -> anyhow::Result<i32> {
    let want = a.status.as_deref().map(VmStatus::parse).transpose()?;
    let mut recs = select(state, &[], true, |r| match want {
        Some(s) => r.status == s,
        None => a.all || matches!(r.status, VmStatus::Running | VmStatus::Creating),
    })
    .await?;
    recs.sort_by(|x, y| x.created_at.cmp(&y.created_at).then(x.id.cmp(&y.id)));
    if a.json {
        let v: Vec<_> = recs
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id, "name": r.name, "status": r.status, "accel": r.accel,
                    "cpus": r.cpus, "mem_mib": r.mem_mib, "language": r.language,
                    "created_at": r.created_at, "image": r.image, "kernel": r.kernel,
                    "dir": r.dir, "persist": r.persist, "note": r.note,
                    "rootfs": r.rootfs, "lowerfs": r.lowerfs, "image_hash": r.image_hash,
                    "network": r.network, "persist_volume": r.persist_volume,
                    "disk_mib": r.disk_mib, "upper_disk": r.upper_disk(),
                    "qemu_pid": r.qemu.map(|p| p.pid), "vhost_pid": r.vhost.map(|p| p.pid),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<10} {:<9} {:<5} {:>4} {:>7} {:<10} {:<12} {:<9} {:<12} NOTE",
        "ID", "STATUS", "ACCEL", "CPUS", "MEM", "LANGUAGE", "IMAGE", "NETWORK", "PERSIST"
    );
    for r in recs {
        let image = r
            .image_hash
            .as_deref()
            .map(|h| h[..12.min(h.len())].to_string())
            .unwrap_or_else(|| if r.rootfs.is_some() { "custom" } else { "-" }.into());
        let persist = r
            .persist_volume
            .as_deref()
            .and_then(|p| p.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<10} {:<9} {:<5} {:>4} {:>6}M {:<10} {:<12} {:<9} {:<12} {}",
            r.id,
            r.status.as_str(),
            r.accel.map(|x| x.as_str()).unwrap_or("-"),
            r.cpus,
            r.mem_mib,
            r.language,
            image,
            r.network.as_str(),
            persist,
            r.note.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}
