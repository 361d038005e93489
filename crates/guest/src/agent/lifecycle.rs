//! Ending exec sessions from outside their task, and the agent-wide list of
//! live sessions.
//!
//! A session is ended when its connection closes or the agent shuts down
//! ([`Ctl::end`]: TERM to the process group, a grace, then KILL), or at once
//! when the host broke its input ([`Ctl::kill`]). Errors about frames the host
//! sent for a live session are [`Ctl::report`]ed through the session's own
//! task, so they reach the host before its `EXEC_EXIT`.
//!
//! [`Sessions`] tracks every live session of every connection; on SIGTERM,
//! SIGINT or `SHUTDOWN` the agent ends them all and waits (bounded) for them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hearth_proto::Message;
use tokio::sync::Notify;

/// Reports queued per session; more are dropped (a host sending a flood of
/// bad frames gets a sample of answers, not unbounded memory).
const MAX_REPORTS: usize = 8;

#[derive(Default)]
struct CtlState {
    /// Set by the first `end`: the grace between TERM and KILL.
    end: Option<Duration>,
    kill: bool,
    reports: VecDeque<Message>,
    dropped_reports: u64,
}

/// What a session has been asked to do since it last looked.
#[derive(Debug, Default)]
pub struct Orders {
    pub end: Option<Duration>,
    pub kill: bool,
    pub reports: Vec<Message>,
}

/// A session's control block, shared by the connection reader, the
/// connection's end, the agent's shutdown and the session task.
#[derive(Default)]
pub struct Ctl {
    state: Mutex<CtlState>,
    wake: Notify,
}

impl Ctl {
    pub fn new() -> Arc<Ctl> {
        Arc::new(Ctl::default())
    }

    fn lock(&self) -> MutexGuard<'_, CtlState> {
        // Plain data; a panic elsewhere leaves it usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the session: TERM to its group, KILL after `grace`. The first
    /// request's grace holds.
    pub fn end(&self, grace: Duration) {
        {
            let mut s = self.lock();
            if s.end.is_none() {
                s.end = Some(grace);
            }
        }
        self.wake.notify_one();
    }

    /// Sends `report` to the host, then KILLs the session's group.
    pub fn kill(&self, report: Message) {
        {
            let mut s = self.lock();
            s.kill = true;
            s.reports.push_back(report);
        }
        self.wake.notify_one();
    }

    /// Sends `report` (an `ERROR` for this seq) to the host before the
    /// session's terminal frame; the session goes on.
    pub fn report(&self, report: Message) {
        {
            let mut s = self.lock();
            if s.reports.len() >= MAX_REPORTS {
                s.dropped_reports += 1;
                return;
            }
            s.reports.push_back(report);
        }
        self.wake.notify_one();
    }

    /// Takes what was asked since the last call; `end` stays set.
    pub fn take(&self) -> Orders {
        let mut s = self.lock();
        if s.dropped_reports > 0 {
            tracing::debug!(
                dropped = s.dropped_reports,
                "error reports for a session dropped"
            );
            s.dropped_reports = 0;
        }
        Orders {
            end: s.end,
            kill: std::mem::take(&mut s.kill),
            reports: s.reports.drain(..).collect(),
        }
    }

    /// Resolves once something was asked (a stored wake-up counts).
    pub async fn woken(&self) {
        self.wake.notified().await
    }
}

struct Registry {
    next_id: u64,
    live: HashMap<u64, Arc<Ctl>>,
    /// Set by shutdown: no new session may start.
    closed: Option<Duration>,
}

/// Every live exec session of the agent.
pub struct Sessions {
    inner: Mutex<Registry>,
    empty: Notify,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            inner: Mutex::new(Registry {
                next_id: 0,
                live: HashMap::new(),
                closed: None,
            }),
            empty: Notify::new(),
        }
    }
}

/// The agent is shutting down and starts nothing new.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the agent is shutting down")]
pub struct ShuttingDown;

impl Sessions {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a session; it stays listed until the guard is dropped.
    pub fn register(self: &Arc<Self>, ctl: Arc<Ctl>) -> Result<Registered, ShuttingDown> {
        let mut r = self.lock();
        if r.closed.is_some() {
            return Err(ShuttingDown);
        }
        let id = r.next_id;
        r.next_id += 1;
        r.live.insert(id, ctl);
        Ok(Registered {
            sessions: self.clone(),
            id,
        })
    }

    /// Ends every live session with `grace` and refuses new ones.
    pub fn shut_down(&self, grace: Duration) -> usize {
        let ctls: Vec<Arc<Ctl>> = {
            let mut r = self.lock();
            r.closed.get_or_insert(grace);
            r.live.values().cloned().collect()
        };
        for c in &ctls {
            c.end(grace);
        }
        ctls.len()
    }

    /// Waits until no session is live.
    pub async fn all_ended(&self) {
        loop {
            let notified = self.empty.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.lock().live.is_empty() {
                return;
            }
            notified.await;
        }
    }
}

/// A listed session; dropping it unlists the session.
pub struct Registered {
    sessions: Arc<Sessions>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let empty = {
            let mut r = self.sessions.lock();
            r.live.remove(&self.id);
            r.live.is_empty()
        };
        if empty {
            self.sessions.empty.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_ends_live_sessions_and_refuses_new_ones() {
        let sessions = Arc::new(Sessions::default());
        let ctl = Ctl::new();
        let guard = sessions.register(ctl.clone()).expect("register");
        assert_eq!(sessions.shut_down(Duration::from_secs(3)), 1);
        assert_eq!(ctl.take().end, Some(Duration::from_secs(3)));
        assert!(sessions.register(Ctl::new()).is_err());
        let waiter = tokio::spawn({
            let s = sessions.clone();
            async move { s.all_ended().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("all_ended after the last session")
            .expect("waiter");
    }

    #[test]
    fn the_first_grace_holds_and_reports_are_bounded() {
        let ctl = Ctl::new();
        ctl.end(Duration::from_secs(2));
        ctl.end(Duration::from_secs(9));
        for _ in 0..20 {
            ctl.report(Message::Ok(hearth_proto::pb::Ok {}));
        }
        let o = ctl.take();
        assert_eq!(o.end, Some(Duration::from_secs(2)));
        assert_eq!(o.reports.len(), MAX_REPORTS);
        assert!(!o.kill);
    }
}
