//! The agent role: serves the hearth wire protocol (docs/protocol.md).
//!
//! - [`listen`]: the Unix socket, which appears only once it listens.
//! - [`conn`]: one connection — reader, request dispatch; [`routes`]: the
//!   requests in flight and where stream frames for them go.
//! - [`liveness`]: the connection's reader thread, which answers pings itself.
//! - [`writer`]: the connection's single writer task (bounded queues, pongs first).
//!   [`splice`]: output chunks moved pipe → socket with `splice(2)`.
//! - [`exec`]: preparing a child (user, env, cwd, pipes) and decoding its
//!   outcome; [`spawn`] starts it (vfork-style clone: setsid, signals, oom
//!   score, credentials, exec); [`session`] runs it (streaming with
//!   [`credit`], timeout, drain) with output frames built in place by
//!   [`outbuf`] (or spliced), stdin fed by [`stdin`] from an [`input`] queue;
//!   [`oneshot`] is the collected `EXEC` variant.
//! - [`lifecycle`]: ending sessions (connection closed, shutdown, broken
//!   input) and the agent-wide list of them.
//! - PTY and background processes: [`pty`] (the terminal pair),
//!   [`pty_session`] (foreground pty exec), [`detach`] (background start),
//!   [`procs`] (the process table and the runner filling each [`ring`]),
//!   [`follow`] (ring → connection), [`attach`], [`process_ops`] (list, kill),
//!   [`stdin_close`] (closing a background process's stdin).
//! - [`user`]: `/etc/passwd` parsing and the child's environment.
//! - [`files`], [`file_read`], [`file_write`]: file requests.
//! - [`sysinfo`]: the `SYSTEM_INFO` answer.
//! - [`logbuf`]: the agent's own log in a bounded ring, for `AGENT_LOG`.
//! - [`sysinfo`]: the `SYSTEM_INFO` answer; [`stats`]: the `STATS` answer.
//! - [`cgroup`]: every exec's own cgroup v2 (limits, `cgroup.kill`, OOM).
//! - [`watch`]: `WATCH` streams of inotify events; [`port`]: `PORT_OPEN`
//!   streams to guest TCP ports.
//! - Snapshot hooks: [`restored`] (`GUEST_RESTORED`), [`fs_freeze`]
//!   (`FS_FREEZE`), [`generation`] (their agent-wide state).
//!
//! On SIGTERM, SIGINT (init forwards both) or `SHUTDOWN` the agent stops
//! accepting, sends TERM to every session's process group, KILLs what is left
//! after [`SHUTDOWN_GRACE`], and exits 0.

mod attach;
mod cgroup;
mod conn;
#[cfg(test)]
mod conn_tests;
mod credit;
mod detach;
mod exec;
mod file_read;
mod file_write;
mod files;
mod follow;
mod fs_freeze;
mod generation;
mod input;
mod lifecycle;
pub(crate) mod listen;
mod liveness;
mod logbuf;
mod oneshot;
mod outbuf;
mod port;
mod process_ops;
mod procs;
mod pty;
mod pty_session;
mod restored;
mod ring;
mod routes;
mod session;
mod spawn;
mod splice;
mod stats;
mod stdin;
mod stdin_close;
mod sysinfo;
mod user;
mod watch;
mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use hearth_proto::{
    capability_bit, pb, DEFAULT_INPUT_WINDOW, DEFAULT_MAX_FRAME_LEN, PROTOCOL_VERSION, VERSION,
};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

use lifecycle::Sessions;

/// Grace between TERM and KILL for every session when the agent shuts down.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// Smallest `--max-frame-len` that still leaves room for useful chunks.
const MIN_MAX_FRAME_LEN: u32 = 64 * 1024;

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Vsock(u32),
    /// hearth's stream multiplexer on a virtio-serial port
    /// ([`crate::vmlink::guest`]).
    Link(PathBuf),
    /// No flag: the link when the kernel command line says
    /// `hearth.link=virtio-serial` (the QEMU backend), else vsock port 1000.
    Default,
}

/// How long the agent waits for the link's port to appear (the driver adds
/// ports after QEMU announces them, so it may lag the module load).
const LINK_PORT_WAIT: Duration = Duration::from_secs(20);

impl Listen {
    /// Resolves [`Listen::Default`] from `/proc/cmdline`, waiting for the port.
    fn resolve(self) -> anyhow::Result<Listen> {
        if self != Listen::Default {
            return Ok(self);
        }
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        if !cmdline
            .split_ascii_whitespace()
            .any(|w| w == crate::vmlink::guest::CMDLINE_WORD)
        {
            return Ok(Listen::Vsock(hearth_proto::AGENT_VSOCK_PORT));
        }
        let deadline = std::time::Instant::now() + LINK_PORT_WAIT;
        loop {
            if let Some(p) = crate::vmlink::guest::find_port() {
                return Ok(Listen::Link(p));
            }
            if std::time::Instant::now() >= deadline {
                bail!(
                    "no virtio-serial port named {} appeared within {} s",
                    crate::vmlink::PORT_NAME,
                    LINK_PORT_WAIT.as_secs()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Agent settings from the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub listen: Listen,
    pub max_frame_len: u32,
    /// `--etc-dir`: where GUEST_RESTORED writes hostname and machine-id.
    pub etc_dir: Option<PathBuf>,
}

impl Config {
    /// Parses `[--unix-socket PATH] [--vsock-port N] [--max-frame-len N]
    /// [--etc-dir DIR]`.
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut listen = Listen::Default;
        let mut max_frame_len = DEFAULT_MAX_FRAME_LEN;
        let mut etc_dir = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let (flag, inline) = match a.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
                _ => (a.as_str(), None),
            };
            let mut value = || -> anyhow::Result<String> {
                match inline.clone() {
                    Some(v) => Ok(v),
                    None => it
                        .next()
                        .cloned()
                        .with_context(|| format!("{flag} needs a value")),
                }
            };
            match flag {
                "--unix-socket" => listen = Listen::Unix(PathBuf::from(value()?)),
                "--link" => listen = Listen::Link(PathBuf::from(value()?)),
                "--etc-dir" => etc_dir = Some(PathBuf::from(value()?)),
                "--vsock-port" => {
                    let v = value()?;
                    listen = Listen::Vsock(
                        v.parse()
                            .with_context(|| format!("bad --vsock-port {v:?}"))?,
                    );
                }
                "--max-frame-len" => {
                    let v = value()?;
                    max_frame_len = v
                        .parse()
                        .with_context(|| format!("bad --max-frame-len {v:?}"))?;
                    if max_frame_len < MIN_MAX_FRAME_LEN {
                        bail!("--max-frame-len {max_frame_len} is below {MIN_MAX_FRAME_LEN}");
                    }
                }
                other => bail!("unknown argument {other:?}"),
            }
        }
        Ok(Self {
            listen,
            max_frame_len,
            etc_dir,
        })
    }
}

/// What every connection announces in `READY`, plus state shared by all.
pub struct Shared {
    pub ready: pb::Ready,
    pub max_frame_len: u32,
    /// Input credit granted per stream that asks for it.
    pub input_window: u32,
    pub sessions: Arc<Sessions>,
    /// Background processes (`ExecStart.detach`).
    pub procs: procs::Procs,
    /// Snapshot hooks: generation, connections, freeze state.
    pub restore: Arc<generation::RestoreState>,
    shutdown: Notify,
}

impl Shared {
    pub fn new(ready: pb::Ready) -> Arc<Shared> {
        let input_window = match ready.input_window {
            0 => DEFAULT_INPUT_WINDOW,
            w => w,
        };
        Arc::new(Shared {
            max_frame_len: ready.max_frame_len,
            input_window,
            restore: Arc::new(generation::RestoreState::new(&ready.role)),
            ready,
            sessions: Arc::new(Sessions::default()),
            procs: procs::Procs::default(),
            shutdown: Notify::new(),
        })
    }

    /// Asks the agent to shut down (a `SHUTDOWN` request).
    pub fn request_shutdown(&self) {
        self.shutdown.notify_one();
    }
}

/// Boot timings handed over by init in `HEARTH_BOOT_*` variables.
#[derive(Debug, Default, Clone, Copy)]
struct BootEnv {
    kernel_to_init_us: u64,
    init_start_us: Option<u64>,
    modules_us: u64,
    rootfs_us: u64,
}

/// Reads `HEARTH_*` from the environment, then removes every `HEARTH_*`
/// variable so that no child inherits them. Call before any thread starts.
fn take_hearth_env() -> (BootEnv, Option<String>) {
    let num = |k: &str| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let boot = BootEnv {
        kernel_to_init_us: num("HEARTH_BOOT_KERNEL_TO_INIT_US").unwrap_or(0),
        init_start_us: num("HEARTH_BOOT_INIT_START_US"),
        modules_us: num("HEARTH_BOOT_MODULES_US").unwrap_or(0),
        rootfs_us: num("HEARTH_BOOT_ROOTFS_US").unwrap_or(0),
    };
    let role = std::env::var("HEARTH_ROLE").ok();
    let keys: Vec<_> = std::env::vars_os()
        .map(|(k, _)| k)
        .filter(|k| k.to_string_lossy().starts_with("HEARTH_"))
        .collect();
    for k in keys {
        std::env::remove_var(k);
    }
    (boot, role)
}

/// CLOCK_BOOTTIME in microseconds.
fn boottime_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

/// Best-effort: make the OOM killer pick the workload, not the agent.
fn protect_from_oom() {
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", "-1000") {
        tracing::debug!(error = %e, "could not set oom_score_adj");
    }
}

fn all_capabilities() -> u64 {
    use pb::Capability as C;
    [
        C::OneshotExec,
        C::ExecStream,
        C::Files,
        C::SystemInfo,
        C::Shutdown,
        C::FlowControl,
        C::InputFlowControl,
        C::Pty,
        C::Background,
        C::AgentLog,
        C::ExecLimits,
        C::Stats,
        C::Watch,
        C::PortForward,
        C::ProcessStdinClose,
        C::FileOwner,
        C::RestoreHooks,
        C::FsFreeze,
    ]
    .into_iter()
    .map(capability_bit)
    .fold(0, |a, b| a | b)
}

/// Keeps the idle footprint small: glibc otherwise grows its mmap threshold
/// after big frees (so later 256 KiB buffers stay resident on the heap) and
/// gives every thread its own arena.
fn tune_malloc() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator parameters; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 * 1024);
    }
}

/// Entry point of the agent role.
pub fn main(args: &[String]) -> anyhow::Result<()> {
    let config = Config::parse(args)?;
    tune_malloc();
    let (boot, role) = take_hearth_env();
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        // The console (stderr), and the in-memory ring AGENT_LOG serves.
        tracing_subscriber::registry()
            .with(filter)
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(logbuf::RingWriter)
                    .with_ansi(false)
                    .without_time(),
            )
            .init();
    }
    protect_from_oom();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .thread_stack_size(256 * 1024)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(serve(config, boot, role))
}

async fn serve(config: Config, boot: BootEnv, role: Option<String>) -> anyhow::Result<()> {
    // Before the socket exists, so a TERM right after it appears is handled.
    let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
    let make_shared = || {
        let now = boottime_us();
        Shared::new(pb::Ready {
            protocol_version: PROTOCOL_VERSION,
            agent_version: VERSION.to_string(),
            capabilities: all_capabilities(),
            boot: Some(pb::BootTimings {
                kernel_to_init_us: boot.kernel_to_init_us,
                init_to_agent_us: boot.init_start_us.map_or(0, |s| now.saturating_sub(s)),
                modules_us: boot.modules_us,
                rootfs_us: boot.rootfs_us,
            }),
            max_frame_len: config.max_frame_len,
            role: role.clone().unwrap_or_else(|| "agent".to_string()),
            input_window: DEFAULT_INPUT_WINDOW,
        })
    };
    let listen = config.listen.clone().resolve()?;
    let mut listener = match &listen {
        Listen::Unix(path) => {
            let bound = listen::bind(path)?;
            tracing::info!(path = %path.display(), "agent listening");
            Listener::Unix(bound)
        }
        Listen::Vsock(port) => {
            let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, *port);
            let listener = tokio_vsock::VsockListener::bind(addr)
                .with_context(|| format!("binding vsock port {port}"))?;
            tracing::info!(port, "agent listening on vsock");
            ready_marker(&format!("hearth-agent: listening on vsock port {port}\n"));
            Listener::Vsock(listener)
        }
        Listen::Link(path) => {
            let accepted = crate::vmlink::guest::start(path)
                .with_context(|| format!("opening the link port {}", path.display()))?;
            tracing::info!(port = %path.display(), "agent listening on the vm link");
            ready_marker(&format!(
                "hearth-agent: listening on the vm link {}\n",
                path.display()
            ));
            Listener::Link(accepted)
        }
        Listen::Default => unreachable!("resolved above"),
    };
    let shared = make_shared();
    shared.restore.set_etc_dir(config.etc_dir.clone());
    let reason = loop {
        tokio::select! {
            _ = listener.accept(&shared) => {}
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = shared.shutdown.notified() => break "a SHUTDOWN request",
        }
    };
    if let Listener::Unix(bound) = &listener {
        bound.remove();
    }
    drop(listener);
    shut_down(&shared, reason).await;
    // SAFETY: sync(2) has no preconditions.
    unsafe { libc::sync() };
    std::process::exit(0);
}

enum Listener {
    Unix(listen::Bound),
    Vsock(tokio_vsock::VsockListener),
    Link(crate::vmlink::guest::Accepted),
}

/// A plain console line the host's boot watchdog waits for before its first
/// CONNECT (hearth_vmm::guest_contract::AGENT_READY_MARKER).
fn ready_marker(line: &str) {
    use std::io::Write;
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

impl Listener {
    /// Accepts one connection and starts serving it.
    async fn accept(&mut self, shared: &Arc<Shared>) {
        match self {
            Listener::Unix(b) => match b.listener.accept().await {
                Ok((stream, _)) => drop(tokio::spawn(conn::serve(stream, shared.clone()))),
                Err(e) => accept_failed(e).await,
            },
            Listener::Vsock(l) => match l.accept().await {
                Ok((stream, _)) => drop(tokio::spawn(conn::serve(stream, shared.clone()))),
                Err(e) => accept_failed(e).await,
            },
            Listener::Link(rx) => match rx.recv().await {
                Some(stream) => drop(tokio::spawn(conn::serve(stream, shared.clone()))),
                None => std::future::pending().await,
            },
        }
    }
}

/// Ends every session (TERM, [`SHUTDOWN_GRACE`], KILL) and waits for them,
/// bounded, so their `EXEC_EXIT`s can still reach the host.
async fn shut_down(shared: &Shared, reason: &str) {
    let live = shared.sessions.shut_down(SHUTDOWN_GRACE);
    tracing::info!(reason, sessions = live, "shutting down");
    let bound = SHUTDOWN_GRACE + Duration::from_secs(2);
    if tokio::time::timeout(bound, shared.sessions.all_ended())
        .await
        .is_err()
    {
        tracing::warn!("sessions still running after {bound:?}; exiting anyway");
    }
    if live > 0 {
        // Let the connection writers put the last frames on the wire.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Accept errors (EMFILE and friends) are transient: log and back off briefly.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_defaults_to_vsock_1000() {
        let c = Config::parse(&[]).unwrap();
        assert_eq!(c.listen, Listen::Default);
        assert_eq!(c.max_frame_len, DEFAULT_MAX_FRAME_LEN);
    }

    #[test]
    fn parses_unix_socket_and_frame_len() {
        let c = Config::parse(&s(&[
            "--unix-socket",
            "/tmp/a.sock",
            "--max-frame-len=100000",
        ]))
        .unwrap();
        assert_eq!(c.listen, Listen::Unix("/tmp/a.sock".into()));
        assert_eq!(c.max_frame_len, 100000);
    }

    #[test]
    fn rejects_unknown_and_missing_values() {
        assert!(Config::parse(&s(&["--bogus"])).is_err());
        assert!(Config::parse(&s(&["--vsock-port"])).is_err());
        assert!(Config::parse(&s(&["--vsock-port", "x"])).is_err());
        assert!(Config::parse(&s(&["--max-frame-len", "10"])).is_err());
    }

    #[test]
    fn capabilities_cover_every_value() {
        // Every `Capability` value the schema defines (a gap in the numbers
        // is a value someone else has yet to add).
        let every = (0..64)
            .filter_map(|v| pb::Capability::try_from(v).ok())
            .map(capability_bit)
            .fold(0, |a, b| a | b);
        assert_eq!(all_capabilities(), every);
    }
}
