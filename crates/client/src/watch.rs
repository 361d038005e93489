//! File watch streams (`WATCH`, needs `CAPABILITY_WATCH`): inotify events
//! from the guest under a credit window the consumer returns as it takes them.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use hearth_proto::{pb, Message};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::conn::{unexpected, Client, Reply, StreamKind, StreamSpec};
use crate::error::ClientError;

/// Default credit granted to the agent for watch events, in payload bytes.
pub const DEFAULT_WATCH_WINDOW: u32 = 64 * 1024;

/// What to watch and how much the agent may hold back.
#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    /// Watch every subdirectory too, including new ones.
    pub recursive: bool,
    /// Events the agent queues while this side takes none (0 = the agent's
    /// default, 4096); beyond it they are counted in an `OVERFLOW` event.
    pub queue_limit: u32,
    /// Credit in payload bytes (0 = [`DEFAULT_WATCH_WINDOW`]).
    pub window: u32,
}

/// An open watch. Dropping it closes the stream on the agent.
pub struct WatchStream {
    client: Client,
    seq: u32,
    rx: UnboundedReceiver<Reply>,
    credit: Option<Arc<AtomicI64>>,
    window: u32,
    consumed: u32,
    end: Option<pb::StreamEnd>,
}

impl std::fmt::Debug for WatchStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchStream")
            .field("seq", &self.seq)
            .finish()
    }
}

impl Client {
    /// Starts watching `path` (absolute, in the guest); returns once the
    /// agent's watches are in place, so later changes are all reported.
    /// A missing path fails with `NOT_FOUND`.
    pub async fn watch(&self, path: &str, opts: &WatchOptions) -> Result<WatchStream, ClientError> {
        self.require(pb::Capability::Watch, "file watch")?;
        let window = match opts.window {
            0 => DEFAULT_WATCH_WINDOW,
            w => w,
        };
        let credit = self
            .flow_control()
            .then(|| Arc::new(AtomicI64::new(window as i64)));
        let req = Message::Watch(pb::Watch {
            path: path.to_string(),
            recursive: opts.recursive,
            queue_limit: opts.queue_limit,
            window,
        });
        let spec = StreamSpec {
            kind: StreamKind::Watch { started: false },
            credit: credit.clone(),
            input: None,
        };
        let (seq, rx) = self.open_stream(req, spec).await?;
        let mut w = WatchStream {
            client: self.clone(),
            seq,
            rx,
            credit,
            window,
            consumed: 0,
            end: None,
        };
        match w.recv().await? {
            Message::WatchEvent(e) if e.kind == pb::WatchEventKind::Started as i32 => {
                w.give_back(&e).await?;
                Ok(w)
            }
            m => {
                // An ERROR before STARTED ends the stream.
                w.end = Some(pb::StreamEnd::default());
                Err(unexpected("watch", m))
            }
        }
    }
}

impl WatchStream {
    async fn recv(&mut self) -> Result<Message, ClientError> {
        match self.rx.recv().await {
            Some(Ok(m)) => Ok(m),
            Some(Err(e)) => {
                self.end = Some(pb::StreamEnd::default());
                Err(e)
            }
            None => {
                self.end = Some(pb::StreamEnd::default());
                Err(ClientError::ConnectionClosed {
                    reason: "the watch's route was dropped".into(),
                })
            }
        }
    }

    /// Returns the credit of a taken event (in quarter windows).
    async fn give_back(&mut self, e: &pb::WatchEvent) -> Result<(), ClientError> {
        let Some(c) = &self.credit else {
            return Ok(());
        };
        self.consumed += prost::Message::encoded_len(e) as u32;
        if self.consumed >= (self.window / 4).max(1) {
            let bytes = std::mem::take(&mut self.consumed);
            c.fetch_add(bytes as i64, Ordering::AcqRel);
            let m = Message::WindowUpdate(pb::WindowUpdate { bytes });
            self.client.send_frame(m.into_frame(self.seq)).await?;
        }
        Ok(())
    }

    /// The next event; `None` once the stream ended (see [`WatchStream::end`]).
    /// An `ERROR` the agent reports about this stream (it goes on) is
    /// returned as `Err` once.
    pub async fn next(&mut self) -> Result<Option<pb::WatchEvent>, ClientError> {
        if self.end.is_some() {
            return Ok(None);
        }
        match self.recv().await? {
            Message::WatchEvent(e) => {
                self.give_back(&e).await?;
                Ok(Some(e))
            }
            Message::StreamEnd(end) => {
                self.end = Some(end);
                Ok(None)
            }
            m => Err(unexpected("watch", m)),
        }
    }

    /// Why the stream ended, once it has.
    pub fn end(&self) -> Option<&pb::StreamEnd> {
        self.end.as_ref()
    }

    /// Ends the watch and waits for the agent's `STREAM_END`; events still
    /// on their way are dropped.
    pub async fn close(mut self) -> Result<pb::StreamEnd, ClientError> {
        if self.end.is_none() {
            let m = Message::StreamClose(pb::StreamClose {});
            self.client.send_frame(m.into_frame(self.seq)).await?;
            while self.next().await?.is_some() {}
        }
        Ok(self.end.clone().unwrap_or_default())
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        if self.end.is_none() {
            let m = Message::StreamClose(pb::StreamClose {});
            self.client.try_send_frame(m.into_frame(self.seq));
        }
    }
}
