//! `hearth ping --connect ENDPOINT [--count N] [--json]`: round trips to an agent.

use std::time::Duration;

use hearth_runtime::Endpoint;
use serde_json::json;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Agent endpoint: unix:PATH, hybrid:PATH:PORT or vsock:CID:PORT.
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Endpoint,
    /// Seconds to wait for the agent to answer.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = crate::exec_io::parse_timeout)]
    pub connect_timeout: std::time::Duration,
    /// Number of pings.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub count: u32,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let t0 = std::time::Instant::now();
    let agent = super::exec::connect(&args.connect, args.connect_timeout).await?;
    let client = agent.client();
    let connect = t0.elapsed();
    let mut rtts = Vec::with_capacity(args.count as usize);
    for i in 0..args.count {
        let rtt = client.ping().await?;
        if !args.json {
            println!(
                "pong from {} ({}): seq={} time={:.3} ms",
                args.connect,
                client.ready().agent_version,
                i + 1,
                ms(rtt)
            );
        }
        rtts.push(rtt);
    }
    let mut sorted = rtts.clone();
    sorted.sort();
    let min = sorted[0];
    let max = sorted[sorted.len() - 1];
    let median = sorted[sorted.len() / 2];
    let avg = rtts.iter().sum::<Duration>() / rtts.len() as u32;
    if args.json {
        let v = json!({
            "endpoint": args.connect.to_string(),
            "agent_version": client.ready().agent_version,
            "count": rtts.len(),
            "connect_ms": ms(connect),
            "rtt_ms": rtts.iter().map(|d| ms(*d)).collect::<Vec<_>>(),
            "min_ms": ms(min),
            "median_ms": ms(median),
            "avg_ms": ms(avg),
            "max_ms": ms(max),
        });
        println!("{v}");
    } else if rtts.len() > 1 {
        println!(
            "{} pings: min/median/avg/max = {:.3}/{:.3}/{:.3}/{:.3} ms",
            rtts.len(),
            ms(min),
            ms(median),
            ms(avg),
            ms(max)
        );
    }
    Ok(0)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
