//! Shared helpers for the runtime tier: the lifecycle through hearth-runtime
//! alone, with real QEMU microVMs and the real guest binary, no CLI. A missing
//! piece (QEMU, the kernel, the guest binary) fails the
//! test with a message saying how to get it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hearth_runtime::{NoProgress, Runtime, RuntimeConfig, SharedProgress};

static VM_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Serializes the VM-heavy tests of one binary (2 cores, CPU-bound TCG boots).
/// Async, so it can be held across awaits; a panicked holder frees it.
pub async fn vm_lock() -> tokio::sync::MutexGuard<'static, ()> {
    VM_LOCK.lock().await
}

pub fn guest_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HEARTH_GUEST_BIN").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for profile in ["release", "debug"] {
        let p = root
            .join("target/x86_64-unknown-linux-gnu")
            .join(profile)
            .join("hearth-guest");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "runtime tests need the static guest binary: build it with \
         RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p hearth-guest \
         --target x86_64-unknown-linux-gnu (or set HEARTH_GUEST_BIN)"
    );
}

/// The machine-wide image cache the test suites share.
pub fn image_cache() -> PathBuf {
    match std::env::var_os("HEARTH_IMAGE_CACHE") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => PathBuf::from("/var/tmp/hearth-test-images"),
    }
}

/// A private state dir with a runtime over it.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("hearth-rttest-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    pub fn config(&self) -> RuntimeConfig {
        let mut c = RuntimeConfig::new(self.dir.path());
        let guest = guest_bin();
        assert!(
            guest.is_file(),
            "guest binary {} is missing",
            guest.display()
        );
        c.guest_binary = Some(guest);
        c.image_cache = image_cache();
        c
    }

    pub async fn runtime(&self) -> Runtime {
        Runtime::open(self.config())
            .await
            .expect("open the runtime")
    }
}

impl Drop for Env {
    /// Removes every sandbox of this state dir, also when the test panicked,
    /// so a failed test leaves no VM running.
    fn drop(&mut self) {
        let config = self.config();
        let cleanup = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(runtime) = Runtime::open(config).await else {
                    return;
                };
                let Ok(all) = runtime.list(&hearth_runtime::ListFilter::default()).await else {
                    return;
                };
                for r in all {
                    if let Err(e) = runtime.remove(&r.id, false, &quiet()).await {
                        eprintln!("cleanup: cannot remove vm {}: {e}", r.id);
                    }
                }
            });
        });
        let _ = cleanup.join();
    }
}

pub fn quiet() -> SharedProgress {
    Arc::new(NoProgress)
}

/// Pids of processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == std::process::id() {
            continue;
        }
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = state
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('Z'));
        if !zombie && String::from_utf8_lossy(&cmd).contains(needle) {
            out.push(pid);
        }
    }
    out
}

/// Waits (bounded) until no live process mentions `needle`.
pub async fn wait_no_processes(needle: &str) -> Vec<u32> {
    for _ in 0..100 {
        let p = processes_mentioning(needle);
        if p.is_empty() {
            return p;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    processes_mentioning(needle)
}
