//! hearth-runtime: the sandbox lifecycle as a library. Every front end (the
//! `hearth` CLI, `hearth serve`) is a thin layer over it.
//!
//! - [`Runtime`] (`runtime.rs`): open the state, list, get by id or name, and
//!   the explicit reconcile step every call runs once.
//! - [`lifecycle`]: create, start, stop, remove; disks; the boot step.
//! - [`Sandbox`] (`sandbox.rs`) and [`Agent`] (`agent.rs`): exec (collected and
//!   streaming, one [`ExecSpec`]) and files (read, write, stat, list, mkdir,
//!   remove, rename, tree copies in `files.rs`).
//! - [`exec`]: [`ExecSpec`], [`Outcome`] — the one exit-code mapping.
//! - [`logs`]: the console log and the agent's own log, snapshot or followed.
//! - [`exec`]: [`ExecSpec`], [`Outcome`] — the one exit-code mapping;
//!   [`limits`]: per-exec resource [`Limits`]; [`stats`]: guest [`Stats`].
//! - [`watch`]: file watches ([`Watch`]); [`expose`]: host listeners forwarded
//!   to guest ports ([`Exposure`]).
//! - [`pause`]: pause and resume ([`Runtime::pause`], [`Runtime::resume`]).
//! - [`restore_hooks`]: [`RestoreInfo`], `notify_restored`, `freeze_fs`, `thaw_fs`
//!   (the guest side of snapshots).
//! - [`lifetime`]: sandbox deadlines ([`Runtime::set_deadline`], [`Runtime::expired`]).
//! - [`images`]: the boot initramfs and root images (language and user images).
//! - [`state`]: the redb state DB, its records and schema migrations.
//! - [`reconcile`]: the pure rule from processes to statuses.
//! - [`host`]: host capacity, admission control, per-sandbox VMM uids.
//! - [`config`], [`progress`], [`error`], [`paths`].
//!
//! ```no_run
//! # async fn demo() -> hearth_runtime::Result<()> {
//! use std::sync::Arc;
//! use hearth_runtime::{CreateSpec, ExecSpec, NoProgress, Runtime, RuntimeConfig};
//! let mut config = RuntimeConfig::new("/var/lib/hearth");
//! config.guest_binary = Some("target/x86_64-unknown-linux-gnu/release/hearth-guest".into());
//! let rt = Runtime::open(config).await?;
//! let progress: hearth_runtime::SharedProgress = Arc::new(NoProgress);
//! let spec = CreateSpec { language: Some("python".into()), ..Default::default() };
//! let sandbox = rt.create(&spec, &progress).await?;
//! let out = sandbox.exec(&ExecSpec::argv(["python3", "-c", "print(6 * 7)"])).await?;
//! assert_eq!(&out.stdout[..], b"42\n");
//! rt.remove(sandbox.id(), false, &progress).await?;
//! # Ok(()) }
//! ```

pub mod agent;
pub mod background;
pub mod config;
pub mod error;
pub mod exec;
pub mod expose;
pub mod file_owner;
pub mod files;
pub mod host;
pub mod images;
pub mod lifecycle;
pub mod lifetime;
pub mod limits;
pub mod logs;
pub mod paths;
pub mod pause;
pub mod progress;
pub mod reconcile;
pub mod restore_hooks;
pub mod runtime;
pub mod sandbox;
pub mod snapshot;
pub mod state;
pub mod stats;
pub mod stdin_close;
pub mod warm;
pub mod watch;

pub use agent::Agent;
pub use background::{
    AttachEvent, AttachStream, DetachSpec, ProcessInfo, ProcessRef, ProcessState, PtySize,
};
pub use config::{Admission, Isolation, RuntimeConfig};
pub use error::{Error, Result};
pub use exec::{ExecExit, ExecOutput, ExecSpec, ExecStream, Outcome, StreamEvent};
pub use expose::{ExposeEvent, Exposure, Listen};
pub use lifecycle::{CreateSpec, PersistSpec, Removed};
pub use limits::{format_bytes, parse_size, Limits};
pub use logs::{LogEvent, LogFollow, LogLine, LogQuery, LogSource};
pub use progress::{NoProgress, Progress, SharedProgress, Step};
pub use restore_hooks::RestoreInfo;
pub use runtime::{ListFilter, Runtime};
pub use sandbox::Sandbox;
pub use state::{VmRecord, VmStatus};
pub use stats::{cpu_percent, Stats};
pub use watch::{Watch, WatchEvent, WatchEventKind};

pub use hearth_client::{pb, Endpoint, ExecControl};
pub use hearth_vmm::{Accel, Network, QemuConfig};
