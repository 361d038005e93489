//! Does KVM actually boot an ordinary kernel here? `/dev/kvm` existing is not enough
//! (see VM-NOTES: some hypervisors only run special guests), so the probe boots the
//! kernel with no initramfs under a short watchdog and looks for the panic that a
//! working boot reaches at once ("VFS: Unable to mount root fs"). The answer is cached
//! per kernel in a file.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::cmdline::{qemu_argv, QemuArgs};
use super::launch::spawn_detached;
use super::Accel;
use crate::error::VmmError;

/// How long a KVM boot may take to reach the no-root panic.
pub const PROBE_WATCHDOG: Duration = Duration::from_secs(6);

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Cached {
    kernel: PathBuf,
    qemu: PathBuf,
    accel: Accel,
}

/// True when the console shows that the kernel got far enough to run code under KVM.
pub fn console_shows_boot(console: &str) -> bool {
    console.contains("Kernel panic")
        || console.contains("Linux version")
        || console.contains("Run /init")
}

/// `HEARTH_ACCEL=kvm|tcg` forces an answer; `auto` or unset probes (cached in
/// `cache_dir/kvm-probe.json`).
pub async fn choose_accel(qemu: &Path, kernel: &Path, cache_dir: &Path) -> Result<Accel, VmmError> {
    match std::env::var("HEARTH_ACCEL").ok().as_deref() {
        Some("kvm") => return Ok(Accel::Kvm),
        Some("tcg") => return Ok(Accel::Tcg),
        _ => {}
    }
    probe_accel(qemu, kernel, cache_dir).await
}

/// Probes KVM (the verdict cached in `cache_dir/kvm-probe.json` per kernel and QEMU).
pub async fn probe_accel(qemu: &Path, kernel: &Path, cache_dir: &Path) -> Result<Accel, VmmError> {
    if !Path::new("/dev/kvm").exists() {
        return Ok(Accel::Tcg);
    }
    let cache = cache_dir.join("kvm-probe.json");
    if let Ok(text) = std::fs::read_to_string(&cache) {
        if let Ok(c) = serde_json::from_str::<Cached>(&text) {
            if c.kernel == kernel && c.qemu == qemu {
                return Ok(c.accel);
            }
        }
    }
    let accel = probe(qemu, kernel, cache_dir).await?;
    let entry = Cached {
        kernel: kernel.into(),
        qemu: qemu.into(),
        accel,
    };
    if let Ok(text) = serde_json::to_string(&entry) {
        let tmp = cache_dir.join(format!("kvm-probe.json.{}", std::process::id()));
        // A failed cache write only costs a probe next time.
        if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, &cache).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(accel)
}

/// Boots `kernel` under KVM without an initramfs and waits for a console sign of life.
pub async fn probe(qemu: &Path, kernel: &Path, work_dir: &Path) -> Result<Accel, VmmError> {
    std::fs::create_dir_all(work_dir)
        .map_err(|e| VmmError::io("cannot create directory", work_dir, e))?;
    let console = work_dir.join(format!("kvm-probe-{}.log", std::process::id()));
    let qlog = work_dir.join(format!("kvm-probe-{}.qemu.log", std::process::id()));
    let _ = std::fs::remove_file(&console);
    let args = QemuArgs {
        accel: Accel::Kvm,
        cpus: 1,
        mem_mib: 128,
        kernel: kernel.into(),
        initrd: None,
        // Not quiet would be nicer, but the panic line is printed at any loglevel.
        cmdline_extra: String::new(),
        serial: super::cmdline::Serial::File(console.clone()),
        link_socket: None,
        drives: Vec::new(),
        user_net: false,
        qmp_socket: None,
        incoming: false,
        acpi: true,
    };
    let (mut child, id) = spawn_detached(qemu, &qemu_argv(&args), &qlog, None)?;
    let deadline = Instant::now() + PROBE_WATCHDOG;
    let mut works = false;
    loop {
        let text = std::fs::read_to_string(&console).unwrap_or_default();
        if console_shows_boot(&text) {
            works = true;
            break;
        }
        if matches!(child.try_wait(), Ok(Some(_))) || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    id.terminate(Duration::from_millis(500)).await;
    let _ = child.wait();
    tracing::info!(works, "kvm probe finished");
    let _ = std::fs::remove_file(&console);
    let _ = std::fs::remove_file(&qlog);
    Ok(if works { Accel::Kvm } else { Accel::Tcg })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_signs_are_recognised() {
        assert!(console_shows_boot(
            "[0.5] Kernel panic - not syncing: VFS: Unable to mount root fs"
        ));
        assert!(!console_shows_boot(""));
        assert!(!console_shows_boot("qemu: failed to set MSR 0x10a"));
    }
}
