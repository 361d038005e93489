//! `hearth vm run --vm ID --cmd "..." [--file F]...`: copy each F into /in,
//! run `sh -c CMD` with cwd /in, stream the output, exit with the command's code.

use std::path::PathBuf;
use std::time::Duration;

use hearth_runtime::{ExecSpec, Runtime};

use crate::exec_io::{self, parse_timeout, Signals, StreamOpts};

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
    /// Seconds before the command's process group is killed (exit code 124).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub limits: crate::limit_flags::LimitArgs,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let mut signals = Signals::install()?;
    let sb = rt.get(&a.vm).await?;
    sb.mkdir("/in", 0o755, true).await?;
    for f in &a.file {
        let (_, skipped) = sb.copy_in(f, "/in").await?;
        for s in skipped {
            eprintln!("hearth: skipped {s} (not a regular file or directory)");
        }
    }
    let mut spec = ExecSpec::shell(&a.cmd);
    spec.cwd = Some("/in".into());
    spec.timeout = a.timeout;
    spec.limits = a.limits.limits();
    let s = sb.exec_stream(&spec).await?;
    match exec_io::stream(s, &mut signals, StreamOpts::default()).await {
        Ok(r) => Ok(exec_io::report("/bin/sh", &r.exit.outcome)),
        Err(e) => Err(sb.explain(e).await.into()),
    }
}
