//! VM tier: per-exec cgroup limits (`--memory`, `--pids`, `--cpus`), teardown
//! of whatever an exec left behind, and `hearth vm stats`, through the CLI on
//! real microVMs. Run alone with
//! `cargo test -p hearth-cli --test vm_limits -- --test-threads=1`.

mod vm_common;

use std::process::Stdio;

use vm_common::{stderr, stdout, vm_lock, Env};

/// Runs `vm exec --json` with `extra` flags; returns the one result object
/// and the CLI's exit code.
fn exec_json(env: &Env, id: &str, extra: &[&str], cmd: &str) -> (serde_json::Value, i32) {
    let mut args = vec!["vm", "exec", "--vm", id, "--json"];
    args.extend_from_slice(extra);
    args.extend(["--cmd", cmd]);
    let o = env.run(&args);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim())
        .unwrap_or_else(|e| panic!("vm exec --json: {e}: {}\n{}", stdout(&o), stderr(&o)));
    (v[0].clone(), o.status.code().unwrap_or(-1))
}

/// Command lines of the guest's processes that start with `prefix`
/// (the checking shell's own line starts with /bin/sh, so it never matches).
fn guest_procs(env: &Env, id: &str, prefix: &str) -> Vec<String> {
    let out = env.sh(
        id,
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f 2>/dev/null; echo; done",
    );
    out.lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_string)
        .collect()
}

#[test]
fn memory_hog_is_oom_killed_and_the_vm_goes_on() {
    let _g = vm_lock();
    let env = Env::new();
    let id = env.create(&["--mem", "256"]);
    // tail keeps the last "line" of newline-free zeros: it grows to 200 MiB.
    let (v, code) = exec_json(
        &env,
        &id,
        &["--memory", "64M", "--timeout", "120"],
        "head -c 209715200 /dev/zero | tail",
    );
    assert_eq!(v["kind"], "oom_killed", "{v}");
    assert_eq!(v["exit_code"], 137, "{v}");
    assert_eq!(code, 137, "{v}");
    assert_eq!(
        v["outcome"], "killed by the OOM killer (memory limit 64 MiB)",
        "{v}"
    );
    // The human form says the same on stderr, with the same exit code.
    let o = env.run(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--memory",
        "64M",
        "--timeout",
        "120",
        "--cmd",
        "head -c 209715200 /dev/zero | tail",
    ]);
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    assert!(stderr(&o).contains("OOM killer"), "{}", stderr(&o));
    // The same VM keeps working, and an exec under the limit is not touched.
    assert_eq!(env.sh(&id, "echo alive").trim(), "alive");
    let (v, code) = exec_json(
        &env,
        &id,
        &["--memory", "64M"],
        "head -c 10485760 /dev/zero | wc -c",
    );
    assert_eq!(
        (code, v["stdout"].as_str().map(str::trim)),
        (0, Some("10485760")),
        "{v}"
    );
}

#[test]
fn fork_bomb_under_pids_limit_leaves_the_agent_serving() {
    let _g = vm_lock();
    let env = Env::new();
    let id = env.create(&[]);
    // A session that runs across the bomb and must finish every step.
    let ticker = env
        .cmd(&[
            "vm",
            "exec",
            "--vm",
            &id,
            "--timeout",
            "300",
            "--cmd",
            "for i in 1 2 3 4 5 6 7 8; do echo tick $i; sleep 1; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ticker");
    let bomb = env
        .cmd(&[
            "vm",
            "exec",
            "--vm",
            &id,
            "--json",
            "--pids",
            "64",
            "--timeout",
            "25",
            "--cmd",
            "b() { b | b & }; b; exec sleep 1000",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bomb");
    std::thread::sleep(std::time::Duration::from_secs(3));
    // While the bomb runs: new execs and control requests are answered.
    assert_eq!(env.sh(&id, "true; echo ok").trim(), "ok");
    let dir = env.record(&id)["dir"].as_str().expect("vm dir").to_string();
    let endpoint = format!("hybrid:{dir}/vsock.sock:1000");
    env.ok(&["ping", "--connect", &endpoint, "--count", "5"]);
    let hello = env.ok(&["vm", "exec", "--vm", &id, "--hello"]);
    assert!(hello.contains(&format!("hello from vm {id}")), "{hello}");
    let (v, _) = exec_json(
        &env,
        &id,
        &["--pids", "64"],
        "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/pids.max",
    );
    assert_eq!(v["stdout"].as_str().map(str::trim), Some("64"), "{v}");
    let o = ticker.wait_with_output().expect("ticker");
    assert!(o.status.success(), "ticker: {}", stderr(&o));
    assert_eq!(stdout(&o).lines().count(), 8, "{}", stdout(&o));
    let o = bomb.wait_with_output().expect("bomb");
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("bomb json");
    assert_eq!(v[0]["kind"], "timed_out", "{v}");
    // The timeout took the whole cgroup with it: no bomb process is left.
    let left = guest_procs(&env, &id, "/bin/sh -c b()");
    assert!(left.is_empty(), "bomb processes left: {}", left.len());
    // Spare groups may exist; only the checking exec's own is populated.
    let populated = env.sh(&id, "grep -l . /sys/fs/cgroup/hearth/exec-*/cgroup.procs");
    assert_eq!(
        populated.lines().count(),
        1,
        "populated exec cgroups: {populated}"
    );
}

#[test]
fn timeout_kills_setsid_grandchildren_and_cpus_sets_cpu_max() {
    let _g = vm_lock();
    let env = Env::new();
    let id = env.create(&[]);
    let o = env.run(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--timeout",
        "3",
        "--cmd",
        "setsid sh -c 'sleep 1001' & sleep 1000",
    ]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    let left: Vec<_> = ["sleep 100", "sh -c sleep 100"]
        .iter()
        .flat_map(|p| guest_procs(&env, &id, p))
        .collect();
    assert!(left.is_empty(), "left running after the timeout: {left:?}");
    // A background job that outlives its exec's leader goes too.
    env.sh(
        &id,
        "setsid sleep 1002 > /dev/null 2>&1 < /dev/null & echo started",
    );
    let left = guest_procs(&env, &id, "sleep 1002");
    assert!(left.is_empty(), "left running after the exec: {left:?}");

    let (v, code) = exec_json(
        &env,
        &id,
        &["--cpus", "0.5"],
        "cat /sys/fs/cgroup$(cut -d: -f3 /proc/self/cgroup)/cpu.max",
    );
    assert_eq!(code, 0, "{v}");
    assert_eq!(
        v["stdout"].as_str().map(str::trim),
        Some("50000 100000"),
        "{v}"
    );
    // Without limits the exec still has its own group, without a cap.
    let (v, _) = exec_json(&env, &id, &[], "cut -d: -f3 /proc/self/cgroup");
    let cg = v["stdout"].as_str().unwrap_or("").trim().to_string();
    assert!(cg.starts_with("/hearth/exec-"), "{v}");
    // Bad values are usage errors naming the flag and the value.
    for (flag, value) in [
        ("--memory", "64X"),
        ("--memory", "100K"),
        ("--cpus", "0"),
        ("--pids", "0"),
    ] {
        let o = env.run(&["vm", "exec", "--vm", &id, flag, value, "--cmd", "true"]);
        assert_eq!(o.status.code(), Some(2), "{flag} {value}: {}", stderr(&o));
        let e = stderr(&o);
        assert!(e.contains(flag) && e.contains(value), "{flag} {value}: {e}");
    }
}

#[test]
fn stats_report_the_vm_memory_and_root_disk() {
    let _g = vm_lock();
    let env = Env::new();
    let id = env.create(&["--mem", "384"]);
    let out = env.ok(&["vm", "stats", "--vm", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("stats json");
    let total = v["memory"]["total_bytes"].as_u64().unwrap_or(0);
    let mem = 384u64 << 20;
    assert!(
        total > mem * 7 / 10 && total <= mem,
        "memory total {total} vs --mem 384: {v}"
    );
    assert!(
        v["memory"]["available_bytes"].as_u64().unwrap_or(0) < total,
        "{v}"
    );
    let root = &v["disks"][0];
    assert_eq!(root["path"], "/", "{v}");
    assert!(root["total_bytes"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(v["cpu"]["cpu_count"].as_u64().unwrap_or(0) >= 1, "{v}");
    assert!(v["processes"].as_u64().unwrap_or(0) >= 2, "{v}");
    assert!(
        v["net"]
            .as_array()
            .is_some_and(|n| n.iter().any(|i| i["name"] == "lo")),
        "{v}"
    );
    // --watch prints one object per interval until stopped.
    let mut child = env
        .cmd(&[
            "vm",
            "stats",
            "--vm",
            &id,
            "--json",
            "--watch",
            "--interval",
            "500ms",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap()));
    let mut samples = Vec::new();
    for _ in 0..3 {
        let l = lines.next().expect("a sample").expect("read");
        samples.push(serde_json::from_str::<serde_json::Value>(&l).expect("json line"));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(samples[0]["cpu_percent_since_boot"], true);
    assert_eq!(samples[2]["cpu_percent_since_boot"], false);
    assert!(
        samples[2]["uptime"].as_u64() > samples[0]["uptime"].as_u64(),
        "{samples:?}"
    );
    // The human table names every section.
    let table = env.ok(&["vm", "stats", "--vm", &id]);
    for word in ["cpu", "memory", "disk     /", "net"] {
        assert!(table.contains(word), "{word}: {table}");
    }
}

/// `vm ps --json` entry of the process with this tag.
fn ps_entry(env: &Env, id: &str, tag: &str) -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_str(env.ok(&["vm", "ps", "--vm", id, "--json"]).trim()).unwrap();
    v.as_array()
        .and_then(|a| a.iter().find(|p| p["tag"] == tag).cloned())
        .unwrap_or_else(|| panic!("no process tagged {tag} in {v}"))
}

#[test]
fn background_processes_get_limits_and_their_cgroup_is_torn_down() {
    let _g = vm_lock();
    let env = Env::new();
    let id = env.create(&[]);
    // A detached memory hog ends oom_killed, as a foreground exec does.
    env.ok(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--detach",
        "--tag",
        "hog",
        "--memory",
        "64M",
        "--cmd",
        "head -c 209715200 /dev/zero | tail",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let hog = loop {
        let p = ps_entry(&env, &id, "hog");
        if p["state"] == "exited" {
            break p;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hog still runs: {p}"
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    assert_eq!(hog["kind"], "oom_killed", "{hog}");
    assert_eq!(hog["exit_code"], 137, "{hog}");

    // Killing a detached process also ends what left its process group.
    env.ok(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--detach",
        "--tag",
        "svc",
        "--cmd",
        "setsid sleep 1003 > /dev/null 2>&1 < /dev/null & sleep 1004",
    ]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while guest_procs(&env, &id, "sleep 1003").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the setsid child never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    env.ok(&["vm", "kill", "--vm", &id, "svc", "--signal", "KILL"]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let left: Vec<_> = ["sleep 1003", "sleep 1004"]
            .iter()
            .flat_map(|p| guest_procs(&env, &id, p))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left after vm kill: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}
