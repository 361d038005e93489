//! The client's error type. Retryability is decided by an exhaustive match so a
//! new variant forces a decision.

use std::io;
use std::time::Duration;

use hearth_proto::pb;

use crate::hybrid::HandshakeError;

/// Everything that can go wrong talking to an agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {input:?}: {reason}")]
    InvalidEndpoint { input: String, reason: String },

    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: io::Error,
    },

    /// The hybrid-vsock socket closed or reset before `OK`: the guest is not
    /// listening on the port yet.
    #[error("{endpoint}: the guest is not listening on the port yet ({detail})")]
    NotListening { endpoint: String, detail: String },

    #[error("{endpoint}: hybrid vsock handshake failed")]
    Handshake {
        endpoint: String,
        #[source]
        source: HandshakeError,
    },

    #[error("could not connect to {endpoint} within {timeout:?}; last error: {last}")]
    ConnectTimeout {
        endpoint: String,
        timeout: Duration,
        last: String,
    },

    #[error("the agent did not send READY within {timeout:?}")]
    ReadyTimeout { timeout: Duration },

    /// The stream ended before READY arrived (e.g. an agent that is still starting).
    #[error("the connection closed before the agent sent READY: {reason}")]
    ClosedBeforeReady { reason: String },

    #[error("agent speaks protocol version {agent}, this client speaks {client}")]
    ProtocolVersion { agent: u32, client: u32 },

    #[error("{what} is unsupported by agent {agent_version}")]
    Unsupported {
        what: &'static str,
        agent_version: String,
    },

    #[error("connection to the agent closed: {reason}")]
    ConnectionClosed { reason: String },

    /// The agent sent something that breaks the protocol for this request.
    #[error("protocol violation by the agent: {reason}")]
    Protocol { reason: String },

    /// The agent answered the request with ERROR. `message` carries the OS
    /// text of `errno`; the display adds the number once.
    #[error("{op} failed on the agent: {code:?}: {message}{}", errno_suffix(*errno))]
    Remote {
        op: &'static str,
        code: pb::ErrorCode,
        message: String,
        errno: i32,
    },

    #[error("request does not fit in a frame")]
    Encode(#[from] hearth_proto::EncodeError),

    /// A local I/O error (reading the source of an upload, writing a download).
    #[error("{op}")]
    LocalIo {
        op: String,
        #[source]
        source: io::Error,
    },
}

fn errno_suffix(errno: i32) -> String {
    if errno == 0 {
        String::new()
    } else {
        format!(" (errno {errno})")
    }
}

/// An agent message with the OS text of `errno` exactly once and no number:
/// drops the ` (os error N)` older agents wrote, and adds the text when the
/// message lacks it.
pub(crate) fn with_errno_text(message: &str, errno: i32) -> String {
    let clean = hearth_proto::strip_os_error(message);
    if errno == 0 {
        return clean;
    }
    let text = hearth_proto::errno_text(errno);
    if clean.contains(&text) {
        clean
    } else if clean.is_empty() {
        text
    } else {
        format!("{clean}: {text}")
    }
}

impl ClientError {
    /// Whether connecting again may succeed (the agent or the VM may still be
    /// starting). Used by the connect loop.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Connect { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::NotFound
                    | io::ErrorKind::ConnectionRefused
                    | io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof
                    | io::ErrorKind::TimedOut
                    | io::ErrorKind::Interrupted
            ),
            ClientError::NotListening { .. } => true,
            ClientError::ClosedBeforeReady { .. } => true,
            ClientError::InvalidEndpoint { .. }
            | ClientError::Handshake { .. }
            | ClientError::ConnectTimeout { .. }
            | ClientError::ReadyTimeout { .. }
            | ClientError::ProtocolVersion { .. }
            | ClientError::Unsupported { .. }
            | ClientError::ConnectionClosed { .. }
            | ClientError::Protocol { .. }
            | ClientError::Remote { .. }
            | ClientError::Encode(_)
            | ClientError::LocalIo { .. } => false,
        }
    }

    /// The wire error code when the agent refused the request.
    pub fn remote_code(&self) -> Option<pb::ErrorCode> {
        match self {
            ClientError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The guest errno when the agent refused the request because of one.
    pub fn remote_errno(&self) -> Option<i32> {
        match self {
            ClientError::Remote { errno, .. } if *errno != 0 => Some(*errno),
            _ => None,
        }
    }

    pub(crate) fn remote(op: &'static str, e: pb::Error) -> Self {
        ClientError::Remote {
            op,
            code: pb::ErrorCode::try_from(e.code).unwrap_or(pb::ErrorCode::Unspecified),
            message: with_errno_text(&e.message, e.errno),
            errno: e.errno,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_and_missing_sockets_are_retryable_but_permission_is_not() {
        let e = |k| ClientError::Connect {
            endpoint: "unix:/x".into(),
            source: io::Error::from(k),
        };
        assert!(e(io::ErrorKind::NotFound).is_retryable());
        assert!(e(io::ErrorKind::ConnectionRefused).is_retryable());
        assert!(!e(io::ErrorKind::PermissionDenied).is_retryable());
        assert!(ClientError::NotListening {
            endpoint: "x".into(),
            detail: "eof".into()
        }
        .is_retryable());
        assert!(!ClientError::ProtocolVersion {
            agent: 2,
            client: 1
        }
        .is_retryable());
    }

    #[test]
    fn remote_error_names_errno() {
        let e = ClientError::remote(
            "stat",
            pb::Error {
                code: pb::ErrorCode::NotFound as i32,
                message: "/nope: not found".into(),
                errno: 2,
            },
        );
        let s = e.to_string();
        assert_eq!(
            s,
            "stat failed on the agent: NotFound: /nope: not found: No such file or directory (errno 2)"
        );
        assert_eq!(e.remote_errno(), Some(2));
    }

    #[test]
    fn remote_error_says_the_errno_once() {
        for message in [
            "stat /x: No such file or directory",
            "stat /x: No such file or directory (os error 2)",
        ] {
            let e = ClientError::remote(
                "stat",
                pb::Error {
                    code: pb::ErrorCode::NotFound as i32,
                    message: message.into(),
                    errno: 2,
                },
            );
            assert_eq!(
                e.to_string(),
                "stat failed on the agent: NotFound: stat /x: No such file or directory (errno 2)"
            );
        }
    }
}
