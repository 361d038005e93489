//! `hearth vm start --vm ID`: boot a stopped VM again with its disks (its upper
//! layer and persist volume); print the id once its agent answered.

use std::time::{Duration, Instant};

use super::boot::start_vm;
use super::create::boot_json;
use crate::state::State;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VM id or name.
    #[arg(long)]
    pub vm: String,
    /// Seconds to wait for the agent (default 60 under TCG; env HEARTH_BOOT_TIMEOUT).
    #[arg(long)]
    pub boot_timeout: Option<f64>,
    /// Print the VM as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(state: &State, a: Args) -> anyhow::Result<i32> {
    let t0 = Instant::now();
    let timeout = a
        .boot_timeout
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64);
    let (rec, client) = start_vm(state, &a.vm, timeout).await?;
    if a.json {
        println!("{}", boot_json(&rec, &client, t0.elapsed().as_millis()));
    } else {
        println!("{}", rec.id);
    }
    Ok(0)
}
