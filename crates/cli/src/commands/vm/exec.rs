//! `hearth vm exec (--cmd "..." | --hello) [--vm ID ... | --all]`: streams the output
//! for one VM; for several (or with --json) runs them concurrently and prints
//! per-VM results.

use std::time::Duration;

use futures::future::join_all;
use hearth_runtime::{ExecSpec, Runtime, Sandbox, VmStatus};

use super::select::select;
use crate::exec_io::{self, parse_timeout, Signals, StreamOpts};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["cmd", "hello"])))]
pub struct Args {
    /// Shell command (run with /bin/sh -c).
    #[arg(long)]
    pub cmd: Option<String>,
    /// Print hello world through each VM's language runtime (python, node, ruby,
    /// go); a bare initramfs VM greets with its kernel release, PID 1 and agent version.
    #[arg(long)]
    pub hello: bool,
    /// VM ids or names to run in (repeatable).
    #[arg(long)]
    pub vm: Vec<String>,
    /// Run in every running VM, concurrently.
    #[arg(long)]
    pub all: bool,
    /// Seconds before the command is killed (exit code 124).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub limits: crate::limit_flags::LimitArgs,
    /// Print one JSON object per VM instead of streaming output.
    #[arg(long)]
    pub json: bool,
    /// Keep stdin open and forward ours (with --detach: a stdin for `vm attach`).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Run on a pseudo-terminal, our terminal in raw mode (needs a terminal on stdin).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Start in the background and print its pid (see `vm ps`, `vm attach`, `vm kill`).
    #[arg(long)]
    pub detach: bool,
    /// Name of the background process, unique among running ones.
    #[arg(long, requires = "detach")]
    pub tag: Option<String>,
    /// Output ring buffer of the background process (e.g. 64K, 1M; default 1M).
    #[arg(long, requires = "detach", value_name = "SIZE", value_parser = super::exec_modes::parse_size)]
    pub buffer: Option<u32>,
}

/// Default timeout of a `--hello` (the go one compiles first).
const HELLO_TIMEOUT: Duration = Duration::from_secs(300);

/// One VM's answer, for the multi-VM and JSON outputs.
async fn one(sb: &Sandbox, a: &Args) -> hearth_runtime::Result<serde_json::Value> {
    let id = sb.id();
    if let Some(cmd) = &a.cmd {
        let mut spec = ExecSpec::shell(cmd);
        spec.timeout = a.timeout;
        spec.limits = a.limits.limits();
        let r = sb.exec(&spec).await?;
        return Ok(serde_json::json!({
            "id": id,
            "exit_code": r.exit.outcome.exit_code(),
            "outcome": r.exit.outcome.to_string(),
            "kind": r.exit.outcome.kind(),
            "stdout": String::from_utf8_lossy(&r.stdout),
            "stderr": String::from_utf8_lossy(&r.stderr),
        }));
    }
    let info = sb.system_info().await?;
    let (code, hello, outcome, stderr) = if sb.hello_argv().is_empty() {
        (
            0,
            format!("hello from vm {id}"),
            "exited with code 0".to_string(),
            String::new(),
        )
    } else {
        let mut spec = ExecSpec::argv(sb.hello_argv().iter().cloned());
        spec.timeout = Some(a.timeout.unwrap_or(HELLO_TIMEOUT));
        let r = sb.exec(&spec).await?;
        (
            r.exit.outcome.exit_code(),
            String::from_utf8_lossy(&r.stdout).trim_end().to_string(),
            r.exit.outcome.to_string(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    };
    Ok(serde_json::json!({
        "id": id,
        "language": sb.record().language,
        "exit_code": code,
        "outcome": outcome,
        "stderr": stderr,
        "hello": hello,
        "kernel_release": info.kernel_release,
        "pid1": info.pid1,
        "agent_version": info.agent_version,
        "cpu_count": info.cpu_count,
        "memory_total_bytes": info.memory_total_bytes,
        "os": info.os,
    }))
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    if a.interactive || a.tty || a.detach {
        return super::exec_modes::run(rt, &a).await;
    }
    let recs = select(rt, &a.vm, a.all, |r| r.status == VmStatus::Running).await?;
    if a.all && recs.is_empty() {
        anyhow::bail!("no running vms");
    }
    let sandboxes: Vec<_> = recs.into_iter().map(|r| rt.sandbox(r)).collect();
    if let [sb] = sandboxes.as_slice() {
        if !a.json {
            if let Some(cmd) = &a.cmd {
                let mut signals = Signals::install()?;
                let mut spec = ExecSpec::shell(cmd);
                spec.timeout = a.timeout;
                spec.limits = a.limits.limits();
                let s = sb.exec_stream(&spec).await?;
                return match exec_io::stream(s, &mut signals, StreamOpts::default()).await {
                    Ok(r) => Ok(exec_io::report("/bin/sh", &r.exit.outcome)),
                    Err(e) => Err(sb.explain(e).await.into()),
                };
            }
            // A single --hello: errors go to stderr with exit 1 like any other.
            let v = one(sb, &a).await?;
            print_human(&v);
            return Ok(v["exit_code"]
                .as_i64()
                .and_then(|c| i32::try_from(c).ok())
                .unwrap_or(1));
        }
    }
    let results = join_all(sandboxes.iter().map(|sb| one(sb, &a))).await;
    let mut code = 0;
    let mut json = Vec::new();
    for (sb, res) in sandboxes.iter().zip(results) {
        let v = match res {
            Ok(v) => v,
            Err(e) => {
                serde_json::json!({ "id": sb.id(), "exit_code": 1, "error": format!("{:#}", anyhow::Error::new(e)) })
            }
        };
        let c = v["exit_code"].as_i64().unwrap_or(1);
        if c != 0 && code == 0 {
            code = i32::try_from(c).unwrap_or(1);
        }
        json.push(v);
    }
    if a.json {
        println!("{}", serde_json::Value::Array(json));
    } else {
        for v in &json {
            print_human(v);
        }
    }
    Ok(code)
}

fn print_human(v: &serde_json::Value) {
    let id = v["id"].as_str().unwrap_or("?");
    if let Some(e) = v.get("error") {
        println!("== {id}: error: {}", e.as_str().unwrap_or(""));
    } else if let Some(h) = v.get("hello") {
        let lang = v["language"].as_str().unwrap_or("none");
        if lang == "none" {
            println!(
                "== {id}: {} (kernel {}, pid 1 {}, agent {})",
                h.as_str().unwrap_or(""),
                v["kernel_release"].as_str().unwrap_or(""),
                v["pid1"].as_str().unwrap_or(""),
                v["agent_version"].as_str().unwrap_or("")
            );
        } else if v["exit_code"].as_i64() == Some(0) {
            println!("== {id} ({lang}): {}", h.as_str().unwrap_or(""));
        } else {
            println!(
                "== {id} ({lang}): hello failed: {}",
                v["outcome"].as_str().unwrap_or("")
            );
            print!("{}", h.as_str().unwrap_or(""));
            eprint!("{}", v["stderr"].as_str().unwrap_or(""));
        }
    } else {
        println!("== {id}: {}", v["outcome"].as_str().unwrap_or(""));
        print!("{}", v["stdout"].as_str().unwrap_or(""));
        eprint!("{}", v["stderr"].as_str().unwrap_or(""));
    }
}
