//! The Firecracker-style hybrid vsock handshake: the host writes
//! `CONNECT <port>\n` on the VMM's Unix socket and reads `OK <assigned>\n`.
//! The number after `OK` is the host-side port the VMM assigned, not
//! necessarily the guest port.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest reply line we accept, newline included.
pub const MAX_REPLY_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("reply {0:?} does not start with \"OK \"")]
    NotOk(String),
    #[error("reply {0:?} has no valid port number")]
    BadPort(String),
    #[error("reply is longer than {MAX_REPLY_LEN} bytes without a newline")]
    TooLong,
}

/// Parses one whole reply line (including the trailing `\n`).
pub fn parse_ok(line: &[u8]) -> Result<u32, HandshakeError> {
    let shown = || String::from_utf8_lossy(line).into_owned();
    if line.len() > MAX_REPLY_LEN {
        return Err(HandshakeError::TooLong);
    }
    let body = line
        .strip_suffix(b"\n")
        .ok_or_else(|| HandshakeError::BadPort(shown()))?;
    let num = body
        .strip_prefix(b"OK ")
        .ok_or_else(|| HandshakeError::NotOk(shown()))?;
    if num.is_empty() || !num.iter().all(u8::is_ascii_digit) {
        return Err(HandshakeError::BadPort(shown()));
    }
    std::str::from_utf8(num)
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| HandshakeError::BadPort(shown()))
}

/// What went wrong during the handshake, before it is given an endpoint name.
#[derive(Debug)]
pub enum HandshakeFailure {
    /// EOF or reset before `OK`: nothing listens on the port yet.
    NotListening(String),
    Bad(HandshakeError),
    Io(std::io::Error),
}

/// Runs the handshake on `s`. Reads one byte at a time so no byte after the
/// newline (the agent's READY frame) is consumed.
pub async fn handshake<S>(s: &mut S, port: u32) -> Result<u32, HandshakeFailure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let req = format!("CONNECT {port}\n");
    if let Err(e) = s.write_all(req.as_bytes()).await {
        return Err(classify(e));
    }
    let mut line = Vec::with_capacity(MAX_REPLY_LEN);
    loop {
        let mut b = [0u8; 1];
        match s.read(&mut b).await {
            Ok(0) => {
                return Err(HandshakeFailure::NotListening(format!(
                    "end of stream after {} reply bytes",
                    line.len()
                )))
            }
            Ok(_) => {
                line.push(b[0]);
                if b[0] == b'\n' {
                    return parse_ok(&line).map_err(HandshakeFailure::Bad);
                }
                if line.len() >= MAX_REPLY_LEN {
                    return Err(HandshakeFailure::Bad(HandshakeError::TooLong));
                }
            }
            Err(e) => return Err(classify(e)),
        }
    }
}

fn classify(e: std::io::Error) -> HandshakeFailure {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionReset | BrokenPipe | ConnectionAborted | UnexpectedEof => {
            HandshakeFailure::NotListening(e.to_string())
        }
        _ => HandshakeFailure::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ok_lines() {
        assert_eq!(parse_ok(b"OK 1000\n"), Ok(1000));
        assert_eq!(parse_ok(b"OK 1073741824\n"), Ok(1073741824));
        assert_eq!(parse_ok(b"OK 0\n"), Ok(0));
    }

    #[test]
    fn refuses_bad_replies() {
        type Check = fn(&HandshakeError) -> bool;
        let table: &[(&[u8], Check)] = &[
            (b"", |e| matches!(e, HandshakeError::BadPort(_))),
            (b"\n", |e| matches!(e, HandshakeError::NotOk(_))),
            (b"OK\n", |e| matches!(e, HandshakeError::NotOk(_))),
            (b"OK \n", |e| matches!(e, HandshakeError::BadPort(_))),
            (b"OK 1000", |e| matches!(e, HandshakeError::BadPort(_))),
            (b"ok 1000\n", |e| matches!(e, HandshakeError::NotOk(_))),
            (b"OK  1000\n", |e| matches!(e, HandshakeError::BadPort(_))),
            (b"OK 1000 \n", |e| matches!(e, HandshakeError::BadPort(_))),
            (b"OK -1\n", |e| matches!(e, HandshakeError::BadPort(_))),
            (b"OK 0x10\n", |e| matches!(e, HandshakeError::BadPort(_))),
            (b"OK 4294967296\n", |e| {
                matches!(e, HandshakeError::BadPort(_))
            }),
            (b"OK 10\r\n", |e| matches!(e, HandshakeError::BadPort(_))),
            (b"ERR 1000\n", |e| matches!(e, HandshakeError::NotOk(_))),
            (b"OK 1\n\n", |e| matches!(e, HandshakeError::BadPort(_))),
            (&[b'O', b'K', b' ', 0xff, b'\n'], |e| {
                matches!(e, HandshakeError::BadPort(_))
            }),
            (b"OK 111111111111111111111111111111111\n", |e| {
                matches!(e, HandshakeError::TooLong)
            }),
        ];
        for (input, want) in table {
            let got = parse_ok(input);
            match &got {
                Err(e) if want(e) => {}
                other => panic!("{:?}: got {other:?}", String::from_utf8_lossy(input)),
            }
        }
    }

    #[tokio::test]
    async fn handshake_stops_at_newline_and_keeps_following_bytes() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let peer = tokio::spawn(async move {
            let mut req = [0u8; 13];
            b.read_exact(&mut req).await.unwrap();
            assert_eq!(&req, b"CONNECT 1000\n");
            b.write_all(b"OK 77\nREST").await.unwrap();
            b
        });
        assert_eq!(handshake(&mut a, 1000).await.unwrap(), 77);
        let _b = peer.await.unwrap();
        let mut rest = [0u8; 4];
        a.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"REST");
    }

    #[tokio::test]
    async fn eof_before_ok_means_not_listening() {
        let (mut a, b) = tokio::io::duplex(64);
        drop(b);
        assert!(matches!(
            handshake(&mut a, 1000).await,
            Err(HandshakeFailure::NotListening(_)) | Err(HandshakeFailure::Io(_))
        ));
    }

    #[tokio::test]
    async fn overlong_reply_is_refused() {
        let (mut a, mut b) = tokio::io::duplex(128);
        tokio::spawn(async move {
            let mut req = [0u8; 13];
            let _ = b.read_exact(&mut req).await;
            let _ = b.write_all(&[b'A'; 100]).await;
            b
        });
        assert!(matches!(
            handshake(&mut a, 1000).await,
            Err(HandshakeFailure::Bad(HandshakeError::TooLong))
        ));
    }
}
