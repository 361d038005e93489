//! `hearth vm create`: boot a VM, wait for its agent, print the id.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::boot::{create_vm, CreateOpts};
use crate::state::State;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Language image: python, javascript (= node), ruby, golang; `none` boots
    /// the bare initramfs guest. Built on first use.
    #[arg(long, default_value = "none")]
    pub language: String,
    /// Your own root image (squashfs or ext4) instead of a language image.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Virtual CPUs.
    #[arg(long = "cpu", default_value_t = 1)]
    pub cpus: u32,
    /// Guest memory in MiB.
    #[arg(long = "mem", default_value_t = 256)]
    pub mem_mib: u32,
    /// Writable upper disk size in MiB (root images only; default 2048, sparse).
    #[arg(long = "disk")]
    pub disk_mib: Option<u64>,
    /// Guest network: none (no NIC) or allow_all (user-mode NAT).
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Guest kernel (default: newest /boot/vmlinuz-*-cloud-amd64).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Boot this initramfs instead of the built one (debugging).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Give the VM a persistent ext4 volume at /persist
    /// (`<state>/persist/<NAME>.ext4`, NAME defaults to the VM id).
    #[arg(long)]
    pub persist: bool,
    /// Name of the persist volume; an existing one is attached again (implies --persist).
    #[arg(long)]
    pub persist_name: Option<String>,
    /// Size of a new persist volume in MiB (default 1024, sparse).
    #[arg(long = "persist-size")]
    pub persist_mib: Option<u64>,
    /// A name to use instead of the id in other commands.
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds to wait for the agent (default 60 under TCG; env HEARTH_BOOT_TIMEOUT).
    #[arg(long)]
    pub boot_timeout: Option<f64>,
    /// Print the new VM as JSON.
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
        initrd: a.initrd.clone(),
        persist: a.persist,
        persist_name: a.persist_name.clone(),
        persist_mib: a.persist_mib,
        disk_mib: a.disk_mib,
        name: a.name.clone(),
        boot_timeout: a
            .boot_timeout
            .filter(|s| *s > 0.0)
            .map(Duration::from_secs_f64),
    }
}

/// The JSON printed by `create --json` and `start --json`.
pub fn boot_json(
    rec: &crate::state::VmRecord,
    client: &hearth_client::Client,
    ms: u128,
) -> serde_json::Value {
    let ready = client.ready();
    serde_json::json!({
        "id": rec.id,
        "accel": rec.accel,
        "cpus": rec.cpus,
        "mem_mib": rec.mem_mib,
        "language": rec.language,
        "image_hash": rec.image_hash,
        "network": rec.network,
        "persist_volume": rec.persist_volume,
        "dir": rec.dir,
        "create_ms": ms,
        "agent_version": ready.agent_version,
        "boot": ready.boot.as_ref().map(|b| serde_json::json!({
            "kernel_to_init_us": b.kernel_to_init_us,
            "init_to_agent_us": b.init_to_agent_us,
        })),
    })
}

pub async fn run(state: &State, a: Args) -> anyhow::Result<i32> {
    let t0 = Instant::now();
    let (rec, client) = create_vm(state, &opts(&a)).await?;
    let ms = t0.elapsed().as_millis();
    if a.json {
        println!("{}", boot_json(&rec, &client, ms));
    } else {
        println!("{}", rec.id);
    }
    Ok(0)
}
