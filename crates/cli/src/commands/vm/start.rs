//! `hearth vm start --vm ID`: boot a stopped VM again with its disks (its upper
//! layer and persist volume); print the id once its agent answered.

use std::time::Instant;

use hearth_runtime::Runtime;

use super::create::boot_json;
use crate::progress::StderrProgress;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VM id or name.
    #[arg(long)]
    pub vm: String,
    /// Print the VM as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let t0 = Instant::now();
    let sb = rt.start(&a.vm, &StderrProgress::shared()).await?;
    if a.json {
        println!("{}", boot_json(&sb, t0.elapsed().as_millis(), false).await?);
    } else {
        println!("{}", sb.id());
    }
    Ok(0)
}
