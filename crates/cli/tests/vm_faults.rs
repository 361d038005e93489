//! VM tier: bad input and faults. Run alone with
//! `cargo test -p hearth-cli --test vm_faults -- --test-threads=1`.

mod vm_common;

use std::time::{Duration, Instant};

use vm_common::{pid_alive, stderr, Env};

#[test]
fn unknown_vm_id_is_a_clear_error() {
    let env = Env::new();
    for args in [
        vec!["vm", "exec", "--vm", "deadbeef", "--hello"],
        vec!["vm", "run", "--vm", "deadbeef", "--cmd", "true"],
        vec!["vm", "stop", "--vm", "deadbeef"],
        vec!["vm", "clean", "--vm", "deadbeef"],
    ] {
        let o = env.run(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&o).contains("no such vm: deadbeef"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn too_little_memory_and_missing_kernel_fail_before_booting() {
    let env = Env::new();
    let o = env.run(&["vm", "create", "--mem", "16"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("memory 16 MiB is below the minimum"),
        "{}",
        stderr(&o)
    );
    let o = env.run(&["vm", "create", "--kernel", "/nonexistent/vmlinuz"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("kernel not found: /nonexistent/vmlinuz"),
        "{}",
        stderr(&o)
    );
    let o = env.run(&["vm", "create", "--language", "cobol"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("unknown language \"cobol\""),
        "{}",
        stderr(&o)
    );
    // Nothing was recorded for refused requests.
    assert!(env.list().is_empty());
}

#[test]
fn locked_state_db_gives_a_clear_error_after_a_bounded_wait() {
    let env = Env::new();
    env.ok(&["vm", "list"]);
    let db =
        redb::Database::create(env.state().join("state.redb")).expect("open the DB from the test");
    let t0 = Instant::now();
    let o = env
        .cmd(&["vm", "list"])
        .env("HEARTH_DB_LOCK_TIMEOUT_MS", "1500")
        .output()
        .unwrap();
    let waited = t0.elapsed();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("locked by another process"),
        "{}",
        stderr(&o)
    );
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // A short hold is waited out, not reported.
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        drop(db);
    });
    env.ok(&["vm", "list"]);
    release.join().unwrap();
}

/// Unmounts the small tmpfs on drop.
struct Mount(std::path::PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_in_state_dir_is_a_clear_error_and_the_db_stays_readable() {
    let env = Env::new();
    let st = env.state().join("small");
    std::fs::create_dir(&st).unwrap();
    let s = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(&st)
        .status()
        .expect("run mount");
    assert!(
        s.success(),
        "this test needs to mount a small tmpfs (run as root)"
    );
    let _m = Mount(st.clone());
    let cmd = |args: &[&str]| env.cmd(args).env("HEARTH_STATE_DIR", &st).output().unwrap();
    assert!(cmd(&["vm", "list"]).status.success());
    // Fill the filesystem.
    let mut f = std::fs::File::create(st.join("filler")).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    use std::io::Write;
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    let o = cmd(&["vm", "create"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("No space left on device") || e.contains("disk full"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");
    let o = cmd(&["vm", "list", "--all", "--json"]);
    assert!(o.status.success(), "list on a full disk: {}", stderr(&o));
    drop(f);
    std::fs::remove_file(st.join("filler")).unwrap();
    assert!(cmd(&["vm", "list", "--all"]).status.success());
}

#[test]
fn vmm_killed_mid_exec_and_agent_killed_in_guest() {
    let env = Env::new();
    let a = env.create(&[]);
    let b = env.create(&[]);

    // 1. SIGKILL the VMM while an exec runs.
    let rec = env.record(&a);
    let qemu = rec["qemu_pid"].as_u64().unwrap();
    let proxy = rec["proxy_pid"].as_u64().unwrap();
    let child = env
        .cmd(&["vm", "exec", "--vm", &a, "--cmd", "echo started; sleep 60"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    // kill(1) by the recorded pid (this test started that VM).
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &qemu.to_string()])
        .status()
        .unwrap()
        .success());
    let t0 = Instant::now();
    let o = child.wait_with_output().unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(30),
        "exec did not notice the dead VMM in time"
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "stdout {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let e = stderr(&o);
    assert!(
        e.contains(&format!("vm {a} stopped during the request")),
        "{e}"
    );
    assert_eq!(env.status(&a), "stopped");
    assert!(!pid_alive(proxy), "the link proxy {proxy} outlived its VMM");
    // Stop on a stopped VM is not an error; clean works.
    assert!(env.run(&["vm", "stop", "--vm", &a]).status.success());
    env.ok(&["vm", "clean", "--vm", &a]);

    // 2. Kill the agent inside the guest: init powers off, the VM shows stopped.
    let rec = env.record(&b);
    let qemu = rec["qemu_pid"].as_u64().unwrap();
    let _ = env.run(&[
        "vm",
        "exec",
        "--vm",
        &b,
        "--cmd",
        "for d in /proc/[0-9]*; do set -- $(tr '\\0' ' ' < $d/cmdline 2>/dev/null); \
         [ \"$2\" = agent ] && kill -9 ${d#/proc/}; done; sleep 5",
    ]);
    env.wait_status(&b, "stopped", Duration::from_secs(30));
    assert!(!pid_alive(qemu));
    let console = std::fs::read_to_string(
        std::path::Path::new(rec["dir"].as_str().unwrap()).join("console.log"),
    )
    .unwrap_or_default();
    assert!(
        console.contains("agent exited"),
        "console does not say the agent exited:\n{console}"
    );
    env.ok(&["vm", "clean", "--vm", &b]);
}

#[test]
fn a_boot_that_fails_is_caught_with_console_lines_and_nothing_is_left() {
    let env = Env::new();
    let bogus = env.state().join("bogus.img");
    std::fs::write(&bogus, b"this is not an initramfs").unwrap();
    let t0 = Instant::now();
    let o = env.run(&[
        "vm",
        "create",
        "--initrd",
        bogus.to_str().unwrap(),
        "--boot-timeout",
        "40",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("did not become ready"), "{e}");
    assert!(e.contains("last console lines"), "{e}");
    assert!(
        e.contains("Kernel panic") || e.contains("VFS"),
        "console tail lacks the panic: {e}"
    );
    assert!(
        t0.elapsed() < Duration::from_secs(40),
        "the failed boot was not noticed before the deadline"
    );
    let recs = env.list();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["status"], "failed");
    let dir = std::path::Path::new(recs[0]["dir"].as_str().unwrap());
    for f in ["qemu.pid", "proxy.pid"] {
        let t = std::fs::read_to_string(dir.join(f)).unwrap();
        let pid: u64 = t.split_whitespace().next().unwrap().parse().unwrap();
        assert!(
            !pid_alive(pid),
            "{f}: {pid} left running after a failed boot"
        );
    }
    env.ok(&["vm", "clean", "--all"]);
    assert!(!dir.exists());
}
