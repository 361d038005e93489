//! The root filesystem, chosen by `hearth.root=` on the kernel command line,
//! plus the optional persist volume.
//!
//! - `initramfs` (default): stay on the kernel's rootfs. `pivot_root` cannot
//!   leave rootfs, so nothing is switched; the persist volume is mounted at
//!   `/persist` directly.
//! - `overlay:LOWER:UPPER`: mount LOWER (read-only squashfs or ext4, per
//!   `hearth.lowerfs`) and UPPER (ext4) under `/mnt`, overlay them at
//!   `/newroot`, mount the persist volume at `/newroot/persist`, move the early
//!   mounts (`/dev`, `/proc`, `/sys`, `/run`, the `/tmp` tmpfs) into it and
//!   switch root the way `switch_root` does (move-mount onto `/`, chroot). The
//!   initramfs stays in memory; the agent is re-executed through
//!   `/proc/self/exe`, which still resolves after the switch.
//!
//! - The upper ext4 stays reachable after the switch as a read-only bind at
//!   [`UPPER_BIND`], so the agent's `FS_FREEZE` can freeze it (overlayfs
//!   itself cannot be frozen); the bind being read-only only stops writes
//!   through it, the filesystem under the overlay stays writable.
//!
//! Every disk is located (and waited for) before anything is mounted, so a
//! missing disk fails the boot with a clear console line and nothing half-done.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use super::cmdline::{DeviceRef, LowerFs, RootSpec};
use super::disks::wait_for;
use super::mounts::ensure_dir;
use super::InitError;

/// Where the upper ext4 of an overlay root is visible after the switch.
pub const UPPER_BIND: &str = "/run/hearth/upper";

/// Directories every sandbox has, created (mode 1777) when the root lacks them.
const SHARED_DIRS: [&str; 2] = ["/in", "/out"];

/// Sets up the root described by `spec` (and `/persist` when `persist` is
/// set); returns how long it took.
pub fn setup(
    spec: &RootSpec,
    lowerfs: LowerFs,
    persist: Option<&DeviceRef>,
) -> Result<Duration, InitError> {
    let start = Instant::now();
    match spec {
        RootSpec::Initramfs => {
            if let Some(dev) = persist {
                let node = wait_for(dev, "persist")?;
                mount_persist(&node, "/persist")?;
            }
        }
        RootSpec::Overlay { lower, upper } => {
            let lower = wait_for(lower, "root lower")?;
            let upper = wait_for(upper, "root upper")?;
            let persist = persist.map(|d| wait_for(d, "persist")).transpose()?;
            overlay(&lower, lowerfs, &upper, persist.as_deref())?;
        }
    }
    for dir in SHARED_DIRS {
        ensure_shared_dir(Path::new(dir))?;
    }
    Ok(start.elapsed())
}

/// Creates `dir` with mode 1777 if it is missing; an existing one is left as is.
fn ensure_shared_dir(dir: &Path) -> Result<(), InitError> {
    if dir.exists() {
        return Ok(());
    }
    ensure_dir(dir, 0o1777)?;
    // mkdir applies the umask; the sticky, world-writable mode is explicit.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| InitError::io(format!("chmod 1777 {}", dir.display()), e))
}

fn do_mount(
    source: &Path,
    target: &str,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), InitError> {
    ensure_dir(Path::new(target), 0o755)?;
    mount(Some(source), target, fstype, flags, data)
        .map_err(|e| mount_error(source, target, fstype, e))
}

fn mount_error(source: &Path, target: &str, fstype: Option<&str>, e: Errno) -> InitError {
    InitError::io(
        format!(
            "mount {} on {target} ({})",
            source.display(),
            fstype.unwrap_or("move")
        ),
        e.into(),
    )
}

/// The persist volume: ext4, no device nodes or setuid from it.
fn mount_persist(node: &Path, target: &str) -> Result<(), InitError> {
    do_mount(
        node,
        target,
        Some("ext4"),
        MsFlags::MS_NOATIME | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None,
    )
}

/// The read-only lower layer. An ext4 image whose journal needs replaying
/// cannot be mounted from a read-only disk; `noload` skips the replay.
fn mount_lower(node: &Path, fs: LowerFs) -> Result<(), InitError> {
    let target = "/mnt/lower";
    ensure_dir(Path::new(target), 0o755)?;
    let fstype = Some(fs.fstype());
    match mount(Some(node), target, fstype, MsFlags::MS_RDONLY, None::<&str>) {
        Ok(()) => Ok(()),
        Err(_) if fs == LowerFs::Ext4 => mount(
            Some(node),
            target,
            fstype,
            MsFlags::MS_RDONLY,
            Some("noload"),
        )
        .map_err(|e| mount_error(node, target, fstype, e)),
        Err(e) => Err(mount_error(node, target, fstype, e)),
    }
}

fn overlay(
    lower: &Path,
    lowerfs: LowerFs,
    upper: &Path,
    persist: Option<&Path>,
) -> Result<(), InitError> {
    mount_lower(lower, lowerfs)?;
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
    if let Some(node) = persist {
        mount_persist(node, "/newroot/persist")?;
    }
    for m in ["/dev", "/proc", "/sys", "/run", "/tmp"] {
        do_mount(
            Path::new(m),
            &format!("/newroot{m}"),
            None,
            MsFlags::MS_MOVE,
            None,
        )?;
    }
    keep_upper_reachable();
    let what = |step: &str| format!("switch root to /newroot ({step})");
    std::env::set_current_dir("/newroot").map_err(|e| InitError::io(what("chdir"), e))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| InitError::io(what("move mount"), e.into()))?;
    nix::unistd::chroot(".").map_err(|e| InitError::io(what("chroot"), e.into()))?;
    std::env::set_current_dir("/").map_err(|e| InitError::io(what("chdir /"), e))?;
    Ok(())
}

/// A read-only bind of `/mnt/upper` at `/newroot` + [`UPPER_BIND`] (after
/// `/run` moved there). Only freezing needs it, so a failure is reported on
/// the console and the boot goes on.
fn keep_upper_reachable() {
    let target = format!("/newroot{UPPER_BIND}");
    let bind = || -> Result<(), InitError> {
        ensure_dir(Path::new(&target), 0o700)?;
        let fail = |e: Errno| InitError::io(format!("bind /mnt/upper on {target}"), e.into());
        mount(
            Some("/mnt/upper"),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(fail)?;
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(
            None::<&str>,
            target.as_str(),
            None::<&str>,
            flags,
            None::<&str>,
        )
        .map_err(fail)
    };
    if let Err(e) = bind() {
        super::console::line(&format!(
            "{} failed: {} (FS_FREEZE will not find the root's upper)",
            e.what, e.source
        ));
    }
}
