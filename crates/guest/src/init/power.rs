//! Powering the VM off: the only way PID 1 ever ends.

use nix::sys::reboot::{reboot, RebootMode};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{sync, Pid};

use super::console;

/// Kills every other process, syncs filesystems and powers off. If the power-off
/// syscall itself fails, init exits: the kernel then panics, and with `panic=-1`
/// (and QEMU's `-no-reboot`) the VM still stops rather than hanging.
pub fn power_off() -> ! {
    if std::process::id() == 1 {
        // Only as PID 1: kill(-1) from anywhere else would hit the whole host.
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    }
    sync();
    match reboot(RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(e) => {
            console::line(&format!("power off failed: {e}"));
            std::process::exit(1)
        }
    }
}
