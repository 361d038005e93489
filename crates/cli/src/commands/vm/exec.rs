//! `hearth vm exec (--cmd "..." | --hello) [--vm ID ... | --all]`: streams the output
//! for one VM; for several (or with --json) runs them concurrently and prints
//! per-VM results.

use hearth_client::pb;

use super::common::{
    connect_running, exec_env, explain_failure, outcome_code, select, stream_exec, timeout_ms,
};
use crate::state::{State, VmStatus};

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
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Print one JSON object per VM instead of streaming output.
    #[arg(long)]
    pub json: bool,
}

/// Default timeout of a `--hello` (the go one compiles first).
const HELLO_TIMEOUT_SECS: f64 = 300.0;

fn argv(cmd: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), cmd.into()]
}

/// One VM's answer, for the multi-VM and JSON outputs.
async fn one(state: &State, id: &str, a: &Args) -> anyhow::Result<serde_json::Value> {
    let (rec, handle, client) = connect_running(state, id).await?;
    let work = async {
        if let Some(cmd) = &a.cmd {
            let r = client
                .exec(pb::Exec {
                    argv: argv(cmd),
                    env: exec_env(&rec),
                    timeout_ms: timeout_ms(a.timeout),
                    ..Default::default()
                })
                .await?;
            anyhow::Ok(serde_json::json!({
                "id": id,
                "exit_code": hearth_client::exit_code(r.outcome.as_ref()),
                "outcome": hearth_client::describe_outcome(r.outcome.as_ref()),
                "stdout": String::from_utf8_lossy(&r.stdout),
                "stderr": String::from_utf8_lossy(&r.stderr),
            }))
        } else {
            let info = client.system_info().await?;
            let (code, hello, outcome, stderr) = if rec.hello.is_empty() {
                (
                    0,
                    format!("hello from vm {id}"),
                    "exited with code 0".to_string(),
                    String::new(),
                )
            } else {
                let r = client
                    .exec(pb::Exec {
                        argv: rec.hello.clone(),
                        env: exec_env(&rec),
                        timeout_ms: timeout_ms(a.timeout.or(Some(HELLO_TIMEOUT_SECS))),
                        ..Default::default()
                    })
                    .await?;
                (
                    hearth_client::exit_code(r.outcome.as_ref()),
                    String::from_utf8_lossy(&r.stdout).trim_end().to_string(),
                    hearth_client::describe_outcome(r.outcome.as_ref()),
                    String::from_utf8_lossy(&r.stderr).into_owned(),
                )
            };
            anyhow::Ok(serde_json::json!({
                "id": id,
                "language": rec.language,
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
    };
    match work.await {
        Ok(v) => Ok(v),
        Err(e) => Err(explain_failure(state, &handle, e).await),
    }
}

pub async fn run(state: &State, a: Args) -> anyhow::Result<i32> {
    let recs = select(state, &a.vm, a.all, |r| r.status == VmStatus::Running).await?;
    if a.all && recs.is_empty() {
        anyhow::bail!("no running vms");
    }
    if recs.len() == 1 && !a.json {
        let id = &recs[0].id;
        if let Some(cmd) = &a.cmd {
            let (rec, handle, client) = connect_running(state, id).await?;
            let start = pb::ExecStart {
                argv: argv(cmd),
                env: exec_env(&rec),
                timeout_ms: timeout_ms(a.timeout),
                ..Default::default()
            };
            return match stream_exec(&client, start).await {
                Ok(exit) => Ok(outcome_code(exit.outcome.as_ref())),
                Err(e) => Err(explain_failure(state, &handle, e).await),
            };
        }
        // A single --hello: errors go to stderr with exit 1 like any other.
        let v = one(state, id, &a).await?;
        print_human(&v);
        return Ok(v["exit_code"]
            .as_i64()
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(1));
    }
    let futs = recs.iter().map(|r| one(state, &r.id, &a));
    let results = futures_join(futs).await;
    let mut code = 0;
    let mut json = Vec::new();
    for (r, res) in recs.iter().zip(results) {
        let v = match res {
            Ok(v) => v,
            Err(e) => serde_json::json!({ "id": r.id, "exit_code": 1, "error": format!("{e:#}") }),
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

/// Runs the futures concurrently, results in order.
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let futs: Vec<_> = futs.map(Box::pin).collect();
    let mut out = Vec::with_capacity(futs.len());
    let mut pending: Vec<_> = futs.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => done = false,
                }
            }
        }
        if done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.extend(results.into_iter().flatten());
    out
}
