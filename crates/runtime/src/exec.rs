//! Exec: one [`ExecSpec`] for collected ([`crate::Agent::exec`]) and streaming
//! ([`crate::Agent::exec_stream`]) runs, and [`Outcome`], the one mapping from
//! the agent's terminal frame to an exit code and a description.

use std::time::Duration;

use bytes::Bytes;
use hearth_client::{pb, ExecControl, ExecEvent, ExecHandle};

use crate::error::{Error, Result};

/// What to run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecSpec {
    /// Program and arguments (no shell; use `sh -c` for one).
    pub argv: Vec<String>,
    /// Added after the sandbox's own environment (later entries win).
    pub env: Vec<(String, String)>,
    /// Working directory in the guest (default `/`).
    pub cwd: Option<String>,
    /// Bytes fed to stdin before it is closed (collected exec), or the first
    /// bytes of an open stdin (streaming, with `stdin_open`).
    pub stdin: Vec<u8>,
    /// Keep stdin open for [`ExecControl::write_stdin`] (streaming only).
    pub stdin_open: bool,
    /// Kill the process group after this long (outcome `timed_out`).
    pub timeout: Option<Duration>,
    /// Output credit window in bytes (0: the agent's default).
    pub window: u32,
    /// Run on a pseudo-terminal of this size (stdout and stderr merged).
    pub pty: Option<crate::background::PtySize>,
    /// Resource limits (the exec's own cgroup in the guest).
    pub limits: crate::Limits,
    /// Run as this user of the guest's /etc/passwd (default: the sandbox's
    /// user, else root).
    pub user: Option<String>,
}

impl ExecSpec {
    /// `sh -c CMD`.
    pub fn shell(cmd: impl Into<String>) -> Self {
        Self {
            argv: vec!["/bin/sh".into(), "-c".into(), cmd.into()],
            ..Default::default()
        }
    }

    /// `argv` as given.
    pub fn argv<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.argv.first().is_none_or(|a| a.is_empty()) {
            return Err(Error::InvalidSpec("exec needs a program to run".into()));
        }
        if let Some(k) = self
            .env
            .iter()
            .map(|(k, _)| k)
            .find(|k| k.is_empty() || k.contains('='))
        {
            return Err(Error::InvalidSpec(format!(
                "environment variable name {k:?} is empty or contains '='"
            )));
        }
        self.limits.validate()
    }

    /// Whether `stdin` rides in the start frame (else it is streamed after it).
    pub(crate) fn stdin_inline(&self) -> bool {
        self.stdin.len() <= INLINE_STDIN_MAX
    }

    /// The wire form, with `base_env` (the sandbox's) first.
    pub(crate) fn to_start(
        &self,
        base_env: &[(String, String)],
        default_user: Option<&str>,
    ) -> pb::ExecStart {
        let inline = self.stdin_inline();
        pb::ExecStart {
            argv: self.argv.clone(),
            env: hearth_proto::env_vars(base_env.iter().chain(&self.env).map(|(k, v)| (k, v))),
            cwd: self.cwd.clone().unwrap_or_default(),
            stdin: if inline {
                self.stdin.clone().into()
            } else {
                Default::default()
            },
            stdin_open: self.stdin_open || !inline,
            timeout_ms: self
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1))
                .unwrap_or(0),
            window: self.window,
            pty: self.pty.as_ref().map(crate::background::PtySize::to_pb),
            limits: self.limits.to_pb(),
            user: self.user.as_deref().or(default_user).map(|name| pb::User {
                name: name.to_string(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}

/// Stdin up to this size goes in the start frame; more is streamed under the
/// agent's input credit by a task, so a command whose output is not read yet
/// cannot deadlock the caller.
pub const INLINE_STDIN_MAX: usize = 256 * 1024;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Exited(i32),
    Killed {
        signal: i32,
        core_dumped: bool,
    },
    TimedOut {
        signal: i32,
    },
    /// The exec's memory limit was hit and the OOM killer ended its cgroup.
    OomKilled {
        memory_max_bytes: u64,
        memory_peak_bytes: u64,
    },
    NeverStarted {
        kind: String,
        errno: i32,
        message: String,
    },
    /// The agent sent no outcome.
    Unknown,
}

impl Outcome {
    pub fn from_pb(o: Option<&pb::ExecOutcome>) -> Self {
        use pb::exec_outcome::Kind;
        match o.and_then(|o| o.kind.as_ref()) {
            Some(Kind::Exited(e)) => Outcome::Exited(e.code),
            Some(Kind::Killed(k)) => Outcome::Killed {
                signal: k.signal,
                core_dumped: k.core_dumped,
            },
            Some(Kind::TimedOut(t)) => Outcome::TimedOut { signal: t.signal },
            Some(Kind::OomKilled(o)) => Outcome::OomKilled {
                memory_max_bytes: o.memory_max_bytes,
                memory_peak_bytes: o.memory_peak_bytes,
            },
            Some(Kind::NeverStarted(n)) => Outcome::NeverStarted {
                kind: pb::SpawnErrorKind::try_from(n.kind)
                    .map(|k| {
                        k.as_str_name()
                            .trim_start_matches("SPAWN_ERROR_KIND_")
                            .to_ascii_lowercase()
                    })
                    .unwrap_or_else(|_| format!("kind {}", n.kind)),
                errno: n.errno,
                message: n.message.clone(),
            },
            None => Outcome::Unknown,
        }
    }

    /// Shell-style exit code: the code; 128+N when killed by signal N; 124 on
    /// timeout; 137 when OOM-killed; 127 when it never started (126 when
    /// not permitted); 1 unknown.
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(c) => *c,
            Outcome::Killed { signal, .. } => 128 + signal,
            Outcome::TimedOut { .. } => 124,
            Outcome::OomKilled { .. } => 137,
            Outcome::NeverStarted { kind, .. } if kind == "permission_denied" => 126,
            Outcome::NeverStarted { .. } => 127,
            Outcome::Unknown => 1,
        }
    }

    /// A short machine name: exited, killed, timed_out, oom_killed,
    /// never_started, unknown.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Exited(_) => "exited",
            Outcome::Killed { .. } => "killed",
            Outcome::TimedOut { .. } => "timed_out",
            Outcome::OomKilled { .. } => "oom_killed",
            Outcome::NeverStarted { .. } => "never_started",
            Outcome::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Exited(c) => write!(f, "exited with code {c}"),
            Outcome::Killed {
                signal,
                core_dumped,
            } => write!(
                f,
                "killed by signal {signal}{}",
                if *core_dumped { " (core dumped)" } else { "" }
            ),
            Outcome::TimedOut { signal } => write!(f, "timed out (ended by signal {signal})"),
            Outcome::OomKilled {
                memory_max_bytes, ..
            } => write!(
                f,
                "killed by the OOM killer (memory limit {})",
                hearth_client::format_bytes(*memory_max_bytes)
            ),
            Outcome::NeverStarted {
                kind,
                errno,
                message,
            } => {
                write!(f, "never started: {kind}, errno {errno}")?;
                if message.is_empty() {
                    write!(f, " ({})", hearth_client::errno_text(*errno))
                } else {
                    write!(f, ": {message}")
                }
            }
            Outcome::Unknown => write!(f, "ended without an outcome"),
        }
    }
}

/// The end of a command.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecExit {
    pub outcome: Outcome,
    /// Guest-measured run time.
    pub duration: Duration,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

impl ExecExit {
    pub fn from_pb(x: &pb::ExecExit) -> Self {
        Self {
            outcome: Outcome::from_pb(x.outcome.as_ref()),
            duration: Duration::from_micros(x.duration_us),
            stdout_bytes: x.stdout_bytes,
            stderr_bytes: x.stderr_bytes,
        }
    }
}

/// A collected run.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecOutput {
    pub exit: ExecExit,
    pub stdout: Bytes,
    pub stderr: Bytes,
}

/// One event of a streaming run.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    Started { pid: u32 },
    Stdout(Bytes),
    Stderr(Bytes),
    Exit(ExecExit),
}

/// A running command. Dropping it before the exit kills its process group.
pub struct ExecStream {
    pub(crate) handle: ExecHandle,
    pub(crate) label: String,
}

impl ExecStream {
    /// Sends stdin, signals and stdin EOF from any task.
    pub fn control(&self) -> ExecControl {
        self.handle.control()
    }

    /// Resizes the command's pty (see [`ExecSpec::pty`]).
    pub async fn resize(&self, rows: u16, cols: u16) -> Result<()> {
        crate::background::resize(&self.handle.control(), &self.label, rows, cols).await
    }

    /// The next event; `None` never comes before [`StreamEvent::Exit`] on a
    /// healthy connection (it is an error then).
    pub async fn next(&mut self) -> Result<Option<StreamEvent>> {
        let ev = self
            .handle
            .next_event()
            .await
            .map_err(|e| Error::agent(format!("{}: the exec session failed", self.label), e))?;
        Ok(match ev {
            Some(ExecEvent::Started { pid }) => Some(StreamEvent::Started { pid }),
            Some(ExecEvent::Stdout(b)) => Some(StreamEvent::Stdout(b)),
            Some(ExecEvent::Stderr(b)) => Some(StreamEvent::Stderr(b)),
            Some(ExecEvent::Exit(x)) => Some(StreamEvent::Exit(ExecExit::from_pb(&x))),
            None => None,
        })
    }

    /// Collects everything up to the exit.
    pub async fn collect(mut self) -> Result<ExecOutput> {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        loop {
            match self.next().await? {
                Some(StreamEvent::Started { .. }) => {}
                Some(StreamEvent::Stdout(b)) => out.extend_from_slice(&b),
                Some(StreamEvent::Stderr(b)) => err.extend_from_slice(&b),
                Some(StreamEvent::Exit(exit)) => {
                    return Ok(ExecOutput {
                        exit,
                        stdout: out.into(),
                        stderr: err.into(),
                    })
                }
                None => {
                    return Err(Error::Internal(format!(
                        "{}: the exec session ended without an exit status",
                        self.label
                    )))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_map_to_shell_exit_codes() {
        assert_eq!(Outcome::Exited(3).exit_code(), 3);
        assert_eq!(
            Outcome::Killed {
                signal: 9,
                core_dumped: false
            }
            .exit_code(),
            137
        );
        assert_eq!(Outcome::TimedOut { signal: 15 }.exit_code(), 124);
        let ns = |kind: &str| Outcome::NeverStarted {
            kind: kind.into(),
            errno: 2,
            message: String::new(),
        };
        assert_eq!(ns("not_found").exit_code(), 127);
        assert_eq!(ns("permission_denied").exit_code(), 126);
        assert_eq!(Outcome::Unknown.exit_code(), 1);
    }

    #[test]
    fn never_started_names_the_errno_once() {
        let o = Outcome::NeverStarted {
            kind: "not_found".into(),
            errno: 2,
            message: String::new(),
        };
        let s = o.to_string();
        assert_eq!(s.matches("No such file").count(), 1, "{s}");
        let o = Outcome::NeverStarted {
            kind: "not_found".into(),
            errno: 2,
            message: "cannot execute nope: No such file or directory".into(),
        };
        let s = o.to_string();
        assert_eq!(s.matches("No such file").count(), 1, "{s}");
    }

    #[test]
    fn spec_env_follows_the_sandbox_env_and_timeouts_round_up() {
        let mut s = ExecSpec::shell("true");
        s.env = vec![("A".into(), "2".into())];
        s.timeout = Some(Duration::from_micros(10));
        let p = s.to_start(&[("A".into(), "1".into())], None);
        assert_eq!(p.env.len(), 2);
        assert_eq!(p.env[1].value, "2");
        assert_eq!(p.timeout_ms, 1);
        assert!(ExecSpec::default().validate().is_err());
        let mut bad = ExecSpec::shell("x");
        bad.env = vec![("A=B".into(), "1".into())];
        assert!(bad.validate().is_err());
    }
}
