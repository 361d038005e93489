//! The PID-1 role.
//!
//! Boot sequence: record CLOCK_BOOTTIME → early mounts (proc, sys, dev, devpts,
//! shm, run, tmp, cgroup2) → parse `/proc/cmdline` → hostname, `lo` up → load
//! the kernel modules this boot needs, in manifest order → set up the root
//! (`hearth.root=`, `hearth.lowerfs=`) and `/persist` (`hearth.persist=`) →
//! `/in`, `/out` → the NIC (`hearth.net=`) and `/etc/resolv.conf`
//! (`hearth.dns=`) in the final root → start the agent → reap forever.
//!
//! Process design: the agent is a *child* of init (this binary re-executed as
//! `hearth-guest agent`), never PID 1 itself. Orphans are re-parented to PID 1,
//! so init is the single `waitpid(-1)` reaper in the VM, while the agent only
//! ever waits for its own direct children by pid. The two never race for an
//! exit status: a workload's exit code cannot be stolen by the orphan reaper,
//! and no zombie is left because nobody calls `waitpid(-1)` in the agent.
//!
//! Failure policy: PID 1 never panics and never hangs. Any failed step prints
//! `hearth-init: <what> failed: <error>` on the console and powers off; when the
//! agent exits (0 after a SHUTDOWN request, anything else on a crash) init
//! prints its status, syncs and powers off. A panic hook does the same if a bug
//! slips through.
//!
//! Files: [`cmdline`] (pure parser), [`mounts`], [`modules`], [`disks`]
//! (devices by path or virtio serial), [`rootfs`], [`net`] (NIC, resolver),
//! [`loopback`], [`reaper`] (signals, agent, waitpid loop), [`power`],
//! [`console`].

mod cmdline;
mod console;
mod disks;
mod loopback;
mod modules;
mod mounts;
mod net;
mod power;
mod reaper;
mod rootfs;

use std::time::Instant;

/// A failed init step: what was attempted and the OS error.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct InitError {
    what: String,
    #[source]
    source: std::io::Error,
}

impl InitError {
    fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self {
            what: what.into(),
            source,
        }
    }
}

/// CLOCK_BOOTTIME in microseconds (time since the kernel started).
fn boottime_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn fail(err: InitError) -> ! {
    console::line(&format!("{} failed: {}", err.what, err.source));
    power::power_off()
}

/// Runs the init role; never returns.
pub fn run() -> ! {
    let init_start_us = boottime_us();
    let t0 = Instant::now();
    if std::process::id() != 1 {
        // Mounting over /proc and powering off are only sane inside the VM.
        console::line("the init role only runs as PID 1; refusing");
        std::process::exit(2);
    }
    std::panic::set_hook(Box::new(|info| {
        console::line(&format!("panic: {info}; powering off"));
        power::power_off()
    }));

    if let Err(e) = reaper::setup_signals() {
        fail(e)
    }
    if let Err(e) = mounts::mount_early() {
        fail(e)
    }
    let cmdline = match std::fs::read_to_string("/proc/cmdline") {
        Ok(text) => match cmdline::parse(&text) {
            Ok(c) => c,
            Err(e) => {
                console::line(&format!("parse kernel command line failed: {e}"));
                power::power_off()
            }
        },
        Err(e) => fail(InitError::io("read /proc/cmdline", e)),
    };
    if let Some(name) = &cmdline.hostname {
        if let Err(e) = nix::unistd::sethostname(name) {
            fail(InitError::io(format!("set hostname {name:?}"), e.into()))
        }
    }
    if let Err(e) = loopback::up() {
        // Optional: a kernel without INET still runs vsock-only workloads.
        console::line(&format!("{} failed: {} (continuing)", e.what, e.source));
    }

    let overlay_root = matches!(cmdline.root, cmdline::RootSpec::Overlay { .. });
    let needs = modules::Needs {
        disks: overlay_root || cmdline.persist.is_some(),
        overlay: overlay_root,
        squashfs: overlay_root && cmdline.lowerfs == cmdline::LowerFs::Squashfs,
        net: cmdline.net.is_some(),
    };
    let report = match modules::load(&needs) {
        Ok(r) => r,
        Err(e) => fail(e),
    };
    if cmdline.debug {
        for (path, took) in &report.each {
            console::line(&format!("module {path} {} us", took.as_micros()));
        }
    }
    let rootfs = match rootfs::setup(&cmdline.root, cmdline.lowerfs, cmdline.persist.as_ref()) {
        Ok(d) => d,
        Err(e) => fail(e),
    };
    let net_start = Instant::now();
    if let Some(spec) = &cmdline.net {
        match net::configure(spec) {
            Ok(ifname) if cmdline.debug => console::line(&format!(
                "{ifname} {}/{} via {:?}",
                spec.addr, spec.prefix, spec.gateway
            )),
            Ok(_) => {}
            Err(e) => fail(e),
        }
    }
    if !cmdline.dns.is_empty() {
        if let Err(e) = net::write_resolv_conf(&cmdline.dns) {
            fail(e)
        }
    }
    let net_time = net_start.elapsed();

    let env = vec![
        (
            "PATH".into(),
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        ),
        ("HOME".into(), "/root".into()),
        ("TERM".into(), "linux".into()),
        ("HEARTH_ROLE".into(), "init+agent".into()),
        (
            "HEARTH_BOOT_KERNEL_TO_INIT_US".into(),
            init_start_us.to_string(),
        ),
        (
            "HEARTH_BOOT_INIT_START_US".into(),
            init_start_us.to_string(),
        ),
        (
            "HEARTH_BOOT_MODULES_US".into(),
            report.total.as_micros().to_string(),
        ),
        (
            "HEARTH_BOOT_ROOTFS_US".into(),
            rootfs.as_micros().to_string(),
        ),
        (
            "HEARTH_BOOT_NET_US".into(),
            net_time.as_micros().to_string(),
        ),
    ];
    let agent = match reaper::spawn_agent(&env) {
        Ok(pid) => pid,
        Err(e) => fail(e),
    };
    console::line(&format!(
        "ready in {} ms (kernel {} ms, modules {} ms, {} loaded, {} skipped, root {} ms, net {} ms), agent pid {agent}",
        t0.elapsed().as_millis(),
        init_start_us / 1000,
        report.total.as_millis(),
        report.loaded,
        report.skipped,
        rootfs.as_millis(),
        net_time.as_millis(),
    ));

    let exit = reaper::supervise(agent);
    console::line(&format!("agent exited with status {exit}, powering off"));
    power::power_off()
}
