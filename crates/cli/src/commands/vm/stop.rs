//! `hearth vm stop`: power VMs off (records stay, status `stopped`).

use super::common::{select, stop_vm};
use crate::state::{State, VmStatus};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VM ids or names to stop (repeatable).
    #[arg(long)]
    pub vm: Vec<String>,
    /// Stop every running VM.
    #[arg(long)]
    pub all: bool,
}

pub async fn run(state: &State, a: Args) -> anyhow::Result<i32> {
    let recs = select(state, &a.vm, a.all, |r| r.status == VmStatus::Running).await?;
    let mut failed = 0;
    for r in recs {
        if r.status != VmStatus::Running {
            eprintln!("hearth: vm {} is already {}", r.id, r.status.as_str());
            continue;
        }
        match stop_vm(state, &r).await {
            Ok(()) => println!("{}", r.id),
            Err(e) => {
                eprintln!("hearth: cannot stop vm {}: {e:#}", r.id);
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
