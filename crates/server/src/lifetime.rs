//! The reaper: removes sandboxes whose deadline (in the state DB) passed.
//! E2B's semantics: a sandbox lives `timeout` seconds from create unless
//! extended; at expiry it is stopped and removed. Deadlines are in the DB, so a
//! restarted server enforces the ones that passed while it was down at once.

use std::time::{Duration, SystemTime};

use hearth_runtime::{NoProgress, SharedProgress};

use crate::app::AppState;

/// How often the reaper looks at least (it also wakes at the next deadline).
const TICK: Duration = Duration::from_secs(1);

/// Runs until the server shuts down.
pub async fn reaper(state: AppState) {
    let progress: SharedProgress = std::sync::Arc::new(NoProgress);
    loop {
        if let Err(e) = reap_once(&state, &progress).await {
            tracing::warn!(error = %crate::error::chain(&e), "reaper pass failed");
        }
        let busy = matches!(pending_creates(&state).await, Ok(true));
        let wait = match state.runtime().next_deadline().await {
            // An expired sandbox still booting cannot be removed yet: look
            // again in a tick, not at once.
            _ if busy => TICK,
            Ok(Some(t)) => t
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(TICK),
            _ => TICK,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(50))) => {}
            _ = state.shutdown().cancelled() => return,
        }
    }
}

/// Whether an expired sandbox is still being created.
async fn pending_creates(state: &AppState) -> hearth_runtime::Result<bool> {
    Ok(state
        .runtime()
        .expired(SystemTime::now())
        .await?
        .iter()
        .any(|r| r.status == hearth_runtime::VmStatus::Creating))
}

/// Removes every expired sandbox once (those still being created on a later
/// pass, once they booted or failed).
pub async fn reap_once(
    state: &AppState,
    progress: &SharedProgress,
) -> hearth_runtime::Result<usize> {
    let expired = state.runtime().expired(SystemTime::now()).await?;
    let mut n = 0;
    for rec in expired {
        if rec.status == hearth_runtime::VmStatus::Creating {
            continue;
        }
        let span = tracing::info_span!("reaper", sandbox_id = %rec.id);
        state.forget(&rec.id);
        match state.runtime().remove(&rec.id, false, progress).await {
            Ok(_) => {
                n += 1;
                state.metrics().expired.inc();
                span.in_scope(|| tracing::info!("timeout passed: sandbox removed"));
            }
            Err(hearth_runtime::Error::NotFound(_)) => {}
            Err(e) => span.in_scope(|| {
                tracing::warn!(error = %crate::error::chain(&e), "cannot remove an expired sandbox")
            }),
        }
    }
    Ok(n)
}
