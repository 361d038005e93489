//! `hearth vm pause --vm ID`: stop a running VM's vCPUs. The VM keeps its
//! memory and its processes; its agent does not answer (exec, files, … fail
//! at once) until `hearth vm resume`. `vm stop` and `vm clean` work on a
//! paused VM.
//!
//! Exit code 0 when every named VM was paused, 1 when any was not (wrong
//! state, unknown, or the VMM refused).

use std::time::Instant;

use hearth_runtime::{Runtime, VmStatus};

use super::select::select;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VM ids or names to pause (repeatable).
    #[arg(long)]
    pub vm: Vec<String>,
    /// Pause every running VM.
    #[arg(long)]
    pub all: bool,
    /// Print one JSON object per VM (`id`, `ok`, `status`, `ms`, `error`) as an array.
    #[arg(long)]
    pub json: bool,
}

/// Which way [`apply`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Pause,
    Resume,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    apply(rt, Op::Pause, &a.vm, a.all, a.json).await
}

/// Pauses or resumes the VMs named (`--all`: every running, resp. paused, one).
pub async fn apply(
    rt: &Runtime,
    op: Op,
    keys: &[String],
    all: bool,
    json: bool,
) -> anyhow::Result<i32> {
    let want = match op {
        Op::Pause => VmStatus::Running,
        Op::Resume => VmStatus::Paused,
    };
    let recs = select(rt, keys, all, |r| r.status == want).await?;
    let mut failed = 0;
    let mut out = Vec::new();
    for r in recs {
        let t0 = Instant::now();
        let res = match op {
            Op::Pause => rt.pause(&r.id).await,
            Op::Resume => rt.resume(&r.id).await,
        };
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        match res {
            Ok(rec) => {
                if json {
                    out.push(serde_json::json!({
                        "id": rec.id, "ok": true, "status": rec.status, "ms": ms,
                    }));
                } else {
                    println!("{}", rec.id);
                }
            }
            Err(e) => {
                failed += 1;
                let verb = match op {
                    Op::Pause => "pause",
                    Op::Resume => "resume",
                };
                eprintln!("hearth: cannot {verb} vm {}: {e}", r.id);
                if json {
                    out.push(serde_json::json!({
                        "id": r.id, "ok": false, "status": r.status, "ms": ms,
                        "error": e.to_string(),
                    }));
                }
            }
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(out));
    }
    Ok(if failed == 0 { 0 } else { 1 })
}
