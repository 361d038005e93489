//! The early mounts every hearth guest gets, before modules and the root.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use nix::errno::Errno;
use nix::mount::{mount, MsFlags};

use super::InitError;

struct MountSpec {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
    /// Mode of the mount point directory if it has to be created.
    dir_mode: u32,
}

const NOSUID_NODEV: MsFlags = MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV);
const NOSUID_NODEV_NOEXEC: MsFlags = NOSUID_NODEV.union(MsFlags::MS_NOEXEC);

/// In mount order: parents first.
const EARLY: &[MountSpec] = &[
    MountSpec {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        dir_mode: 0o555,
    },
    MountSpec {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: None,
        dir_mode: 0o555,
    },
    MountSpec {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: Some("mode=0755"),
        dir_mode: 0o755,
    },
    MountSpec {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: Some("newinstance,ptmxmode=0666,mode=0620,gid=5"),
        dir_mode: 0o755,
    },
    MountSpec {
        source: "shm",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
        dir_mode: 0o1777,
    },
    MountSpec {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=0755"),
        dir_mode: 0o755,
    },
    MountSpec {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: NOSUID_NODEV,
        data: Some("mode=1777"),
        dir_mode: 0o1777,
    },
    MountSpec {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        // Every exec joins its own cgroup: favour migrations (no RCU grace
        // period per move) over the small cost it adds to fork and exit.
        data: Some("favordynmods"),
        dir_mode: 0o755,
    },
];

/// Creates `dir` (and parents) with `mode` if missing.
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), InitError> {
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
    {
        Ok(()) => Ok(()),
        Err(e) => Err(InitError::io(format!("mkdir {}", dir.display()), e)),
    }
}

/// Mounts proc, sys, devtmpfs, devpts, /dev/shm, /run, /tmp and cgroup2, then
/// adds the conventional /dev symlinks.
pub fn mount_early() -> Result<(), InitError> {
    for m in EARLY {
        let target = Path::new(m.target);
        ensure_dir(target, m.dir_mode)?;
        let mut r = mount(Some(m.source), target, Some(m.fstype), m.flags, m.data);
        if r == Err(Errno::EINVAL) && m.fstype == "cgroup2" {
            // A kernel before 6.0 has no favordynmods.
            r = mount(
                Some(m.source),
                target,
                Some(m.fstype),
                m.flags,
                None::<&str>,
            );
        }
        match r {
            Ok(()) => {}
            // Already there (e.g. a kernel with DEVTMPFS_MOUNT): fine.
            Err(Errno::EBUSY) => {}
            Err(e) => {
                return Err(InitError::io(
                    format!("mount {} ({})", m.target, m.fstype),
                    e.into(),
                ))
            }
        }
        if m.dir_mode & 0o1000 != 0 {
            // tmpfs honours mode=, but be explicit for the sticky bit.
            let _ = std::fs::set_permissions(target, std::fs::Permissions::from_mode(m.dir_mode));
        }
    }
    dev_links();
    enable_cgroup_controllers();
    Ok(())
}

/// `/dev/fd`, `/dev/std*` and a `/dev/ptmx` that points into our devpts instance.
/// Best effort: devtmpfs does not create these and most programs cope without.
fn dev_links() {
    for (link, target) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, link);
    }
    let ptmx = Path::new("/dev/ptmx");
    if std::fs::remove_file(ptmx).is_ok() || !ptmx.exists() {
        let _ = std::os::unix::fs::symlink("pts/ptmx", ptmx);
    }
}

/// Delegates the usual controllers to child cgroups so the agent can put each
/// exec in its own cgroup. Controllers the kernel lacks are skipped.
fn enable_cgroup_controllers() {
    let path = Path::new("/sys/fs/cgroup/cgroup.subtree_control");
    let Ok(available) = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers") else {
        return;
    };
    for ctrl in available.split_whitespace() {
        if matches!(ctrl, "cpu" | "memory" | "pids" | "io" | "cpuset") {
            let _: io::Result<()> = std::fs::write(path, format!("+{ctrl}"));
        }
    }
}
