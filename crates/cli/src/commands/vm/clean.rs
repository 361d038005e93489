//! `hearth vm clean`: stop VMs if needed, remove their directories (with the
//! upper disks) and records, and their persist volumes unless `--keep-persist`.

use super::common::{destroy_vm, select};
use crate::state::{State, VmStatus};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VM ids or names to remove (repeatable).
    #[arg(long)]
    pub vm: Vec<String>,
    /// Remove every VM.
    #[arg(long)]
    pub all: bool,
    /// Keep the persist volumes (attach one again with `vm create --persist-name`).
    #[arg(long)]
    pub keep_persist: bool,
}

pub async fn run(state: &State, a: Args) -> anyhow::Result<i32> {
    let recs = select(state, &a.vm, a.all, |r| r.status != VmStatus::Creating).await?;
    let mut failed = 0;
    for r in recs {
        match destroy_vm(state, &r, a.keep_persist).await {
            Ok(()) => println!("{}", r.id),
            Err(e) => {
                eprintln!("hearth: cannot clean vm {}: {e:#}", r.id);
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
