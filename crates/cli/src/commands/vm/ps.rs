//! `hearth vm ps --vm ID [--json]`: the VM's background processes, running
//! and recently exited.

use std::time::{SystemTime, UNIX_EPOCH};

use hearth_runtime::{ProcessInfo, Runtime};

use super::exec_modes::one_vm;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VM id or name.
    #[arg(long)]
    pub vm: String,
    /// One JSON array of objects instead of a table.
    #[arg(long)]
    pub json: bool,
}

fn ago(ms: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let s = now.saturating_sub(ms) / 1000;
    match s {
        0..=59 => format!("{s}s ago"),
        60..=3599 => format!("{}m ago", s / 60),
        _ => format!("{}h ago", s / 3600),
    }
}

pub fn json(p: &ProcessInfo) -> serde_json::Value {
    serde_json::json!({
        "pid": p.pid,
        "tag": p.tag,
        "argv": p.argv,
        "state": p.state.as_str(),
        "started_unix_ms": p.started_unix_ms,
        "exit_code": p.outcome.as_ref().map(|o| o.exit_code()),
        "outcome": p.outcome.as_ref().map(|o| o.to_string()),
        "kind": p.outcome.as_ref().map(|o| o.kind()),
        "pty": p.pty,
        "output_bytes": p.output_bytes,
        "retained_from": p.retained_from,
        "buffer_bytes": p.buffer_bytes,
    })
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let sb = one_vm(rt, std::slice::from_ref(&a.vm)).await?;
    let list = sb.processes().await?;
    if a.json {
        let v: Vec<_> = list.iter().map(json).collect();
        println!("{}", serde_json::Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<8} {:<16} {:<8} {:<10} {:<6} COMMAND",
        "PID", "TAG", "STATE", "STARTED", "EXIT"
    );
    for p in &list {
        let cmd = match p.argv.as_slice() {
            [sh, c, script] if sh == "/bin/sh" && c == "-c" => script.clone(),
            argv => argv.join(" "),
        };
        let exit = p
            .outcome
            .as_ref()
            .map_or("-".to_string(), |o| o.exit_code().to_string());
        println!(
            "{:<8} {:<16} {:<8} {:<10} {:<6} {cmd}",
            p.pid,
            p.tag.as_deref().unwrap_or("-"),
            p.state.as_str(),
            ago(p.started_unix_ms),
            exit
        );
    }
    Ok(0)
}
