//! Per-exec cgroups (v2): every exec runs in its own `hearth/exec-N` group
//! under the cgroup2 mount, with the request's limits (`memory.max`,
//! `pids.max`, `cpu.max`). The agent itself stays in the root group, which is
//! exempt from the no-internal-processes rule.
//!
//! The child joins its group before `execve` (see `spawn`), so nothing of the
//! workload ever runs outside it. When the exec ends (exit, timeout, the
//! connection closing, agent shutdown) the group is torn down with
//! `cgroup.kill`, which also reaches processes that left the process group
//! with `setsid`, before the terminal frame; the empty group is removed
//! after it (retried, bounded). Two empty groups are made ahead of time.
//!
//! The hierarchy is set up once, on first use. Where it cannot be (no cgroup2
//! mount, read-only, as on a host running the agent for tests), execs without
//! limits run as before (logged once) and an exec with limits never starts,
//! with the reason: a limit is never silently dropped.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use hearth_proto::{os_error_text, pb};

use super::exec::never_started;

/// Where cgroup2 is mounted (init mounts it here).
pub const MOUNT: &str = "/sys/fs/cgroup";
/// The agent's subtree under the mount.
const SUBTREE: &str = "hearth";
/// The controllers the limits need.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// `cpu.max` period in microseconds; the quota is `millicpus * PERIOD / 1000`.
pub const CPU_PERIOD_US: u64 = 100_000;
/// Bound on waiting for a killed group to empty before `rmdir` succeeds.
const REMOVE_WAIT: Duration = Duration::from_secs(3);
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The set-up hierarchy: the subtree and the controllers enabled in it.
#[derive(Debug)]
struct Hierarchy {
    base: PathBuf,
    controllers: Vec<String>,
}

static HIERARCHY: OnceLock<Result<Hierarchy, String>> = OnceLock::new();
static NEXT: AtomicU64 = AtomicU64::new(1);
/// Empty groups made ahead of time: creating one (and removing it) costs
/// more than the rest of an exec under software emulation, so both happen
/// off the exec's path.
static SPARES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static REFILLING: AtomicBool = AtomicBool::new(false);
const KEEP_SPARES: usize = 2;

/// A new empty group with `memory.oom.group` 1 (the OOM killer ends the
/// whole exec, not one process of it).
fn fresh(h: &Hierarchy) -> io::Result<PathBuf> {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let path = h.base.join(format!("exec-{n}"));
    std::fs::create_dir(&path)?;
    if h.controllers.iter().any(|c| c == "memory") {
        if let Err(e) = std::fs::write(path.join("memory.oom.group"), "1") {
            let _ = std::fs::remove_dir(&path);
            return Err(e);
        }
    }
    Ok(path)
}

/// Tops the spares up from a blocking task (when called inside the runtime).
fn refill(h: &'static Hierarchy) {
    if REFILLING.swap(true, Ordering::AcqRel) {
        return;
    }
    let work = move || {
        while lock_spares().len() < KEEP_SPARES {
            match fresh(h) {
                Ok(p) => lock_spares().push(p),
                Err(e) => {
                    tracing::debug!(error = %e, "making a spare exec cgroup failed");
                    break;
                }
            }
        }
        REFILLING.store(false, Ordering::Release);
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(work)),
        Err(_) => REFILLING.store(false, Ordering::Release),
    }
}

fn lock_spares() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    SPARES.lock().unwrap_or_else(|p| p.into_inner())
}

/// A spare group, or a new one.
fn take(h: &'static Hierarchy) -> io::Result<PathBuf> {
    let spare = lock_spares().pop();
    let r = match spare {
        Some(p) => Ok(p),
        None => fresh(h),
    };
    refill(h);
    r
}

fn hierarchy() -> Result<&'static Hierarchy, &'static str> {
    HIERARCHY
        .get_or_init(|| {
            let r = setup(Path::new(MOUNT));
            match &r {
                Ok(h) => tracing::info!(base = %h.base.display(), controllers = ?h.controllers, "per-exec cgroups enabled"),
                Err(reason) => tracing::info!(%reason, "per-exec cgroups unavailable; execs without limits run without one"),
            }
            r
        })
        .as_ref()
        .map_err(String::as_str)
}

fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

fn setup(mount: &Path) -> Result<Hierarchy, String> {
    if !is_cgroup2(mount) {
        return Err(format!("{} is not a cgroup2 mount", mount.display()));
    }
    let available = std::fs::read_to_string(mount.join("cgroup.controllers")).map_err(|e| {
        format!(
            "reading {}/cgroup.controllers: {}",
            mount.display(),
            os_error_text(&e)
        )
    })?;
    let wanted: Vec<&str> = CONTROLLERS
        .into_iter()
        .filter(|c| available.split_whitespace().any(|a| a == *c))
        .collect();
    let base = mount.join(SUBTREE);
    match std::fs::create_dir(&base) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => remove_leftovers(&base),
        Err(e) => {
            return Err(format!(
                "creating {}: {}",
                base.display(),
                os_error_text(&e)
            ))
        }
    }
    for dir in [mount, base.as_path()] {
        let control = dir.join("cgroup.subtree_control");
        for c in &wanted {
            // One at a time: one the kernel refuses must not block the others.
            if let Err(e) = std::fs::write(&control, format!("+{c}")) {
                tracing::debug!(controller = c, path = %control.display(), error = %e, "enabling a controller failed");
            }
        }
    }
    let enabled = std::fs::read_to_string(base.join("cgroup.subtree_control")).map_err(|e| {
        format!(
            "reading {}/cgroup.subtree_control: {}",
            base.display(),
            os_error_text(&e)
        )
    })?;
    Ok(Hierarchy {
        controllers: enabled.split_whitespace().map(str::to_string).collect(),
        base,
    })
}

/// Groups an earlier agent left behind (it crashed or was killed): emptied
/// and removed, so their processes do not outlive it.
fn remove_leftovers(base: &Path) {
    let Ok(dir) = std::fs::read_dir(base) else {
        return;
    };
    for entry in dir.flatten() {
        let path = entry.path();
        if entry.file_name().as_bytes().starts_with(b"exec-") && path.is_dir() {
            let _ = std::fs::write(path.join("cgroup.kill"), "1");
            for _ in 0..100 {
                if std::fs::remove_dir(&path).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Limits with every field 0 are no limits.
pub fn wanted(limits: Option<&pb::ResourceLimits>) -> Option<pb::ResourceLimits> {
    limits
        .filter(|l| l.memory_max_bytes != 0 || l.pids_max != 0 || l.cpu_max_millicpus != 0)
        .copied()
}

/// One exec's cgroup. Dropping it without [`Group::remove`] kills what is in
/// it and removes it (best effort, without waiting).
#[derive(Debug)]
pub struct Group {
    path: PathBuf,
    /// `<path>/cgroup.procs`, for the child to join before `execve`.
    pub procs: CString,
    pub limits: pb::ResourceLimits,
    removed: bool,
}

/// `cpu.max` for thousandths of a CPU: `"<quota> <period>"`.
pub fn cpu_max(millicpus: u32) -> String {
    format!(
        "{} {CPU_PERIOD_US}",
        millicpus as u64 * CPU_PERIOD_US / 1000
    )
}

/// Creates the exec's group with `limits`; `None` when cgroups are
/// unavailable and no limit was asked for.
pub fn create(limits: Option<&pb::ResourceLimits>) -> Result<Option<Group>, pb::NeverStarted> {
    let limits = wanted(limits);
    let refuse = |msg: String| never_started(pb::SpawnErrorKind::Other, 0, msg);
    let h = match hierarchy() {
        Ok(h) => h,
        Err(reason) => {
            return match limits {
                Some(_) => Err(refuse(format!(
                    "resource limits need per-exec cgroups, which are unavailable: {reason}"
                ))),
                None => Ok(None),
            }
        }
    };
    let need = |c: &str| -> Result<(), pb::NeverStarted> {
        if h.controllers.iter().any(|x| x == c) {
            Ok(())
        } else {
            Err(refuse(format!(
                "the {c} limit needs the cgroup {c} controller, which the guest kernel does not offer"
            )))
        }
    };
    let l = limits.unwrap_or_default();
    if l.memory_max_bytes != 0 {
        need("memory")?;
    }
    if l.pids_max != 0 {
        need("pids")?;
    }
    if l.cpu_max_millicpus != 0 {
        need("cpu")?;
    }
    let path = match take(h) {
        Ok(p) => p,
        Err(e) if limits.is_some() => {
            return Err(never_started(
                pb::SpawnErrorKind::Other,
                e.raw_os_error().unwrap_or(0),
                format!(
                    "creating an exec cgroup under {}: {}",
                    h.base.display(),
                    os_error_text(&e)
                ),
            ))
        }
        Err(e) => {
            tracing::debug!(error = %e, "creating an exec cgroup failed; running without");
            return Ok(None);
        }
    };
    let os = |what: &str, e: io::Error| {
        never_started(
            pb::SpawnErrorKind::Other,
            e.raw_os_error().unwrap_or(0),
            format!("{what} {}: {}", path.display(), os_error_text(&e)),
        )
    };
    let procs = CString::new(path.join("cgroup.procs").as_os_str().as_bytes())
        .map_err(|_| refuse("cgroup path contains a NUL byte".into()))?;
    let group = Group {
        path: path.clone(),
        procs,
        limits: l,
        removed: false,
    };
    let write = |file: &str, value: String| -> Result<(), pb::NeverStarted> {
        std::fs::write(path.join(file), &value)
            .map_err(|e| os(&format!("writing {value:?} to {file} of"), e))
    };
    if l.memory_max_bytes != 0 {
        write("memory.max", l.memory_max_bytes.to_string())?;
        // Without swap accounting the file is missing: nothing to turn off.
        match std::fs::write(path.join("memory.swap.max"), "0") {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(os("writing \"0\" to memory.swap.max of", e))
            }
            _ => {}
        }
    }
    if l.pids_max != 0 {
        write("pids.max", l.pids_max.to_string())?;
    }
    if l.cpu_max_millicpus != 0 {
        write("cpu.max", cpu_max(l.cpu_max_millicpus))?;
    }
    Ok(Some(group))
}

/// `key value` lines (memory.events, cpu.stat) → the value of `key`.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

impl Group {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SIGKILLs every process in the group, `setsid` or not, atomically
    /// against forks. Needs `cgroup.kill` (Linux 5.14); older kernels get
    /// a SIGKILL per listed process.
    pub fn kill(&self) {
        match std::fs::write(self.path.join("cgroup.kill"), "1") {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let procs =
                    std::fs::read_to_string(self.path.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) on a pid listed in our own exec's group.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            Err(e) => tracing::warn!(path = %self.path.display(), error = %e, "cgroup.kill failed"),
        }
    }

    /// The OOM outcome when the kernel's OOM killer acted in this group.
    pub fn oom_killed(&self) -> Option<pb::OomKilled> {
        let events = std::fs::read_to_string(self.path.join("memory.events")).ok()?;
        let kills = keyed(&events, "oom_kill")
            .unwrap_or(0)
            .max(keyed(&events, "oom_group_kill").unwrap_or(0));
        (kills > 0).then(|| pb::OomKilled {
            memory_max_bytes: self.limits.memory_max_bytes,
            oom_kills: kills,
            memory_peak_bytes: std::fs::read_to_string(self.path.join("memory.peak"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
        })
    }

    /// Kills what is left and removes the group, retrying `rmdir` until the
    /// killed processes are gone (bounded by [`REMOVE_WAIT`]).
    pub async fn remove(mut self) {
        self.kill();
        let deadline = tokio::time::Instant::now() + REMOVE_WAIT;
        let mut pause = Duration::from_millis(1);
        loop {
            match std::fs::remove_dir(&self.path) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(path = %self.path.display(), error = %e, "exec cgroup still busy; leaving it");
                    break;
                }
                Err(_) => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
        self.removed = true;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if !self.removed {
            self.kill();
            let _ = std::fs::remove_dir(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_max_is_quota_and_period() {
        assert_eq!(cpu_max(500), "50000 100000");
        assert_eq!(cpu_max(1000), "100000 100000");
        assert_eq!(cpu_max(2500), "250000 100000");
        assert_eq!(cpu_max(10), "1000 100000");
    }

    #[test]
    fn reads_keyed_files() {
        let ev = "low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 1\n";
        assert_eq!(keyed(ev, "oom_kill"), Some(1));
        assert_eq!(keyed(ev, "max"), Some(12));
        assert_eq!(keyed(ev, "oom_kil"), None);
    }

    #[test]
    fn all_zero_limits_are_none() {
        assert_eq!(wanted(Some(&pb::ResourceLimits::default())), None);
        assert_eq!(wanted(None), None);
        let l = pb::ResourceLimits {
            pids_max: 3,
            ..Default::default()
        };
        assert_eq!(wanted(Some(&l)), Some(l));
    }
}
