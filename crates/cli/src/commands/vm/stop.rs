//! `hearth vm stop`: power VMs off (records stay, status `stopped`). The
//! guest's workload gets SIGTERM first and a grace period.

use hearth_runtime::{Runtime, VmStatus};

use super::select::select;
use crate::progress::StderrProgress;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VM ids or names to stop (repeatable).
    #[arg(long)]
    pub vm: Vec<String>,
    /// Stop every running or paused VM.
    #[arg(long)]
    pub all: bool,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let live = |s: VmStatus| matches!(s, VmStatus::Running | VmStatus::Paused);
    let recs = select(rt, &a.vm, a.all, |r| live(r.status)).await?;
    let mut failed = 0;
    for r in recs {
        if !live(r.status) {
            eprintln!("hearth: vm {} is already {}", r.id, r.status);
            continue;
        }
        match rt.stop(&r.id, &StderrProgress::shared()).await {
            Ok(_) => println!("{}", r.id),
            Err(e) => {
                eprintln!("hearth: cannot stop vm {}: {e}", r.id);
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
