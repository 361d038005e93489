//! hearth VMM backends.
//!
//! - [`sandbox`]: the backend-independent [`Sandbox`] / [`SandboxFactory`] traits,
//!   [`SandboxConfig`] and [`ExecRequest`].
//! - [`qemu`]: QEMU `microvm` + `vhost-device-vsock` (argv builder, detached launch,
//!   KVM probe, boot watchdog, stop).
//! - [`process`]: pid + start-time identities and pidfd signalling, so a recycled
//!   pid is never signalled.
//! - [`console`]: console log tails for error messages.
//! - `error`: [`VmmError`].

pub mod console;
pub mod error;
pub mod process;
pub mod qemu;
pub mod sandbox;

pub use error::{VmmError, MAX_CPUS, MIN_MEM_MIB};
pub use process::ProcessId;
pub use qemu::{Accel, QemuFactory, QemuSandbox, VmHandle};
pub use sandbox::{ExecRequest, Network, Sandbox, SandboxConfig, SandboxFactory};
