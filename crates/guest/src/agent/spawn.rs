//! Starting a child the way `posix_spawn` does: `clone(CLONE_VM | CLONE_VFORK)`
//! on a small private stack, then `execve`.
//!
//! `fork` (what `pre_exec` forces) copies the agent's page tables and makes
//! every page copy-on-write while the other runtime threads keep writing; for
//! `exec true` that was most of the agent's cost. The vfork child shares the
//! agent's memory until `execve`, so it only makes raw system calls on data
//! prepared here: no allocation, no locks, no glibc wrappers that act on the
//! whole process (glibc's `setuid` would signal the agent's threads).
//!
//! The child: stdio from the pipes, `chdir`, `oom_score_adj` 0 (the kernel
//! gives a vfork child its own value, see `__set_oom_adj`), `setsid`, every
//! signal disposition to default, empty mask, optional groups/gid/uid,
//! close-on-exec for everything above stdio, then `execve` over the `PATH`
//! candidates (`ENOEXEC` runs the file with `/bin/sh`, like `execvp`). A
//! failure is reported through memory shared with the parent, so the parent
//! knows before `clone` returns whether the program started.
//!
//! The exit is awaited through a pidfd (`CLONE_PIDFD`), which the reactor polls.

use std::ffi::{c_char, c_int, c_void, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

/// Stack for the child between `clone` and `execve`; it uses well under 8 KiB.
const CHILD_STACK: usize = 64 * 1024;
/// `execvp`'s search path when the child's environment has no `PATH`.
const FALLBACK_PATH: &str = "/bin:/usr/bin";

/// Which child step failed (reported with its errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Stdio = 1,
    Chdir = 2,
    Setsid = 3,
    Credentials = 4,
    Exec = 5,
    Cgroup = 6,
}

impl Stage {
    fn from_i32(v: i32) -> Stage {
        match v {
            1 => Stage::Stdio,
            2 => Stage::Chdir,
            3 => Stage::Setsid,
            4 => Stage::Credentials,
            6 => Stage::Cgroup,
            _ => Stage::Exec,
        }
    }
}

/// What the child is to run, all as C data (built by [`Plan::new`]).
pub struct Plan {
    /// Keeps the strings the pointer arrays point into alive.
    _strings: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
    /// Full paths to try, in order.
    candidates: Vec<*const c_char>,
    /// `["/bin/sh", <candidate>, argv[1..], NULL]` for `ENOEXEC`; slot 1 is
    /// filled in by the child.
    sh_argv: Vec<*const c_char>,
    sh: *const c_char,
    cwd: *const c_char,
    /// `cgroup.procs` of the exec's cgroup, which the child joins first;
    /// null for none.
    cgroup_procs: *const c_char,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub set_groups: bool,
    /// Make stdin (a pty slave) the controlling terminal after `setsid`.
    pub ctty: bool,
}

/// A NUL inside an argument, variable or path.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what} contains a NUL byte")]
pub struct NulError {
    pub what: String,
}

impl Plan {
    pub fn new(
        argv: &[String],
        env: &[(String, String)],
        cwd: &std::path::Path,
        uid: Option<u32>,
        gid: Option<u32>,
        set_groups: bool,
    ) -> Result<Plan, NulError> {
        let c = |s: &str, what: &dyn Fn() -> String| {
            CString::new(s).map_err(|_| NulError { what: what() })
        };
        let mut strings = Vec::with_capacity(argv.len() * 2 + env.len() + 8);
        let mut argv_idx = Vec::with_capacity(argv.len());
        for (i, a) in argv.iter().enumerate() {
            argv_idx.push(strings.len());
            strings.push(c(a, &|| format!("argv[{i}]"))?);
        }
        let mut env_idx = Vec::with_capacity(env.len());
        let mut path_var = None;
        for (k, v) in env {
            if k == "PATH" {
                path_var = Some(v.as_str());
            }
            env_idx.push(strings.len());
            strings.push(c(&format!("{k}={v}"), &|| {
                format!("environment variable {k}")
            })?);
        }
        let prog = argv.first().map(String::as_str).unwrap_or("");
        let mut cand_idx = Vec::new();
        if prog.contains('/') {
            cand_idx.push(argv_idx.first().copied().unwrap_or(0));
        } else if !prog.is_empty() {
            for dir in path_var.unwrap_or(FALLBACK_PATH).split(':') {
                let dir = if dir.is_empty() { "." } else { dir };
                cand_idx.push(strings.len());
                strings.push(c(
                    &format!("{}/{prog}", dir.trim_end_matches('/')),
                    &|| "PATH".to_string(),
                )?);
            }
        }
        let sh_idx = strings.len();
        strings.push(CString::from(c"/bin/sh"));
        let cwd_idx = strings.len();
        let cwd_s = cwd.to_str().unwrap_or("/");
        strings.push(c(cwd_s, &|| "cwd".to_string())?);
        // CString buffers do not move when the Vec grows, so pointers taken
        // now stay valid for the plan's life.
        let p = |i: usize| strings[i].as_ptr();
        let mut argv_p: Vec<*const c_char> = argv_idx.iter().map(|&i| p(i)).collect();
        argv_p.push(std::ptr::null());
        let mut envp: Vec<*const c_char> = env_idx.iter().map(|&i| p(i)).collect();
        envp.push(std::ptr::null());
        let candidates = cand_idx.iter().map(|&i| p(i)).collect();
        let mut sh_argv = vec![p(sh_idx), std::ptr::null()];
        sh_argv.extend(argv_idx.iter().skip(1).map(|&i| p(i)));
        sh_argv.push(std::ptr::null());
        let sh = p(sh_idx);
        let cwd = p(cwd_idx);
        Ok(Plan {
            _strings: strings,
            argv: argv_p,
            envp,
            candidates,
            sh_argv,
            sh,
            cwd,
            cgroup_procs: std::ptr::null(),
            uid,
            gid,
            set_groups,
            ctty: false,
        })
    }
}

impl Plan {
    /// Makes the child join the cgroup whose `cgroup.procs` is `procs` before
    /// anything else (so before it drops privileges or execs). Writing `0`
    /// moves the writer itself.
    pub fn join_cgroup(&mut self, procs: &std::ffi::CStr) {
        let s = CString::from(procs);
        // The CString's buffer does not move when `_strings` grows.
        self.cgroup_procs = s.as_ptr();
        self._strings.push(s);
    }
}

/// The kernel's `struct sigaction` for `rt_sigaction(2)` on architectures
/// with `sa_restorer` (x86_64, aarch64); riscv64 has no `restorer`.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    #[cfg(not(target_arch = "riscv64"))]
    restorer: usize,
    mask: u64,
}

/// Shared between the parent and the vfork child.
struct ChildCtx {
    plan: *mut Plan,
    /// Bit `n - 1` set: signal `n` needs its disposition reset.
    reset_signals: u64,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    stage: AtomicI32,
    errno: AtomicI32,
}

/// A started child: its pid and a pidfd for waiting.
pub struct Child {
    pub pid: i32,
    pub pidfd: OwnedFd,
}

/// Why the child did not start: the failed step and its errno.
#[derive(Debug, Clone, Copy)]
pub struct SpawnError {
    pub stage: Stage,
    pub errno: i32,
}

impl SpawnError {
    fn os(stage: Stage, e: io::Error) -> Self {
        SpawnError {
            stage,
            errno: e.raw_os_error().unwrap_or(libc::EIO),
        }
    }
}

/// Starts `plan` with the given stdio (the child's ends, which must be ≥ 3).
/// Returns once the child has called `execve` successfully or failed.
pub fn start(
    plan: &mut Plan,
    stdin: &OwnedFd,
    stdout: &OwnedFd,
    stderr: &OwnedFd,
) -> Result<Child, SpawnError> {
    let ctx = ChildCtx {
        plan,
        reset_signals: non_default_signals(),
        stdin: stdin.as_raw_fd(),
        stdout: stdout.as_raw_fd(),
        stderr: stderr.as_raw_fd(),
        stage: AtomicI32::new(0),
        errno: AtomicI32::new(0),
    };
    thread_local! {
        // One child stack per thread, reused: this thread is suspended while
        // its child runs on it. Only the few pages the child touches are resident.
        static STACK: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let (pid, pidfd) = STACK.with_borrow_mut(|stack| {
        if stack.capacity() < CHILD_STACK {
            *stack = Vec::with_capacity(CHILD_STACK);
        }
        // The stack grows down from its 16-byte aligned top.
        let top = (stack.as_mut_ptr() as usize + CHILD_STACK) & !15;
        clone_child(&ctx, top)
    })?;
    finish(pid, pidfd, &ctx)
}

/// Blocks signals, clones the vfork child onto the stack ending at `top`,
/// restores the mask. Returns the pid and the pidfd (if the kernel gave one).
fn clone_child(ctx: &ChildCtx, top: usize) -> Result<(i32, Option<OwnedFd>), SpawnError> {
    let mut pidfd: c_int = -1;
    // SAFETY: sigset_t is plain data initialised by sigfillset; the calling
    // thread's mask is restored right after clone returns.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        // No handler of the agent may run in the child while it shares our memory.
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    let flags = libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD;
    // SAFETY: `child_main` only makes raw system calls on `ctx`, which the
    // caller keeps alive until clone returns (CLONE_VFORK suspends this
    // thread until the child execs or exits); the child runs on the
    // thread-local stack ending at `top`, which nothing else uses meanwhile
    // and which is not freed. With CLONE_PIDFD the kernel stores the pidfd in
    // `pidfd` (passed as parent_tid).
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut c_void,
            flags,
            ctx as *const ChildCtx as *mut c_void,
            &mut pidfd as *mut c_int,
            std::ptr::null_mut::<c_void>(),
            std::ptr::null_mut::<c_int>(),
        )
    };
    let clone_err = io::Error::last_os_error();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(SpawnError::os(Stage::Exec, clone_err));
    }
    // SAFETY: with CLONE_PIDFD the kernel returned a new pidfd that we own.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd) });
    Ok((pid, pidfd))
}

/// After `clone` returned: reports a failed child (reaping it) or returns it.
fn finish(pid: i32, pidfd: Option<OwnedFd>, ctx: &ChildCtx) -> Result<Child, SpawnError> {
    let stage = ctx.stage.load(Ordering::Acquire);
    if stage != 0 {
        // The child has exited (status 127); reap it now.
        let _ = reap(pid, 0);
        return Err(SpawnError {
            stage: Stage::from_i32(stage),
            errno: ctx.errno.load(Ordering::Acquire),
        });
    }
    let pidfd = match pidfd {
        Some(fd) => fd,
        None => {
            // SAFETY: kill/waitpid on the child we just started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = reap(pid, 0);
            return Err(SpawnError {
                stage: Stage::Exec,
                errno: libc::ENOSYS,
            });
        }
    };
    Ok(Child { pid, pidfd })
}

/// Signals whose disposition in the agent is not the default (ignored or
/// caught), as a bit set; the child resets exactly these. Execve resets caught
/// signals by itself, but the vfork child shares our memory and must not run
/// one of our handlers before it execs; ignored ones would survive exec.
///
/// Queried once: the agent's dispositions are all set up before it serves
/// (Rust's SIGPIPE, the stack-overflow handlers, the runtime's own), and
/// nothing in the agent changes them later. The signals a library would most
/// likely handle or ignore later are reset every time anyway.
fn non_default_signals() -> u64 {
    static SET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        let mut set = [
            libc::SIGHUP,
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGUSR1,
            libc::SIGUSR2,
            libc::SIGPIPE,
            libc::SIGTERM,
            libc::SIGCHLD,
        ]
        .iter()
        .fold(0u64, |a, &s| a | 1 << (s - 1));
        for sig in 1..=64usize {
            if sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize {
                continue;
            }
            let mut old = KernelSigaction {
                handler: libc::SIG_DFL,
                flags: 0,
                #[cfg(not(target_arch = "riscv64"))]
                restorer: 0,
                mask: 0,
            };
            // SAFETY: rt_sigaction with a null new action only reads the
            // current one into `old`.
            let r = unsafe {
                sys(
                    libc::SYS_rt_sigaction,
                    sig,
                    0,
                    &mut old as *mut _ as usize,
                    8,
                )
            };
            // Unknown: reset it to be safe.
            if r.is_err() || old.handler != libc::SIG_DFL {
                set |= 1 << (sig - 1);
            }
        }
        set
    })
}

/// `waitpid(pid, flags)`: `Some(status)` once reaped, `None` if still running
/// (with `WNOHANG`).
pub fn reap(pid: i32, flags: c_int) -> io::Result<Option<ExitStatus>> {
    loop {
        let mut status: c_int = 0;
        // SAFETY: waitpid writes one c_int.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r == pid {
            return Ok(Some(ExitStatus::from_raw(status)));
        }
        if r == 0 {
            return Ok(None);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Raw system call helper: the result, or the errno on failure.
///
/// # Safety
/// The arguments must be valid for the system call `nr`.
#[inline(always)]
unsafe fn sys(nr: libc::c_long, a: usize, b: usize, c: usize, d: usize) -> Result<isize, i32> {
    let r = libc::syscall(nr, a, b, c, d);
    if r < 0 {
        Err(*libc::__errno_location())
    } else {
        Ok(r as isize)
    }
}

/// The vfork child. Never returns: it execs or exits with 127 after recording
/// the failed step in the shared context.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY (whole function): `arg` is the parent's `ChildCtx`, alive and not
    // touched by the parent until we exec or exit; every call below is a raw
    // system call on prepared data, with no allocation and no locking.
    unsafe {
        let ctx = &*(arg as *const ChildCtx);
        let plan = &mut *ctx.plan;
        if !plan.cgroup_procs.is_null() {
            match sys(
                libc::SYS_openat,
                libc::AT_FDCWD as usize,
                plan.cgroup_procs as usize,
                (libc::O_WRONLY | libc::O_CLOEXEC) as usize,
                0,
            ) {
                Ok(fd) => {
                    let r = sys(libc::SYS_write, fd as usize, c"0".as_ptr() as usize, 1, 0);
                    let _ = sys(libc::SYS_close, fd as usize, 0, 0, 0);
                    if let Err(e) = r {
                        child_fail(ctx, Stage::Cgroup, e);
                    }
                }
                Err(e) => child_fail(ctx, Stage::Cgroup, e),
            }
        }
        for (from, to) in [(ctx.stdin, 0), (ctx.stdout, 1), (ctx.stderr, 2)] {
            if let Err(e) = sys(libc::SYS_dup3, from as usize, to, 0, 0) {
                child_fail(ctx, Stage::Stdio, e);
            }
        }
        if let Err(e) = sys(libc::SYS_chdir, plan.cwd as usize, 0, 0, 0) {
            child_fail(ctx, Stage::Chdir, e);
        }
        // Undo the agent's own -1000 (best-effort: /proc may be missing).
        if let Ok(fd) = sys(
            libc::SYS_openat,
            libc::AT_FDCWD as usize,
            c"/proc/self/oom_score_adj".as_ptr() as usize,
            (libc::O_WRONLY | libc::O_CLOEXEC) as usize,
            0,
        ) {
            let _ = sys(libc::SYS_write, fd as usize, b"0".as_ptr() as usize, 1, 0);
            let _ = sys(libc::SYS_close, fd as usize, 0, 0, 0);
        }
        if let Err(e) = sys(libc::SYS_setsid, 0, 0, 0, 0) {
            child_fail(ctx, Stage::Setsid, e);
        }
        if plan.ctty {
            if let Err(e) = sys(libc::SYS_ioctl, 0, libc::TIOCSCTTY as usize, 0, 0) {
                child_fail(ctx, Stage::Setsid, e);
            }
        }
        // The raw call, because glibc's wrapper refuses its reserved signals
        // (32, 33), and an ignored disposition survives exec.
        let dfl = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            #[cfg(not(target_arch = "riscv64"))]
            restorer: 0,
            mask: 0,
        };
        let mut set = ctx.reset_signals;
        while set != 0 {
            let sig = set.trailing_zeros() as usize + 1;
            set &= set - 1;
            {
                let _ = sys(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction as usize,
                    0,
                    8,
                );
            }
        }
        if let Some(g) = plan.gid {
            if plan.set_groups {
                if let Err(e) = sys(libc::SYS_setgroups, 1, &g as *const u32 as usize, 0, 0) {
                    child_fail(ctx, Stage::Credentials, e);
                }
            }
            if let Err(e) = sys(libc::SYS_setgid, g as usize, 0, 0, 0) {
                child_fail(ctx, Stage::Credentials, e);
            }
        }
        if let Some(u) = plan.uid {
            if let Err(e) = sys(libc::SYS_setuid, u as usize, 0, 0, 0) {
                child_fail(ctx, Stage::Credentials, e);
            }
        }
        // Nothing but stdio crosses exec (best-effort; needs Linux 5.11).
        let _ = sys(
            libc::SYS_close_range,
            3,
            u32::MAX as usize,
            libc::CLOSE_RANGE_CLOEXEC as usize,
            0,
        );
        let empty: u64 = 0;
        let _ = sys(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as usize,
            &empty as *const u64 as usize,
            0,
            8,
        );
        // execvp's rules: skip missing entries, remember EACCES, stop on
        // anything else; ENOEXEC means "a script without #!": run it with sh.
        let mut last = libc::ENOENT;
        let mut saw_eacces = false;
        for &path in plan.candidates.iter() {
            let e = match sys(
                libc::SYS_execve,
                path as usize,
                plan.argv.as_ptr() as usize,
                plan.envp.as_ptr() as usize,
                0,
            ) {
                Ok(_) => continue,
                Err(e) => e,
            };
            match e {
                libc::ENOEXEC => {
                    if let Some(slot) = plan.sh_argv.get_mut(1) {
                        *slot = path;
                    }
                    let e = sys(
                        libc::SYS_execve,
                        plan.sh as usize,
                        plan.sh_argv.as_ptr() as usize,
                        plan.envp.as_ptr() as usize,
                        0,
                    )
                    .err()
                    .unwrap_or(libc::ENOEXEC);
                    child_fail(ctx, Stage::Exec, e);
                }
                libc::EACCES => {
                    saw_eacces = true;
                    last = e;
                }
                libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {
                    last = e;
                }
                _ => child_fail(ctx, Stage::Exec, e),
            }
        }
        child_fail(
            ctx,
            Stage::Exec,
            if saw_eacces { libc::EACCES } else { last },
        );
    }
}

/// Records the failed step for the parent and exits the vfork child.
fn child_fail(ctx: &ChildCtx, stage: Stage, errno: i32) -> ! {
    ctx.errno.store(errno, Ordering::Release);
    ctx.stage.store(stage as i32, Ordering::Release);
    // SAFETY: exit_group ends the child; it never returns.
    unsafe { libc::syscall(libc::SYS_exit_group, 127) };
    // exit_group cannot fail; if it somehow did, the parent would stay suspended.
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Makes sure `fd` is not 0, 1 or 2, so the child's `dup3` onto stdio never
/// meets itself (possible when the agent runs with stdio closed).
pub fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on an fd we own returns a new fd we then own.
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `n` is a fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}
