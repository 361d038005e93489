//! The host side of a jail, done as root before fork: the VM directory and
//! writable disks handed to the VM's uid, readable copies of what it cannot read,
//! logs and pid files written without following what the uid planted, and the
//! two jails (QEMU, the link proxy) of one VM. See [`super`].

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{paths, JailSpec, PreparedJail, Source};
use crate::error::VmmError;
use crate::process::ProcessId;
use crate::qemu::cmdline::Serial;
use crate::qemu::cmdline::{Drive, QemuArgs};
use crate::qemu::Accel;
use crate::sandbox::{Network, SandboxConfig};

/// Host directories the jails of the VMs under one parent share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JailDirs {
    /// `vmm-jail/` next to the directory holding the VM directories.
    pub base: PathBuf,
    /// The empty directory each jail mounts its tmpfs root on (in its own mount
    /// namespace, so all VMs share it).
    pub mountpoint: PathBuf,
    /// Readable copies of files the jailed uid could not read.
    pub readable: PathBuf,
}

impl JailDirs {
    /// For VM directory `<state>/vms/<id>`: `<state>/vmm-jail/{root,readable}`.
    pub fn for_vm_dir(vm_dir: &Path) -> Self {
        let parent = vm_dir.parent().unwrap_or(Path::new("/"));
        let base = parent.parent().unwrap_or(parent).join("vmm-jail");
        Self {
            mountpoint: base.join("root"),
            readable: base.join("readable"),
            base,
        }
    }

    /// Creates the directories, root-only (0700).
    pub fn create(&self) -> Result<(), VmmError> {
        for d in [&self.base, &self.mountpoint, &self.readable] {
            std::fs::create_dir_all(d)
                .and_then(|()| std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)))
                .map_err(|e| VmmError::io("cannot create jail directory", d, e))?;
        }
        Ok(())
    }
}

/// True when `uid` (with gid = uid and no other groups) may read a file with
/// this metadata.
pub fn readable_by(meta: &std::fs::Metadata, uid: u32) -> bool {
    let mode = meta.mode();
    if meta.uid() == uid {
        mode & 0o400 != 0
    } else if meta.gid() == uid {
        mode & 0o040 != 0
    } else {
        mode & 0o004 != 0
    }
}

/// `src` if `uid` can read it, else a world-readable copy in `cache` (made once
/// per version of the file: the name holds its device, inode, size and ctime).
pub fn readable_for(src: &Path, uid: u32, cache: &Path) -> Result<PathBuf, VmmError> {
    let mut f = File::open(src).map_err(|e| VmmError::io("cannot open", src, e))?;
    let meta = f
        .metadata()
        .map_err(|e| VmmError::io("cannot stat", src, e))?;
    if !meta.is_file() {
        return Err(VmmError::JailUnsafeFile {
            path: src.into(),
            reason: "not a regular file",
        });
    }
    if readable_by(&meta, uid) {
        return Ok(src.to_path_buf());
    }
    let name = src
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let dst = cache.join(format!(
        "{name}.{:x}-{:x}-{:x}-{:x}.{:09}",
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.ctime(),
        meta.ctime_nsec()
    ));
    if let Ok(m) = std::fs::symlink_metadata(&dst) {
        if m.is_file() && m.len() == meta.len() && m.mode() & 0o7777 == 0o644 {
            return Ok(dst);
        }
    }
    let tmp = cache.join(format!(".{name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut copy = || -> io::Result<()> {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        io::copy(&mut f, &mut out)?;
        out.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        out.sync_all()?;
        std::fs::rename(&tmp, &dst)
    };
    copy().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        VmmError::io("cannot make a readable copy", &dst, e)
    })?;
    tracing::info!(src = %src.display(), copy = %dst.display(), "made a copy the jailed vmm can read");
    Ok(dst)
}

/// An open VM directory (checked: a real directory, not a symlink), owned by the
/// jailed uid with mode 0700. Files in it are opened relative to it.
#[derive(Debug, Clone)]
pub struct VmDir {
    path: PathBuf,
    fd: Arc<OwnedFd>,
}

impl VmDir {
    /// Opens `path` without following a symlink, chowns it to `uid`, mode 0700.
    pub fn own(path: &Path, uid: u32) -> Result<Self, VmmError> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| VmmError::io("cannot open vm directory", path, e))?;
        std::os::unix::fs::fchown(&f, Some(uid), Some(uid))
            .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(0o700)))
            .map_err(|e| VmmError::io("cannot hand the vm directory to its uid", path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            fd: Arc::new(OwnedFd::from(f)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory as a bind source (its open fd).
    pub fn source(&self) -> Source {
        Source::Fd(self.fd.clone(), self.path.clone())
    }

    fn name_of<'a>(&self, file: &'a Path) -> Option<&'a OsStr> {
        (file.parent() == Some(self.path.as_path()))
            .then(|| file.file_name())
            .flatten()
    }

    fn openat(&self, name: &OsStr, flags: libc::c_int, mode: libc::mode_t) -> io::Result<File> {
        let c = CString::new(name.as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: openat on our directory fd with a NUL-terminated name; the result
        // is a new fd owned by nobody else.
        let fd = unsafe {
            libc::openat(
                self.fd.as_raw_fd(),
                c.as_ptr(),
                flags | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC,
                libc::c_uint::from(mode),
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by openat.
        let f = unsafe { File::from_raw_fd(fd) };
        // O_NONBLOCK was only there so that a planted FIFO cannot block the open.
        // SAFETY: fcntl on a descriptor we own.
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & libc::O_APPEND) };
        Ok(f)
    }

    fn unlink(&self, name: &OsStr) {
        if let Ok(c) = CString::new(name.as_bytes()) {
            // SAFETY: unlinkat on our directory fd; never follows a symlink.
            unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) };
        }
    }

    /// Opens `file` (directly in this directory) for reading and appending, as a regular
    /// file with one link owned by `uid`, mode 0600; anything else at that name
    /// is replaced.
    pub fn open_log(&self, file: &Path, uid: u32) -> Result<File, VmmError> {
        let name = self.name_of(file).ok_or_else(|| VmmError::JailUnsafeFile {
            path: file.into(),
            reason: "a log must be directly in the vm directory",
        })?;
        let io_err = |e| VmmError::io("cannot open log file", file, e);
        let flags = libc::O_RDWR | libc::O_APPEND | libc::O_CREAT;
        let f = match self.openat(name, flags, 0o600) {
            Ok(f) if is_single_regular(&f) => f,
            _ => {
                self.unlink(name);
                self.openat(name, flags | libc::O_EXCL, 0o600)
                    .map_err(io_err)?
            }
        };
        std::os::unix::fs::fchown(&f, Some(uid), Some(uid))
            .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
            .map_err(io_err)?;
        Ok(f)
    }

    /// Replaces `file` (directly in this directory) with a root-owned 0600 file
    /// holding the pid and start time; informational, failures are logged.
    pub fn write_pid(&self, file: &Path, id: ProcessId) {
        let Some(name) = self.name_of(file) else {
            return;
        };
        self.unlink(name);
        let r = self
            .openat(name, libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL, 0o600)
            .and_then(|mut f| writeln!(f, "{} {}", id.pid, id.start_time));
        if let Err(e) = r {
            tracing::warn!(path = %file.display(), error = %e, "cannot write pid file");
        }
    }

    /// The last `lines` lines of `file` (see [`crate::console::tail_lines`]),
    /// read only if it is a regular file with one link.
    pub fn tail(&self, file: &Path, lines: usize) -> String {
        let f = self
            .name_of(file)
            .and_then(|name| self.openat(name, libc::O_RDONLY, 0).ok())
            .filter(is_single_regular);
        let Some(mut f) = f else {
            return format!("(no log at {})", file.display());
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        let mut buf = Vec::new();
        if f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)))
            .is_err()
            || f.read_to_end(&mut buf).is_err()
        {
            return String::new();
        }
        crate::console::tail_of(&String::from_utf8_lossy(&buf), lines)
    }

    /// Opens a file of this VM (a disk) for the jail: a regular file with one
    /// link, directly in this directory (relative to its fd) or elsewhere by
    /// path without following a final symlink; chowned to `uid`, mode 0600.
    pub fn own_file(&self, disk: &Path, uid: u32) -> Result<Arc<OwnedFd>, VmmError> {
        let io_err = |e| VmmError::io("cannot open disk for the jail", disk, e);
        let f = match self.name_of(disk) {
            Some(name) => self.openat(name, libc::O_RDONLY, 0).map_err(io_err)?,
            None if disk.starts_with(&self.path) => {
                return Err(VmmError::JailUnsafeFile {
                    path: disk.into(),
                    reason: "a disk inside the vm directory must be directly in it",
                })
            }
            None => std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(disk)
                .map_err(io_err)?,
        };
        if !is_single_regular(&f) {
            return Err(VmmError::JailUnsafeFile {
                path: disk.into(),
                reason: "a disk must be a regular file with one link",
            });
        }
        std::os::unix::fs::fchown(&f, Some(uid), Some(uid))
            .and_then(|()| f.set_permissions(std::fs::Permissions::from_mode(0o600)))
            .map_err(|e| VmmError::io("cannot hand the disk to the vm's uid", disk, e))?;
        Ok(Arc::new(OwnedFd::from(f)))
    }
}

fn is_single_regular(f: &File) -> bool {
    f.metadata()
        .map(|m| m.is_file() && m.nlink() == 1)
        .unwrap_or(false)
}

/// Everything the jails of one VM need, prepared on the host as root.
#[derive(Debug)]
pub struct VmJail {
    uid: u32,
    dirs: JailDirs,
    dir: VmDir,
    kernel: Source,
    initrd: Source,
    /// Host path as given, in-jail path, source, writable.
    disks: Vec<(PathBuf, PathBuf, Source, bool)>,
    kvm: bool,
    /// QEMU's user-mode network needs the host's network namespace.
    user_net: bool,
}

/// Checks that a jailed VMM can be started for `uid` by this process.
pub fn check_uid(uid: u32) -> Result<(), VmmError> {
    if uid == 0 || uid == u32::MAX {
        return Err(VmmError::JailBadUid(uid));
    }
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err(VmmError::JailNeedsRoot { uid, euid });
    }
    Ok(())
}

impl VmJail {
    /// Hands the VM's files to `uid` and finds readable versions of the shared
    /// ones: the VM directory (0700) and the writable `drives` (0600) are
    /// chowned, the kernel, initramfs and read-only drives copied if `uid`
    /// cannot read them (or, when they are in the VM directory, opened safely
    /// and chowned like the writable ones). Needs root.
    pub fn prepare(
        cfg: &SandboxConfig,
        drives: &[Drive],
        accel: Accel,
        uid: u32,
    ) -> Result<Self, VmmError> {
        check_uid(uid)?;
        let dirs = JailDirs::for_vm_dir(&cfg.dir);
        dirs.create()?;
        let dir = VmDir::own(&cfg.dir, uid)?;
        let own = |path: &Path| -> Result<Source, VmmError> {
            Ok(Source::Fd(dir.own_file(path, uid)?, path.to_path_buf()))
        };
        // What the uid can rename (its directory) is never opened by path.
        let shared = |path: &Path| -> Result<Source, VmmError> {
            if path.starts_with(&cfg.dir) {
                own(path)
            } else {
                Ok(Source::Path(readable_for(path, uid, &dirs.readable)?))
            }
        };
        let kernel = shared(&cfg.kernel)?;
        let initrd = shared(&cfg.initrd)?;
        let mut disks = Vec::new();
        for d in drives {
            let inside = Path::new(paths::DISKS).join(&d.id);
            let source = if d.readonly {
                shared(&d.file)?
            } else {
                own(&d.file)?
            };
            disks.push((d.file.clone(), inside, source, !d.readonly));
        }
        Ok(Self {
            uid,
            dirs,
            dir,
            kernel,
            initrd,
            disks,
            kvm: accel == Accel::Kvm,
            user_net: cfg.network == Network::AllowAll,
        })
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    pub fn dir(&self) -> &VmDir {
        &self.dir
    }

    /// The in-jail path of `host`, a file directly in the VM directory.
    pub fn vm_path(&self, host: &Path) -> Result<PathBuf, VmmError> {
        self.dir
            .name_of(host)
            .map(|n| Path::new(paths::VM_DIR).join(n))
            .ok_or_else(|| VmmError::JailUnsafeFile {
                path: host.into(),
                reason: "not directly in the vm directory",
            })
    }

    fn base(&self) -> JailSpec {
        let mut s = JailSpec::new(self.uid);
        s.bind_rw(self.dir.source(), paths::VM_DIR);
        s
    }

    /// The link proxy's jail (`hearth-guest vm-proxy`, a static binary): the
    /// base and the VM directory, no network.
    pub fn proxy(&self, program: &Path) -> Result<PreparedJail, VmmError> {
        let mut s = self.base();
        s.without_network();
        s.program(program)?;
        s.prepare(&self.dirs.mountpoint)
    }

    /// QEMU's jail (the base, the VM directory, kernel, initramfs, disks,
    /// `/dev/kvm` under KVM, `/etc/resolv.conf` with user networking) and `args`
    /// rewritten to the in-jail paths.
    pub fn qemu(
        &self,
        program: &Path,
        args: &QemuArgs,
    ) -> Result<(PreparedJail, QemuArgs), VmmError> {
        let mut s = self.base();
        let mut a = args.clone();
        s.bind_ro(self.kernel.clone(), paths::KERNEL);
        a.kernel = paths::KERNEL.into();
        if a.initrd.is_some() {
            s.bind_ro(self.initrd.clone(), paths::INITRD);
            a.initrd = Some(paths::INITRD.into());
        }
        if let Serial::File(p) = &args.serial {
            a.serial = Serial::File(self.vm_path(p)?);
        }
        a.link_socket = args
            .link_socket
            .as_deref()
            .map(|p| self.vm_path(p))
            .transpose()?;
        a.qmp_socket = args
            .qmp_socket
            .as_deref()
            .map(|p| self.vm_path(p))
            .transpose()?;
        for d in &mut a.drives {
            let (_, inside, source, writable) = self
                .disks
                .iter()
                .find(|(host, ..)| *host == d.file)
                .ok_or_else(|| VmmError::JailUnsafeFile {
                    path: d.file.clone(),
                    reason: "a drive that was not prepared for the jail",
                })?;
            if *writable {
                s.bind_rw(source.clone(), inside);
            } else {
                s.bind_ro(source.clone(), inside);
            }
            d.file = inside.clone();
        }
        if self.kvm {
            s.kvm();
        }
        if !self.user_net {
            s.without_network();
        } else if Path::new("/etc/resolv.conf").exists() {
            // slirp forwards the guest's DNS to the host's resolver.
            s.bind_ro(Source::Path("/etc/resolv.conf".into()), "/etc/resolv.conf");
        }
        s.program(program)?;
        Ok((s.prepare(&self.dirs.mountpoint)?, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jail_dirs_sit_next_to_the_vms_directory() {
        let d = JailDirs::for_vm_dir(Path::new("/var/lib/hearth/vms/ab12"));
        assert_eq!(d.base, Path::new("/var/lib/hearth/vmm-jail"));
        assert_eq!(d.mountpoint, Path::new("/var/lib/hearth/vmm-jail/root"));
        assert_eq!(d.readable, Path::new("/var/lib/hearth/vmm-jail/readable"));
    }

    #[test]
    fn readable_by_follows_owner_then_group_then_other() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let me = std::fs::metadata(&f).unwrap().uid();
        let other = me.wrapping_add(4242);
        for (mode, mine, others) in [
            (0o600, true, false),
            (0o604, true, true),
            (0o004, false, true),
            (0o644, true, true),
        ] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let m = std::fs::metadata(&f).unwrap();
            assert_eq!(readable_by(&m, me), mine, "mode {mode:o} owner");
            assert_eq!(readable_by(&m, other), others, "mode {mode:o} other");
        }
    }

    #[test]
    fn unreadable_file_gets_one_cached_world_readable_copy() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let cache = d.path().join("cache");
        std::fs::create_dir(&cache).unwrap();
        let src = d.path().join("vmlinuz-test");
        std::fs::write(&src, b"kernel bytes").unwrap();
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o600)).unwrap();
        let owner = std::fs::metadata(&src).unwrap().uid();
        assert_eq!(readable_for(&src, owner, &cache).unwrap(), src);
        let other = owner.wrapping_add(4242);
        let copy = readable_for(&src, other, &cache).unwrap();
        assert_ne!(copy, src);
        assert_eq!(std::fs::read(&copy).unwrap(), b"kernel bytes");
        assert_eq!(std::fs::metadata(&copy).unwrap().mode() & 0o7777, 0o644);
        assert_eq!(readable_for(&src, other, &cache).unwrap(), copy, "cached");
        assert_eq!(std::fs::read_dir(&cache).unwrap().count(), 1);
    }

    #[test]
    fn uid_zero_and_minus_one_are_refused() {
        assert!(matches!(check_uid(0), Err(VmmError::JailBadUid(0))));
        assert!(matches!(check_uid(u32::MAX), Err(VmmError::JailBadUid(_))));
    }

    #[test]
    fn planted_symlink_log_is_replaced_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let vm = d.path().join("vm");
        std::fs::create_dir(&vm).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, vm.join("qemu.log")).unwrap();
        let me = std::fs::metadata(&vm).unwrap().uid();
        let dir = VmDir::own(&vm, me).unwrap();
        let mut log = dir.open_log(&vm.join("qemu.log"), me).unwrap();
        log.write_all(b"line\n").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        let m = std::fs::symlink_metadata(vm.join("qemu.log")).unwrap();
        assert!(m.is_file());
        assert_eq!(m.mode() & 0o777, 0o600);
        assert_eq!(dir.tail(&vm.join("qemu.log"), 5), "line");
        std::os::unix::fs::symlink(&victim, vm.join("console.log")).unwrap();
        assert!(dir.tail(&vm.join("console.log"), 5).contains("no log"));
        assert!(dir.own_file(&vm.join("console.log"), me).is_err());
        dir.write_pid(
            &vm.join("console.log"),
            ProcessId {
                pid: 1,
                start_time: 2,
            },
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(
            std::fs::read_to_string(vm.join("console.log")).unwrap(),
            "1 2\n"
        );
    }
}
