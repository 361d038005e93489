//! Errors of the VMM backends.

use std::path::PathBuf;

/// Smallest guest memory accepted: the Debian cloud kernel plus the initramfs do not
/// boot reliably below it.
pub const MIN_MEM_MIB: u32 = 128;
/// Largest vCPU count accepted (QEMU microvm and a sane host).
pub const MAX_CPUS: u32 = 64;

#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    #[error("guest memory {mem_mib} MiB is below the minimum of {min} MiB")]
    MemoryTooSmall { mem_mib: u32, min: u32 },
    #[error("cpu count {cpus} is out of range (1..={max})")]
    BadCpuCount { cpus: u32, max: u32 },
    #[error("unknown network mode {0:?} (valid: none, allow_all)")]
    UnsupportedNetwork(String),
    #[error("{what} not found: {}", .path.display())]
    DiskMissing { what: &'static str, path: PathBuf },
    #[error("kernel not found: {}", .0.display())]
    KernelMissing(PathBuf),
    #[error("initramfs not found: {}", .0.display())]
    InitrdMissing(PathBuf),
    #[error("the link proxy {} (the static hearth-guest binary) does not exist", .0.display())]
    ProxyNotFound(std::path::PathBuf),
    #[error("cannot restore vm {id} from its snapshot: {reason}")]
    RestoreFailed { id: String, reason: String },
    #[error("cannot snapshot vm {id}: {reason}")]
    SnapshotFailed { id: String, reason: String },
    #[error("{0} not found; install it (Debian: apt-get install qemu-system-x86)")]
    QemuNotFound(String),
    #[error("{context}: {path}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the link proxy did not create {} within {secs} s{log}", .socket.display())]
    ProxyTimeout {
        socket: PathBuf,
        secs: u64,
        log: String,
    },
    #[error("vm {id} did not become ready: {reason}\n--- last console lines ({console_path}) ---\n{console}")]
    BootFailed {
        id: String,
        reason: String,
        console_path: String,
        console: String,
    },
    #[error("vm {id} is not running (its VMM process is gone)")]
    NotRunning { id: String },
    #[error("running the vmm as uid {uid} needs root (this process has euid {euid})")]
    JailNeedsRoot { uid: u32, euid: u32 },
    #[error("vmm uid {0} is reserved (not 0, not 4294967295)")]
    JailBadUid(u32),
    #[error("{} cannot be given to the jailed vmm: {reason}", .path.display())]
    JailUnsafeFile { path: PathBuf, reason: &'static str },
    #[error("cannot jail {program}: {step}")]
    JailSetup {
        program: String,
        step: String,
        #[source]
        source: std::io::Error,
    },
    #[error("a sandbox handle of backend {backend} v{version} cannot be used by {expected}")]
    ForeignHandle {
        backend: String,
        version: u32,
        expected: String,
    },
    #[error("a {backend} sandbox handle is unreadable: {reason}")]
    BadHandle { backend: String, reason: String },
    #[error("vm {id}: qemu monitor request failed")]
    Qmp {
        id: String,
        #[source]
        source: crate::qemu::qmp::QmpError,
    },
    #[error("vm {id} has no qemu monitor socket at {} (booted by an older hearth?); stop and start it to get one", .path.display())]
    NoMonitor { id: String, path: PathBuf },
    #[error("vm {id}: agent connection failed")]
    Client {
        id: String,
        #[source]
        source: hearth_client::ClientError,
    },
}

impl VmmError {
    pub(crate) fn io(
        context: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            context,
            path: path.into(),
            source,
        }
    }
}
