//! The edge: the one place that reads the environment and turns it, with the
//! global flags, into a [`RuntimeConfig`]. Nothing below it reads variables.
//!
//! | variable | meaning |
//! |---|---|
//! | `HEARTH_STATE_DIR` | state dir (also `--state-dir`) |
//! | `HEARTH_IMAGE_CACHE` | image cache (default `<state>/images`) |
//! | `HEARTH_GUEST_BIN` | the static guest binary |
//! | `HEARTH_BUSYBOX` | static busybox for the bare guest's shell (empty: none) |
//! | `HEARTH_BOOT_TIMEOUT` | seconds a boot may take |
//! | `HEARTH_DB_LOCK_TIMEOUT_MS` | how long to wait for a locked state DB |
//! | `HEARTH_KERNEL` | the guest kernel: a path, `own` or `cloud` (default: own when built, else cloud; `--kernel` wins) |
//! | `HEARTH_KERNEL_CACHE` | where `scripts/kernel.sh` cached hearth's own kernel (default `/var/tmp`) |
//! | `HEARTH_KERNEL_EXTRA` | extra guest kernel command line words |
//! | `HEARTH_QEMU` | the VMM program |
//! | `HEARTH_ACCEL` | `kvm`, `tcg` or `auto` |
//! | `HEARTH_MEM_OVERCOMMIT`, `HEARTH_CPU_OVERCOMMIT` | admission ratios |
//! | `HEARTH_WARM` | `0`: creates boot cold instead of restoring warm-start templates |
//! | `HEARTH_JAIL` | `0` runs VMMs unjailed even as root |
//! | `HEARTH_CONSOLE_LOG_BYTES` | size of one console log file (two are kept; default 1 MiB) |
//! | `TERM` | the remote `TERM` of `vm shell` / `vm exec -t` (default `xterm`) |

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use hearth_runtime::{paths, Accel, Runtime, RuntimeConfig};

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn var_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn parse_var<T: std::str::FromStr>(name: &str) -> anyhow::Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    var(name)
        .map(|v| {
            v.parse::<T>()
                .map_err(|e| anyhow::anyhow!("bad {name}={v:?}: {e}"))
        })
        .transpose()
}

/// The state dir from the flag/env, else the default places.
pub fn state_dir(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    Ok(paths::resolve_state_dir(
        explicit,
        Path::new("/var/lib"),
        var_path("XDG_STATE_HOME"),
        var_path("HOME"),
    )?)
}

/// The static guest binary: `HEARTH_GUEST_BIN`, else next to this executable.
fn guest_binary() -> Option<PathBuf> {
    if let Some(p) = var_path("HEARTH_GUEST_BIN") {
        return Some(p);
    }
    let exe = std::env::current_exe().ok()?;
    paths::guest_candidates(&exe)
        .into_iter()
        .find(|c| c.is_file())
}

/// Builds the runtime configuration.
pub fn config(state_dir_flag: Option<PathBuf>) -> anyhow::Result<RuntimeConfig> {
    let state = state_dir(state_dir_flag)?;
    let mut c = RuntimeConfig::new(&state);
    c.image_cache = paths::resolve_image_cache(var_path("HEARTH_IMAGE_CACHE"), &state);
    c.guest_binary = guest_binary();
    if let Ok(bb) = std::env::var("HEARTH_BUSYBOX") {
        c.busybox = (!bb.is_empty()).then(|| PathBuf::from(bb));
    }
    c.boot_timeout = parse_var::<f64>("HEARTH_BOOT_TIMEOUT")?
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64);
    if let Some(ms) = parse_var::<u64>("HEARTH_DB_LOCK_TIMEOUT_MS")? {
        c.db_lock_timeout = Duration::from_millis(ms);
    }
    c.kernel = var_path("HEARTH_KERNEL");
    if let Some(dir) = var_path("HEARTH_KERNEL_CACHE") {
        c.own_kernel_cache = Some(dir);
    }
    c.kernel_cmdline_extra = var("HEARTH_KERNEL_EXTRA").unwrap_or_default();
    c.qemu.qemu = var_path("HEARTH_QEMU");
    c.qemu.accel = match var("HEARTH_ACCEL").as_deref() {
        None | Some("auto") => None,
        Some("kvm") => Some(Accel::Kvm),
        Some("tcg") => Some(Accel::Tcg),
        Some(other) => bail!("bad HEARTH_ACCEL={other:?} (kvm, tcg or auto)"),
    };
    if let Some(r) = parse_var::<f64>("HEARTH_MEM_OVERCOMMIT")? {
        c.admission.mem_overcommit = r;
    }
    if let Some(r) = parse_var::<f64>("HEARTH_CPU_OVERCOMMIT")? {
        c.admission.cpu_overcommit = r;
    }
    if let Some(n) = parse_var::<u64>("HEARTH_CONSOLE_LOG_BYTES")? {
        let min = hearth_runtime::logs::MIN_CONSOLE_FILE_BYTES;
        if n < min {
            bail!("HEARTH_CONSOLE_LOG_BYTES={n} is below the minimum of {min} bytes");
        }
        c.console.file_bytes = n;
    }
    c.warm_start = match var("HEARTH_WARM").as_deref() {
        None | Some("") | Some("1") => true,
        Some("0") => false,
        Some(other) => {
            bail!("bad HEARTH_WARM={other:?} (0 boots every vm cold, 1 restores templates)")
        }
    };
    if var("HEARTH_JAIL").as_deref() == Some("0") {
        c.isolation.vmm_uid_base = None;
    }
    Ok(c)
}

/// Opens the runtime for a command.
pub async fn runtime(state_dir_flag: Option<PathBuf>) -> anyhow::Result<Runtime> {
    let c = config(state_dir_flag)?;
    let dir = c.state_dir.clone();
    Runtime::open(c)
        .await
        .with_context(|| format!("cannot open the hearth state in {}", dir.display()))
}

/// `TERM` of the local terminal, for a remote pty (`xterm` when unset).
pub fn local_term() -> String {
    var("TERM").unwrap_or_else(|| "xterm".to_string())
}
