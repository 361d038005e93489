//! `hearth run -- CMD...`: create a VM, run the command (no shell), remove the
//! VM, exit with the command's code. The VM is removed on every exit path the
//! CLI lives through: an error, a failed command, SIGINT/SIGTERM/SIGHUP during
//! the boot (the boot is cancelled) or during the command (the signal goes to
//! the command first).

use std::path::PathBuf;
use std::time::Duration;

use hearth_runtime::{CreateSpec, Error, ExecSpec, Network, Runtime};
use tokio_util::sync::CancellationToken;

use crate::exec_io::{self, parse_timeout, Signals, StreamOpts};
use crate::progress::StderrProgress;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds before the command is killed (exit code 124).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Virtual CPUs.
    #[arg(long = "cpu", default_value_t = 1)]
    pub cpus: u32,
    /// Guest memory in MiB.
    #[arg(long = "mem", default_value_t = 256)]
    pub mem_mib: u32,
    /// Guest kernel: a file, `own` or `cloud` (default: own when built, else cloud).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Language image (python, javascript, node, ruby, golang, base) or none.
    #[arg(long, default_value = "none")]
    pub language: String,
    /// Your own squashfs/ext4 root image.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// none or allow_all.
    #[arg(long, default_value = "none", value_parser = super::vm::create::parse_network)]
    pub network: Network,
    /// Boot the VM even when a warm-start template could be restored.
    #[arg(long)]
    pub cold: bool,
    /// Working directory in the guest.
    #[arg(long)]
    pub cwd: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(required = true, last = true)]
    pub argv: Vec<String>,
}

pub async fn run(a: Args, rt: Runtime) -> anyhow::Result<i32> {
    let mut signals = Signals::install()?;
    let spec = CreateSpec {
        language: Some(a.language.clone()),
        image: a.image.clone(),
        cpus: a.cpus,
        mem_mib: a.mem_mib,
        network: a.network,
        kernel: a.kernel.clone(),
        cold: a.cold,
        ..Default::default()
    };
    let progress = StderrProgress::shared();
    let cancel = CancellationToken::new();
    let create = rt.create_cancellable(&spec, &progress, &cancel);
    tokio::pin!(create);
    let mut got_signal = None;
    let sb = loop {
        tokio::select! {
            r = &mut create => break r,
            sig = signals.recv(), if got_signal.is_none() => {
                got_signal = Some(sig);
                cancel.cancel();
            }
        }
    };
    let sb = match (sb, got_signal) {
        (Ok(sb), None) => sb,
        // Booted just as the signal came: remove it below, run nothing.
        (Ok(sb), Some(sig)) => {
            remove(&rt, sb.id()).await;
            return Ok(128 + sig);
        }
        (Err(Error::Cancelled(_)), Some(sig)) => return Ok(128 + sig),
        (Err(e), _) => return Err(e.into()),
    };
    let exec = ExecSpec {
        argv: a.argv.clone(),
        cwd: a.cwd.clone(),
        timeout: a.timeout,
        ..Default::default()
    };
    let result = match sb.exec_stream(&exec).await {
        Ok(s) => match exec_io::stream(s, &mut signals, StreamOpts::default()).await {
            Ok(r) => Ok(r),
            Err(e) => Err(sb.explain(e).await),
        },
        Err(e) => Err(e),
    };
    let id = sb.id().to_string();
    drop(sb);
    remove(&rt, &id).await;
    let r = result?;
    Ok(exec_io::report(&a.argv[0], &r.exit.outcome))
}

async fn remove(rt: &Runtime, id: &str) {
    if let Err(e) = rt.remove(id, false, &StderrProgress::shared()).await {
        eprintln!("hearth: cannot remove vm {id}: {e}");
    }
}
