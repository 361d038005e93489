//! The jail a VMM process runs in when
//! [`SandboxConfig::vmm_uid`](crate::SandboxConfig::vmm_uid) is set (Firecracker's
//! jailer is the model). Under software emulation QEMU runs guest code in a host
//! process, so a VMM bug must not become a host compromise.
//!
//! Between fork and exec each jailed process (QEMU, its link proxy) gets:
//! - its own session (`setsid`): it outlives the caller and keeps its host pid,
//!   so [`ProcessId`](crate::ProcessId) tracking and the stop/kill paths are
//!   unchanged;
//! - private mount and IPC namespaces, and an empty network namespace for
//!   the link proxy always and for QEMU unless the VM has user networking
//!   (slirp runs inside QEMU);
//! - a root that is a fresh tmpfs (`pivot_root`, old root detached, then
//!   remounted read-only) holding only [`JailSpec`]'s entries: read-only `/usr`,
//!   the merged-usr links as on the host (`/bin`, `/lib`, `/lib64`, `/sbin`),
//!   `/etc/ld.so.cache`, `/dev/{null,zero,urandom}` made with mknod (and
//!   `/dev/kvm` under KVM, owned by the uid: the host's is `root:kvm 0660` and
//!   the uid has no groups), the VM directory at `/vm`, and per process what it
//!   needs (see [`VmJail`]). No `/proc`, `/sys`, `/tmp`, nor more of `/etc`;
//! - core dumps off, every fd above 2 close-on-exec, no groups, gid and uid set
//!   to the VM's uid, `PR_SET_NO_NEW_PRIVS`, and umask [`JAIL_UMASK`]. QEMU adds
//!   its own seccomp filter (`-sandbox`, see [`super::cmdline::SECCOMP_SANDBOX`]).
//!
//! Host side, as root, before fork ([`VmJail::prepare`]): the VM directory is
//! chowned to the uid (mode 0700), the writable disks too (mode 0600), and the
//! logs are created 0600 for it. A file the uid cannot read (Debian's
//! `/boot/vmlinuz-*` is 0600 root; so are hearth's own cache files) is copied
//! once into `<base>/readable/` (0644, inside a root-only 0700 directory) under
//! a name made of its device, inode, size and ctime, so a changed file gets a new
//! copy; `<base>` is `vmm-jail/` next to the directory holding the VM
//! directories ([`JailDirs`]). Handing QEMU an open fd instead does not work: it
//! opens `-kernel` by name, and reopening `/proc/self/fd/N` checks permissions
//! again.
//!
//! The VM directory is writable by the uid, so a compromised VMM can plant
//! symlinks, FIFOs or hard links there for a later boot. So every bind source is
//! opened before fork and its bind mount made from the open file
//! (`open_tree(OPEN_TREE_CLONE)`, flags set with `mount_setattr`); the child only
//! attaches it (`move_mount`). Files in the VM directory are opened relative to
//! its fd with `O_NOFOLLOW | O_NONBLOCK`, and must be regular files with a single
//! link before anything is chowned, bound, appended to or read. (Needs Linux
//! 5.12 or later; Debian 12 has 6.1.)
//!
//! Everything that allocates happens in [`JailSpec::prepare`];
//! [`PreparedJail::enter`] (run in `pre_exec`) makes only syscalls.

mod host;

pub use host::{check_uid, readable_by, readable_for, JailDirs, VmDir, VmJail};

use std::collections::BTreeSet;
use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::error::VmmError;

/// Where things appear inside a jail.
pub mod paths {
    /// The VM's own directory (sockets, logs, console).
    pub const VM_DIR: &str = "/vm";
    pub const KERNEL: &str = "/boot/kernel";
    pub const INITRD: &str = "/boot/initrd";
    /// Disks, as `/disks/<drive id>`.
    pub const DISKS: &str = "/disks";
    /// Programs that do not live under `/usr`, as `/vmm/<file name>`.
    pub const PROGRAMS: &str = "/vmm";
}

/// The umask of a jailed process. Files get `0666 & !umask` and Unix sockets
/// `0777 & !umask`, so 0177 makes both 0600 (077 would leave sockets 0700); the
/// VMMs create no directories.
pub const JAIL_UMASK: u32 = 0o177;

/// The first words of the line a failing jail step writes to the process's log.
pub const STEP_FAILED: &str = "hearth jail: cannot ";

/// Size limits of a jail's tmpfs root (it holds only mount points and nodes).
const TMPFS_OPTIONS: &str = "mode=0755,size=64k,nr_inodes=256";

/// Where a bind mount's source comes from. Either way the bind mount is made from
/// the open file before fork.
#[derive(Debug, Clone)]
pub enum Source {
    /// A host path in root's own directories (symlinks followed).
    Path(PathBuf),
    /// A file or directory already opened (and checked) by the caller; the path
    /// is for messages.
    Fd(Arc<OwnedFd>, PathBuf),
}

impl Source {
    fn host_path(&self) -> &Path {
        match self {
            Source::Path(p) | Source::Fd(_, p) => p,
        }
    }
}

#[derive(Debug, Clone)]
enum Node {
    Bind {
        source: Source,
        writable: bool,
        exec: bool,
    },
    Symlink {
        target: PathBuf,
    },
    /// A character device with the host node's numbers.
    Device {
        host: PathBuf,
        mode: u32,
        owner: Option<u32>,
    },
}

/// What one jail holds, by in-jail path, plus the program to run in it.
#[derive(Debug, Clone)]
pub struct JailSpec {
    uid: u32,
    nodes: Vec<(PathBuf, Node)>,
    program: Option<PathBuf>,
    /// An empty network namespace (only a loopback that is down).
    no_network: bool,
}

impl JailSpec {
    /// The base every jailed process gets: `/usr`, the merged-usr links (or binds
    /// where the host has real directories), `/etc/ld.so.cache`,
    /// `/dev/{null,zero,urandom}`.
    pub fn new(uid: u32) -> Self {
        let mut s = Self {
            uid,
            nodes: Vec::new(),
            program: None,
            no_network: false,
        };
        s.bind_ro_exec(Source::Path("/usr".into()), "/usr");
        for name in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
            let host = Path::new("/").join(name);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(&host) {
                        s.nodes.push((host, Node::Symlink { target }));
                    }
                }
                Ok(m) if m.is_dir() => s.bind_ro_exec(Source::Path(host.clone()), &host),
                _ => {}
            }
        }
        if Path::new("/etc/ld.so.cache").is_file() {
            s.bind_ro(Source::Path("/etc/ld.so.cache".into()), "/etc/ld.so.cache");
        }
        for dev in ["null", "zero", "urandom"] {
            let p = Path::new("/dev").join(dev);
            s.nodes.push((
                p.clone(),
                Node::Device {
                    host: p,
                    mode: 0o666,
                    owner: None,
                },
            ));
        }
        s
    }

    /// The uid the jailed process runs as.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Read-only, no exec.
    pub fn bind_ro(&mut self, source: Source, at: impl AsRef<Path>) -> &mut Self {
        self.bind(source, at, false, false)
    }

    /// Read-write, no exec.
    pub fn bind_rw(&mut self, source: Source, at: impl AsRef<Path>) -> &mut Self {
        self.bind(source, at, true, false)
    }

    fn bind_ro_exec(&mut self, source: Source, at: impl AsRef<Path>) {
        self.bind(source, at, false, true);
    }

    fn bind(
        &mut self,
        source: Source,
        at: impl AsRef<Path>,
        writable: bool,
        exec: bool,
    ) -> &mut Self {
        self.nodes.push((
            at.as_ref().to_path_buf(),
            Node::Bind {
                source,
                writable,
                exec,
            },
        ));
        self
    }

    /// Runs the process in a network namespace of its own with no interfaces
    /// up: it can still use Unix sockets by path, but reaches no host or
    /// outside address (localhost services, a cloud metadata endpoint).
    pub fn without_network(&mut self) -> &mut Self {
        self.no_network = true;
        self
    }

    /// `/dev/kvm`, owned by the jailed uid (mode 0600).
    pub fn kvm(&mut self) -> &mut Self {
        self.nodes.push((
            "/dev/kvm".into(),
            Node::Device {
                host: "/dev/kvm".into(),
                mode: 0o600,
                owner: Some(self.uid),
            },
        ));
        self
    }

    /// Sets the program to run; one outside `/usr` is bound read-only at
    /// `/vmm/<file name>`. Returns its in-jail path.
    pub fn program(&mut self, host: &Path) -> Result<PathBuf, VmmError> {
        let real = std::fs::canonicalize(host)
            .map_err(|e| VmmError::io("cannot resolve program", host, e))?;
        let inside = if real.starts_with("/usr") {
            real.clone()
        } else {
            let name = real.file_name().ok_or_else(|| VmmError::JailUnsafeFile {
                path: real.clone(),
                reason: "a program needs a file name",
            })?;
            let at = Path::new(paths::PROGRAMS).join(name);
            self.bind_ro_exec(Source::Path(real), &at);
            at
        };
        self.program = Some(inside.clone());
        Ok(inside)
    }

    /// The in-jail paths of every entry, in order (for tests and logs).
    pub fn entries(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|(p, _)| p.clone()).collect()
    }

    /// The setup steps in order, after checking the layout (absolute plain
    /// paths, no entry inside another, none twice): each entry preceded by the
    /// directories it needs. Pure; [`JailSpec::prepare`] follows it.
    fn plan(&self) -> Result<Vec<Planned<'_>>, VmmError> {
        let node_paths: BTreeSet<&Path> = self.nodes.iter().map(|(p, _)| p.as_path()).collect();
        if node_paths.len() != self.nodes.len() {
            return Err(layout_error("two entries at one path"));
        }
        let mut dirs: BTreeSet<&Path> = BTreeSet::new();
        let mut plan = Vec::new();
        for (at, node) in &self.nodes {
            check_jail_path(at)?;
            let mut ancestors: Vec<&Path> = at.ancestors().skip(1).collect();
            ancestors.reverse();
            for a in ancestors.into_iter().skip(1) {
                if node_paths.contains(a) {
                    return Err(layout_error(format!(
                        "{} is inside another entry {}",
                        at.display(),
                        a.display()
                    )));
                }
                if dirs.insert(a) {
                    plan.push(Planned::Dir(a));
                }
            }
            plan.push(Planned::Node(at, node));
        }
        Ok(plan)
    }

    /// What [`JailSpec::prepare`] will do, in order (for tests and logs).
    pub fn describe(&self) -> Result<Vec<String>, VmmError> {
        Ok(self.plan()?.iter().map(Planned::describe).collect())
    }

    /// Opens the bind sources and makes their (detached) bind mounts, stats the
    /// device nodes, and turns the spec into syscall arguments rooted at
    /// `mountpoint`. Needs root (`CAP_SYS_ADMIN`).
    pub fn prepare(&self, mountpoint: &Path) -> Result<PreparedJail, VmmError> {
        let program = self
            .program
            .clone()
            .ok_or_else(|| layout_error("no program set"))?;
        let cstr = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| layout_error(format!("path {} holds a NUL byte", p.display())))
        };
        let mut steps = Vec::new();
        let mut trees = Vec::new();
        for planned in self.plan()? {
            let what = planned.describe();
            let (at, node) = match planned {
                Planned::Dir(at) => {
                    let path = cstr(&under(mountpoint, at))?;
                    steps.push(Step::new(Op::Mkdir { path }, what));
                    continue;
                }
                Planned::Node(at, node) => (at, node),
            };
            let target = cstr(&under(mountpoint, at))?;
            match node {
                Node::Symlink { target: link } => steps.push(Step::new(
                    Op::Symlink {
                        target: cstr(link)?,
                        path: target,
                    },
                    what,
                )),
                Node::Device { host, mode, owner } => {
                    let m = std::fs::metadata(host)
                        .map_err(|e| VmmError::io("cannot stat device", host, e))?;
                    if !std::os::unix::fs::FileTypeExt::is_char_device(&m.file_type()) {
                        return Err(VmmError::JailUnsafeFile {
                            path: host.clone(),
                            reason: "not a character device",
                        });
                    }
                    steps.push(Step::new(
                        Op::Mknod {
                            path: target,
                            mode: libc::S_IFCHR | mode,
                            dev: m.rdev(),
                            owner: *owner,
                        },
                        what,
                    ));
                }
                Node::Bind {
                    source,
                    writable,
                    exec,
                } => {
                    let opened;
                    let fd = match source {
                        Source::Fd(fd, _) => fd.as_ref(),
                        Source::Path(p) => {
                            opened = open_path(p)?;
                            &opened
                        }
                    };
                    let host = source.host_path();
                    let st = fstat(fd, host)?;
                    let is_dir = match st.st_mode & libc::S_IFMT {
                        libc::S_IFDIR => true,
                        libc::S_IFREG => false,
                        _ => {
                            return Err(VmmError::JailUnsafeFile {
                                path: host.to_path_buf(),
                                reason: "only files and directories can be bound",
                            })
                        }
                    };
                    let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
                    if !writable {
                        attrs |= MOUNT_ATTR_RDONLY;
                    }
                    if !exec {
                        attrs |= MOUNT_ATTR_NOEXEC;
                    }
                    let tree = detached_bind(fd, attrs)
                        .map_err(|e| VmmError::io("cannot make a bind mount of", host, e))?;
                    let path = target.clone();
                    steps.push(Step::new(
                        if is_dir {
                            Op::Mkdir { path }
                        } else {
                            Op::Touch { path }
                        },
                        format!("create mount point {}", at.display()),
                    ));
                    steps.push(Step::new(
                        Op::Attach {
                            tree: tree.as_raw_fd(),
                            target,
                        },
                        what,
                    ));
                    trees.push(tree);
                }
            }
        }
        Ok(PreparedJail {
            uid: self.uid,
            namespaces: libc::CLONE_NEWNS
                | libc::CLONE_NEWIPC
                | if self.no_network {
                    libc::CLONE_NEWNET
                } else {
                    0
                },
            program,
            root: cstr(mountpoint)?,
            tmpfs_options: CString::new(TMPFS_OPTIONS)
                .map_err(|_| layout_error("tmpfs options"))?,
            steps,
            _trees: trees,
        })
    }
}

/// One step of a jail's setup, before any I/O.
enum Planned<'a> {
    Dir(&'a Path),
    Node(&'a Path, &'a Node),
}

impl Planned<'_> {
    fn describe(&self) -> String {
        match self {
            Planned::Dir(at) => format!("mkdir {}", at.display()),
            Planned::Node(at, Node::Symlink { target }) => {
                format!("symlink {} -> {}", at.display(), target.display())
            }
            Planned::Node(at, Node::Device { .. }) => format!("create device {}", at.display()),
            Planned::Node(at, Node::Bind { source, .. }) => {
                format!("bind {} at {}", source.host_path().display(), at.display())
            }
        }
    }
}

// mount_setattr(2) attributes and open_tree/move_mount flags (linux/mount.h).
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const OPEN_TREE_CLONE: libc::c_uint = 0x1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// A detached, private bind mount of what `fd` names, with `attrs` set; attached
/// later with `move_mount` (in any mount namespace, unlike a bind of a path
/// resolved before `unshare`, which the kernel refuses).
fn detached_bind(fd: &OwnedFd, attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: open_tree on an open fd with an empty path; returns a new fd or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd.as_raw_fd(),
            c"".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | libc::AT_EMPTY_PATH as libc::c_uint,
        )
    };
    if tree < 0 {
        return Err(io::Error::last_os_error());
    }
    let raw = i32::try_from(tree).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: `raw` was just returned by open_tree and is owned by nobody else.
    let tree = unsafe { OwnedFd::from_raw_fd(raw) };
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: libc::MS_PRIVATE,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on the detached tree with a valid, sized attribute struct.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(tree)
}

fn layout_error(step: impl Into<String>) -> VmmError {
    VmmError::JailSetup {
        program: String::new(),
        step: step.into(),
        source: io::ErrorKind::InvalidInput.into(),
    }
}

/// In-jail paths are absolute and plain (no `.`, `..`), and not `/` itself.
fn check_jail_path(p: &Path) -> Result<(), VmmError> {
    let mut comps = p.components();
    let ok = comps.next() == Some(Component::RootDir)
        && p.components().count() > 1
        && comps.all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(layout_error(format!("bad jail path {}", p.display())))
    }
}

/// `inside` (absolute, in-jail) under `root` on the host.
fn under(root: &Path, inside: &Path) -> PathBuf {
    root.join(inside.strip_prefix("/").unwrap_or(inside))
}

fn open_path(p: &Path) -> Result<OwnedFd, VmmError> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(p)
        .map(OwnedFd::from)
        .map_err(|e| VmmError::io("cannot open for the jail", p, e))
}

fn fstat(fd: &OwnedFd, path: &Path) -> Result<libc::stat, VmmError> {
    // SAFETY: an all-zero `stat` is a valid value for fstat to fill in.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is an open descriptor and `st` a valid out pointer.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if rc == 0 {
        Ok(st)
    } else {
        Err(VmmError::io(
            "cannot stat",
            path,
            io::Error::last_os_error(),
        ))
    }
}

enum Op {
    Mkdir {
        path: CString,
    },
    Touch {
        path: CString,
    },
    Symlink {
        target: CString,
        path: CString,
    },
    Mknod {
        path: CString,
        mode: u32,
        dev: u64,
        owner: Option<u32>,
    },
    /// `move_mount` of a detached bind mount onto `target`.
    Attach {
        tree: libc::c_int,
        target: CString,
    },
}

struct Step {
    op: Op,
    /// `hearth jail: cannot <what>\n`, written to stderr (the log) when it fails.
    failed: Box<[u8]>,
    what: String,
}

impl Step {
    fn new(op: Op, what: String) -> Self {
        Self {
            op,
            failed: format!("{STEP_FAILED}{what}\n")
                .into_bytes()
                .into_boxed_slice(),
            what,
        }
    }

    /// # Safety
    /// Only syscalls on prepared buffers; see [`PreparedJail::enter`].
    unsafe fn run(&self) -> io::Result<()> {
        let f = &self.failed;
        match &self.op {
            Op::Mkdir { path } => check(libc::mkdir(path.as_ptr(), 0o755), f),
            Op::Touch { path } => {
                let fd = libc::open(
                    path.as_ptr(),
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                check(fd, f)?;
                libc::close(fd);
                Ok(())
            }
            Op::Symlink { target, path } => check(libc::symlink(target.as_ptr(), path.as_ptr()), f),
            Op::Mknod {
                path,
                mode,
                dev,
                owner,
            } => {
                check(libc::mknod(path.as_ptr(), *mode, *dev), f)?;
                if let Some(uid) = owner {
                    check(libc::chown(path.as_ptr(), *uid, *uid), f)?;
                }
                Ok(())
            }
            Op::Attach { tree, target } => check_long(
                libc::syscall(
                    libc::SYS_move_mount,
                    *tree,
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    target.as_ptr(),
                    MOVE_MOUNT_F_EMPTY_PATH,
                ),
                f,
            ),
        }
    }
}

/// On failure: writes the prepared message to stderr (the process's log) and
/// returns the errno, without allocating.
fn check(rc: libc::c_int, failed: &[u8]) -> io::Result<()> {
    if rc != -1 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    // SAFETY: write(2) from a live buffer; a failed diagnostic changes nothing.
    unsafe { libc::write(2, failed.as_ptr().cast(), failed.len()) };
    Err(err)
}

fn check_long(rc: libc::c_long, failed: &[u8]) -> io::Result<()> {
    check(if rc == -1 { -1 } else { 0 }, failed)
}

/// A [`JailSpec`] turned into syscall arguments, with its bind sources open.
pub struct PreparedJail {
    uid: u32,
    /// `unshare` flags: always a mount and an IPC namespace, maybe a network one.
    namespaces: libc::c_int,
    program: PathBuf,
    root: CString,
    tmpfs_options: CString,
    steps: Vec<Step>,
    /// The detached bind mounts; open until the child has attached them.
    _trees: Vec<OwnedFd>,
}

impl std::fmt::Debug for PreparedJail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedJail")
            .field("uid", &self.uid)
            .field("program", &self.program)
            .field("root", &self.root)
            .field("steps", &self.steps())
            .finish()
    }
}

impl PreparedJail {
    /// The program's in-jail path.
    pub fn program(&self) -> &Path {
        &self.program
    }

    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// What the jail's setup does, in order.
    pub fn steps(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.what.as_str()).collect()
    }

    /// Enters the jail: session; mount, IPC (and maybe network) namespaces;
    /// tmpfs root with the prepared entries, pivot_root, read-only root; no core
    /// dumps, fds above 2 close-on-exec, no groups, gid/uid, no new privileges,
    /// umask.
    ///
    /// # Safety
    /// Only in a freshly forked child before exec (`pre_exec`): it changes the
    /// calling process's namespaces and credentials and makes only syscalls on
    /// buffers prepared before fork (no allocation, no locks).
    pub unsafe fn enter(&self) -> io::Result<()> {
        const ROOT: &CStr = c"/";
        const DOT: &CStr = c".";
        let none: *const libc::c_char = std::ptr::null();
        libc::umask(0);
        check(libc::setsid(), b"hearth jail: cannot setsid\n")?;
        check(
            libc::unshare(self.namespaces),
            b"hearth jail: cannot unshare namespaces\n",
        )?;
        check(
            libc::mount(
                none,
                ROOT.as_ptr(),
                none,
                libc::MS_REC | libc::MS_PRIVATE,
                none.cast(),
            ),
            b"hearth jail: cannot make mounts private\n",
        )?;
        check(
            libc::mount(
                c"hearth-jail".as_ptr(),
                self.root.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_NOSUID | libc::MS_NOEXEC,
                self.tmpfs_options.as_ptr().cast(),
            ),
            b"hearth jail: cannot mount the tmpfs root\n",
        )?;
        for step in &self.steps {
            step.run()?;
        }
        check(
            libc::chdir(self.root.as_ptr()),
            b"hearth jail: cannot chdir to the root\n",
        )?;
        check_long(
            libc::syscall(libc::SYS_pivot_root, DOT.as_ptr(), DOT.as_ptr()),
            b"hearth jail: cannot pivot_root\n",
        )?;
        check(
            libc::umount2(DOT.as_ptr(), libc::MNT_DETACH),
            b"hearth jail: cannot detach the old root\n",
        )?;
        check(
            libc::chdir(ROOT.as_ptr()),
            b"hearth jail: cannot chdir to /\n",
        )?;
        check(
            libc::mount(
                none,
                ROOT.as_ptr(),
                none,
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NOEXEC,
                none.cast(),
            ),
            b"hearth jail: cannot make the root read-only\n",
        )?;
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        check(
            libc::setrlimit(libc::RLIMIT_CORE, &no_core),
            b"hearth jail: cannot disable core dumps\n",
        )?;
        check_long(
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ),
            b"hearth jail: cannot mark fds close-on-exec\n",
        )?;
        check(
            libc::setgroups(0, std::ptr::null()),
            b"hearth jail: cannot drop groups\n",
        )?;
        check(
            libc::setresgid(self.uid, self.uid, self.uid),
            b"hearth jail: cannot set the gid\n",
        )?;
        check(
            libc::setresuid(self.uid, self.uid, self.uid),
            b"hearth jail: cannot set the uid\n",
        )?;
        check(
            libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
            b"hearth jail: cannot set no_new_privs\n",
        )?;
        libc::umask(JAIL_UMASK);
        Ok(())
    }
}

/// The step a jailed spawn failed at, from the last `hearth jail: cannot …` line
/// of its log.
pub fn failed_step(log_tail: &str) -> Option<String> {
    log_tail
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(STEP_FAILED))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_spec_has_usr_merged_links_and_three_devices() {
        let s = JailSpec::new(1234);
        let e = s.entries();
        for p in ["/usr", "/dev/null", "/dev/zero", "/dev/urandom"] {
            assert!(e.iter().any(|x| x == Path::new(p)), "missing {p}: {e:?}");
        }
        assert!(!e.iter().any(|x| x.starts_with("/proc")
            || x.starts_with("/sys")
            || x == Path::new("/dev/kvm")));
        // Debian 12 is merged-usr: /lib64 must be there for the dynamic loader.
        assert!(e.iter().any(|x| x == Path::new("/lib64")), "{e:?}");
    }

    #[test]
    fn plan_creates_parents_first_and_each_directory_once() {
        let mut s = JailSpec::new(1234);
        s.bind_ro(Source::Path("/host/k".into()), "/boot/kernel")
            .bind_ro(Source::Path("/host/i".into()), "/boot/initrd")
            .kvm();
        s.program(Path::new("/bin/sh")).unwrap();
        assert_eq!(
            s.program.as_deref(),
            Some(std::fs::canonicalize("/bin/sh").unwrap().as_path())
        );
        let steps = s.describe().unwrap();
        let pos = |what: &str| {
            steps
                .iter()
                .position(|s| s == what)
                .unwrap_or_else(|| panic!("no step {what:?} in {steps:?}"))
        };
        assert!(pos("mkdir /boot") < pos("bind /host/k at /boot/kernel"));
        assert!(pos("mkdir /dev") < pos("create device /dev/kvm"));
        for once in ["mkdir /boot", "mkdir /dev"] {
            assert_eq!(steps.iter().filter(|s| *s == once).count(), 1, "{steps:?}");
        }
        assert!(pos("bind /usr at /usr") < pos("create device /dev/null"));
    }

    #[test]
    fn nested_twice_and_relative_entries_are_refused() {
        for at in ["/usr/x", "/a/../etc", "relative", "/"] {
            let mut s = JailSpec::new(1234);
            s.bind_ro(Source::Path("/tmp".into()), at);
            assert!(s.describe().is_err(), "{at} accepted");
        }
        let mut s = JailSpec::new(1234);
        s.bind_ro(Source::Path("/tmp".into()), "/vm")
            .bind_rw(Source::Path("/tmp".into()), "/vm");
        assert!(s.describe().is_err(), "two entries at /vm accepted");
    }

    #[test]
    fn failed_step_is_read_from_the_log_tail() {
        let tail = "something\nhearth jail: cannot bind /x at /vm\n";
        assert_eq!(failed_step(tail).as_deref(), Some("bind /x at /vm"));
        assert_eq!(failed_step("qemu: oops"), None);
    }
}
