//! `hearth vm clean`: stop VMs if needed, remove their directories (with the
//! upper disks) and records, and their persist volumes unless `--keep-persist`.

use hearth_runtime::{Runtime, VmStatus};

use super::select::select;
use crate::progress::StderrProgress;

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

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let recs = select(rt, &a.vm, a.all, |r| r.status != VmStatus::Creating).await?;
    let mut failed = 0;
    for r in recs {
        match rt
            .remove(&r.id, a.keep_persist, &StderrProgress::shared())
            .await
        {
            Ok(removed) => {
                if let Some(vol) = removed.kept_persist {
                    let name = removed.record.persist_name().unwrap_or_default();
                    eprintln!(
                        "hearth: kept the persist volume {} of vm {} (attach it with `hearth vm create --persist-name {name} ...`)",
                        vol.display(),
                        r.id
                    );
                }
                println!("{}", r.id);
            }
            Err(e) => {
                eprintln!("hearth: cannot clean vm {}: {e}", r.id);
                failed += 1;
            }
        }
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
