//! `hearth exec --connect ENDPOINT [--env K=V]... [--cwd DIR] [--timeout SECS] [--json] -- CMD...`
//!
//! Streams the remote stdout/stderr live, forwards this process's stdin and
//! SIGINT/SIGTERM/SIGHUP, and exits with the remote code (128+signal when
//! killed, 124 on timeout, 127/126 when the program never started).

use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hearth_client::{pb, Client, ConnectOptions, Endpoint, ExecControl, ExecEvent};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Agent endpoint: unix:PATH, hybrid:PATH:PORT or vsock:CID:PORT.
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Endpoint,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory in the guest (default /).
    #[arg(long)]
    pub cwd: Option<String>,
    /// Kill the command's process group after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Print one JSON object with the outcome and the output at the end.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the agent to answer.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub connect_timeout: f64,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// Parses `K=V` (the value may contain `=`; the key may not be empty).
pub fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// Connects to an agent endpoint with a deadline; shared by the agent commands.
pub async fn connect(ep: &Endpoint, timeout_secs: f64) -> anyhow::Result<Client> {
    let timeout = Duration::try_from_secs_f64(timeout_secs)
        .with_context(|| format!("bad connect timeout {timeout_secs}"))?;
    let opts = ConnectOptions {
        timeout,
        ..Default::default()
    };
    Client::connect(ep, &opts)
        .await
        .with_context(|| format!("cannot reach the agent at {ep}"))
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let client = connect(&args.connect, args.connect_timeout).await?;
    let timeout_ms = match args.timeout {
        None => 0,
        Some(t) if t > 0.0 && t.is_finite() => (t * 1000.0).ceil() as u64,
        Some(t) => anyhow::bail!("--timeout must be a positive number of seconds, not {t}"),
    };
    let req = pb::ExecStart {
        argv: args.cmd.clone(),
        env: hearth_proto::env_vars(args.env.iter().map(|(k, v)| (k, v))),
        cwd: args.cwd.clone().unwrap_or_default(),
        stdin_open: true,
        timeout_ms,
        window: 1024 * 1024,
        ..Default::default()
    };
    let t0 = Instant::now();
    let mut h = client
        .exec_stream(req)
        .await
        .with_context(|| format!("cannot start {:?}", args.cmd[0]))?;
    let stdin_task = tokio::spawn(forward_stdin(h.control()));
    let signal_task = tokio::spawn(forward_signals(h.control()));

    let mut out = tokio::io::stdout();
    let mut err = tokio::io::stderr();
    let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
    let exit = loop {
        let ev = h
            .next_event()
            .await
            .with_context(|| format!("running {:?}", args.cmd[0]))?;
        match ev {
            Some(ExecEvent::Started { pid }) => tracing::debug!(pid, "remote command started"),
            Some(ExecEvent::Stdout(d)) if args.json => out_buf.extend_from_slice(&d),
            Some(ExecEvent::Stderr(d)) if args.json => err_buf.extend_from_slice(&d),
            Some(ExecEvent::Stdout(d)) => {
                out.write_all(&d).await.context("writing stdout")?;
                out.flush().await.context("writing stdout")?;
            }
            Some(ExecEvent::Stderr(d)) => {
                err.write_all(&d).await.context("writing stderr")?;
                err.flush().await.context("writing stderr")?;
            }
            Some(ExecEvent::Exit(x)) => break x,
            None => anyhow::bail!("the session ended without an exit status"),
        }
    };
    stdin_task.abort();
    signal_task.abort();
    let wall = t0.elapsed();
    let code = hearth_client::exit_code(exit.outcome.as_ref());
    if args.json {
        let v = exec_json(&exit, code, wall, &out_buf, &err_buf);
        println!("{v}");
    } else if let Some(pb::exec_outcome::Kind::NeverStarted(n)) =
        exit.outcome.as_ref().and_then(|o| o.kind.as_ref())
    {
        eprintln!(
            "hearth: {:?} never started: {}, errno {} ({}){}",
            args.cmd[0],
            pb::SpawnErrorKind::try_from(n.kind)
                .map(|k| k.as_str_name().trim_start_matches("SPAWN_ERROR_KIND_"))
                .unwrap_or("OTHER"),
            n.errno,
            hearth_client::errno_text(n.errno),
            if n.message.is_empty() {
                String::new()
            } else {
                format!(": {}", n.message)
            }
        );
    } else if let Some(pb::exec_outcome::Kind::TimedOut(_)) =
        exit.outcome.as_ref().and_then(|o| o.kind.as_ref())
    {
        eprintln!("hearth: {:?} timed out", args.cmd[0]);
    }
    Ok(code)
}

/// The `--json` result object.
pub fn exec_json(
    exit: &pb::ExecExit,
    code: i32,
    wall: Duration,
    stdout: &[u8],
    stderr: &[u8],
) -> serde_json::Value {
    use pb::exec_outcome::Kind;
    let mut v = json!({
        "exit_code": code,
        "duration_ms": exit.duration_us as f64 / 1000.0,
        "wall_ms": wall.as_secs_f64() * 1000.0,
        "stdout_bytes": exit.stdout_bytes,
        "stderr_bytes": exit.stderr_bytes,
        "stdout_truncated": exit.stdout_truncated,
        "stderr_truncated": exit.stderr_truncated,
    });
    let outcome = match exit.outcome.as_ref().and_then(|o| o.kind.as_ref()) {
        Some(Kind::Exited(e)) => json!({"outcome": "exited", "code": e.code}),
        Some(Kind::Killed(k)) => {
            json!({"outcome": "killed", "signal": k.signal, "core_dumped": k.core_dumped})
        }
        Some(Kind::TimedOut(t)) => json!({"outcome": "timed_out", "signal": t.signal}),
        Some(Kind::NeverStarted(n)) => json!({
            "outcome": "never_started",
            "spawn_error": pb::SpawnErrorKind::try_from(n.kind).map(|k| k.as_str_name()).unwrap_or("SPAWN_ERROR_KIND_OTHER"),
            "errno": n.errno,
            "message": n.message,
        }),
        None => json!({"outcome": "unknown"}),
    };
    if let (Some(o), Some(extra)) = (v.as_object_mut(), outcome.as_object()) {
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

/// Copies this process's stdin to the session; EOF closes the remote stdin.
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

/// Forwards SIGINT, SIGTERM and SIGHUP to the remote process group.
async fn forward_signals(ctl: ExecControl) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot install signal handlers; signals will not be forwarded");
        return;
    };
    loop {
        let sig = tokio::select! {
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
            _ = hup.recv() => libc::SIGHUP,
        };
        ctl.signal(sig).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let v = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (i, o) in v {
            assert_eq!(base64(i.as_bytes()), o);
        }
    }

    #[test]
    fn env_needs_a_key() {
        assert_eq!(parse_env("A=b=c"), Ok(("A".into(), "b=c".into())));
        assert_eq!(parse_env("A="), Ok(("A".into(), "".into())));
        assert!(parse_env("=x").is_err());
        assert!(parse_env("noequals").is_err());
    }

    #[test]
    fn json_reports_outcome_and_output() {
        let exit = pb::ExecExit {
            outcome: Some(pb::ExecOutcome {
                kind: Some(pb::exec_outcome::Kind::Exited(pb::Exited { code: 3 })),
            }),
            stdout_bytes: 2,
            ..Default::default()
        };
        let v = exec_json(&exit, 3, Duration::from_millis(5), b"hi", &[0xff]);
        assert_eq!(v["outcome"], "exited");
        assert_eq!(v["code"], 3);
        assert_eq!(v["stdout"], "hi");
        assert_eq!(v["stderr"], "/w==");
        assert_eq!(v["stderr_encoding"], "base64");
    }
}
