//! Defects a new user hit, each pinned by a test through the real CLI and real
//! microVMs: names wherever a VM is named, Ctrl-C reaching the remote command,
//! `run` cleaning up on every exit path, host limits.

mod vm_common;

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use vm_common::{stderr, vm_lock, Env};

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st.code();
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the CLI did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: kill(2) with the pid of a child we started and still hold.
    let rc = unsafe { libc::kill(child.id() as i32, sig) };
    assert_eq!(rc, 0, "kill failed");
}

/// Polls a shell command in the VM until its output is `want`.
fn wait_sh(env: &Env, id: &str, cmd: &str, want: &str, timeout: Duration) {
    let t0 = Instant::now();
    loop {
        let got = env.sh(id, cmd);
        if got.trim() == want {
            return;
        }
        assert!(
            t0.elapsed() < timeout,
            "{cmd:?} printed {got:?}, expected {want:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_vm_name_works_wherever_a_vm_is_named() {
    let _g = vm_lock();
    let env = Env::new();
    let id = env.create(&["--name", "box"]);
    assert_eq!(
        env.ok(&["vm", "exec", "--vm", "box", "--cmd", "echo hi"]),
        "hi\n"
    );
    let file = env.state().join("in.txt");
    std::fs::write(&file, "data\n").unwrap();
    let out = env.ok(&[
        "vm",
        "run",
        "--vm",
        "box",
        "--file",
        file.to_str().unwrap(),
        "--cmd",
        "cat in.txt",
    ]);
    assert_eq!(out, "data\n");
    let back = env.state().join("back.txt");
    env.ok(&["cp", "box:/in/in.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "data\n");
    let err = env.fails(&["vm", "create", "--name", "box"]);
    assert!(err.contains("the name box is taken by vm"), "{err}");
    assert_eq!(env.ok(&["vm", "stop", "--vm", "box"]).trim(), id);
    assert_eq!(env.status(&id), "stopped");
    assert_eq!(env.ok(&["vm", "start", "--vm", "box"]).trim(), id);
    assert_eq!(
        env.ok(&["vm", "exec", "--vm", "box", "--cmd", "echo again"]),
        "again\n"
    );
    assert_eq!(env.ok(&["vm", "clean", "--vm", "box"]).trim(), id);
    let err = env.fails(&["vm", "exec", "--vm", "box", "--cmd", "true"]);
    assert!(err.contains("no such vm: box"), "{err}");
}

#[test]
fn ctrl_c_and_term_reach_the_remote_command_not_just_the_cli() {
    let _g = vm_lock();
    let env = Env::new();
    let id = env.create(&[]);
    for (how, sig) in [("exec", libc::SIGINT), ("run", libc::SIGTERM)] {
        let cmd = "echo $$ > /tmp/pid; exec sleep 1000";
        let args: Vec<&str> = match how {
            "exec" => vec!["vm", "exec", "--vm", &id, "--cmd", cmd],
            _ => vec!["vm", "run", "--vm", &id, "--cmd", cmd],
        };
        env.sh(&id, "rm -f /tmp/pid");
        let mut child = env
            .cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_sh(
            &env,
            &id,
            "test -s /tmp/pid && echo started || echo waiting",
            "started",
            Duration::from_secs(30),
        );
        signal(&child, sig);
        let code = wait_exit(&mut child, Duration::from_secs(30));
        assert_eq!(code, Some(128 + sig), "vm {how} after signal {sig}");
        wait_sh(
            &env,
            &id,
            "test -e /proc/$(cat /tmp/pid) && echo alive || echo gone",
            "gone",
            Duration::from_secs(10),
        );
    }
}

#[test]
fn run_removes_its_vm_when_signalled_during_the_boot_or_the_command() {
    let _g = vm_lock();
    let env = Env::new();
    // During the command: the signal goes to it, then the VM is removed.
    let mut child = env
        .cmd(&["run", "--", "sh", "-c", "echo started; exec sleep 1000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = [0u8; 8];
    use std::io::Read;
    out.read_exact(&mut buf)
        .expect("the command's first output");
    assert_eq!(&buf, b"started\n");
    signal(&child, libc::SIGTERM);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(60)),
        Some(128 + libc::SIGTERM)
    );
    assert!(env.list().is_empty(), "run left {:?}", env.list());

    // During the boot: the boot is cancelled and everything it made removed.
    let mut child = env
        .cmd(&["run", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !env.list().iter().any(|r| r["status"] == "creating") {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no creating record appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, libc::SIGINT);
    assert_eq!(
        wait_exit(&mut child, Duration::from_secs(60)),
        Some(128 + libc::SIGINT)
    );
    assert!(env.list().is_empty(), "run left {:?}", env.list());
    let left: Vec<_> = std::fs::read_dir(env.state().join("vms"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "vm directories left: {left:?}");
}

#[test]
fn the_host_cannot_be_asked_for_more_than_it_has() {
    let env = Env::new();
    let o = env.run(&["vm", "create", "--mem", "100000"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(
        e.contains("100000 MiB does not fit") && e.contains("it has"),
        "{e}"
    );
    let o = env.run(&["vm", "create", "--cpu", "64"]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("64 vCPUs is more than this host's"), "{e}");
    assert!(env.list().is_empty());
}
