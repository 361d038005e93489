//! The QMP migration primitives against real QEMU, without hearth's agent
//! transport: a kernel and a tiny busybox initramfs whose init counts on the
//! serial console, under the backend's own argv (same `-sandbox` seccomp
//! flags, so no `exec:` URIs: the stream goes through `getfd` + `fd:NAME`).
//!
//! stop → migrate into a file → a second QEMU with `-incoming defer` loads
//! it → cont: the counter carries on where it was (no reboot). A truncated
//! file is a clear error.
//!
//! Needs `qemu-system-x86_64`, a kernel in `/boot` and a static busybox
//! (`HEARTH_BUSYBOX`, else `/bin/busybox`). Run:
//! `cargo test -p hearth-vmm --test qmp_migrate -- --nocapture` (prints
//! the timings).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hearth_image::cpio::CpioWriter;
use hearth_vmm::qemu::cmdline::{qemu_argv, QemuArgs, Serial};
use hearth_vmm::qemu::qmp::{Qmp, QmpError};
use hearth_vmm::Accel;

const INIT: &str = "#!/bin/busybox sh\n\
i=0\n\
while :; do i=$((i+1)); echo \"tick $i\"; /bin/busybox sleep 0.2; done\n";

fn kernel() -> PathBuf {
    let mut ks: Vec<PathBuf> = std::fs::read_dir("/boot")
        .expect("/boot")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    ks.sort();
    ks.pop()
        .expect("no kernel in /boot (Debian: apt-get install linux-image-cloud-amd64)")
}

fn qemu_bin() -> PathBuf {
    hearth_vmm::qemu::launch::find_qemu()
        .expect("qemu-system-x86_64 is missing (Debian: apt-get install qemu-system-x86)")
}

fn initramfs(dir: &Path) -> PathBuf {
    let bb = std::env::var_os("HEARTH_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/bin/busybox".into());
    let bytes = std::fs::read(&bb).unwrap_or_else(|e| {
        panic!(
            "a static busybox is missing at {} ({e}; Debian: apt-get install busybox-static)",
            bb.display()
        )
    });
    let path = dir.join("initrd.cpio");
    let f = std::fs::File::create(&path).unwrap();
    let mut w = CpioWriter::new(std::io::BufWriter::new(f));
    w.char_device("dev/console", 0o600, 5, 1).unwrap();
    w.file("bin/busybox", 0o755, &bytes).unwrap();
    w.file("init", 0o755, INIT.as_bytes()).unwrap();
    w.finish().unwrap();
    path
}

/// A QEMU process killed on drop.
struct Vm {
    child: Child,
    console: PathBuf,
    qmp_sock: PathBuf,
    log: PathBuf,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &Path, name: &str, initrd: &Path, incoming: bool) -> Vm {
    let console = dir.join(format!("{name}.console"));
    let qmp_sock = dir.join(format!("{name}.qmp"));
    let log = dir.join(format!("{name}.log"));
    let args = QemuArgs {
        accel: Accel::Tcg,
        cpus: 1,
        mem_mib: 128,
        kernel: kernel(),
        initrd: Some(initrd.into()),
        cmdline_extra: String::new(),
        serial: Serial::File(console.clone()),
        link_socket: None,
        drives: Vec::new(),
        user_net: false,
        qmp_socket: Some(qmp_sock.clone()),
        incoming: false,
        acpi: true,
    };
    let mut argv = qemu_argv(&args);
    if incoming {
        argv.extend(["-incoming".into(), "defer".into()]);
    }
    let logf = std::fs::File::create(&log).unwrap();
    let child = Command::new(qemu_bin())
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .expect("start qemu");
    Vm {
        child,
        console,
        qmp_sock,
        log,
    }
}

impl Vm {
    async fn qmp(&mut self) -> Qmp {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Qmp::connect(&self.qmp_sock, Duration::from_secs(20)).await {
                Ok(q) => return q,
                Err(e) => {
                    if let Ok(Some(st)) = self.child.try_wait() {
                        panic!(
                            "qemu exited ({st}) before its monitor answered: {}",
                            std::fs::read_to_string(&self.log).unwrap_or_default()
                        );
                    }
                    assert!(Instant::now() < deadline, "no qmp answer: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    fn ticks(&self) -> Vec<u64> {
        std::fs::read_to_string(&self.console)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().strip_prefix("tick ")?.parse().ok())
            .collect()
    }

    async fn wait_tick(&self, at_least: u64, what: &str) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let t = self.ticks();
            if t.last().is_some_and(|&n| n >= at_least) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no tick {at_least} on the console; it says:\n{}",
                std::fs::read_to_string(&self.console).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn stop_migrate_to_fd_incoming_and_cont_carry_on_and_truncation_is_an_error() {
    let dir = tempfile::Builder::new()
        .prefix("hearth-qmp-migrate-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let initrd = initramfs(dir.path());
    let state = dir.path().join("vm.state");

    // Source: boot until the counter runs, then stop and migrate into a file.
    let mut src = start(dir.path(), "src", &initrd, false);
    let mut q = src.qmp().await;
    src.wait_tick(3, "source boot").await;
    let t0 = Instant::now();
    q.stop().await.unwrap();
    assert!(!q.query_status().await.unwrap().running);
    let last_before = *src.ticks().last().unwrap();
    {
        let f = std::fs::File::create(&state).unwrap();
        q.getfd("migout", f.as_fd()).await.unwrap();
    }
    q.migrate("fd:migout").await.unwrap();
    q.wait_migration(Duration::from_secs(120)).await.unwrap();
    let save = t0.elapsed();
    let size = std::fs::metadata(&state).unwrap().len();
    q.quit().await.unwrap();
    drop(src);

    // Destination: the same argv plus -incoming defer; load, then cont.
    let mut dst = start(dir.path(), "dst", &initrd, true);
    let mut q = dst.qmp().await;
    let t1 = Instant::now();
    {
        let f = std::fs::File::open(&state).unwrap();
        q.getfd("migin", f.as_fd()).await.unwrap();
    }
    q.migrate_incoming("fd:migin").await.unwrap();
    q.wait_migration(Duration::from_secs(120)).await.unwrap();
    let loaded = t1.elapsed();
    let st = q.query_status().await.unwrap();
    assert!(
        !st.running,
        "an incoming VM stays paused until cont: {st:?}"
    );
    q.cont().await.unwrap();
    let restored = t1.elapsed();
    let st = q.query_status().await.unwrap();
    assert!(st.running && st.status == "running", "{st:?}");
    let ticks = dst.wait_tick(last_before + 3, "restored vm").await;
    // The counter carried on: the restored guest never printed tick 1 again.
    assert!(
        ticks[0] > 1 && ticks[0] >= last_before,
        "the restored guest restarted its counter: first tick {} (source was at {last_before})",
        ticks[0]
    );
    let console = std::fs::read_to_string(&dst.console).unwrap();
    assert!(
        !console.contains("Linux version"),
        "the restored guest booted again"
    );
    println!(
        "migration: stop+migrate to fd {:.0} ms ({:.1} MiB); migrate-incoming {:.0} ms; \
         incoming+cont {:.0} ms",
        save.as_secs_f64() * 1e3,
        size as f64 / (1 << 20) as f64,
        loaded.as_secs_f64() * 1e3,
        restored.as_secs_f64() * 1e3
    );
    q.quit().await.unwrap();
    drop(dst);

    // A truncated stream: the load fails and says so.
    let half = dir.path().join("half.state");
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&half, &bytes[..bytes.len() / 2]).unwrap();
    let mut bad = start(dir.path(), "bad", &initrd, true);
    let mut q = bad.qmp().await;
    {
        let f = std::fs::File::open(&half).unwrap();
        q.getfd("migin", f.as_fd()).await.unwrap();
    }
    let r = match q.migrate_incoming("fd:migin").await {
        Ok(()) => q.wait_migration(Duration::from_secs(120)).await,
        Err(e) => Err(e),
    };
    let e = r.expect_err("a truncated migration stream loaded");
    assert!(matches!(e, QmpError::MigrationFailed(_)), "{e:?}");
    println!("truncated stream: {e}");
    let _ = bad.child.wait();
    let log = std::fs::read_to_string(&bad.log).unwrap();
    assert!(log.contains("load of migration failed"), "qemu log: {log}");

    // A name QEMU was never given is refused with QEMU's class and desc.
    let mut other = start(dir.path(), "other", &initrd, true);
    let mut q = other.qmp().await;
    let e = q.migrate_incoming("fd:nosuchfd").await;
    let e = match e {
        Ok(()) => q
            .wait_migration(Duration::from_secs(30))
            .await
            .expect_err("fd:nosuchfd loaded"),
        Err(e) => e,
    };
    println!("unknown fd name: {e}");
    assert!(e.to_string().contains("nosuchfd"), "{e}");
    let _ = other.child.kill();
}
