//! `hearth vm list`: the VMs in the state DB, reconciled with reality.

use hearth_runtime::{ListFilter, Runtime, VmStatus};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only VMs in this state (creating, running, paused, stopped, failed).
    #[arg(long)]
    pub status: Option<VmStatus>,
    /// Include stopped and failed VMs (running, paused and creating ones are always shown).
    #[arg(long)]
    pub all: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let filter = match a.status {
        Some(s) => ListFilter {
            status: vec![s],
            name: None,
        },
        None if a.all => ListFilter::default(),
        None => ListFilter::active(),
    };
    let recs = rt.list(&filter).await?;
    if a.json {
        let v: Vec<_> = recs
            .iter()
            .map(|r| {
                let mut v = serde_json::json!({
                    "id": r.id, "name": r.name, "status": r.status, "accel": r.accel,
                    "cpus": r.cpus, "mem_mib": r.mem_mib, "language": r.language,
                    "created_at": r.created_at, "initrd": r.initrd, "kernel": r.kernel,
                    "kernel_kind": r.kernel_kind, "kernel_release": r.kernel_release,
                    "dir": r.dir, "persist": r.persist_volume.is_some(), "note": r.note,
                    "rootfs": r.rootfs, "lowerfs": r.lowerfs, "image_hash": r.image_hash,
                    "network": r.network, "persist_volume": r.persist_volume,
                    "disk_mib": r.disk_mib, "upper_disk": r.upper_disk(),
                    "vmm_uid": r.vmm_uid, "backend": r.backend.as_ref().map(|h| &h.backend),
                });
                if let Some(h) = &r.backend {
                    for (role, pid) in rt.backend().processes(h) {
                        v[format!("{role}_pid")] = pid.into();
                    }
                }
                v
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<10} {:<12} {:<9} {:<5} {:>4} {:>7} {:<10} {:<12} {:<9} {:<12} NOTE",
        "ID", "NAME", "STATUS", "ACCEL", "CPUS", "MEM", "LANGUAGE", "IMAGE", "NETWORK", "PERSIST"
    );
    for r in recs {
        let image = r
            .image_hash
            .as_deref()
            .map(|h| h[..12.min(h.len())].to_string())
            .unwrap_or_else(|| if r.rootfs.is_some() { "custom" } else { "-" }.into());
        println!(
            "{:<10} {:<12} {:<9} {:<5} {:>4} {:>6}M {:<10} {:<12} {:<9} {:<12} {}",
            r.id,
            r.name.as_deref().unwrap_or("-"),
            r.status.as_str(),
            r.accel.as_deref().unwrap_or("-"),
            r.cpus,
            r.mem_mib,
            r.language,
            image,
            r.network.as_str(),
            r.persist_name().unwrap_or_else(|| "-".into()),
            r.note.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}
