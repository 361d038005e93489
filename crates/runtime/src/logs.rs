//! Logs of a sandbox: its console (read on the host from the files the
//! console logger keeps, so they outlive the VM) and its agent's own log
//! (asked of the agent, `AGENT_LOG`). Both as a snapshot (`--tail`,
//! `--since`) or followed.

use std::time::Duration;

use hearth_vmm::console::{read_console, ConsoleFollower};

use hearth_vmm::BackendHandle;

use crate::error::{Error, Result};
use crate::runtime::Runtime;
use crate::sandbox::Sandbox;
use crate::state::VmStatus;

pub use hearth_vmm::console::LogQuery;
pub use hearth_vmm::console_log::{
    ConsoleLimits, DEFAULT_CONSOLE_FILE_BYTES, MIN_CONSOLE_FILE_BYTES,
};

/// How often a console follower looks for new lines.
const CONSOLE_POLL: Duration = Duration::from_millis(100);

/// Which log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogSource {
    /// The guest's serial console: the kernel, init, the agent's lines and
    /// anything written to /dev/console.
    Console,
    /// Only the agent's own log, from the agent.
    Agent,
}

/// One log line, safe to print (no control characters).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch, when known.
    pub at_ms: Option<i64>,
    /// The agent's level (`INFO`, …); console lines have none.
    pub level: Option<String>,
    pub text: String,
}

impl From<hearth_vmm::console::LogLine> for LogLine {
    fn from(l: hearth_vmm::console::LogLine) -> Self {
        Self {
            at_ms: l.at_ms,
            level: None,
            text: l.text,
        }
    }
}

impl From<hearth_client::pb::LogLine> for LogLine {
    fn from(l: hearth_client::pb::LogLine) -> Self {
        let clean = |s: String| {
            s.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect()
        };
        Self {
            at_ms: Some(l.at_ms),
            level: Some(clean(l.level)),
            text: clean(l.text),
        }
    }
}

/// New log lines as they come; see [`Sandbox::follow_log`].
pub enum LogFollow {
    Console {
        follower: ConsoleFollower,
        rt: Runtime,
        handle: Option<BackendHandle>,
        done: bool,
    },
    Agent {
        follow: hearth_client::AgentLogFollow,
        /// The follow's own connection, kept open while it runs.
        _client: hearth_client::Client,
    },
}

/// What a follow yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogEvent {
    Lines(Vec<LogLine>),
    /// Lines the agent dropped from its ring before this follower saw them.
    Dropped(u64),
}

impl LogFollow {
    /// The next lines; `None` once the log can grow no more (the VM is gone).
    pub async fn next(&mut self) -> Option<Result<LogEvent>> {
        match self {
            LogFollow::Console {
                follower,
                rt,
                handle,
                done,
            } => loop {
                if *done {
                    return None;
                }
                let lines = follower.poll();
                if !lines.is_empty() {
                    return Some(Ok(LogEvent::Lines(
                        lines.into_iter().map(Into::into).collect(),
                    )));
                }
                if !vmm_alive(rt, handle.as_ref()) {
                    // One last look: the logger may still have been writing.
                    *done = true;
                    let rest = follower.poll();
                    return (!rest.is_empty())
                        .then(|| Ok(LogEvent::Lines(rest.into_iter().map(Into::into).collect())));
                }
                tokio::time::sleep(CONSOLE_POLL).await;
            },
            LogFollow::Agent { follow, .. } => match follow.next().await? {
                Ok(b) if b.dropped > 0 && b.lines.is_empty() => {
                    Some(Ok(LogEvent::Dropped(b.dropped)))
                }
                Ok(b) => {
                    // A batch with both: report the gap first, the lines next time.
                    let lines: Vec<LogLine> = b.lines.into_iter().map(Into::into).collect();
                    if b.dropped > 0 {
                        tracing::debug!(
                            dropped = b.dropped,
                            "agent log lines dropped before this follower saw them"
                        );
                    }
                    Some(Ok(LogEvent::Lines(lines)))
                }
                Err(e) => Some(Err(Error::agent("following the agent log", e))),
            },
        }
    }
}

impl Sandbox {
    /// The retained lines of a log. The console is read on the host, so it
    /// works for a stopped or failed sandbox too; the agent log needs a
    /// running one.
    pub async fn log(&self, source: LogSource, query: LogQuery) -> Result<Vec<LogLine>> {
        match source {
            LogSource::Console => {
                let dir = self.record().dir.clone();
                let lines = tokio::task::spawn_blocking(move || read_console(&dir, query))
                    .await
                    .map_err(|e| Error::Internal(format!("reading the console log: {e}")))?;
                Ok(lines.into_iter().map(Into::into).collect())
            }
            LogSource::Agent => {
                let agent = self.agent().await?;
                let tail = query
                    .tail
                    .map_or(0, |t| t.clamp(1, u32::MAX as usize) as u32);
                match agent
                    .client()
                    .agent_log(tail, query.since_ms.unwrap_or(0))
                    .await
                {
                    Ok(lines) => Ok(lines.into_iter().map(Into::into).collect()),
                    Err(e) => Err(self
                        .explain(Error::agent(format!("vm {}: agent log", self.id()), e))
                        .await),
                }
            }
        }
    }

    /// Follows a log from its current end. A console follow ends once the
    /// VM's VMM has exited; an agent follow when its connection closes.
    pub async fn follow_log(&self, source: LogSource) -> Result<LogFollow> {
        match source {
            LogSource::Console => Ok(LogFollow::Console {
                follower: ConsoleFollower::at_end(&self.record().dir),
                rt: self.runtime().clone(),
                handle: self.record().backend.clone(),
                done: false,
            }),
            LogSource::Agent => {
                if self.status() != VmStatus::Running {
                    // Gives the usual "not running" error.
                    self.agent().await?;
                }
                // A connection of its own: the follow holds it until dropped.
                let client = self.new_connection().await?;
                let since = now_ms();
                match client.follow_agent_log(0, since).await {
                    Ok(follow) => Ok(LogFollow::Agent {
                        follow,
                        _client: client,
                    }),
                    Err(e) => Err(self
                        .explain(Error::agent(format!("vm {}: agent log", self.id()), e))
                        .await),
                }
            }
        }
    }
}

/// Whether the VMM still runs (a broken helper does not stop its console).
fn vmm_alive(rt: &Runtime, handle: Option<&BackendHandle>) -> bool {
    use hearth_vmm::Health;
    match handle.map(|h| rt.backend().health(h)) {
        Some(Ok(Health::Running | Health::Broken { .. })) => true,
        Some(Ok(Health::Exited) | Err(_)) | None => false,
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Parses a `--since`: a duration before `now_ms` (`90s`, `15m`, `2h`,
/// `1d`, or plain seconds) or an RFC 3339 time. Gives ms since the epoch.
pub fn parse_since(s: &str, now_ms: i64) -> std::result::Result<i64, String> {
    if let Some(t) = hearth_vmm::console::parse_rfc3339_ms(s) {
        return Ok(t);
    }
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let scale = match unit {
        "ms" => 1.0,
        "s" => 1e3,
        "m" => 60e3,
        "h" => 3600e3,
        "d" => 86_400e3,
        _ => return Err(format!("{s:?} is neither a duration (like 30s, 15m, 2h, 1d) nor an RFC 3339 time (like 2026-12-01T12:00:00Z)")),
    };
    match num.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(now_ms - (n * scale) as i64),
        _ => Err(format!("{s:?} is neither a duration (like 30s, 15m, 2h, 1d) nor an RFC 3339 time (like 2026-12-01T12:00:00Z)")),
    }
}

/// `ms` since the epoch as `2026-12-01T12:00:00.000Z`.
pub fn format_time(ms: i64) -> String {
    let mut b = [0u8; hearth_vmm::console_log::STAMP_LEN];
    hearth_vmm::console_log::format_stamp(ms, &mut b);
    String::from_utf8_lossy(&b[..b.len() - 1]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_durations_and_times_and_names_bad_ones() {
        let now = 1_000_000_000;
        assert_eq!(parse_since("30s", now), Ok(now - 30_000));
        assert_eq!(parse_since("30", now), Ok(now - 30_000));
        assert_eq!(parse_since("1.5m", now), Ok(now - 90_000));
        assert_eq!(parse_since("2h", now), Ok(now - 7_200_000));
        assert_eq!(parse_since("250ms", now), Ok(now - 250));
        assert_eq!(parse_since("1970-01-01T00:00:01Z", now), Ok(1000));
        for bad in ["", "x", "5y", "-5s", "1970-01-01"] {
            let e = parse_since(bad, now).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(format_time(1000), "1970-01-01T00:00:01.000Z");
    }
}
