//! Shared helpers for the VM-tier tests (`vm_*.rs`): they drive the real `hearth`
//! binary, which boots real QEMU microVMs. They need qemu-system-x86_64,
//! a kernel in /boot and the static guest binary; a missing
//! piece fails the test with a message saying how to get it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The image cache every test shares: `HEARTH_IMAGE_CACHE` (CI sets it), else a
/// fixed directory, so language images are built once per machine, not per test.
pub fn image_cache() -> PathBuf {
    match std::env::var_os("HEARTH_IMAGE_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/var/tmp/hearth-test-images"),
    }
}

static VM_LOCK: Mutex<()> = Mutex::new(());

/// Serializes the VM-heavy part of tests in one binary (they run on parallel
/// threads; the machine has 2 cores and TCG boots are CPU-bound). A panicked
/// holder does not poison the others.
pub fn vm_lock() -> MutexGuard<'static, ()> {
    VM_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn guest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_GUEST_BIN") {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    for profile in ["release", "debug"] {
        let p = target
            .join("x86_64-unknown-linux-gnu")
            .join(profile)
            .join("hearth-guest");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "VM tests need the static guest binary: build it with \
         RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p hearth-guest \
         --target x86_64-unknown-linux-gnu (or set HEARTH_GUEST_BIN)"
    );
}

/// A private state dir, removed (after cleaning its VMs) on drop.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub guest: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let guest = guest_bin();
        assert!(
            guest.is_file(),
            "guest binary {} is missing",
            guest.display()
        );
        Self {
            dir: tempfile::Builder::new()
                .prefix("hearth-vmtest-")
                .tempdir()
                .expect("tempdir"),
            guest,
        }
    }

    pub fn state(&self) -> &Path {
        self.dir.path()
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
        c.args(args)
            .env("HEARTH_STATE_DIR", self.state())
            .env("HEARTH_GUEST_BIN", &self.guest)
            .env("HEARTH_IMAGE_CACHE", image_cache())
            .env_remove("HEARTH_LOG_FILE")
            .env("HEARTH_LOG_LEVEL", "warn");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run hearth")
    }

    /// Runs and asserts exit 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "hearth {args:?} failed ({:?})\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn create(&self, extra: &[&str]) -> String {
        let mut args = vec!["vm", "create"];
        args.extend_from_slice(extra);
        let id = self.ok(&args).trim().to_string();
        assert_eq!(
            id.len(),
            8,
            "vm create printed {id:?}, expected an 8-char id"
        );
        id
    }

    pub fn list(&self) -> Vec<serde_json::Value> {
        let out = self.ok(&["vm", "list", "--all", "--json"]);
        serde_json::from_str::<serde_json::Value>(&out)
            .expect("vm list --json is JSON")
            .as_array()
            .expect("an array")
            .clone()
    }

    pub fn record(&self, id: &str) -> serde_json::Value {
        self.list()
            .into_iter()
            .find(|r| r["id"] == id)
            .unwrap_or_else(|| panic!("vm {id} is not listed"))
    }

    /// Runs a shell command in a VM; asserts exit 0 and returns stdout.
    pub fn sh(&self, id: &str, cmd: &str) -> String {
        self.ok(&["vm", "exec", "--vm", id, "--timeout", "120", "--cmd", cmd])
    }

    /// Runs and asserts a non-zero exit; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "hearth {args:?} should have failed\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Builds (or finds cached) a language image through the CLI; returns its JSON.
    pub fn image(&self, language: &str) -> serde_json::Value {
        let out = self.ok(&["image", "build", "--language", language, "--json"]);
        serde_json::from_str(out.trim()).expect("image build --json is JSON")
    }

    pub fn status(&self, id: &str) -> String {
        self.record(id)["status"].as_str().unwrap_or("").to_string()
    }

    pub fn wait_status(&self, id: &str, want: &str, timeout: Duration) {
        let t0 = Instant::now();
        loop {
            let s = self.status(id);
            if s == want {
                return;
            }
            assert!(
                t0.elapsed() < timeout,
                "vm {id} is {s:?}, expected {want:?} within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.run(&["vm", "clean", "--all"]);
    }
}

/// True while `pid` exists and is not a zombie. (Orphaned VMMs are re-parented to
/// the container's PID 1, which may not reap them: a zombie counts as gone.)
pub fn pid_alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => match s.rfind(')') {
            Some(i) => !matches!(
                s[i + 1..].trim_start().chars().next(),
                Some('Z') | Some('X')
            ),
            None => false,
        },
        Err(_) => false,
    }
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
