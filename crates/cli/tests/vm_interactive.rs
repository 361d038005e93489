//! VM tier: interactive and background use through the real CLI and real
//! microVMs. A real terminal is tmux (its own server per test, `tmux -L`,
//! killed by name at the end): `send-keys` types, `capture-pane -p` reads the
//! screen. Background processes are re-attached by new CLI processes after
//! one was SIGKILLed.

mod vm_common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vm_common::{image_cache, stderr, vm_lock, Env};

const TMUX: &str = "/usr/bin/tmux";

/// One tmux server (its own socket name) with one session; killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, script: &Path, rows: u16, cols: u16) -> Tmux {
        assert!(
            Path::new(TMUX).is_file(),
            "this test needs tmux at {TMUX} (scripts/setup.sh installs it)"
        );
        let socket = format!("hearth-{name}-{}", std::process::id());
        let t = Tmux { socket };
        let st = t
            .cmd(&[
                "new-session",
                "-d",
                "-s",
                "main",
                "-x",
                &cols.to_string(),
                "-y",
                &rows.to_string(),
                script.to_str().unwrap(),
            ])
            .status()
            .expect("tmux new-session");
        assert!(st.success(), "tmux new-session failed: {st}");
        t
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(TMUX);
        c.arg("-L").arg(&self.socket).args(args);
        c
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "main"];
        args.extend_from_slice(keys);
        let st = self.cmd(&args).status().expect("tmux send-keys");
        assert!(st.success());
    }

    /// Types a line and presses Enter.
    fn line(&self, text: &str) {
        self.keys(&["-l", text]);
        self.keys(&["Enter"]);
    }

    fn screen(&self) -> String {
        let o = self
            .cmd(&["capture-pane", "-p", "-t", "main", "-S", "-200"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Polls the screen until `pred` holds; panics with the screen after `limit`.
    fn wait(&self, what: &str, limit: Duration, pred: impl Fn(&str) -> bool) -> String {
        let t0 = Instant::now();
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            assert!(
                t0.elapsed() < limit,
                "waited {limit:?} for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_for(&self, text: &str, limit: Duration) -> String {
        self.wait(&format!("{text:?}"), limit, |s| s.contains(text))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).status();
    }
}

/// A script that runs `hearth ARGS` with the test's environment, then shows
/// its exit code and the terminal's settings, and stays open.
fn shell_script(env: &Env, name: &str, args: &str) -> std::path::PathBuf {
    let p = env.state().join(name);
    let mut f = std::fs::File::create(&p).unwrap();
    writeln!(
        f,
        "#!/bin/sh\nexport HEARTH_STATE_DIR='{}' HEARTH_GUEST_BIN='{}' HEARTH_IMAGE_CACHE='{}' HEARTH_LOG_LEVEL=warn TERM=screen\n'{}' {args}\necho HEARTH_EXIT=$?\nstty -a | tr ';' '\\n' | grep -E -o -- '(^| )-?(icanon|echo)( |$)' | tr -d ' ' | tr '\\n' ' '; echo STTY_END\nexec sleep 600",
        env.state().display(),
        env.guest.display(),
        image_cache().display(),
        env!("CARGO_BIN_EXE_hearth"),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn vm_shell_is_a_real_terminal_and_leaves_it_sane() {
    let _g = vm_lock();
    let env = Env::new();
    let id = env.create(&[]);
    let script = shell_script(&env, "term.sh", &format!("vm shell --vm {id}"));
    let t = Tmux::start("shell", &script, 30, 100);
    let boot = Duration::from_secs(60);
    let step = Duration::from_secs(30);
    // A shell with line editing may drop what was typed before its prompt.
    t.wait("the shell prompt", boot, |s| {
        s.lines()
            .any(|l| l.trim_end().ends_with('#') || l.trim_end().ends_with('$'))
    });
    t.line("echo hi-$((6*7)) TERM=$TERM");
    t.wait_for("hi-42 TERM=screen", step);
    t.line("stty size");
    t.wait_for("30 100", step);
    let st = t
        .cmd(&["resize-window", "-t", "main", "-x", "120", "-y", "40"])
        .status()
        .unwrap();
    assert!(st.success());
    t.line("stty size");
    t.wait_for("40 120", step);
    // Ctrl-C stops a remote foreground job and the prompt comes back.
    t.line("sleep 1000");
    let running = || env.sh(&id, "ps | grep -c '[s]leep 1000' || true");
    let t0 = Instant::now();
    while running().trim() != "1" {
        assert!(t0.elapsed() < step, "sleep 1000 never ran:\n{}", t.screen());
        std::thread::sleep(Duration::from_millis(200));
    }
    t.keys(&["C-c"]);
    let t0 = Instant::now();
    while running().trim() != "0" {
        assert!(
            t0.elapsed() < step,
            "Ctrl-C did not stop sleep:\n{}",
            t.screen()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    t.line("echo after-$((2+3))");
    t.wait_for("after-5", step);
    t.line("exit 3");
    let s = t.wait_for("STTY_END", step);
    assert!(s.contains("HEARTH_EXIT=3"), "the shell's exit code:\n{s}");
    let flags: Vec<&str> = s
        .lines()
        .find(|l| l.contains("STTY_END"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert!(
        flags.contains(&"icanon") && flags.contains(&"echo"),
        "the terminal was not restored: {flags:?}\n{s}"
    );
    assert!(
        !flags.contains(&"-icanon") && !flags.contains(&"-echo"),
        "the terminal was left raw: {flags:?}"
    );
    drop(t);
    // SIGTERM to hearth while the terminal is raw: restored, exit 128+15.
    let dir = env.state().display().to_string();
    let script = shell_script(
        &env,
        "term2.sh",
        &format!("--state-dir {dir} vm shell --vm {id}"),
    );
    let t = Tmux::start("shell-term", &script, 30, 100);
    t.wait("the shell prompt", step, |s| {
        s.lines()
            .any(|l| l.trim_end().ends_with('#') || l.trim_end().ends_with('$'))
    });
    let pid = hearth_pid(&dir).expect("the hearth vm shell process");
    // SAFETY: kill(2) on the pid of the hearth process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let s = t.wait_for("STTY_END", step);
    assert!(s.contains("HEARTH_EXIT=143"), "{s}");
    let flags = s.lines().find(|l| l.contains("STTY_END")).unwrap();
    assert!(
        flags.split_whitespace().any(|f| f == "icanon")
            && flags.split_whitespace().any(|f| f == "echo"),
        "SIGTERM left the terminal raw: {flags}"
    );
}

/// The pid of the `hearth --state-dir DIR vm shell` process.
fn hearth_pid(dir: &str) -> Option<i32> {
    let want = format!(
        "{}\0--state-dir\0{dir}\0vm\0shell",
        env!("CARGO_BIN_EXE_hearth")
    );
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_string_lossy().parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmd)
            .starts_with(&want)
            .then_some(pid)
    })
}

/// Lines of `out` as numbers; panics on anything else.
fn numbers(out: &str) -> Vec<u64> {
    out.lines()
        .map(|l| {
            l.parse()
                .unwrap_or_else(|_| panic!("not a counter line: {l:?}"))
        })
        .collect()
}

fn ps(env: &Env, id: &str) -> Vec<serde_json::Value> {
    let out = env.ok(&["vm", "ps", "--vm", id, "--json"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("vm ps --json is JSON")
        .as_array()
        .unwrap()
        .clone()
}

fn wait_file_lines(path: &Path, n: usize, limit: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let s = std::fs::read_to_string(path).unwrap_or_default();
        if s.lines().count() >= n {
            return s;
        }
        assert!(t0.elapsed() < limit, "only {:?} after {limit:?}", s);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn background_processes_survive_reattach_and_report_drops() {
    let _g = vm_lock();
    let env = Env::new();
    let id = env.create(&[]);
    let out = env.ok(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--detach",
        "--tag",
        "counter",
        "--cmd",
        "i=0; while :; do echo $i; i=$((i+1)); sleep 0.1; done",
    ]);
    let pid: u64 = out.trim().parse().expect("--detach prints the pid");
    // A first attacher, killed with SIGKILL mid-stream.
    let first = env.state().join("first.out");
    let mut a = env
        .cmd(&["vm", "attach", "--vm", &id, "counter"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&first).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    wait_file_lines(&first, 15, Duration::from_secs(60));
    a.kill().unwrap();
    a.wait().unwrap();
    let got1 = std::fs::read_to_string(&first).unwrap();
    // A new CLI re-attaches where the first one stopped.
    let second = env.state().join("second.out");
    let mut b = env
        .cmd(&[
            "vm",
            "attach",
            "--vm",
            &id,
            &pid.to_string(),
            "--from-offset",
            &got1.len().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&second).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_file_lines(&second, 15, Duration::from_secs(60));
    let listed = ps(&env, &id);
    let me = listed.iter().find(|p| p["pid"] == pid).expect("listed");
    assert_eq!(me["tag"], "counter");
    assert_eq!(me["state"], "running");
    env.ok(&["vm", "kill", "--vm", &id, "counter", "--signal", "TERM"]);
    let st = b.wait().unwrap();
    assert_eq!(st.code(), Some(143), "attach ends with the process's code");
    let got2 = std::fs::read_to_string(&second).unwrap();
    let all = numbers(&(got1.clone() + &got2));
    assert!(all.len() >= 30, "{all:?}");
    assert_eq!(
        all,
        (0..all.len() as u64).collect::<Vec<_>>(),
        "the re-attached output is not contiguous"
    );
    let listed = ps(&env, &id);
    let me = listed.iter().find(|p| p["pid"] == pid).unwrap();
    assert_eq!(me["state"], "exited");
    assert_eq!(me["exit_code"], 143);
    // A small ring: the attach shows how much was overwritten.
    let out = env.ok(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--detach",
        "--buffer",
        "1K",
        "--cmd",
        "i=0; while [ $i -lt 2000 ]; do echo $i; i=$((i+1)); done",
    ]);
    let small: u64 = out.trim().parse().unwrap();
    let t0 = Instant::now();
    while ps(&env, &id)
        .iter()
        .find(|p| p["pid"] == small)
        .is_none_or(|p| p["state"] != "exited")
    {
        assert!(t0.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(200));
    }
    let o = env.run(&[
        "vm",
        "attach",
        "--vm",
        &id,
        &small.to_string(),
        "--from-offset",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // 0..1999, one per line: 8890 bytes, 1024 kept.
    assert!(
        stderr(&o).contains("[hearth: 7866 bytes dropped]"),
        "{}",
        stderr(&o)
    );
    assert_eq!(o.stdout.len(), 1024);
    assert!(String::from_utf8_lossy(&o.stdout).ends_with("1998\n1999\n"));
    // Bad names and flags are clear errors with exit 1.
    let o = env.run(&["vm", "attach", "--vm", &id, "99999"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no background process with pid 99999"),
        "{}",
        stderr(&o)
    );
    let o = env.run(&["vm", "kill", "--vm", &id, "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("tag \"nosuch\""), "{}", stderr(&o));
    let o = env.run(&["vm", "exec", "-t", "--vm", &id, "--cmd", "true"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a terminal"), "{}", stderr(&o));
}
