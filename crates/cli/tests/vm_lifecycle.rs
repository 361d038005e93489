//! VM tier: one VM's whole life through the CLI. Run alone with
//! `cargo test -p hearth-cli --test vm_lifecycle`.

mod vm_common;

use std::time::Duration;

use vm_common::{pid_alive, stderr, stdout, Env};

#[test]
fn vm_lifecycle_exec_files_zombies_stop_clean() {
    let env = Env::new();
    let id = env.create(&["--cpu", "2", "--mem", "300"]);

    // A second CLI process sees what the first created, running, with its accel.
    let rec = env.record(&id);
    assert_eq!(rec["status"], "running", "{rec}");
    assert!(rec["accel"] == "tcg" || rec["accel"] == "kvm", "{rec}");
    let qemu = rec["qemu_pid"].as_u64().expect("qemu pid");
    let proxy = rec["proxy_pid"].as_u64().expect("proxy pid");
    assert!(pid_alive(qemu) && pid_alive(proxy));
    let dir = std::path::PathBuf::from(rec["dir"].as_str().expect("dir"));
    for f in ["vsock.sock", "console.log"] {
        assert!(dir.join(f).exists(), "{f} missing in {}", dir.display());
    }

    // Kernel release and PID 1, through the agent's system info.
    let hello: serde_json::Value =
        serde_json::from_str(&env.ok(&["vm", "exec", "--vm", &id, "--hello", "--json"])).unwrap();
    let host_release = std::fs::read_dir("/boot")
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .strip_prefix("vmlinuz-")
                .map(String::from)
        })
        .collect::<Vec<_>>();
    let rel = hello[0]["kernel_release"].as_str().unwrap().to_string();
    // The kernel the record says it booted: hearth's own (when built) or a
    // cloud kernel from /boot.
    assert_eq!(rec["kernel_release"], rel.as_str(), "{rec}");
    match rec["kernel_kind"].as_str() {
        Some("own") => assert!(rel.ends_with("-hearth"), "{rec}"),
        Some("cloud") => assert!(
            host_release.contains(&rel),
            "guest kernel {rel:?} is not one of {host_release:?}"
        ),
        other => panic!("unexpected kernel_kind {other:?}: {rec}"),
    }
    assert_eq!(hello[0]["pid1"], "init", "{hello}");
    assert_eq!(hello[0]["cpu_count"], 2, "--cpu not honoured: {hello}");
    let mem = hello[0]["memory_total_bytes"].as_u64().unwrap();
    assert!(
        mem > 200 << 20 && mem <= 300 << 20,
        "--mem 300 not honoured: {mem} bytes"
    );

    // And through a command: uname and /proc/1/cmdline (our init is /init).
    let out = env.ok(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--cmd",
        "uname -r; tr '\\0' ' ' < /proc/1/cmdline; echo; cat /proc/1/comm",
    ]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first().copied(), Some(rel.as_str()), "{out}");
    assert!(
        lines.get(1).is_some_and(|l| l.trim() == "/init"),
        "PID 1 is not hearth's init: {out}"
    );

    // Exit codes pass through.
    let o = env.run(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--cmd",
        "echo out; echo err >&2; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(stdout(&o), "out\n");
    assert!(stderr(&o).contains("err"));

    // A file copied with vm run --file is visible in /in, and the command runs there.
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("x.py");
    std::fs::write(&f, "print('hi from a file')\n").unwrap();
    let out = env.ok(&[
        "vm",
        "run",
        "--vm",
        &id,
        "--file",
        f.to_str().unwrap(),
        "--cmd",
        "pwd; cat x.py",
    ]);
    assert_eq!(out, "/in\nprint('hi from a file')\n");

    // Orphans that exit are reaped by init: no zombies remain.
    let out = env.ok(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--cmd",
        "for i in 1 2 3 4 5; do (sleep 0.2 &) ; done; sleep 1.5; \
         n=0; for s in /proc/[0-9]*/stat; do read -r l < $s 2>/dev/null || continue; \
         case \"${l##*) }\" in Z*) n=$((n+1));; esac; done; echo zombies=$n",
    ]);
    assert_eq!(out.trim(), "zombies=0", "{out}");

    // Timeout: 124.
    let o = env.run(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--cmd",
        "sleep 30",
        "--timeout",
        "1",
    ]);
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));

    // Stop: processes gone, record stopped; stopping again is fine.
    env.ok(&["vm", "stop", "--vm", &id]);
    assert_eq!(env.status(&id), "stopped");
    for p in [qemu, proxy] {
        assert!(!pid_alive(p), "pid {p} still runs after stop");
    }
    for f in ["vsock.sock", "link.sock", "link.ctl"] {
        assert!(
            !dir.join(f).exists(),
            "{f} left after stop: {:?}",
            std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
        );
    }
    let o = env.run(&["vm", "stop", "--vm", &id]);
    assert!(o.status.success(), "stop on a stopped vm: {}", stderr(&o));
    assert!(stderr(&o).contains("already stopped"), "{}", stderr(&o));
    // Exec on a stopped VM is a clear error.
    let o = env.run(&["vm", "exec", "--vm", &id, "--hello"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is stopped"), "{}", stderr(&o));

    // Clean: no directory, no record.
    env.ok(&["vm", "clean", "--vm", &id]);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(env.list().iter().all(|r| r["id"] != id.as_str()));
    std::thread::sleep(Duration::from_millis(100));
}
