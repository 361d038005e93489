//! hearth VMM backends.
//!
//! - [`backend`]: the [`Backend`] trait the runtime drives, and the versioned,
//!   backend-neutral [`BackendHandle`] it stores.
//! - [`sandbox`]: [`SandboxConfig`], what a sandbox is made of.
//! - [`qemu`]: QEMU `microvm` + the VM link proxy (argv builder, detached launch,
//!   KVM probe, boot watchdog, stop; the QMP client `qemu::qmp` and pause/resume
//!   `qemu::pause`).
//! - [`process`]: pid + start-time identities and pidfd signalling, so a recycled
//!   pid is never signalled.
//! - [`console`]: reading the console log (tails for error messages, `logs`).
//! - [`console_log`]: the console logger process (timestamped, rotated, bounded).
//! - [`guest_contract`]: the `hearth.*` kernel command line words the guest's init
//!   understands (disk serials, root overlay, persist volume, network).
//! - `error`: [`VmmError`].

pub mod backend;
pub mod console;
pub mod console_log;
pub mod error;
pub mod guest_contract;
pub mod process;
pub mod qemu;
pub mod sandbox;

pub use backend::{Backend, BackendHandle, Booted, Health, SnapshotStats};
pub use error::{VmmError, MAX_CPUS, MIN_MEM_MIB};
pub use guest_contract::{GuestSpec, LowerFs};
pub use process::ProcessId;
pub use qemu::backend::{QemuBackend, QemuConfig};
pub use qemu::{Accel, QemuFactory, VmHandle};
pub use sandbox::{Network, RootDisks, SandboxConfig};
