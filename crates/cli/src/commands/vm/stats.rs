//! `hearth vm stats --vm ID [--watch [--interval 1s]] [--json]`: the guest's
//! CPU, memory, disk, load, process and network use. One sample (a table),
//! or with `--watch` one line per interval until Ctrl-C; `--json` prints one
//! object per sample.

use std::time::Duration;

use hearth_runtime::{cpu_percent, format_bytes, Runtime, Stats};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VM id or name.
    #[arg(long)]
    pub vm: String,
    /// Sample again every --interval until Ctrl-C (one line per sample).
    #[arg(long)]
    pub watch: bool,
    /// Time between samples with --watch: 1s, 500ms, 2m, or plain seconds.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_interval, requires = "watch")]
    pub interval: Duration,
    /// One JSON object per sample.
    #[arg(long)]
    pub json: bool,
}

/// `500ms`, `1s`, `2m`, `1.5` (seconds); 100 ms to one hour.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 1s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("{s:?} has an unknown unit {unit:?} (ms, s, m)")),
    };
    if !(0.1..=3600.0).contains(&secs) {
        return Err(format!("{s:?} is out of range 100ms..=1h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let sb = rt.get(&a.vm).await?;
    let first = sb.stats().await?;
    if !a.watch {
        if a.json {
            println!("{}", sample_json(sb.id(), &first, None));
        } else {
            print_table(sb.id(), &first);
        }
        return Ok(0);
    }
    let mut prev = first;
    if a.json {
        println!("{}", sample_json(sb.id(), &prev, None));
    } else {
        println!(
            "{:>10} {:>6} {:>21} {:>6} {:>6} {:>12} {:>12}",
            "uptime", "cpu%", "memory used/total", "load1", "procs", "rx", "tx"
        );
        print_line(&prev, None);
    }
    let mut tick = tokio::time::interval(a.interval);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(0),
        }
        let s = sb.stats().await?;
        let cpu = cpu_percent(&prev, &s);
        if a.json {
            println!("{}", sample_json(sb.id(), &s, cpu));
        } else {
            print_line(&s, cpu);
        }
        prev = s;
    }
}

/// `cpu_percent` is over the last interval; without one it is since boot.
fn sample_json(id: &str, s: &Stats, cpu_percent: Option<f64>) -> serde_json::Value {
    let since_boot = cpu_percent.is_none();
    let cpu = cpu_percent.or_else(|| hearth_runtime::cpu_percent(&Stats::default(), s));
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.insert("id".into(), id.into());
        o.insert("cpu_percent".into(), serde_json::json!(cpu));
        o.insert("cpu_percent_since_boot".into(), since_boot.into());
    }
    v
}

fn fmt_uptime(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s / 60 % 60),
    }
}

fn net_totals(s: &Stats) -> (u64, u64) {
    s.net
        .iter()
        .filter(|n| n.name != "lo")
        .fold((0, 0), |(r, t), n| (r + n.rx_bytes, t + n.tx_bytes))
}

fn print_line(s: &Stats, cpu: Option<f64>) {
    let cpu = cpu
        .or_else(|| cpu_percent(&Stats::default(), s))
        .map_or("-".to_string(), |c| format!("{c:.1}"));
    let (rx, tx) = net_totals(s);
    println!(
        "{:>10} {:>6} {:>21} {:>6.2} {:>6} {:>12} {:>12}",
        fmt_uptime(s.uptime),
        cpu,
        format!(
            "{}/{}",
            format_bytes(s.memory.used_bytes),
            format_bytes(s.memory.total_bytes)
        ),
        s.load[0],
        s.processes,
        format_bytes(rx),
        format_bytes(tx)
    );
}

fn print_table(id: &str, s: &Stats) {
    let c = &s.cpu;
    println!(
        "vm {id}: up {}, load {:.2} {:.2} {:.2}, {} processes",
        fmt_uptime(s.uptime),
        s.load[0],
        s.load[1],
        s.load[2],
        s.processes
    );
    let busy = cpu_percent(&Stats::default(), s).map_or("-".into(), |p| format!("{p:.1}%"));
    println!(
        "cpu      {} CPUs, {busy} busy since boot (user {:.1}s, system {:.1}s, idle {:.1}s, iowait {:.1}s)",
        c.cpu_count, c.user_s, c.system_s, c.idle_s, c.iowait_s
    );
    let m = &s.memory;
    println!(
        "memory   total {}, used {}, cached {}, available {}",
        format_bytes(m.total_bytes),
        format_bytes(m.used_bytes),
        format_bytes(m.cached_bytes),
        format_bytes(m.available_bytes)
    );
    for d in &s.disks {
        println!(
            "disk     {:<10} total {}, used {}, free {}, inodes {}/{}",
            d.path,
            format_bytes(d.total_bytes),
            format_bytes(d.used_bytes),
            format_bytes(d.free_bytes),
            d.used_inodes,
            d.total_inodes
        );
    }
    for n in &s.net {
        println!(
            "net      {:<10} rx {} ({} packets), tx {} ({} packets)",
            n.name,
            format_bytes(n.rx_bytes),
            n.rx_packets,
            format_bytes(n.tx_bytes),
            n.tx_packets
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_intervals() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_interval("10ms").is_err());
        assert!(parse_interval("1x").unwrap_err().contains("1x"));
        assert!(parse_interval("").is_err());
    }
}
