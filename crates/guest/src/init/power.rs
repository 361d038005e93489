//! Powering the VM off: the only way PID 1 ever ends.

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{sync, Pid};

use super::console;

/// Kills every other process, syncs filesystems and powers off (or restarts,
/// without ACPI; QEMU's `-no-reboot` makes both an exit). If the
/// syscall itself fails, init exits: the kernel then panics, and with `panic=-1`
/// (and QEMU's `-no-reboot`) the VM still stops rather than hanging.
pub fn power_off() -> ! {
    if std::process::id() == 1 {
        // Only as PID 1: kill(-1) from anywhere else would hit the whole host.
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    }
    sync();
    // Without ACPI (hearth's own kernel boots microvm with acpi=off) the
    // kernel cannot power off and RB_POWER_OFF halts the CPUs forever:
    // restart instead, which QEMU's `-no-reboot` turns into an exit.
    let mode = if std::path::Path::new("/sys/firmware/acpi").exists() {
        RebootMode::RB_POWER_OFF
    } else {
        RebootMode::RB_AUTOBOOT
    };
    match reboot(mode) {
        Ok(never) => match never {},
        Err(e) => {
            console::line(&format!("power off failed: {e}"));
            std::process::exit(1)
        }
    }
}
