//! The message layer: frame type numbers and typed payloads.
//!
//! Type numbers are append-only: the reference numbers 0x00–0x06 and 0xFF are
//! fixed, new ones take the next free number. `wire_values_are_pinned` in the
//! tests fails if any number moves.

use bytes::Bytes;
use prost::Message as _;

use crate::frame::Frame;
use crate::pb;

/// Protocol version carried in `Ready`. Bumped only for incompatible changes;
/// additions are announced through capability bits instead.
pub const PROTOCOL_VERSION: u32 = 1;

/// Input credit per stream when `Ready.input_window` is 0 (see
/// `CAPABILITY_INPUT_FLOW_CONTROL`).
pub const DEFAULT_INPUT_WINDOW: u32 = 1024 * 1024;

/// Valid `ExecSignal.signal` values: Linux signal numbers.
pub const SIGNAL_RANGE: std::ops::RangeInclusive<i32> = 1..=64;

macro_rules! message_types {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal => $payload:ty, )*) => {
        /// Frame type numbers.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum MessageType {
            $( $(#[$doc])* $variant = $num, )*
        }

        impl MessageType {
            pub const ALL: &'static [MessageType] = &[$(MessageType::$variant,)*];

            pub fn from_u8(v: u8) -> Option<Self> {
                match v {
                    $( $num => Some(MessageType::$variant), )*
                    _ => None,
                }
            }

            pub fn name(self) -> &'static str {
                match self {
                    $( MessageType::$variant => stringify!($variant), )*
                }
            }
        }

        /// A decoded payload, tagged by its frame type.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Message {
            $( $(#[$doc])* $variant($payload), )*
        }

        impl Message {
            pub fn message_type(&self) -> MessageType {
                match self {
                    $( Message::$variant(_) => MessageType::$variant, )*
                }
            }

            /// Encodes the payload (without the frame header).
            pub fn encode_payload(&self) -> Bytes {
                match self {
                    $( Message::$variant(m) => Bytes::from(m.encode_to_vec()), )*
                }
            }

            /// Decodes the payload of a frame whose type is known.
            pub fn decode_payload(kind: MessageType, payload: &[u8]) -> Result<Self, MessageError> {
                match kind {
                    $( MessageType::$variant => <$payload>::decode(payload)
                        .map(Message::$variant)
                        .map_err(|e| MessageError::Decode { kind, reason: e.to_string() }), )*
                }
            }
        }
    };
}

message_types! {
    /// Guest to host, first frame on every connection.
    Ready = 0x00 => pb::Ready,
    Ping = 0x01 => pb::Ping,
    Pong = 0x02 => pb::Pong,
    /// One-shot exec with collected output.
    Exec = 0x03 => pb::Exec,
    ExecResult = 0x04 => pb::ExecResult,
    /// One-shot whole-file write.
    WriteFile = 0x05 => pb::WriteFile,
    WriteFileResult = 0x06 => pb::WriteFileResult,
    ExecStart = 0x07 => pb::ExecStart,
    ExecStarted = 0x08 => pb::ExecStarted,
    ExecStdout = 0x09 => pb::OutputChunk,
    ExecStderr = 0x0A => pb::OutputChunk,
    ExecStdin = 0x0B => pb::StdinData,
    ExecSignal = 0x0C => pb::ExecSignal,
    ExecExit = 0x0D => pb::ExecExit,
    WindowUpdate = 0x0E => pb::WindowUpdate,
    FileRead = 0x0F => pb::FileRead,
    FileData = 0x10 => pb::FileData,
    FileWrite = 0x11 => pb::FileWrite,
    Stat = 0x12 => pb::Stat,
    StatResult = 0x13 => pb::StatResult,
    ListDir = 0x14 => pb::ListDir,
    ListDirResult = 0x15 => pb::ListDirResult,
    Mkdir = 0x16 => pb::Mkdir,
    Remove = 0x17 => pb::Remove,
    Rename = 0x18 => pb::Rename,
    Ok = 0x19 => pb::Ok,
    SystemInfo = 0x1A => pb::SystemInfo,
    SystemInfoResult = 0x1B => pb::SystemInfoResult,
    Shutdown = 0x1C => pb::Shutdown,
    /// Resizes the pty of a session or attach (host to guest).
    PtyResize = 0x1D => pb::PtyResize,
    ProcessList = 0x1E => pb::ProcessList,
    ProcessListResult = 0x1F => pb::ProcessListResult,
    /// Follows a background process's output.
    Attach = 0x20 => pb::Attach,
    Attached = 0x21 => pb::Attached,
    /// Signals a background process's group; answered by OK.
    ProcessKill = 0x22 => pb::ProcessKill,
    /// Closes a background process's stdin; answered by OK.
    ProcessStdinClose = 0x23 => pb::ProcessStdinClose,
    /// The agent's own log (CAPABILITY_AGENT_LOG).
    AgentLog = 0x30 => pb::AgentLog,
    AgentLogLines = 0x31 => pb::AgentLogLines,
    /// Guest resource use (CAPABILITY_STATS).
    Stats = 0x25 => pb::Stats,
    StatsResult = 0x26 => pb::StatsResult,
    /// Opens a watch stream (its seq names it).
    Watch = 0x28 => pb::Watch,
    WatchEvent = 0x29 => pb::WatchEvent,
    /// Opens a port stream to a guest TCP port (its seq names it).
    PortOpen = 0x2A => pb::PortOpen,
    PortOpened = 0x2B => pb::PortOpened,
    /// Port stream bytes, both directions; `eof` half-closes.
    PortData = 0x2C => pb::PortData,
    /// Host to guest: end a watch or port stream.
    StreamClose = 0x2D => pb::StreamClose,
    /// Guest to host: the terminal frame of a watch or port stream.
    StreamEnd = 0x2E => pb::StreamEnd,
    /// Host to guest after a restore or fork (CAPABILITY_RESTORE_HOOKS).
    GuestRestored = 0x24 => pb::GuestRestored,
    /// Freezes or thaws guest filesystems (CAPABILITY_FS_FREEZE).
    FsFreeze = 0x27 => pb::FsFreeze,
    Error = 0xFF => pb::Error,
}

/// A frame that is well-formed at the frame layer but not a valid message.
/// The connection stays usable: answer with an `Error` frame for the same seq.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("unknown frame type {0:#04x}")]
    UnknownType(u8),
    #[error("payload of {kind:?} does not decode: {reason}")]
    Decode { kind: MessageType, reason: String },
    #[error("invalid {kind:?}: {reason}")]
    Invalid { kind: MessageType, reason: String },
}

impl MessageError {
    /// The wire error code for answering this failure.
    pub fn code(&self) -> pb::ErrorCode {
        match self {
            MessageError::UnknownType(_) => pb::ErrorCode::UnknownType,
            MessageError::Decode { .. } => pb::ErrorCode::Decode,
            MessageError::Invalid { .. } => pb::ErrorCode::InvalidArgument,
        }
    }
}

impl Message {
    /// Builds the frame for this message with the given seq.
    pub fn into_frame(&self, seq: u32) -> Frame {
        Frame::new(self.message_type() as u8, seq, self.encode_payload())
    }

    /// Decodes and validates a frame's payload.
    pub fn from_frame(frame: &Frame) -> Result<Self, MessageError> {
        let kind = MessageType::from_u8(frame.kind).ok_or(MessageError::UnknownType(frame.kind))?;
        let msg = Self::decode_payload(kind, &frame.payload)?;
        msg.validate()?;
        Ok(msg)
    }

    /// Checks invariants that the encoding cannot express.
    pub fn validate(&self) -> Result<(), MessageError> {
        let kind = self.message_type();
        let invalid = |reason: String| Err(MessageError::Invalid { kind, reason });
        match self {
            Message::Exec(m) => {
                validate_argv(&m.argv).or_else(invalid)?;
                validate_limits(m.limits.as_ref()).or_else(invalid)
            }
            Message::ExecStart(m) => {
                validate_argv(&m.argv).or_else(invalid)?;
                validate_limits(m.limits.as_ref()).or_else(invalid)?;
                crate::background::validate_start(m).or_else(invalid)
            }
            Message::PtyResize(m) => {
                crate::background::validate_size(m.rows, m.cols).or_else(invalid)
            }
            Message::Attach(m) => {
                crate::background::validate_target(m.pid, &m.tag).or_else(invalid)
            }
            Message::ProcessStdinClose(m) => {
                crate::background::validate_target(m.pid, &m.tag).or_else(invalid)
            }
            Message::ProcessKill(m) => {
                crate::background::validate_target(m.pid, &m.tag).or_else(invalid)?;
                if !SIGNAL_RANGE.contains(&m.signal) {
                    return invalid(format!("signal {} is out of range 1..=64", m.signal));
                }
                Ok(())
            }
            Message::WriteFile(m) => {
                validate_path("path", &m.path).or_else(invalid)?;
                validate_owner(m.owner.as_ref()).or_else(invalid)
            }
            Message::FileWrite(m) => {
                validate_path("path", &m.path).or_else(invalid)?;
                validate_owner(m.owner.as_ref()).or_else(invalid)
            }
            Message::FileRead(m) => validate_path("path", &m.path).or_else(invalid),
            Message::Stat(m) => validate_path("path", &m.path).or_else(invalid),
            Message::ListDir(m) => validate_path("path", &m.path).or_else(invalid),
            Message::Mkdir(m) => validate_path("path", &m.path).or_else(invalid),
            Message::Remove(m) => {
                validate_path("path", &m.path).or_else(invalid)?;
                if m.path.trim_end_matches('/').is_empty() {
                    return invalid("refusing to remove /".into());
                }
                Ok(())
            }
            Message::Rename(m) => {
                validate_path("from", &m.from).or_else(invalid)?;
                validate_path("to", &m.to).or_else(invalid)
            }
            Message::AgentLog(m) => {
                if m.since_ms < 0 {
                    return invalid(format!("since_ms {} is negative", m.since_ms));
                }
                Ok(())
            }
            Message::Watch(m) => validate_path("path", &m.path).or_else(invalid),
            Message::PortOpen(m) => {
                if m.port == 0 || m.port > u16::MAX as u32 {
                    return invalid(format!("port {} is out of range 1..=65535", m.port));
                }
                Ok(())
            }
            Message::ExecSignal(m) => {
                if !SIGNAL_RANGE.contains(&m.signal) {
                    return invalid(format!(
                        "signal {} is out of range {}..={}",
                        m.signal,
                        SIGNAL_RANGE.start(),
                        SIGNAL_RANGE.end()
                    ));
                }
                Ok(())
            }
            Message::GuestRestored(m) => {
                crate::restore::validate_guest_restored(m).or_else(invalid)
            }
            Message::FsFreeze(m) => crate::restore::validate_fs_freeze(m).or_else(invalid),
            Message::Ready(_)
            | Message::Ping(_)
            | Message::Pong(_)
            | Message::ExecResult(_)
            | Message::WriteFileResult(_)
            | Message::ExecStarted(_)
            | Message::ExecStdout(_)
            | Message::ExecStderr(_)
            | Message::ExecStdin(_)
            | Message::ExecExit(_)
            | Message::WindowUpdate(_)
            | Message::FileData(_)
            | Message::StatResult(_)
            | Message::ListDirResult(_)
            | Message::Ok(_)
            | Message::SystemInfo(_)
            | Message::SystemInfoResult(_)
            | Message::Shutdown(_)
            | Message::AgentLogLines(_)
            | Message::ProcessList(_)
            | Message::ProcessListResult(_)
            | Message::Attached(_)
            | Message::Stats(_)
            | Message::StatsResult(_)
            | Message::WatchEvent(_)
            | Message::PortOpened(_)
            | Message::PortData(_)
            | Message::StreamClose(_)
            | Message::StreamEnd(_)
            | Message::Error(_) => Ok(()),
        }
    }
}

fn validate_argv(argv: &[String]) -> Result<(), String> {
    match argv.first() {
        None => Err("argv is empty".into()),
        Some(p) if p.is_empty() => Err("argv[0] is empty".into()),
        Some(_) => match argv.iter().position(|a| a.contains('\0')) {
            Some(i) => Err(format!("argv[{i}] contains a NUL byte")),
            None => Ok(()),
        },
    }
}

/// Smallest `ResourceLimits.memory_max_bytes` (other than 0, unlimited).
pub const MIN_MEMORY_MAX: u64 = 1024 * 1024;
/// Valid `ResourceLimits.cpu_max_millicpus` (other than 0, unlimited): the
/// kernel's smallest quota (1 ms per 100 ms period) up to 1000 CPUs.
pub const CPU_MILLIS_RANGE: std::ops::RangeInclusive<u32> = 10..=1_000_000;

fn validate_limits(l: Option<&pb::ResourceLimits>) -> Result<(), String> {
    let Some(l) = l else { return Ok(()) };
    if l.memory_max_bytes != 0 && l.memory_max_bytes < MIN_MEMORY_MAX {
        return Err(format!(
            "limits.memory_max_bytes {} is below the minimum {MIN_MEMORY_MAX} (1 MiB)",
            l.memory_max_bytes
        ));
    }
    if l.cpu_max_millicpus != 0 && !CPU_MILLIS_RANGE.contains(&l.cpu_max_millicpus) {
        return Err(format!(
            "limits.cpu_max_millicpus {} is out of range {}..={}",
            l.cpu_max_millicpus,
            CPU_MILLIS_RANGE.start(),
            CPU_MILLIS_RANGE.end()
        ));
    }
    Ok(())
}

/// A file owner: uid and gid -1 mean "unchanged" to chown(2), so they are
/// refused rather than silently leaving root's.
fn validate_owner(o: Option<&pb::FileOwner>) -> Result<(), String> {
    match o {
        Some(o) if o.uid == u32::MAX || o.gid == u32::MAX => Err(format!(
            "owner uid {} gid {}: 4294967295 is not an owner",
            o.uid, o.gid
        )),
        _ => Ok(()),
    }
}

fn validate_path(field: &str, path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if !path.starts_with('/') {
        return Err(format!("{field} {path:?} is not absolute"));
    }
    if path.contains('\0') {
        return Err(format!("{field} contains a NUL byte"));
    }
    Ok(())
}

/// Capability bit for a `Capability` value.
pub fn capability_bit(c: pb::Capability) -> u64 {
    1u64 << (c as i32 as u32)
}

/// Whether a `Ready.capabilities` set has `c`.
pub fn has_capability(caps: u64, c: pb::Capability) -> bool {
    caps & capability_bit(c) != 0
}

/// `KEY=VALUE` pairs as the wire's `EnvVar` list, order kept.
pub fn env_vars<K: AsRef<str>, V: AsRef<str>>(
    pairs: impl IntoIterator<Item = (K, V)>,
) -> Vec<pb::EnvVar> {
    pairs
        .into_iter()
        .map(|(k, v)| pb::EnvVar {
            key: k.as_ref().to_owned(),
            value: v.as_ref().to_owned(),
        })
        .collect()
}

/// The OS text for an errno without the number, e.g. `No such file or
/// directory`. Messages on the wire carry the text; the number travels only in
/// the `errno` field, so whoever shows both says it once.
pub fn errno_text(errno: i32) -> String {
    os_error_text(&std::io::Error::from_raw_os_error(errno))
}

/// An I/O error's text without Rust's ` (os error N)` suffix.
pub fn os_error_text(e: &std::io::Error) -> String {
    strip_os_error(&e.to_string())
}

/// Removes every ` (os error N)` from `s`.
pub fn strip_os_error(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(" (os error ") {
        let tail = &rest[i + " (os error ".len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && tail[digits..].starts_with(')') {
            out.push_str(&rest[..i]);
            rest = &tail[digits + 1..];
        } else {
            out.push_str(&rest[..i + 1]);
            rest = &rest[i + 1..];
        }
    }
    out.push_str(rest);
    out
}

/// Builds an `Error` message.
pub fn error(code: pb::ErrorCode, message: impl Into<String>, errno: i32) -> Message {
    Message::Error(pb::Error {
        code: code as i32,
        message: message.into(),
        errno,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_are_pinned() {
        use MessageType::*;
        let pinned: &[(MessageType, u8)] = &[
            (Ready, 0x00),
            (Ping, 0x01),
            (Pong, 0x02),
            (Exec, 0x03),
            (ExecResult, 0x04),
            (WriteFile, 0x05),
            (WriteFileResult, 0x06),
            (ExecStart, 0x07),
            (ExecStarted, 0x08),
            (ExecStdout, 0x09),
            (ExecStderr, 0x0A),
            (ExecStdin, 0x0B),
            (ExecSignal, 0x0C),
            (ExecExit, 0x0D),
            (WindowUpdate, 0x0E),
            (FileRead, 0x0F),
            (FileData, 0x10),
            (FileWrite, 0x11),
            (Stat, 0x12),
            (StatResult, 0x13),
            (ListDir, 0x14),
            (ListDirResult, 0x15),
            (Mkdir, 0x16),
            (Remove, 0x17),
            (Rename, 0x18),
            (Ok, 0x19),
            (SystemInfo, 0x1A),
            (SystemInfoResult, 0x1B),
            (Shutdown, 0x1C),
            (PtyResize, 0x1D),
            (ProcessList, 0x1E),
            (ProcessListResult, 0x1F),
            (Attach, 0x20),
            (Attached, 0x21),
            (ProcessKill, 0x22),
            (ProcessStdinClose, 0x23),
            (AgentLog, 0x30),
            (AgentLogLines, 0x31),
            (Stats, 0x25),
            (StatsResult, 0x26),
            (Watch, 0x28),
            (WatchEvent, 0x29),
            (PortOpen, 0x2A),
            (PortOpened, 0x2B),
            (PortData, 0x2C),
            (StreamClose, 0x2D),
            (StreamEnd, 0x2E),
            (GuestRestored, 0x24),
            (FsFreeze, 0x27),
            (Error, 0xFF),
        ];
        assert_eq!(
            pinned.len(),
            MessageType::ALL.len(),
            "a new type needs a pin"
        );
        for (t, v) in pinned {
            assert_eq!(*t as u8, *v, "{t:?} moved");
            assert_eq!(MessageType::from_u8(*v), Some(*t));
        }
    }

    #[test]
    fn enum_and_capability_values_are_pinned() {
        use pb::{Capability as C, ErrorCode as E, FileKind as F, SpawnErrorKind as S};
        assert_eq!(
            [
                C::OneshotExec,
                C::ExecStream,
                C::Files,
                C::SystemInfo,
                C::Shutdown,
                C::FlowControl,
                C::InputFlowControl,
            ]
            .map(|c| c as i32),
            [0, 1, 2, 3, 4, 5, 6]
        );
        assert_eq!(C::AgentLog as i32, 13);
        assert_eq!([C::Pty, C::Background].map(|c| c as i32), [7, 8]);
        assert_eq!([C::ExecLimits, C::Stats].map(|c| c as i32), [9, 10]);
        assert_eq!([C::RestoreHooks, C::FsFreeze].map(|c| c as i32), [16, 17]);
        assert_eq!(
            [
                pb::FsFreezeAction::Freeze as i32,
                pb::FsFreezeAction::Thaw as i32
            ],
            [1, 2]
        );
        assert_eq!(
            [
                E::BadFrame,
                E::UnknownType,
                E::Decode,
                E::InvalidArgument,
                E::NotFound,
                E::PermissionDenied,
                E::AlreadyExists,
                E::Io,
                E::UnknownSession,
                E::DuplicateSeq,
                E::NoSpace,
                E::Unsupported,
                E::Internal,
                E::FlowControl,
                E::ShuttingDown
            ]
            .map(|c| c as i32),
            [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        );
        assert_eq!(
            [
                S::NotFound,
                S::PermissionDenied,
                S::BadCwd,
                S::BadUser,
                S::InvalidArgument,
                S::ResourceLimit,
                S::Other
            ]
            .map(|c| c as i32),
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(
            [F::File, F::Dir, F::Symlink, F::Other].map(|c| c as i32),
            [1, 2, 3, 4]
        );
    }

    #[test]
    fn ping_payload_bytes_are_pinned() {
        let f = Message::Ping(pb::Ping { nonce: 5 }).into_frame(3);
        assert_eq!(f.kind, 0x01);
        assert_eq!(&f.payload[..], &[0x08, 0x05]);
    }

    #[test]
    fn exec_round_trips_through_a_frame() {
        let m = Message::Exec(pb::Exec {
            argv: vec!["/bin/echo".into(), "hi".into()],
            timeout_ms: 1000,
            ..Default::default()
        });
        let f = m.into_frame(42);
        assert_eq!(Message::from_frame(&f).unwrap(), m);
    }

    #[test]
    fn unknown_type_is_a_message_error() {
        let f = Frame::new(0x7e, 1, Bytes::new());
        assert_eq!(
            Message::from_frame(&f),
            Err(MessageError::UnknownType(0x7e))
        );
    }

    #[test]
    fn undecodable_payload_is_a_message_error() {
        let f = Frame::new(0x03, 1, Bytes::from_static(&[0xff, 0xff, 0xff]));
        assert!(matches!(
            Message::from_frame(&f),
            Err(MessageError::Decode { .. })
        ));
    }

    #[test]
    fn validation_rejects_bad_requests() {
        let bad = [
            Message::Exec(pb::Exec::default()),
            Message::ExecStart(pb::ExecStart {
                argv: vec!["".into()],
                ..Default::default()
            }),
            Message::WriteFile(pb::WriteFile {
                path: "relative".into(),
                ..Default::default()
            }),
            Message::Remove(pb::Remove {
                path: "/".into(),
                recursive: true,
            }),
            Message::ExecSignal(pb::ExecSignal { signal: 0 }),
            Message::Watch(pb::Watch {
                path: "rel".into(),
                ..Default::default()
            }),
            Message::PortOpen(pb::PortOpen {
                port: 0,
                ..Default::default()
            }),
            Message::PortOpen(pb::PortOpen {
                port: 65536,
                ..Default::default()
            }),
            Message::FileWrite(pb::FileWrite {
                path: "/f".into(),
                owner: Some(pb::FileOwner {
                    uid: u32::MAX,
                    gid: 0,
                }),
                ..Default::default()
            }),
            Message::WriteFile(pb::WriteFile {
                path: "/f".into(),
                owner: Some(pb::FileOwner {
                    uid: 1000,
                    gid: u32::MAX,
                }),
                ..Default::default()
            }),
        ];
        for m in bad {
            assert!(
                matches!(m.validate(), Err(MessageError::Invalid { .. })),
                "{m:?}"
            );
        }
    }

    #[test]
    fn new_fields_keep_their_numbers() {
        use prost::Message as _;
        // Field numbers are part of the contract: tag = number << 3 | wire type.
        let ready = pb::Ready {
            input_window: 1,
            ..Default::default()
        };
        assert_eq!(ready.encode_to_vec(), [7 << 3, 1]);
        let start = pb::ExecStart {
            input_credit: true,
            ..Default::default()
        };
        assert_eq!(start.encode_to_vec(), [12 << 3, 1]);
        let write = pb::FileWrite {
            input_credit: true,
            ..Default::default()
        };
        assert_eq!(write.encode_to_vec(), [5 << 3, 1]);
        // FileOwner{uid: 1, gid: 0} as field 6 of FILE_WRITE and 5 of WRITE_FILE.
        let owner = Some(pb::FileOwner { uid: 1, gid: 0 });
        let write = pb::FileWrite {
            owner,
            ..Default::default()
        };
        assert_eq!(write.encode_to_vec(), [6 << 3 | 2, 2, 1 << 3, 1]);
        let whole = pb::WriteFile {
            owner,
            ..Default::default()
        };
        assert_eq!(whole.encode_to_vec(), [5 << 3 | 2, 2, 1 << 3, 1]);
        assert!(Message::FileWrite(pb::FileWrite {
            path: "/f".into(),
            owner,
            ..Default::default()
        })
        .validate()
        .is_ok());
    }

    #[test]
    fn limit_fields_keep_their_numbers() {
        use prost::Message as _;
        let limits = Some(pb::ResourceLimits {
            pids_max: 1,
            ..Default::default()
        });
        let start = pb::ExecStart {
            limits,
            ..Default::default()
        };
        // Field 17: a two-byte tag (17 << 3 | 2 = 0x8a 0x01), length 2, pids_max.
        assert_eq!(start.encode_to_vec(), [0x8a, 0x01, 2, 2 << 3, 1]);
        let exec = pb::Exec {
            limits,
            ..Default::default()
        };
        assert_eq!(exec.encode_to_vec(), [10 << 3 | 2, 2, 2 << 3, 1]);
        let outcome = pb::ExecOutcome {
            kind: Some(pb::exec_outcome::Kind::OomKilled(pb::OomKilled::default())),
        };
        assert_eq!(outcome.encode_to_vec(), [5 << 3 | 2, 0]);
    }

    #[test]
    fn bad_limits_are_refused_naming_the_value() {
        let start = |l: pb::ResourceLimits| {
            Message::ExecStart(pb::ExecStart {
                argv: vec!["true".into()],
                limits: Some(l),
                ..Default::default()
            })
            .validate()
        };
        let err = start(pb::ResourceLimits {
            memory_max_bytes: 4096,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("4096"), "{err}");
        let err = start(pb::ResourceLimits {
            cpu_max_millicpus: 5,
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("cpu_max_millicpus 5"), "{err}");
        assert!(start(pb::ResourceLimits {
            memory_max_bytes: MIN_MEMORY_MAX,
            pids_max: 1,
            cpu_max_millicpus: 10,
        })
        .is_ok());
        assert!(start(pb::ResourceLimits::default()).is_ok());
        let exec = Message::Exec(pb::Exec {
            argv: vec!["true".into()],
            limits: Some(pb::ResourceLimits {
                memory_max_bytes: 1,
                ..Default::default()
            }),
            ..Default::default()
        });
        assert!(matches!(exec.validate(), Err(MessageError::Invalid { .. })));
    }

    #[test]
    fn watch_and_port_values_are_pinned() {
        use pb::{StreamEndReason as R, WatchEventKind as K};
        assert_eq!(
            [pb::Capability::Watch, pb::Capability::PortForward].map(|c| c as i32),
            [11, 12]
        );
        assert_eq!(
            [
                K::Started,
                K::Create,
                K::Write,
                K::Remove,
                K::Rename,
                K::Attrib,
                K::Overflow
            ]
            .map(|k| k as i32),
            [1, 2, 3, 4, 5, 6, 7]
        );
        assert_eq!(
            [R::Closed, R::RootGone, R::Finished, R::Failed].map(|r| r as i32),
            [1, 2, 3, 4]
        );
        let w = pb::Watch {
            queue_limit: 1,
            window: 1,
            ..Default::default()
        };
        assert_eq!(w.encode_to_vec(), [3 << 3, 1, 4 << 3, 1]);
        let p = pb::PortOpen {
            port: 1,
            window: 1,
            input_credit: true,
        };
        assert_eq!(p.encode_to_vec(), [1 << 3, 1, 2 << 3, 1, 3 << 3, 1]);
        let r = Message::PortOpen(pb::PortOpen {
            port: 70000,
            ..Default::default()
        })
        .validate();
        assert!(
            matches!(&r, Err(MessageError::Invalid { reason, .. }) if reason.contains("70000")),
            "{r:?}"
        );
    }

    #[test]
    fn errno_text_has_no_number() {
        assert_eq!(errno_text(2), "No such file or directory");
        assert_eq!(
            strip_os_error("open /x: No such file or directory (os error 2) (os error x)"),
            "open /x: No such file or directory (os error x)"
        );
        assert_eq!(strip_os_error("plain"), "plain");
    }

    #[test]
    fn signals_outside_the_linux_range_are_refused() {
        for (sig, ok) in [(0, false), (1, true), (64, true), (65, false), (-9, false)] {
            let r = Message::ExecSignal(pb::ExecSignal { signal: sig }).validate();
            assert_eq!(r.is_ok(), ok, "signal {sig}: {r:?}");
        }
    }

    #[test]
    fn capability_bits() {
        let caps =
            capability_bit(pb::Capability::ExecStream) | capability_bit(pb::Capability::Files);
        assert_eq!(caps, 0b110);
        assert!(has_capability(caps, pb::Capability::Files));
        assert!(!has_capability(caps, pb::Capability::Shutdown));
    }
}
