//! Input credit: what the agent lets the client send on one stream (a
//! session's stdin, a file upload) before it returns credit with
//! `WINDOW_UPDATE` (needs `CAPABILITY_INPUT_FLOW_CONTROL`).

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Why no more input may be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The stream reached its terminal frame.
    Finished,
    /// The connection is gone.
    Closed(String),
}

#[derive(Debug)]
struct State {
    avail: u64,
    ended: Option<Ended>,
}

/// Credit for one input stream, shared by its writers and the reader task.
#[derive(Debug)]
pub(crate) struct InputCredit {
    state: Mutex<State>,
    notify: Notify,
}

impl InputCredit {
    pub(crate) fn new(window: u32) -> Arc<InputCredit> {
        Arc::new(InputCredit {
            state: Mutex::new(State {
                avail: window as u64,
                ended: None,
            }),
            notify: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Plain data; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The agent returned `bytes` of credit.
    pub(crate) fn grant(&self, bytes: u32) {
        {
            let mut s = self.lock();
            s.avail = s.avail.saturating_add(bytes as u64);
        }
        self.notify.notify_waiters();
    }

    /// No more input can go out; waiting writers learn why.
    pub(crate) fn end(&self, why: Ended) {
        {
            let mut s = self.lock();
            if s.ended.is_none() {
                s.ended = Some(why);
            }
        }
        self.notify.notify_waiters();
    }

    /// Takes between 1 and `max` bytes of credit (`max` ≥ 1), waiting while
    /// there is none.
    pub(crate) async fn reserve(&self, max: usize) -> Result<usize, Ended> {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(why) = &s.ended {
                    return Err(why.clone());
                }
                if s.avail > 0 {
                    let n = s.avail.min(max as u64);
                    s.avail -= n;
                    return Ok(n as usize);
                }
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn writers_wait_for_granted_credit() {
        let c = InputCredit::new(10);
        assert_eq!(c.reserve(4).await, Ok(4));
        assert_eq!(c.reserve(100).await, Ok(6));
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.reserve(100).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no credit, the writer waits");
        c.grant(7);
        assert_eq!(waiting.await.unwrap(), Ok(7));
        let waiting = tokio::spawn({
            let c = c.clone();
            async move { c.reserve(1).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        c.end(Ended::Finished);
        assert_eq!(waiting.await.unwrap(), Err(Ended::Finished));
    }
}
