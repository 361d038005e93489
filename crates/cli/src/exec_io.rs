//! The one exec path of every command that runs something (`exec --connect`,
//! `vm exec`, `vm run`, `run`): one timeout parser, one streaming loop (output
//! to our stdout/stderr, our stdin to the command, our SIGINT/SIGTERM/SIGHUP to
//! its process group), one exit-code mapping ([`hearth_runtime::Outcome`]) and
//! one `--json` shape.

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hearth_runtime::{ExecControl, ExecExit, ExecStream, Outcome, StreamEvent};
use serde_json::json;
use tokio::io::AsyncReadExt;

/// Parses `--timeout SECS`: a positive, finite number of seconds.
pub fn parse_timeout(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("{s:?} must be a positive number of seconds"));
    }
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// Parses `K=V` (the value may contain `=`; the key may not be empty).
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// SIGINT, SIGTERM and SIGHUP delivered to this process, as numbers. Installed
/// once per command, before anything is started, so a signal never kills the
/// CLI between steps and leaves a sandbox or a remote command behind.
pub struct Signals {
    rx: tokio::sync::mpsc::UnboundedReceiver<i32>,
}

impl Signals {
    pub fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let sig = tokio::select! {
                    _ = int.recv() => libc::SIGINT,
                    _ = term.recv() => libc::SIGTERM,
                    _ = hup.recv() => libc::SIGHUP,
                };
                if tx.send(sig).is_err() {
                    return;
                }
            }
        });
        Ok(Self { rx })
    }

    pub async fn recv(&mut self) -> i32 {
        match self.rx.recv().await {
            Some(s) => s,
            None => std::future::pending().await,
        }
    }
}

/// How to stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamOpts {
    /// Forward this process's stdin (the spec must have `stdin_open`).
    pub forward_stdin: bool,
    /// Collect output instead of writing it (for `--json`).
    pub collect: bool,
}

/// What a streamed command did.
pub struct Streamed {
    pub exit: ExecExit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub wall: Duration,
}

/// Streams a started command to its end, forwarding signals: each signal goes
/// to the remote process group; a second SIGINT sends SIGKILL.
pub async fn stream(
    mut s: ExecStream,
    signals: &mut Signals,
    opts: StreamOpts,
) -> hearth_runtime::Result<Streamed> {
    let t0 = Instant::now();
    let ctl = s.control();
    let stdin_task = opts
        .forward_stdin
        .then(|| tokio::spawn(forward_stdin(ctl.clone())));
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let mut ints = 0;
    let result = loop {
        let ev = tokio::select! {
            ev = s.next() => ev,
            sig = signals.recv() => {
                if sig == libc::SIGINT {
                    ints += 1;
                }
                let send = if ints >= 2 { libc::SIGKILL } else { sig };
                tracing::info!(signal = send, "forwarding a signal to the remote command");
                ctl.signal(send).await;
                continue;
            }
        };
        match ev {
            Err(e) => break Err(e),
            Ok(Some(StreamEvent::Started { pid })) => {
                tracing::debug!(pid, "remote command started")
            }
            Ok(Some(StreamEvent::Stdout(d))) if opts.collect => out_buf.extend_from_slice(&d),
            Ok(Some(StreamEvent::Stderr(d))) if opts.collect => err_buf.extend_from_slice(&d),
            Ok(Some(StreamEvent::Stdout(d))) => {
                let mut o = std::io::stdout().lock();
                if o.write_all(&d).and_then(|_| o.flush()).is_err() {
                    // Our reader went away (e.g. `| head`): end the command as a shell would.
                    ctl.signal(libc::SIGPIPE).await;
                }
            }
            Ok(Some(StreamEvent::Stderr(d))) => {
                let mut e = std::io::stderr().lock();
                let _ = e.write_all(&d).and_then(|_| e.flush());
            }
            Ok(Some(StreamEvent::Exit(exit))) => {
                break Ok(Streamed {
                    exit,
                    stdout: out_buf,
                    stderr: err_buf,
                    wall: t0.elapsed(),
                })
            }
            Ok(None) => {
                break Err(hearth_runtime::Error::Internal(
                    "the exec session ended without an exit status".into(),
                ))
            }
        }
    };
    if let Some(t) = stdin_task {
        t.abort();
    }
    result
}

/// Copies this process's stdin to the command; EOF closes the remote stdin.
async fn forward_stdin(ctl: ExecControl) {
    let mut stdin = tokio::io::stdin();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if ctl
                    .write_stdin(Bytes::copy_from_slice(&buf[..n]))
                    .await
                    .is_err()
                {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading stdin failed; closing the remote stdin");
                break;
            }
        }
    }
    ctl.close_stdin().await;
}

/// The exit code for an outcome, with one stderr line when it did not just exit.
pub fn report(program: &str, outcome: &Outcome) -> i32 {
    if !matches!(outcome, Outcome::Exited(_)) {
        eprintln!("hearth: {program:?} {outcome}");
    }
    outcome.exit_code()
}

/// The `--json` result object of one run.
pub fn exec_json(
    exit: &ExecExit,
    wall: Duration,
    stdout: &[u8],
    stderr: &[u8],
) -> serde_json::Value {
    let mut v = json!({
        "exit_code": exit.outcome.exit_code(),
        "outcome": exit.outcome.kind(),
        "description": exit.outcome.to_string(),
        "duration_ms": exit.duration.as_secs_f64() * 1000.0,
        "wall_ms": wall.as_secs_f64() * 1000.0,
        "stdout_bytes": exit.stdout_bytes,
        "stderr_bytes": exit.stderr_bytes,
    });
    let extra = match &exit.outcome {
        Outcome::Exited(c) => json!({ "code": c }),
        Outcome::Killed {
            signal,
            core_dumped,
        } => json!({ "signal": signal, "core_dumped": core_dumped }),
        Outcome::TimedOut { signal } => json!({ "signal": signal }),
        Outcome::OomKilled {
            memory_max_bytes,
            memory_peak_bytes,
        } => {
            json!({ "memory_max_bytes": memory_max_bytes, "memory_peak_bytes": memory_peak_bytes })
        }
        Outcome::NeverStarted {
            kind,
            errno,
            message,
        } => {
            json!({ "spawn_error": kind, "errno": errno, "message": message })
        }
        Outcome::Unknown => json!({}),
    };
    if let (Some(o), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(extra.clone());
        for (name, data) in [("stdout", stdout), ("stderr", stderr)] {
            let (text, enc) = match std::str::from_utf8(data) {
                Ok(s) => (s.to_string(), "utf8"),
                Err(_) => (base64(data), "base64"),
            };
            o.insert(name.into(), text.into());
            o.insert(format!("{name}_encoding"), enc.into());
        }
    }
    v
}

/// Standard base64 with padding.
pub fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(T[(n >> 18) as usize & 63] as char);
        s.push(T[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_timeout_parser_for_every_command() {
        assert_eq!(parse_timeout("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_timeout("0.001").unwrap(), Duration::from_millis(1));
        for bad in ["0", "-1", "nan", "inf", "x", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (i, o) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn env_needs_a_key() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("noequals").is_err());
    }

    #[test]
    fn json_reports_outcome_and_output() {
        let exit = ExecExit {
            outcome: Outcome::Exited(3),
            duration: Duration::from_millis(2),
            stdout_bytes: 2,
            stderr_bytes: 1,
        };
        let v = exec_json(&exit, Duration::from_millis(5), b"hi", &[0xff]);
        assert_eq!(v["outcome"], "exited");
        assert_eq!(v["exit_code"], 3);
        assert_eq!(v["stdout"], "hi");
        assert_eq!(v["stderr"], "/w==");
        assert_eq!(v["stderr_encoding"], "base64");
    }
}
