//! The root filesystem, chosen by `hearth.root=` on the kernel command line.
//!
//! - `initramfs` (default): stay on the kernel's rootfs. `pivot_root` cannot
//!   leave rootfs, so nothing happens here.
//! - `overlay:LOWER:UPPER`: mount LOWER (squashfs, read-only) and UPPER (ext4)
//!   under `/mnt`, overlay them at `/newroot`, move the early mounts into it and
//!   switch root the way `switch_root` does (move-mount onto `/`, chroot). The
//!   initramfs stays in memory; the agent is re-executed through
//!   `/proc/self/exe`, which still resolves after the switch.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::mount::{mount, MsFlags};

use super::cmdline::RootSpec;
use super::mounts::ensure_dir;
use super::InitError;

/// Sets up the root described by `spec`; returns how long it took.
pub fn setup(spec: &RootSpec) -> Result<Duration, InitError> {
    let start = Instant::now();
    match spec {
        RootSpec::Initramfs => {}
        RootSpec::Overlay { lower, upper } => overlay(lower, upper)?,
    }
    Ok(start.elapsed())
}

/// Waits briefly for a block device node: drivers probe when their module
/// loads, but devtmpfs nodes may appear a moment later.
fn wait_for_device(dev: &Path) -> Result<(), InitError> {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !dev.exists() {
        if Instant::now() > deadline {
            return Err(InitError::io(
                format!("wait for root device {}", dev.display()),
                std::io::ErrorKind::NotFound.into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

fn do_mount(
    source: &Path,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    ensure_dir(Path::new(target), 0o755)?;
    mount(Some(source), target, fstype, flags, data).map_err(|e| {
        InitError::io(
            format!(
                "mount {} on {target} ({})",
                source.display(),
                fstype.unwrap_or("move")
            ),
            e.into(),
        )
    })
}

fn overlay(lower: &Path, upper: &Path) -> Result<(), InitError> {
    wait_for_device(lower)?;
    wait_for_device(upper)?;
    do_mount(
        lower,
        "/mnt/lower",
        Some("squashfs"),
        MsFlags::MS_RDONLY,
        None,
    )?;
    do_mount(upper, "/mnt/upper", Some("ext4"), MsFlags::MS_NOATIME, None)?;
    ensure_dir(Path::new("/mnt/upper/upper"), 0o755)?;
    ensure_dir(Path::new("/mnt/upper/work"), 0o755)?;
    do_mount(
        Path::new("overlay"),
        "/newroot",
        Some("overlay"),
        MsFlags::empty(),
        Some("lowerdir=/mnt/lower,upperdir=/mnt/upper/upper,workdir=/mnt/upper/work"),
    )?;
    for m in ["/dev", "/proc", "/sys", "/run", "/tmp"] {
        do_mount(
            Path::new(m),
            &format!("/newroot{m}"),
            None,
            MsFlags::MS_MOVE,
            None,
        )?;
    }
    let what = |step: &str| format!("switch root to /newroot ({step})");
    std::env::set_current_dir("/newroot").map_err(|e| InitError::io(what("chdir"), e))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| InitError::io(what("move mount"), e.into()))?;
    nix::unistd::chroot(".").map_err(|e| InitError::io(what("chroot"), e.into()))?;
    std::env::set_current_dir("/").map_err(|e| InitError::io(what("chdir /"), e))?;
    Ok(())
}
