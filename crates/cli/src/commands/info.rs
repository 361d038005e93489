//! `hearth info --connect ENDPOINT [--json]`: the agent's READY data and the
//! guest's system information.

use hearth_runtime::{pb, Endpoint};
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Agent endpoint: unix:PATH, hybrid:PATH:PORT or vsock:CID:PORT.
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Endpoint,
    /// Seconds to wait for the agent to answer.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = crate::exec_io::parse_timeout)]
    pub connect_timeout: std::time::Duration,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn capability_names(bits: u64) -> Vec<&'static str> {
    (0..64)
        .filter(|n| bits & (1u64 << n) != 0)
        .map(|n| {
            pb::Capability::try_from(n)
                .map(|c| c.as_str_name())
                .unwrap_or("CAPABILITY_UNKNOWN")
        })
        .collect()
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let agent = super::exec::connect(&args.connect, args.connect_timeout).await?;
    let client = agent.client();
    let ready = client.ready().clone();
    let si = client.system_info().await?;
    let boot = ready.boot.unwrap_or_default();
    if args.json {
        let v = json!({
            "agent": {
                "protocol_version": ready.protocol_version,
                "agent_version": ready.agent_version,
                "role": ready.role,
                "capabilities": capability_names(ready.capabilities),
                "max_frame_len": ready.max_frame_len,
                "boot_us": {
                    "kernel_to_init": boot.kernel_to_init_us,
                    "init_to_agent": boot.init_to_agent_us,
                    "modules": boot.modules_us,
                    "rootfs": boot.rootfs_us,
                },
            },
            "system": {
                "kernel_release": si.kernel_release,
                "os": si.os,
                "arch": si.arch,
                "hostname": si.hostname,
                "memory_total_bytes": si.memory_total_bytes,
                "memory_available_bytes": si.memory_available_bytes,
                "cpu_count": si.cpu_count,
                "load": [si.load1, si.load5, si.load15],
                "uptime_ms": si.uptime_ms,
                "agent_version": si.agent_version,
                "pid1": si.pid1,
            },
        });
        println!("{v:#}");
    } else {
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        println!(
            "agent:     {} (protocol {}, role {})",
            ready.agent_version, ready.protocol_version, ready.role
        );
        println!(
            "caps:      {}",
            capability_names(ready.capabilities).join(" ")
        );
        println!("kernel:    {}", si.kernel_release);
        println!("os:        {}", si.os);
        println!("arch:      {}", si.arch);
        println!("hostname:  {}", si.hostname);
        println!("cpus:      {}", si.cpu_count);
        println!(
            "memory:    {:.1} MiB available of {:.1} MiB",
            mib(si.memory_available_bytes),
            mib(si.memory_total_bytes)
        );
        println!(
            "load:      {:.2} {:.2} {:.2}",
            si.load1, si.load5, si.load15
        );
        println!("uptime:    {:.1} s", si.uptime_ms as f64 / 1000.0);
        println!("pid 1:     {}", si.pid1);
    }
    Ok(0)
}
