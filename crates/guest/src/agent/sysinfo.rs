//! `SYSTEM_INFO`: kernel, OS, memory, CPUs, load, uptime, PID 1.

use hearth_proto::{pb, VERSION};

/// `PRETTY_NAME` (or `NAME`) from os-release text.
pub fn os_name(os_release: &str) -> Option<String> {
    let field = |key: &str| {
        os_release.lines().find_map(|l| {
            let v = l.strip_prefix(key)?.strip_prefix('=')?;
            let v = v.trim().trim_matches('"').trim_matches('\'');
            (!v.is_empty()).then(|| v.to_string())
        })
    };
    field("PRETTY_NAME").or_else(|| field("NAME"))
}

/// (total, available) bytes from /proc/meminfo text.
pub fn meminfo(text: &str) -> (u64, u64) {
    let kib = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |k| k * 1024)
    };
    (kib("MemTotal"), kib("MemAvailable"))
}

/// Load averages from /proc/loadavg text.
pub fn loadavg(text: &str) -> (f64, f64, f64) {
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    (
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    )
}

/// Uptime in milliseconds from /proc/uptime text.
pub fn uptime_ms(text: &str) -> u64 {
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |s| (s * 1000.0) as u64)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Collects everything (blocking; small /proc reads).
pub fn collect() -> pb::SystemInfoResult {
    let uts = nix::sys::utsname::uname().ok();
    let uts_field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let os = os_name(&read("/etc/os-release"))
        .or_else(|| os_name(&read("/usr/lib/os-release")))
        .unwrap_or_else(|| "hearth initramfs".to_string());
    let (memory_total_bytes, memory_available_bytes) = meminfo(&read("/proc/meminfo"));
    let (load1, load5, load15) = loadavg(&read("/proc/loadavg"));
    pb::SystemInfoResult {
        kernel_release: uts_field(|u| u.release()),
        os,
        arch: std::env::consts::ARCH.to_string(),
        hostname: uts_field(|u| u.nodename()),
        memory_total_bytes,
        memory_available_bytes,
        cpu_count: std::thread::available_parallelism().map_or(1, |n| n.get() as u32),
        load1,
        load5,
        load15,
        uptime_ms: uptime_ms(&read("/proc/uptime")),
        agent_version: VERSION.to_string(),
        pid1: read("/proc/1/comm").trim().to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_os_release() {
        let t = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n";
        assert_eq!(
            os_name(t).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(os_name("NAME=Alpine\n").as_deref(), Some("Alpine"));
        assert_eq!(os_name(""), None);
    }

    #[test]
    fn parses_meminfo_loadavg_uptime() {
        let m = "MemTotal:        2000 kB\nMemFree:  10 kB\nMemAvailable:    1500 kB\n";
        assert_eq!(meminfo(m), (2000 * 1024, 1500 * 1024));
        assert_eq!(loadavg("0.50 0.25 1.00 1/100 42\n"), (0.5, 0.25, 1.0));
        assert_eq!(uptime_ms("12.34 5.00\n"), 12340);
        assert_eq!(uptime_ms("garbage"), 0);
    }

    #[test]
    fn collects_live_values() {
        let s = collect();
        assert!(!s.kernel_release.is_empty());
        assert!(
            s.memory_total_bytes > 0 && s.cpu_count > 0 && s.uptime_ms > 0,
            "{s:?}"
        );
    }
}
