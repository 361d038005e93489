//! Port streams (`PORT_OPEN`, needs `CAPABILITY_PORT_FORWARD`): one TCP
//! connection to 127.0.0.1:PORT in the guest, pumped to and from a local
//! stream with credit both ways and half-close.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hearth_proto::{pb, Message};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::conn::{unexpected, Client, Reply, StreamKind, StreamSpec};
use crate::credit::{Ended, InputCredit};
use crate::error::ClientError;

/// Credit granted to the agent per port stream (guest-to-host bytes).
pub const PORT_WINDOW: u32 = 4 * 1024 * 1024;
/// Largest host-to-guest chunk.
const UP_CHUNK: usize = 128 * 1024;

/// How a port stream ended and what it carried.
#[derive(Debug, Clone, Default)]
pub struct PortEnd {
    /// `STREAM_END` from the agent.
    pub end: pb::StreamEnd,
    /// Bytes sent to the guest port.
    pub to_guest: u64,
    /// Bytes received from the guest port.
    pub from_guest: u64,
    /// An error the agent reported about the stream before it ended.
    pub report: Option<String>,
}

/// A connected port stream (the agent's connect succeeded).
pub struct PortStream {
    client: Client,
    seq: u32,
    rx: UnboundedReceiver<Reply>,
    credit: Option<Arc<AtomicI64>>,
    input: Option<Arc<InputCredit>>,
    ended: bool,
}

impl Client {
    /// Asks the agent to connect to 127.0.0.1:`port` in the guest. A refused
    /// connect is `Err(Remote { .. })` with the guest's errno.
    pub async fn port_connect(&self, port: u16) -> Result<PortStream, ClientError> {
        self.require(pb::Capability::PortForward, "port forwarding")?;
        let credit = self
            .flow_control()
            .then(|| Arc::new(AtomicI64::new(PORT_WINDOW as i64)));
        let input = self.input_credit();
        let req = Message::PortOpen(pb::PortOpen {
            port: port as u32,
            window: PORT_WINDOW,
            input_credit: input.is_some(),
        });
        let spec = StreamSpec {
            kind: StreamKind::Port { started: false },
            credit: credit.clone(),
            input: input.clone(),
        };
        let (seq, rx) = self.open_stream(req, spec).await?;
        let mut s = PortStream {
            client: self.clone(),
            seq,
            rx,
            credit,
            input,
            ended: false,
        };
        match s.recv().await? {
            Message::PortOpened(_) => Ok(s),
            m => {
                s.ended = true;
                Err(unexpected("port connect", m))
            }
        }
    }
}

impl PortStream {
    async fn recv(&mut self) -> Result<Message, ClientError> {
        match self.rx.recv().await {
            Some(Ok(m)) => Ok(m),
            Some(Err(e)) => {
                self.ended = true;
                Err(e)
            }
            None => {
                self.ended = true;
                Err(ClientError::ConnectionClosed {
                    reason: "the port stream's route was dropped".into(),
                })
            }
        }
    }

    async fn close_frame(&self) -> Result<(), ClientError> {
        let m = Message::StreamClose(pb::StreamClose {});
        self.client.send_frame(m.into_frame(self.seq)).await
    }

    /// Ends the stream now (the agent closes the guest connection) and waits
    /// for its `STREAM_END`.
    pub async fn close(mut self) -> Result<PortEnd, ClientError> {
        self.close_frame().await?;
        let mut out = PortEnd::default();
        loop {
            match self.recv().await? {
                Message::PortData(d) => out.from_guest += d.data.len() as u64,
                Message::Error(e) => out.report = Some(e.message),
                Message::StreamEnd(end) => {
                    self.ended = true;
                    out.end = end;
                    return Ok(out);
                }
                m => {
                    self.ended = true;
                    return Err(unexpected("port stream", m));
                }
            }
        }
    }

    /// Copies `local` to the guest port and back until both sides are done
    /// (or one fails); half-closes each way on EOF. The two directions run
    /// independently, so a local peer that writes everything before it reads
    /// does not deadlock against a guest that answers early.
    pub async fn pump<S>(mut self, local: S) -> Result<PortEnd, ClientError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin,
    {
        let (lr, lw) = tokio::io::split(local);
        let chunk = UP_CHUNK
            .min(self.client.max_payload().saturating_sub(64))
            .max(1);
        let mut out = PortEnd::default();
        let sent = AtomicU64::new(0);
        let r = {
            let up = up(
                &self.client,
                self.seq,
                self.input.as_deref(),
                lr,
                chunk,
                &sent,
            );
            let down = down(
                &self.client,
                self.seq,
                &mut self.rx,
                self.credit.as_deref(),
                lw,
                &mut out,
            );
            tokio::pin!(up, down);
            let mut up_done = false;
            loop {
                tokio::select! {
                    r = &mut down => break r,
                    r = &mut up, if !up_done => {
                        up_done = true;
                        if let Err(e) = r {
                            break Err(e);
                        }
                    }
                }
            }
        };
        // STREAM_END came, or the route or the connection failed: either way
        // nothing more comes for this seq.
        self.ended = true;
        out.to_guest = sent.load(Ordering::Relaxed);
        r.map(|()| out)
    }
}

/// Sends `data` (then `eof`) as PORT_DATA within the input credit. False when
/// the stream already ended on the agent.
async fn send_data(
    client: &Client,
    seq: u32,
    input: Option<&InputCredit>,
    mut data: Bytes,
    eof: bool,
) -> Result<bool, ClientError> {
    loop {
        let n = match input {
            Some(c) if !data.is_empty() => match c.reserve(data.len()).await {
                Ok(n) => n,
                Err(Ended::Finished) => return Ok(false),
                Err(Ended::Closed(reason)) => return Err(ClientError::ConnectionClosed { reason }),
            },
            _ => data.len(),
        };
        let piece = data.split_to(n);
        let last = data.is_empty();
        let m = Message::PortData(pb::PortData {
            data: piece,
            eof: eof && last,
        });
        client.send_frame(m.into_frame(seq)).await?;
        if last {
            return Ok(true);
        }
    }
}

fn close_frame(seq: u32) -> hearth_proto::Frame {
    Message::StreamClose(pb::StreamClose {}).into_frame(seq)
}

/// Local → guest until local EOF (then `eof`) or a local read error (then
/// STREAM_CLOSE). Returns the bytes sent.
async fn up<R: AsyncRead + Unpin>(
    client: &Client,
    seq: u32,
    input: Option<&InputCredit>,
    mut lr: R,
    chunk: usize,
    sent: &AtomicU64,
) -> Result<(), ClientError> {
    let mut buf = BytesMut::new();
    loop {
        if buf.capacity() < chunk {
            buf.reserve(chunk);
        }
        match lr.read_buf(&mut buf).await {
            Ok(0) => {
                send_data(client, seq, input, Bytes::new(), true).await?;
                return Ok(());
            }
            Ok(n) => {
                sent.fetch_add(n as u64, Ordering::Relaxed);
                if !send_data(client, seq, input, buf.split().freeze(), false).await? {
                    return Ok(());
                }
            }
            Err(e) => {
                tracing::debug!(seq, error = %e, "local read failed; closing the port stream");
                client.send_frame(close_frame(seq)).await?;
                return Ok(());
            }
        }
    }
}

/// Guest → local until STREAM_END, returning credit as the local side takes
/// the bytes. A local write error closes the stream (the rest is dropped).
async fn down<W: AsyncWrite + Unpin>(
    client: &Client,
    seq: u32,
    rx: &mut UnboundedReceiver<Reply>,
    credit: Option<&AtomicI64>,
    mut lw: W,
    out: &mut PortEnd,
) -> Result<(), ClientError> {
    let mut consumed = 0u32;
    let mut closing = false;
    let mut eof = false;
    loop {
        let m = match rx.recv().await {
            Some(r) => r?,
            None => {
                return Err(ClientError::ConnectionClosed {
                    reason: "the port stream's route was dropped".into(),
                })
            }
        };
        match m {
            Message::PortData(d) => {
                let n = d.data.len();
                out.from_guest += n as u64;
                if !closing && !eof {
                    if let Err(e) = lw.write_all(&d.data).await {
                        tracing::debug!(seq, error = %e, "local write failed; closing the port stream");
                        closing = true;
                        client.send_frame(close_frame(seq)).await?;
                    }
                }
                if d.eof && !eof {
                    eof = true;
                    let _ = lw.shutdown().await;
                }
                if let Some(c) = credit {
                    consumed += n as u32;
                    if consumed >= PORT_WINDOW / 4 {
                        let bytes = std::mem::take(&mut consumed);
                        c.fetch_add(bytes as i64, Ordering::AcqRel);
                        let m = Message::WindowUpdate(pb::WindowUpdate { bytes });
                        client.send_frame(m.into_frame(seq)).await?;
                    }
                }
            }
            Message::StreamEnd(end) => {
                out.end = end;
                if !eof {
                    let _ = lw.shutdown().await;
                }
                return Ok(());
            }
            Message::Error(e) => out.report = Some(e.message),
            m => return Err(unexpected("port stream", m)),
        }
    }
}

impl Drop for PortStream {
    fn drop(&mut self) {
        if !self.ended {
            let m = Message::StreamClose(pb::StreamClose {});
            self.client.try_send_frame(m.into_frame(self.seq));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use hearth_proto::{capability_bit, pb, Message};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use crate::{Client, ClientError, ConnectOptions, WatchOptions};

    /// A client whose agent announces `caps` only.
    async fn client_with(caps: &[pb::Capability]) -> (Client, tokio::io::DuplexStream) {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        let ready = Message::Ready(pb::Ready {
            protocol_version: hearth_proto::PROTOCOL_VERSION,
            agent_version: "old".into(),
            capabilities: caps
                .iter()
                .map(|c| capability_bit(*c))
                .fold(0, |x, y| x | y),
            max_frame_len: 1 << 20,
            ..Default::default()
        });
        b.write_all(&ready.into_frame(0).to_bytes(u32::MAX).unwrap())
            .await
            .unwrap();
        let opts = ConnectOptions {
            timeout: Duration::from_secs(2),
            ..Default::default()
        };
        (Client::from_stream(a, &opts).await.unwrap(), b)
    }

    #[tokio::test]
    async fn watch_and_port_need_their_capability_bits() {
        let (c, mut peer) = client_with(&[pb::Capability::Files]).await;
        let e = c
            .watch("/x", &WatchOptions::default())
            .await
            .expect_err("no WATCH bit");
        assert!(matches!(e, ClientError::Unsupported { .. }), "{e}");
        assert_eq!(e.to_string(), "file watch is unsupported by agent old");
        let e = match c.port_connect(80).await {
            Err(e) => e,
            Ok(_) => panic!("no PORT_FORWARD bit"),
        };
        assert_eq!(e.to_string(), "port forwarding is unsupported by agent old");
        // Nothing went on the wire.
        let mut buf = [0u8; 1];
        let r = tokio::time::timeout(Duration::from_millis(100), peer.read(&mut buf)).await;
        assert!(r.is_err(), "the client sent a frame: {r:?}");
    }
}
