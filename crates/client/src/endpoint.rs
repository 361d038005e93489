//! Where an agent listens: `unix:PATH`, `hybrid:PATH:PORT` (Firecracker-style
//! hybrid vsock) or `vsock:CID:PORT` (AF_VSOCK).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::error::ClientError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A plain Unix socket the agent listens on (`hearth-guest agent --unix-socket`).
    Unix(PathBuf),
    /// A Unix socket served by the VMM; the guest port is chosen with `CONNECT <port>\n`.
    Hybrid { path: PathBuf, port: u32 },
    /// A kernel AF_VSOCK address.
    Vsock { cid: u32, port: u32 },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Unix(p) => write!(f, "unix:{}", p.display()),
            Endpoint::Hybrid { path, port } => write!(f, "hybrid:{}:{port}", path.display()),
            Endpoint::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

impl FromStr for Endpoint {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| ClientError::InvalidEndpoint {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let num = |v: &str, what: &str| -> Result<u32, ClientError> {
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("{what} {v:?} is not a decimal number")));
            }
            v.parse::<u32>()
                .map_err(|_| bad(&format!("{what} {v:?} does not fit in 32 bits")))
        };
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| bad("expected unix:PATH, hybrid:PATH:PORT or vsock:CID:PORT"))?;
        match scheme {
            "unix" => {
                if rest.is_empty() {
                    return Err(bad("the socket path is empty"));
                }
                Ok(Endpoint::Unix(PathBuf::from(rest)))
            }
            "hybrid" => {
                let (path, port) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| bad("expected hybrid:PATH:PORT"))?;
                if path.is_empty() {
                    return Err(bad("the socket path is empty"));
                }
                Ok(Endpoint::Hybrid {
                    path: PathBuf::from(path),
                    port: num(port, "port")?,
                })
            }
            "vsock" => {
                let (cid, port) = rest
                    .split_once(':')
                    .ok_or_else(|| bad("expected vsock:CID:PORT"))?;
                Ok(Endpoint::Vsock {
                    cid: num(cid, "cid")?,
                    port: num(port, "port")?,
                })
            }
            other => Err(bad(&format!("unknown scheme {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_and_round_trips_display() {
        let cases = [
            ("unix:/tmp/a.sock", Endpoint::Unix("/tmp/a.sock".into())),
            (
                "hybrid:/run/vm:x/v.sock:1000",
                Endpoint::Hybrid {
                    path: "/run/vm:x/v.sock".into(),
                    port: 1000,
                },
            ),
            ("vsock:3:1000", Endpoint::Vsock { cid: 3, port: 1000 }),
        ];
        for (s, want) in cases {
            let got: Endpoint = s.parse().unwrap();
            assert_eq!(got, want, "{s}");
            assert_eq!(got.to_string(), s);
        }
    }

    #[test]
    fn refuses_bad_inputs() {
        let bad = [
            "",
            "/tmp/a.sock",
            "unix:",
            "tcp:127.0.0.1:80",
            "hybrid:/tmp/v.sock",
            "hybrid::1000",
            "hybrid:/tmp/v.sock:",
            "hybrid:/tmp/v.sock:-1",
            "hybrid:/tmp/v.sock:+5",
            "hybrid:/tmp/v.sock:4294967296",
            "vsock:3",
            "vsock::1000",
            "vsock:3:",
            "vsock:x:1000",
            "vsock:3:1000:7",
            "vsock: 3:1000",
        ];
        for s in bad {
            let r = s.parse::<Endpoint>();
            assert!(
                matches!(r, Err(ClientError::InvalidEndpoint { .. })),
                "{s:?} parsed as {r:?}"
            );
        }
    }
}
