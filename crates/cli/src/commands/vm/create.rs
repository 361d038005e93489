//! `hearth vm create`: boot a VM, wait for its agent, print the id.

use std::path::PathBuf;
use std::time::Instant;

use hearth_runtime::{CreateSpec, Network, PersistSpec, Runtime, Sandbox};

use crate::progress::StderrProgress;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Language image: python, javascript (= node), ruby, golang, base; `none` boots
    /// the bare initramfs guest. Built on first use.
    #[arg(long, default_value = "none")]
    pub language: String,
    /// Your own root image (squashfs or ext4) instead of a language image.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Virtual CPUs (at most the host's CPU count).
    #[arg(long = "cpu", default_value_t = 1)]
    pub cpus: u32,
    /// Guest memory in MiB (refused when the host cannot hold it).
    #[arg(long = "mem", default_value_t = 256)]
    pub mem_mib: u32,
    /// Writable upper disk size in MiB (root images only; default 2048, sparse).
    #[arg(long = "disk")]
    pub disk_mib: Option<u64>,
    /// Guest network: none (no NIC) or allow_all (user-mode NAT).
    #[arg(long, default_value = "none", value_parser = parse_network)]
    pub network: Network,
    /// Guest kernel: a file, `own` (hearth's kernel built by scripts/kernel.sh)
    /// or `cloud` (newest /boot/vmlinuz-*-cloud-amd64). Default: own when
    /// built, else cloud.
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
    /// A unique name to use instead of the id in other commands.
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds to wait for the agent (default 60 under TCG; env HEARTH_BOOT_TIMEOUT).
    #[arg(long, value_name = "SECS", value_parser = crate::exec_io::parse_timeout)]
    pub boot_timeout: Option<std::time::Duration>,
    /// Boot it even when a cached post-boot snapshot of this shape (a
    /// warm-start template, built on first use) could be restored.
    #[arg(long)]
    pub cold: bool,
    /// Print the new VM as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn parse_network(s: &str) -> Result<Network, String> {
    Network::parse(s).map_err(|e| e.to_string())
}

impl Args {
    pub fn spec(&self) -> CreateSpec {
        CreateSpec {
            language: Some(self.language.clone()),
            image: self.image.clone(),
            cpus: self.cpus,
            mem_mib: self.mem_mib,
            network: self.network,
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            persist: (self.persist || self.persist_name.is_some() || self.persist_mib.is_some())
                .then(|| PersistSpec {
                    name: self.persist_name.clone(),
                    size_mib: self.persist_mib,
                }),
            disk_mib: self.disk_mib,
            name: self.name.clone(),
            boot_timeout: self.boot_timeout,
            cold: self.cold,
            ..Default::default()
        }
    }
}

/// The JSON printed by `create --json` and `start --json`; `fresh` for a
/// create (a start is always a cold boot).
pub async fn boot_json(sb: &Sandbox, ms: u128, fresh: bool) -> anyhow::Result<serde_json::Value> {
    let rec = sb.record();
    let template = rec.warm_template.as_ref().filter(|_| fresh);
    let ready = sb.agent().await?.ready().clone();
    Ok(serde_json::json!({
        "id": rec.id,
        "name": rec.name,
        "accel": rec.accel,
        "cpus": rec.cpus,
        "mem_mib": rec.mem_mib,
        "language": rec.language,
        "image_hash": rec.image_hash,
        "network": rec.network,
        "persist_volume": rec.persist_volume,
        "dir": rec.dir,
        "vmm_uid": rec.vmm_uid,
        "kernel": rec.kernel,
        "kernel_kind": rec.kernel_kind,
        "kernel_release": rec.kernel_release,
        "create_ms": ms,
        "start": if template.is_some() { "warm" } else { "cold" },
        "template": template,
        "agent_version": ready.agent_version,
        "boot": ready.boot.as_ref().map(|b| serde_json::json!({
            "kernel_to_init_us": b.kernel_to_init_us,
            "init_to_agent_us": b.init_to_agent_us,
        })),
    }))
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let t0 = Instant::now();
    let sb = rt.create(&a.spec(), &StderrProgress::shared()).await?;
    if a.json {
        println!("{}", boot_json(&sb, t0.elapsed().as_millis(), true).await?);
    } else {
        println!("{}", sb.id());
    }
    Ok(0)
}
