//! `--memory`, `--pids`, `--cpus`: per-exec resource limits shared by
//! `hearth vm exec` and `hearth vm run`. A bad value is a usage error (exit 2)
//! naming the flag and the value.

use hearth_runtime::Limits;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct LimitArgs {
    /// Memory limit of the command (its own cgroup; swap off), e.g. 64M, 1.5G
    /// (K/M/G/T are powers of 1024; at least 1M). Over it, the OOM killer ends
    /// the command: exit code 137, outcome oom_killed.
    #[arg(long, value_name = "SIZE", value_parser = parse_memory)]
    pub memory: Option<u64>,
    /// Most processes and threads the command may have at once (at least 1).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub pids: Option<u32>,
    /// CPU time limit in CPUs, e.g. 0.5 for half of one CPU (0.01 to 1000).
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub cpus: Option<u32>,
}

impl LimitArgs {
    pub fn limits(&self) -> Limits {
        Limits {
            memory_max_bytes: self.memory,
            pids_max: self.pids,
            cpu_millis: self.cpus,
        }
    }
}

fn parse_memory(s: &str) -> Result<u64, String> {
    let v = hearth_runtime::parse_size(s).map_err(|e| e.to_string())?;
    let min = hearth_runtime::limits::MIN_MEMORY_MAX;
    if v < min {
        return Err(format!("{s:?} is below the minimum of 1M"));
    }
    Ok(v)
}

/// CPUs as thousandths of one CPU.
fn parse_cpus(s: &str) -> Result<u32, String> {
    let cpus: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of CPUs"))?;
    let range = hearth_runtime::limits::CPU_MILLIS_RANGE;
    match Limits::cpus_to_millis(cpus) {
        Some(m) if range.contains(&m) => Ok(m),
        _ => Err(format!(
            "{s:?} is out of range {}..={} CPUs",
            *range.start() as f64 / 1000.0,
            *range.end() as f64 / 1000.0
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_limit_values() {
        assert_eq!(parse_memory("64M"), Ok(64 << 20));
        assert!(parse_memory("64X").unwrap_err().contains("64X"));
        assert!(parse_memory("512K").unwrap_err().contains("minimum"));
        assert_eq!(parse_cpus("0.5"), Ok(500));
        assert_eq!(parse_cpus("2"), Ok(2000));
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("abc").unwrap_err().contains("abc"));
        assert!(parse_cpus("0.001").is_err());
    }
}
