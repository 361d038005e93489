//! hearth host client: talks to the guest agent over a plain Unix socket, a
//! Firecracker-style hybrid vsock socket or AF_VSOCK, with the same code.
//!
//! - [`endpoint`]: `unix:PATH`, `hybrid:PATH:PORT`, `vsock:CID:PORT`.
//! - [`hybrid`]: the `CONNECT <port>\n` / `OK <port>\n` handshake (pure parser).
//! - `transport`: connecting each kind, bounded retries under one deadline.
//! - `conn`: [`Client`] — reader task (frame decode with a length cap, demux by
//!   seq), writer task, seq allocation, READY and version check.
//! - `exec`: one-shot exec and streaming sessions ([`ExecHandle`], flow control).
//! - `credit`: input credit the agent grants for stdin and uploads.
//! - `background`: detached execs, process list, attach, kill.
//! - `files`: chunked file read/write, stat, list, mkdir, remove, rename.
//! - `ops`: ping, system info, shutdown.
//! - `logs`: the agent's own log, as a snapshot or followed.
//! - `stats`: guest resource use (`STATS`); `limits`: byte sizes for exec
//!   resource limits.
//! - `watch`: file watch streams ([`WatchStream`]); `port`: port streams to
//!   guest TCP ports ([`PortStream`]).
//! - `restore_hooks`: `GUEST_RESTORED` and `FS_FREEZE` (snapshots).
//! - [`error`]: [`ClientError`] and its retryability.

mod background;
mod conn;
#[cfg(test)]
mod conn_tests;
mod credit;
pub mod endpoint;
pub mod error;
mod exec;
mod files;
pub mod hybrid;
mod limits;
mod logs;
mod ops;
mod port;
mod restore_hooks;
mod stats;
mod stdin_close;
mod transport;
mod watch;

pub use background::{Detached, ProcessRef};
pub use conn::{Client, ConnectOptions};
pub use endpoint::Endpoint;
pub use error::ClientError;
pub use exec::{
    describe_outcome, errno_text, exit_code, ExecControl, ExecEvent, ExecHandle,
    DEFAULT_EXEC_WINDOW,
};
pub use hearth_proto::pb;
pub use limits::{format_bytes, parse_size, SizeError};
pub use logs::{AgentLogBatch, AgentLogFollow};
pub use port::{PortEnd, PortStream, PORT_WINDOW};
pub use watch::{WatchOptions, WatchStream, DEFAULT_WATCH_WINDOW};
