//! Flow-control credit the host grants for guest-to-host data (exec output,
//! `FILE_READ` chunks) with `WINDOW_UPDATE`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hearth_proto::Message;
use tokio::sync::Notify;

/// Flow-control credit granted by the host (`WINDOW_UPDATE`).
#[derive(Debug)]
pub struct Credit {
    avail: AtomicU64,
    notify: Notify,
    /// Set when the connection is gone: output is drained and dropped.
    closed: AtomicBool,
    /// Why the reader ended the stream (a bad frame for it): its terminal frame.
    aborted: Mutex<Option<Message>>,
}

impl Credit {
    pub fn new(initial: u64) -> Arc<Self> {
        Arc::new(Self {
            avail: AtomicU64::new(initial),
            notify: Notify::new(),
            closed: AtomicBool::new(false),
            aborted: Mutex::new(None),
        })
    }

    pub fn add(&self, bytes: u64) {
        let _ = self
            .avail
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_add(bytes))
            });
        self.notify.notify_one();
    }

    /// The connection ended: nobody will grant credit or read output again.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    /// Ends the stream with `reason` as its terminal frame, sent by the
    /// stream's own task (so it follows the data already sent).
    pub fn abort(&self, reason: Message) {
        if let Ok(mut a) = self.aborted.lock() {
            a.get_or_insert(reason);
        }
        self.close();
    }

    /// The terminal frame set by [`Credit::abort`], once.
    pub fn take_abort(&self) -> Option<Message> {
        self.aborted.lock().ok().and_then(|mut a| a.take())
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub fn available(&self) -> u64 {
        self.avail.load(Ordering::Acquire)
    }

    /// Subtracts what was sent; only the one consumer calls this.
    pub fn take(&self, bytes: u64) {
        let _ = self
            .avail
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(bytes))
            });
    }

    /// Resolves at the next `add` or `close` (a stored wake-up counts).
    pub fn notified(&self) -> tokio::sync::futures::Notified<'_> {
        self.notify.notified()
    }

    /// Waits until some credit is available or the connection is gone.
    pub async fn wait(&self) {
        while self.available() == 0 && !self.is_closed() {
            self.notify.notified().await;
        }
    }
}
