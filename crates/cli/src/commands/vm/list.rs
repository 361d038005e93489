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
                    "qemu_pid": r.qemu.map(|p| p.pid), "vhost_pid": r.vhost.map(|p| p.pid),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<10} {:<9} {:<5} {:>4} {:>7} {:<9} {:<8} NOTE",
        "ID", "STATUS", "ACCEL", "CPUS", "MEM", "LANGUAGE", "PERSIST"
    );
    for r in recs {
        println!(
            "{:<10} {:<9} {:<5} {:>4} {:>6}M {:<9} {:<8} {}",
            r.id,
            r.status.as_str(),
            r.accel.map(|x| x.as_str()).unwrap_or("-"),
            r.cpus,
            r.mem_mib,
            r.language,
            if r.persist { "yes" } else { "no" },
            r.note.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}
