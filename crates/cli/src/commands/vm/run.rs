//! `hearth vm run --vm ID --cmd "..." [--file F]`: copy F into /in, run `sh -c CMD`
//! with cwd /in, stream the output, exit with the command's code.

use std::path::PathBuf;

use anyhow::Context;
use hearth_client::pb;

use super::common::{connect_running, explain_failure, outcome_code, stream_exec, timeout_ms};
use crate::state::State;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub vm: String,
    /// Shell command (run with /bin/sh -c in /in).
    #[arg(long)]
    pub cmd: String,
    /// Host files copied into /in first.
    #[arg(long)]
    pub file: Vec<PathBuf>,
    /// Seconds before the command's process group is killed.
    #[arg(long)]
    pub timeout: Option<f64>,
}

pub async fn run(state: &State, a: Args) -> anyhow::Result<i32> {
    let (_rec, handle, client) = connect_running(state, &a.vm).await?;
    let work = async {
        for f in &a.file {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{} has no usable file name", f.display()))?;
            let mut src = tokio::fs::File::open(f)
                .await
                .with_context(|| format!("cannot open {}", f.display()))?;
            let mode =
                std::os::unix::fs::PermissionsExt::mode(&src.metadata().await?.permissions())
                    & 0o777;
            client
                .write_file(&format!("/in/{name}"), &mut src, mode, true)
                .await
                .with_context(|| format!("cannot copy {} into the vm", f.display()))?;
        }
        if a.file.is_empty() {
            client
                .mkdir("/in", 0o755, true)
                .await
                .context("cannot create /in in the vm")?;
        }
        let start = pb::ExecStart {
            argv: vec!["/bin/sh".into(), "-c".into(), a.cmd.clone()],
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
