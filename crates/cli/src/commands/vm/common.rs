//! What several `vm` subcommands (and `hearth run`) share: reaching a running VM,
//! streaming an exec, stopping and removing. Booting is in `boot.rs`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use hearth_client::{pb, Client, ExecEvent};
use hearth_vmm::VmHandle;

use crate::state::{State, VmRecord, VmStatus};

/// A spinner on stderr when it is a terminal, plain lines otherwise.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn start(msg: &str) -> Self {
        if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(msg.to_string());
            bar.enable_steady_tick(Duration::from_millis(100));
            Self { bar: Some(bar) }
        } else {
            eprintln!("hearth: {msg}…");
            Self { bar: None }
        }
    }

    pub fn finish(mut self, msg: &str) {
        match self.bar.take() {
            Some(bar) => bar.finish_and_clear(),
            None => tracing::debug!("{msg}"),
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The record of a running VM and a connection to its agent.
pub async fn connect_running(
    state: &State,
    id: &str,
) -> anyhow::Result<(VmRecord, VmHandle, Client)> {
    let rec = state.get(id).await?;
    if rec.status != VmStatus::Running {
        bail!(
            "vm {id} is {} (boot it again with `hearth vm start --vm {id}`)",
            rec.status.as_str()
        );
    }
    let handle = rec
        .handle()
        .with_context(|| format!("vm {id} has no process information"))?;
    let client = handle.connect(Duration::from_secs(10)).await?;
    Ok((rec, handle, client))
}

/// Turns a failure while talking to a VM into a clear error, noting when the VM
/// itself is gone (and letting the next reconcile record it).
pub async fn explain_failure(state: &State, handle: &VmHandle, e: anyhow::Error) -> anyhow::Error {
    tokio::time::sleep(Duration::from_millis(200)).await;
    if !handle.is_running() {
        let _ = state.list().await;
        return e.context(format!(
            "vm {} stopped during the request (its VMM process exited)",
            handle.id
        ));
    }
    e.context(format!("vm {}", handle.id))
}

/// Runs a streaming exec, copying output to our stdout/stderr as it arrives.
pub async fn stream_exec(client: &Client, start: pb::ExecStart) -> anyhow::Result<pb::ExecExit> {
    let mut h = client.exec_stream(start).await?;
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    loop {
        match h.next_event().await? {
            Some(ExecEvent::Started { .. }) => {}
            Some(ExecEvent::Stdout(b)) => {
                out.write_all(&b).context("cannot write to stdout")?;
                out.flush().ok();
            }
            Some(ExecEvent::Stderr(b)) => {
                err.write_all(&b).ok();
            }
            Some(ExecEvent::Exit(x)) => return Ok(x),
            None => bail!("the exec session ended without an exit status"),
        }
    }
}

/// The exit code for an outcome, with a stderr note when it did not just exit.
pub fn outcome_code(outcome: Option<&pb::ExecOutcome>) -> i32 {
    use pb::exec_outcome::Kind;
    match outcome.and_then(|o| o.kind.as_ref()) {
        Some(Kind::Exited(_)) => {}
        _ => eprintln!(
            "hearth: command {}",
            hearth_client::describe_outcome(outcome)
        ),
    }
    hearth_client::exit_code(outcome)
}

/// Seconds → milliseconds for `timeout_ms` (0 = none).
pub fn timeout_ms(secs: Option<f64>) -> u64 {
    secs.filter(|s| *s > 0.0)
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0)
}

/// Stops a VM if it runs and records it as stopped.
pub async fn stop_vm(state: &State, rec: &VmRecord) -> anyhow::Result<()> {
    if let Some(h) = rec.handle() {
        h.stop(Duration::from_secs(10)).await?;
    }
    if matches!(rec.status, VmStatus::Running | VmStatus::Creating) {
        state.update(&rec.id, |r| {
            r.status = VmStatus::Stopped;
            r.note = Some("stopped by the user".into());
        })?;
    }
    Ok(())
}

/// The environment every exec in this VM gets (its image's; empty for the
/// bare initramfs guest).
pub fn exec_env(rec: &VmRecord) -> Vec<pb::EnvVar> {
    hearth_proto::env_vars(rec.env.iter().map(|(k, v)| (k, v)))
}

/// Stops a VM, removes its directory (with its upper disk) and its record, and
/// its persist volume unless `keep_persist`.
pub async fn destroy_vm(state: &State, rec: &VmRecord, keep_persist: bool) -> anyhow::Result<()> {
    if rec.status == VmStatus::Creating {
        bail!(
            "vm {} is still booting; try again when it is running or failed",
            rec.id
        );
    }
    stop_vm(state, rec).await?;
    if rec.dir.exists() {
        std::fs::remove_dir_all(&rec.dir)
            .with_context(|| format!("cannot remove {}", rec.dir.display()))?;
    }
    state.remove(&rec.id)?;
    if let Some(vol) = &rec.persist_volume {
        if keep_persist {
            let name = vol
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            eprintln!(
                "hearth: kept the persist volume {} of vm {} (attach it with `hearth vm create --persist-name {name} ...`)",
                vol.display(),
                rec.id
            );
        } else {
            super::boot::remove_persist_volume(vol)?;
        }
    }
    Ok(())
}

/// Ids named with `--vm`, or every record with `--all` filtered by `keep`.
pub async fn select(
    state: &State,
    ids: &[String],
    all: bool,
    keep: impl Fn(&VmRecord) -> bool,
) -> anyhow::Result<Vec<VmRecord>> {
    let recs = state.list().await?;
    if all {
        if !ids.is_empty() {
            bail!("give either --vm ID... or --all, not both");
        }
        return Ok(recs.into_iter().filter(|r| keep(r)).collect());
    }
    if ids.is_empty() {
        bail!("name at least one vm with --vm ID (or use --all)");
    }
    ids.iter()
        .map(|id| {
            recs.iter()
                .find(|r| &r.id == id)
                .cloned()
                .ok_or_else(|| anyhow::anyhow!("no such vm: {id} (see `hearth vm list --all`)"))
        })
        .collect()
}
