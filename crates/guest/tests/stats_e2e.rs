//! Agent tier: `STATS` against the host's own /proc (the agent runs on the
//! host here), exec resource limits where the host's cgroups may or may not be
//! usable, and pings answered while every session floods output.

mod common;

use std::time::Duration;

use common::Agent;
use hearth_client::{pb, ClientError, ExecEvent};

fn host(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading host {path}: {e}"))
}

fn host_cpu_user(stat: &str) -> u64 {
    stat.lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .expect("cpu line in /proc/stat")
}

fn host_uptime_ms() -> u64 {
    let t = host("/proc/uptime");
    let s: f64 = t.split_whitespace().next().unwrap().parse().unwrap();
    (s * 1000.0) as u64
}

#[tokio::test]
async fn stats_agree_with_the_hosts_proc() {
    let agent = Agent::start();
    let c = agent.client().await;
    assert!(hearth_proto::has_capability(
        c.ready().capabilities,
        pb::Capability::Stats
    ));
    let (user0, up0) = (host_cpu_user(&host("/proc/stat")), host_uptime_ms());
    let s = c.stats().await.expect("stats");
    let (user1, up1) = (host_cpu_user(&host("/proc/stat")), host_uptime_ms());

    let cpu = s.cpu.expect("cpu");
    let host_cpus = host("/proc/stat")
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        .count() as u32;
    assert_eq!(cpu.cpu_count, host_cpus, "{cpu:?}");
    assert!(
        (user0..=user1).contains(&cpu.user),
        "{user0} <= {} <= {user1}",
        cpu.user
    );
    assert!(cpu.idle > 0 && cpu.ticks_per_second > 0, "{cpu:?}");
    // Uptime is read once, between the host's two readings (10 ms slack for
    // the file's own rounding).
    assert!(
        s.uptime_ms + 10 >= up0 && s.uptime_ms <= up1 + 10,
        "{up0} <= {} <= {up1}",
        s.uptime_ms
    );

    let m = s.memory.expect("memory");
    let total_kib: u64 = host("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("MemTotal");
    assert_eq!(m.total_bytes, total_kib * 1024);
    assert!(
        m.available_bytes <= m.total_bytes && m.used_bytes < m.total_bytes,
        "{m:?}"
    );
    assert!(
        m.used_bytes + m.cached_bytes + m.free_bytes <= m.total_bytes,
        "{m:?}"
    );

    let root = s.disks.first().expect("a disk");
    assert_eq!(root.path, "/");
    let v = nix::sys::statvfs::statvfs("/").expect("statvfs /");
    assert_eq!(
        root.total_bytes,
        v.blocks() as u64 * v.fragment_size() as u64
    );
    assert_eq!(root.total_inodes, v.files() as u64);
    assert!(root.used_bytes <= root.total_bytes && root.free_bytes <= root.total_bytes);
    let persist_mounted = host("/proc/self/mountinfo")
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some("/persist"));
    assert_eq!(
        s.disks.iter().any(|d| d.path == "/persist"),
        persist_mounted,
        "{:?}",
        s.disks
    );

    let host_ifaces: Vec<String> = host("/proc/net/dev")
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split_once(':')?.0.trim().to_string()))
        .collect();
    let names: Vec<&str> = s.net.iter().map(|n| n.name.as_str()).collect();
    assert_eq!(names, host_ifaces, "interfaces");
    let procs = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .count() as u32;
    // Other processes come and go on the host meanwhile.
    assert!(
        s.processes > 0 && s.processes.abs_diff(procs) < procs / 2 + 10,
        "{} vs {procs}",
        s.processes
    );
    assert!(s.load1 >= 0.0 && s.load5 >= 0.0 && s.load15 >= 0.0);
}

/// Whether this host lets the agent make per-exec cgroups: a writable cgroup2
/// mount at /sys/fs/cgroup (the agent's own rule, probed the same way).
fn host_cgroups_usable() -> Result<(), String> {
    let p = std::path::Path::new("/sys/fs/cgroup");
    let st = nix::sys::statfs::statfs(p).map_err(|e| format!("statfs: {e}"))?;
    if st.filesystem_type().0 as i64 != 0x6367_7270 {
        return Err("/sys/fs/cgroup is not a cgroup2 mount".into());
    }
    nix::unistd::access(p, nix::unistd::AccessFlags::W_OK)
        .map_err(|e| format!("/sys/fs/cgroup is not writable: {e}"))
}

#[tokio::test]
async fn exec_with_limits_runs_limited_or_never_starts_with_the_reason() {
    let agent = Agent::start();
    let c = agent.client().await;
    assert!(hearth_proto::has_capability(
        c.ready().capabilities,
        pb::Capability::ExecLimits
    ));
    let limits = Some(pb::ResourceLimits {
        pids_max: 32,
        ..Default::default()
    });
    let r = c
        .exec(pb::Exec {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup | tail -n1)/pids.max".into(),
            ],
            limits,
            ..Default::default()
        })
        .await
        .expect("exec");
    let kind = r.outcome.and_then(|o| o.kind).expect("outcome");
    match host_cgroups_usable() {
        Ok(()) => {
            println!("host cgroups are usable: checking the limit is in force");
            assert!(
                matches!(kind, pb::exec_outcome::Kind::Exited(pb::Exited { code: 0 })),
                "{kind:?}"
            );
            assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), "32");
        }
        Err(why) => {
            println!("host cgroups are not usable ({why}): checking the exec never starts");
            let pb::exec_outcome::Kind::NeverStarted(ns) = kind else {
                panic!("an exec with limits ran without them: {kind:?}");
            };
            assert!(
                ns.message.contains("resource limits need per-exec cgroups"),
                "{}",
                ns.message
            );
            assert!(ns.message.contains("/sys/fs/cgroup"), "{}", ns.message);
        }
    }
    // Without limits an exec runs either way.
    let r = c
        .exec(pb::Exec {
            argv: vec!["/bin/echo".into(), "plain".into()],
            ..Default::default()
        })
        .await
        .expect("exec");
    assert_eq!(&r.stdout[..], b"plain\n");
    // All-zero limits are no limits.
    let r = c
        .exec(pb::Exec {
            argv: vec!["/bin/true".into()],
            limits: Some(pb::ResourceLimits::default()),
            ..Default::default()
        })
        .await
        .expect("exec");
    assert!(matches!(
        r.outcome.and_then(|o| o.kind),
        Some(pb::exec_outcome::Kind::Exited(pb::Exited { code: 0 }))
    ));
}

#[tokio::test]
async fn bad_limits_are_refused_and_the_agent_goes_on() {
    let agent = Agent::start();
    let c = agent.client().await;
    let err = c
        .exec_stream(pb::ExecStart {
            argv: vec!["/bin/true".into()],
            limits: Some(pb::ResourceLimits {
                memory_max_bytes: 4096,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    let err = match err {
        Ok(mut h) => h.next_event().await.expect_err("an error, not events"),
        Err(e) => e,
    };
    assert_eq!(
        err.remote_code(),
        Some(pb::ErrorCode::InvalidArgument),
        "{err}"
    );
    assert!(err.to_string().contains("memory_max_bytes 4096"), "{err}");
    let err = c
        .exec(pb::Exec {
            argv: vec!["/bin/true".into()],
            limits: Some(pb::ResourceLimits {
                cpu_max_millicpus: 3,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("refused");
    assert!(matches!(err, ClientError::Remote { .. }), "{err}");
    assert!(err.to_string().contains("cpu_max_millicpus 3"), "{err}");
    c.ping().await.expect("ping after refusals");
}

/// Pings keep being answered while eight sessions flood output, half read as
/// fast as possible, half not read at all (their credit runs out). Latency
/// is measured by the bench_ping_flood example, not asserted here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_are_answered_while_every_session_floods() {
    let agent = Agent::start();
    let c = agent.client().await;
    let mut readers = Vec::new();
    let mut stalled = Vec::new();
    for i in 0..8 {
        let mut h = c
            .exec_stream(pb::ExecStart {
                argv: vec!["/bin/cat".into(), "/dev/zero".into()],
                ..Default::default()
            })
            .await
            .expect("exec_stream");
        if i % 2 == 0 {
            readers.push(tokio::spawn(async move {
                let mut bytes = 0u64;
                while let Ok(Some(ev)) = h.next_event().await {
                    if let ExecEvent::Stdout(b) = ev {
                        bytes += b.len() as u64;
                    }
                    if bytes > 64 << 20 {
                        break;
                    }
                }
                (bytes, h)
            }));
        } else {
            stalled.push(h);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..50 {
        tokio::time::timeout(Duration::from_secs(10), c.ping())
            .await
            .expect("a pong within 10 s")
            .expect("ping");
    }
    for r in readers {
        let (bytes, h) = r.await.expect("reader");
        assert!(bytes > 0, "a fast reader got no output");
        h.control().signal(9).await;
    }
    for h in &stalled {
        h.control().signal(9).await;
    }
    c.ping().await.expect("ping after the flood");
}
