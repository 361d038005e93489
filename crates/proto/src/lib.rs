//! hearth's wire contract, with no I/O.
//!
//! - [`frame`]: `[u32 BE length][u8 type][u32 BE seq][payload]` and the
//!   sans-I/O decoder that refuses oversize lengths before allocating.
//! - [`message`]: frame type numbers (append-only, pinned by a test), the typed
//!   [`Message`] enum, and request validation.
//! - [`pb`]: the protobuf payloads generated from `proto/hearth.proto`.
//!
//! `docs/protocol.md` at the repository root is the full text of the contract.
#![forbid(unsafe_code)]

pub mod background;
pub mod frame;
pub mod message;
pub mod mux;
pub mod restore;

/// Payload types generated from `proto/hearth.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/hearth.v1.rs"));
}

pub use frame::{DecodeError, EncodeError, Frame, FrameDecoder, DEFAULT_MAX_FRAME_LEN, HEADER_LEN};
pub use message::{
    capability_bit, env_vars, errno_text, has_capability, os_error_text, strip_os_error, Message,
    MessageError, MessageType, DEFAULT_INPUT_WINDOW, PROTOCOL_VERSION, SIGNAL_RANGE,
};

/// Version of this crate, reported as the agent version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default vsock port the agent listens on.
pub const AGENT_VSOCK_PORT: u32 = 1000;
