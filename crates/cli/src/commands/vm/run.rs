//! `hearth vm run --vm ID --cmd "..." [--file F]...`: copy each F into /in, run `sh -c CMD`
//! with cwd /in, stream the output, exit with the command's code.

use std::path::PathBuf;

use anyhow::Context;
use hearth_client::pb;

use crate::commands::cp::{copy, CpSide};

use super::common::{
    connect_running, exec_env, explain_failure, outcome_code, stream_exec, timeout_ms,
};
use crate::state::State;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VM id or name.
    #[arg(long)]
    pub vm: String,
    /// Shell command (run with /bin/sh -c in /in).
    #[arg(long)]
    pub cmd: String,
    /// Host files or directories copied into /in first (modes kept).
    #[arg(long)]
    pub file: Vec<PathBuf>,
    /// Seconds before the command's process group is killed.
    #[arg(long)]
    pub timeout: Option<f64>,
}

pub async fn run(state: &State, a: Args) -> anyhow::Result<i32> {
    let (rec, handle, client) = connect_running(state, &a.vm).await?;
    let work = async {
        match client.mkdir("/in", 0o755, true).await {
            Ok(()) => {}
            Err(e) if e.remote_code() == Some(pb::ErrorCode::AlreadyExists) => {}
            Err(e) => return Err(e).context("cannot create /in in the vm"),
        }
        let dest = CpSide::Remote {
            target: None,
            path: "/in".into(),
        };
        for f in &a.file {
            copy(&client, &CpSide::Local(f.clone()), &dest)
                .await
                .with_context(|| format!("cannot copy {} into the vm", f.display()))?;
        }
        let start = pb::ExecStart {
            argv: vec!["/bin/sh".into(), "-c".into(), a.cmd.clone()],
            env: exec_env(&rec),
            cwd: "/in".into(),
            timeout_ms: timeout_ms(a.timeout),
            ..Default::default()
        };
        anyhow::Ok(stream_exec(&client, start).await?)
    };
    match work.await {
        Ok(exit) => Ok(outcome_code(exit.outcome.as_ref())),
        Err(e) => Err(explain_failure(state, &handle, e).await),
    }
}
