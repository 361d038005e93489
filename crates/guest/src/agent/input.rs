//! Host-to-guest data of one stream — a session's `EXEC_STDIN` or a
//! `FILE_WRITE`'s `FILE_DATA` — queued between the connection reader and the
//! task that hands it to the child or the file.
//!
//! With input credit (the request set `input_credit`) the host has at most
//! `window` bytes outstanding: the reader charges each frame's data and queues
//! it without waiting, so one stalled stream never stops the reader, and the
//! queue never holds more than the window. Data beyond the credit is an
//! overrun, which the caller turns into a session error. The consumer returns
//! credit as it hands bytes on; [`Consumer::consumed`] says when a
//! `WINDOW_UPDATE` is due (every quarter window).
//!
//! Without input credit (hosts older than `CAPABILITY_INPUT_FLOW_CONTROL`) the
//! reader waits in [`Input::room`] while [`LEGACY_QUEUE`] bytes are queued:
//! the old behaviour, where a stalled stream stalls its whole connection.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};
use hearth_proto::Message;
use tokio::sync::Notify;

/// Queued bytes at which a producer without credit waits.
pub const LEGACY_QUEUE: usize = 1024 * 1024;
/// Pieces smaller than this are copied together rather than queued one by
/// one, so many tiny frames cost bytes, not queue entries.
const COALESCE_BELOW: usize = 16 * 1024;
/// A coalesced piece is queued once it reaches this size.
const COALESCE_MAX: usize = 64 * 1024;

/// What became of pushed data.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Nobody takes input any more (stdin closed, stream ended or aborted).
    Dropped,
    /// More than the host's remaining credit; nothing was queued.
    Overrun {
        len: usize,
        credit: u64,
    },
}

/// What the consumer gets next.
#[derive(Debug)]
pub enum Next {
    Data(Bytes),
    /// The host sent `eof`: everything before it was handed out.
    Eof,
    /// The connection closed before `eof`.
    HungUp,
    /// The reader refused the stream's input; the stream ends with this error.
    Aborted(Box<Message>),
}

#[derive(Default)]
struct State {
    chunks: VecDeque<Bytes>,
    /// Small pieces copied together; handed out after `chunks`.
    tail: BytesMut,
    queued: usize,
    /// Bytes the host may still send (with credit).
    credit: u64,
    /// Bytes handed out whose credit was not returned yet.
    unreturned: u64,
    eof: bool,
    hung_up: bool,
    consumer_gone: bool,
    aborted: Option<Message>,
}

/// One stream's input queue, shared by the reader (producer) and one consumer.
pub struct Input {
    state: Mutex<State>,
    /// The credit window, when the host follows input credit.
    window: Option<u64>,
    data: Notify,
    room: Notify,
}

impl Input {
    /// A queue; `window` is the credit granted, `None` for a host without it.
    pub fn new(window: Option<u64>) -> Arc<Input> {
        Arc::new(Input {
            state: Mutex::new(State {
                credit: window.unwrap_or(0),
                ..State::default()
            }),
            window,
            data: Notify::new(),
            room: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the host follows input credit on this stream.
    pub fn credited(&self) -> bool {
        self.window.is_some()
    }

    /// Queues `data` (then end of input if `eof`). Never waits; without
    /// credit, call [`Input::room`] first.
    pub fn push(&self, data: Bytes, eof: bool) -> Pushed {
        {
            let mut s = self.lock();
            if s.consumer_gone || s.eof || s.aborted.is_some() {
                return Pushed::Dropped;
            }
            let len = data.len();
            if self.window.is_some() {
                if len as u64 > s.credit {
                    return Pushed::Overrun {
                        len,
                        credit: s.credit,
                    };
                }
                s.credit -= len as u64;
            }
            if len > 0 {
                if len < COALESCE_BELOW {
                    s.tail.extend_from_slice(&data);
                    if s.tail.len() >= COALESCE_MAX {
                        let piece = s.tail.split().freeze();
                        s.chunks.push_back(piece);
                    }
                } else {
                    if !s.tail.is_empty() {
                        let piece = s.tail.split().freeze();
                        s.chunks.push_back(piece);
                    }
                    s.chunks.push_back(data);
                }
                s.queued += len;
            }
            s.eof |= eof;
        }
        self.data.notify_one();
        Pushed::Queued
    }

    /// Waits until the queue has room for a producer without credit (or
    /// nobody takes input any more).
    pub async fn room(&self) {
        loop {
            {
                let s = self.lock();
                if s.queued < LEGACY_QUEUE || s.consumer_gone || s.aborted.is_some() {
                    return;
                }
            }
            self.room.notified().await;
        }
    }

    /// The connection closed: no more input will come.
    pub fn hang_up(&self) {
        self.lock().hung_up = true;
        self.data.notify_one();
    }

    /// Refuses the rest of the stream: queued data is dropped, later pushes
    /// are dropped, and the consumer gets [`Next::Aborted`] with `reason`.
    pub fn abort(&self, reason: Message) {
        {
            let mut s = self.lock();
            if s.aborted.is_none() && !s.consumer_gone {
                s.aborted = Some(reason);
            }
            s.chunks.clear();
            s.tail = BytesMut::new();
            s.queued = 0;
        }
        self.data.notify_one();
        self.room.notify_one();
    }
}

/// The consuming side of an [`Input`]; dropping it drops whatever is still
/// queued and makes later pushes [`Pushed::Dropped`].
pub struct Consumer(Arc<Input>);

impl Consumer {
    pub fn new(input: Arc<Input>) -> Consumer {
        Consumer(input)
    }

    /// The next piece of input, or how the input ended.
    pub async fn next(&self) -> Next {
        loop {
            {
                let mut s = self.0.lock();
                if let Some(reason) = s.aborted.take() {
                    s.consumer_gone = true;
                    return Next::Aborted(Box::new(reason));
                }
                let piece = match s.chunks.pop_front() {
                    Some(c) => Some(c),
                    None if !s.tail.is_empty() => Some(s.tail.split().freeze()),
                    None => None,
                };
                if let Some(c) = piece {
                    s.queued -= c.len();
                    drop(s);
                    self.0.room.notify_one();
                    return Next::Data(c);
                }
                if s.eof {
                    return Next::Eof;
                }
                if s.hung_up || s.consumer_gone {
                    return Next::HungUp;
                }
            }
            self.0.data.notified().await;
        }
    }

    /// Records that `n` bytes were handed on; returns the credit to send back
    /// in a `WINDOW_UPDATE` once a quarter window has gathered.
    pub fn consumed(&self, n: usize) -> Option<u32> {
        let window = self.0.window?;
        let mut s = self.0.lock();
        if s.aborted.is_some() {
            // A refused stream gets no more credit.
            return None;
        }
        s.unreturned += n as u64;
        if s.unreturned < (window / 4).max(1) {
            return None;
        }
        let grant = s.unreturned.min(u32::MAX as u64);
        s.unreturned -= grant;
        s.credit += grant;
        Some(grant as u32)
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        {
            let mut s = self.0.lock();
            s.consumer_gone = true;
            s.chunks.clear();
            s.tail = BytesMut::new();
            s.queued = 0;
        }
        self.0.room.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::{message::error, pb};

    fn b(n: usize, v: u8) -> Bytes {
        Bytes::from(vec![v; n])
    }

    #[tokio::test]
    async fn credit_bounds_what_the_host_may_queue() {
        let input = Input::new(Some(100));
        let c = Consumer::new(input.clone());
        assert_eq!(input.push(b(60, 1), false), Pushed::Queued);
        assert_eq!(
            input.push(b(41, 2), false),
            Pushed::Overrun {
                len: 41,
                credit: 40
            }
        );
        assert_eq!(input.push(b(40, 3), false), Pushed::Queued);
        let Next::Data(d) = c.next().await else {
            panic!("data expected")
        };
        // Both small pieces were coalesced, in order.
        assert_eq!(&d[..], &[&[1u8; 60][..], &[3u8; 40][..]].concat()[..]);
        // A quarter window (25) gathers before credit goes back.
        assert_eq!(c.consumed(20), None);
        assert_eq!(c.consumed(80), Some(100));
        assert_eq!(input.push(b(100, 4), true), Pushed::Queued);
        assert!(matches!(c.next().await, Next::Data(d) if d.len() == 100));
        assert!(matches!(c.next().await, Next::Eof));
    }

    #[tokio::test]
    async fn large_pieces_keep_order_with_coalesced_ones() {
        let input = Input::new(None);
        let c = Consumer::new(input.clone());
        input.push(b(10, 1), false);
        input.push(b(COALESCE_BELOW, 2), false);
        input.push(b(5, 3), true);
        let mut got = Vec::new();
        while let Next::Data(d) = c.next().await {
            got.extend_from_slice(&d);
        }
        let want = [vec![1u8; 10], vec![2u8; COALESCE_BELOW], vec![3u8; 5]].concat();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn abort_and_hang_up_end_the_consumer() {
        let input = Input::new(Some(10));
        let c = Consumer::new(input.clone());
        input.push(b(5, 1), false);
        input.abort(error(pb::ErrorCode::FlowControl, "too much", 0));
        assert!(matches!(c.next().await, Next::Aborted(_)));
        assert_eq!(input.push(b(1, 1), false), Pushed::Dropped);
        let input = Input::new(None);
        let c = Consumer::new(input.clone());
        input.hang_up();
        assert!(matches!(c.next().await, Next::HungUp));
        drop(c);
        assert_eq!(input.push(b(1, 1), false), Pushed::Dropped);
    }

    #[tokio::test]
    async fn a_producer_without_credit_waits_for_room() {
        let input = Input::new(None);
        let c = Consumer::new(input.clone());
        input.push(b(LEGACY_QUEUE, 0), false);
        let waiting = tokio::spawn({
            let input = input.clone();
            async move { input.room().await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            !waiting.is_finished(),
            "a full queue must make the producer wait"
        );
        let _ = c.next().await;
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("room after the consumer took data")
            .expect("room task");
    }
}
