//! VM tier: `hearth vm pause` / `vm resume` on real microVMs (QMP `stop` /
//! `cont`). Run alone with `cargo test -p hearth-cli --test vm_pause`.

mod vm_common;

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::time::{Duration, Instant};

use vm_common::{pid_alive, vm_lock, Env};

/// utime + stime of a process (all its threads), in clock ticks.
fn cpu_ticks(pid: u64) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/stat: {e}"));
    let rest = &stat[stat.rfind(')').expect("stat has a comm") + 1..];
    let f: Vec<&str> = rest.split_ascii_whitespace().collect();
    // After the comm, field 3 (state) is f[0]: utime is field 14, stime 15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    assert!(t > 0, "sysconf(_SC_CLK_TCK) failed");
    t as f64
}

/// CPU seconds `pid` used over `secs` of wall time.
fn cpu_over(pid: u64, secs: u64) -> f64 {
    let a = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(secs));
    (cpu_ticks(pid) - a) as f64 / ticks_per_sec()
}

/// Runs a command that must fail; returns (exit code, stderr), with a hang guard.
fn fails_with(env: &Env, args: &[&str]) -> (i32, String) {
    let mut child = env
        .cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hearth");
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("hearth {args:?} hung on a paused vm");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success(), "hearth {args:?} should have failed");
    (status.code().unwrap_or(-1), err)
}

#[test]
fn pause_stops_guest_cpu_refuses_agent_calls_and_a_running_exec_survives() {
    let env = Env::new();
    let _vm = vm_lock();
    let id = env.create(&["--mem", "256"]);
    let qemu = env.record(&id)["qemu_pid"].as_u64().expect("qemu pid");

    // A busy loop in the guest makes a running VM's CPU use obvious.
    env.ok(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--detach",
        "--cmd",
        "while :; do :; done",
    ]);
    let running = cpu_over(qemu, 2);

    let out = env.ok(&["vm", "pause", "--vm", &id, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("pause --json is JSON");
    assert_eq!(v[0]["ok"], true, "{v}");
    assert_eq!(v[0]["status"], "paused", "{v}");
    assert_eq!(env.status(&id), "paused");
    let paused = cpu_over(qemu, 2);
    println!("qemu cpu over 2 s: running {running:.3} s, paused {paused:.3} s");
    assert!(
        running > 0.3,
        "a running busy guest used only {running:.3} CPU s in 2 s: the measurement cannot tell"
    );
    assert!(
        paused < 0.2 && paused * 5.0 < running,
        "a paused guest's QEMU used {paused:.3} CPU s in 2 s (running: {running:.3})"
    );
    assert!(pid_alive(qemu), "pause must not end QEMU");

    // Everything that needs the agent fails at once with the clear message.
    let want = format!("sandbox {id} is paused; resume it with `hearth vm resume --vm {id}`");
    for args in [
        vec!["vm", "exec", "--vm", id.as_str(), "--cmd", "true"],
        vec!["vm", "ps", "--vm", id.as_str()],
        vec!["vm", "stats", "--vm", id.as_str()],
    ] {
        let (code, err) = fails_with(&env, &args);
        assert!(err.contains(&want), "{args:?} (exit {code}): {err}");
    }
    // Paused twice is an error; the VM stays paused.
    let (code, err) = fails_with(&env, &["vm", "pause", "--vm", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is paused already"), "{err}");

    env.ok(&["vm", "resume", "--vm", &id]);
    assert_eq!(env.status(&id), "running");
    assert_eq!(env.sh(&id, "echo back"), "back\n");

    // An exec that is running across a pause finishes with its output intact.
    let mut exec = env
        .cmd(&[
            "vm",
            "exec",
            "--vm",
            &id,
            "--timeout",
            "120",
            "--cmd",
            "for i in $(seq 1 20); do echo $i; sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vm exec");
    let mut lines = BufReader::new(exec.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a first line").unwrap();
    assert_eq!(first, "1");
    env.ok(&["vm", "pause", "--vm", &id]);
    std::thread::sleep(Duration::from_secs(2));
    env.ok(&["vm", "resume", "--vm", &id]);
    let mut got = vec![first];
    for l in lines {
        got.push(l.unwrap());
    }
    let status = exec.wait().unwrap();
    let mut err = String::new();
    exec.stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "exec across a pause: {status:?}: {err}");
    let want: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    assert_eq!(got, want, "stderr: {err}");
}

#[test]
fn wrong_transitions_are_refused_and_paused_vms_stop_and_clean() {
    let env = Env::new();
    let _vm = vm_lock();
    let id = env.create(&["--mem", "256"]);

    let (code, err) = fails_with(&env, &["vm", "resume", "--vm", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("vm {id} is running (not paused)")),
        "{err}"
    );
    let (code, err) = fails_with(&env, &["vm", "pause", "--vm", "nosuchvm"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no such vm: nosuchvm"), "{err}");

    // Stop of a paused VM: the guest is resumed to power off, QEMU is gone.
    env.ok(&["vm", "pause", "--vm", &id]);
    let qemu = env.record(&id)["qemu_pid"].as_u64().expect("qemu pid");
    env.ok(&["vm", "stop", "--vm", &id]);
    assert_eq!(env.status(&id), "stopped");
    assert!(
        !pid_alive(qemu),
        "qemu {qemu} outlived vm stop of a paused vm"
    );
    let rec = env.record(&id);
    assert_eq!(rec["note"], "stopped by the user", "{rec}");

    let (code, err) = fails_with(&env, &["vm", "pause", "--vm", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!(
            "vm {id} is stopped (only a running sandbox can be paused)"
        )),
        "{err}"
    );
    let (code, err) = fails_with(&env, &["vm", "resume", "--vm", &id]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("only a paused sandbox can be resumed"),
        "{err}"
    );
    let out = env
        .cmd(&["vm", "pause", "--vm", &id, "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on failure too");
    assert_eq!(v[0]["ok"], false, "{v}");
    assert!(v[0]["error"].as_str().unwrap().contains("stopped"), "{v}");

    // vm start refuses a paused VM with the resume hint; clean of a paused VM works.
    env.ok(&["vm", "start", "--vm", &id]);
    env.ok(&["vm", "pause", "--vm", &id]);
    let (_, err) = fails_with(&env, &["vm", "start", "--vm", &id]);
    assert!(err.contains("resume it with"), "{err}");
    let qemu = env.record(&id)["qemu_pid"].as_u64().expect("qemu pid");
    let dir = std::path::PathBuf::from(env.record(&id)["dir"].as_str().unwrap());
    env.ok(&["vm", "clean", "--vm", &id]);
    assert!(
        !pid_alive(qemu),
        "qemu {qemu} outlived vm clean of a paused vm"
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(env.list().iter().all(|r| r["id"] != id.as_str()));
}

/// This failed with the vhost-user-vsock transport (vhost-device-vsock): when
/// the host closed an agent connection while the guest was paused, no later
/// connection got READY after the resume. The VM link queues the stream's
/// end in the proxy until the guest runs again.
#[test]
fn a_connection_closed_while_paused_leaves_the_agent_reachable() {
    let env = Env::new();
    let _vm = vm_lock();
    let id = env.create(&["--mem", "256"]);
    let mut exec = env
        .cmd(&["vm", "exec", "--vm", &id, "--cmd", "echo started; sleep 60"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start vm exec");
    let mut lines = BufReader::new(exec.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().expect("a line").unwrap(), "started");
    env.ok(&["vm", "pause", "--vm", &id]);
    // The client goes away while the guest cannot see it go.
    exec.kill().unwrap();
    exec.wait().unwrap();
    env.ok(&["vm", "resume", "--vm", &id]);
    assert_eq!(env.sh(&id, "echo after"), "after\n");
}
