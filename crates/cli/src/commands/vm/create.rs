//! `hearth vm create`: boot a VM, wait for its agent, print the id.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::common::{create_vm, CreateOpts};
use crate::state::State;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Language image (only `none`, the bare initramfs, exists so far).
    #[arg(long, default_value = "none")]
    pub language: String,
    /// Boot this initramfs instead of the built-in one.
    #[arg(long)]
    pub image: Option<PathBuf>,
    #[arg(long = "cpu", default_value_t = 1)]
    pub cpus: u32,
    /// Guest memory in MiB.
    #[arg(long = "mem", default_value_t = 256)]
    pub mem_mib: u32,
    /// Guest network: none.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Guest kernel (default: newest /boot/vmlinuz-*-cloud-amd64).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Keep this VM's record and directory on `clean --keep-persist`.
    #[arg(long)]
    pub persist: bool,
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds to wait for the agent (default 60 under TCG; env HEARTH_BOOT_TIMEOUT).
    #[arg(long)]
    pub boot_timeout: Option<f64>,
    #[arg(long)]
    pub json: bool,
}

pub fn opts(a: &Args) -> CreateOpts {
    CreateOpts {
        language: a.language.clone(),
        image: a.image.clone(),
        cpus: a.cpus,
        mem_mib: a.mem_mib,
        network: a.network.clone(),
        kernel: a.kernel.clone(),
        persist: a.persist,
        name: a.name.clone(),
        boot_timeout: a
            .boot_timeout
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64),
    }
}

pub async fn run(state: &State, a: Args) -> anyhow::Result<i32> {
    let t0 = Instant::now();
    let (rec, client) = create_vm(state, &opts(&a)).await?;
    let boot_ms = t0.elapsed().as_millis();
    if a.json {
        let ready = client.ready();
        let v = serde_json::json!({
            "id": rec.id,
            "accel": rec.accel,
            "cpus": rec.cpus,
            "mem_mib": rec.mem_mib,
            "dir": rec.dir,
            "create_ms": boot_ms,
            "agent_version": ready.agent_version,
            "boot": ready.boot.as_ref().map(|b| serde_json::json!({
                "kernel_to_init_us": b.kernel_to_init_us,
                "init_to_agent_us": b.init_to_agent_us,
            })),
        });
        println!("{v}");
    } else {
        println!("{}", rec.id);
    }
    Ok(0)
}
