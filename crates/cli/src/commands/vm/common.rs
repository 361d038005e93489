//! What several `vm` subcommands (and `hearth run`) share: booting a VM with its
//! record, reaching a running VM, streaming an exec, stopping and removing.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use hearth_client::{pb, Client, ExecEvent};
use hearth_vmm::{Accel, ProcessId, QemuFactory, SandboxConfig, VmHandle};

use crate::commands::image;
use crate::state::{new_vm_id, now_secs, State, VmRecord, VmStatus};

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

/// What `vm create` and `hearth run` ask for.
#[derive(Debug, Clone)]
pub struct CreateOpts {
    pub language: String,
    pub image: Option<PathBuf>,
    pub cpus: u32,
    pub mem_mib: u32,
    pub network: String,
    pub kernel: Option<PathBuf>,
    pub persist: bool,
    pub name: Option<String>,
    pub boot_timeout: Option<Duration>,
}

/// Boot deadline: explicit, else `HEARTH_BOOT_TIMEOUT` (seconds), else 60 s under
/// TCG and 15 s under KVM.
fn boot_timeout(explicit: Option<Duration>, accel: Accel) -> Duration {
    explicit
        .or_else(|| {
            std::env::var("HEARTH_BOOT_TIMEOUT")
                .ok()
                .and_then(|v| v.parse::<f64>().ok())
                .map(Duration::from_secs_f64)
        })
        .unwrap_or(match accel {
            Accel::Tcg => Duration::from_secs(60),
            Accel::Kvm => Duration::from_secs(15),
        })
}

/// Validates, builds the image, boots, and records the VM. The DB is touched only
/// in short transactions: `creating` before boot, `running` after READY.
pub async fn create_vm(state: &State, o: &CreateOpts) -> anyhow::Result<(VmRecord, Client)> {
    if o.mem_mib < hearth_vmm::MIN_MEM_MIB {
        bail!(
            "--mem {} MiB is below the minimum of {} MiB a guest needs to boot",
            o.mem_mib,
            hearth_vmm::MIN_MEM_MIB
        );
    }
    if o.cpus == 0 || o.cpus > hearth_vmm::MAX_CPUS {
        bail!(
            "--cpu {} is out of range (1..={})",
            o.cpus,
            hearth_vmm::MAX_CPUS
        );
    }
    if o.network != "none" {
        bail!("--network {} is not supported yet (only none)", o.network);
    }
    if !matches!(o.language.as_str(), "none" | "") {
        bail!("language images are not built yet: {}", o.language);
    }
    let kernel = image::kernel(o.kernel.as_deref())?;
    let image_path = match &o.image {
        Some(p) if p.is_file() => p.clone(),
        Some(p) => bail!("image not found: {}", p.display()),
        None => {
            let st = state.clone();
            let k = kernel.clone();
            tokio::task::spawn_blocking(move || image::ensure(&st, &k))
                .await??
                .path
        }
    };
    let factory = QemuFactory::detect(&kernel.path, state.dir()).await?;
    let id = new_vm_id()?;
    let dir = state.vms_dir().join(&id);
    let rec = VmRecord {
        id: id.clone(),
        name: o.name.clone(),
        created_at: now_secs(),
        status: VmStatus::Creating,
        cpus: o.cpus,
        mem_mib: o.mem_mib,
        language: if o.language.is_empty() {
            "none".into()
        } else {
            o.language.clone()
        },
        image: image_path.clone(),
        kernel: kernel.path.clone(),
        accel: Some(factory.accel),
        qemu: None,
        vhost: None,
        creator: ProcessId::of_child(std::process::id()),
        dir: dir.clone(),
        persist: o.persist,
        note: None,
    };
    state.insert(&rec)?;
    let cfg = SandboxConfig {
        id: id.clone(),
        cpus: o.cpus,
        mem_mib: o.mem_mib,
        kernel: kernel.path.clone(),
        initrd: image_path,
        cmdline_extra: String::new(),
        network: hearth_vmm::Network::None,
        dir,
        boot_timeout: boot_timeout(o.boot_timeout, factory.accel),
    };
    let progress = Progress::start(&format!("booting vm {id} ({})", factory.accel));
    let booted = factory.boot(&cfg).await;
    drop(progress);
    match booted {
        Ok((handle, client)) => {
            let rec = state.update(&id, |r| {
                r.status = VmStatus::Running;
                r.qemu = Some(handle.qemu);
                r.vhost = Some(handle.vhost);
                r.accel = Some(handle.accel);
                r.creator = None;
            });
            match rec {
                Ok(rec) => Ok((rec, client)),
                Err(e) => {
                    // Not recorded as running: do not leave it behind unrecorded.
                    handle.kill().await;
                    Err(e)
                }
            }
        }
        Err(e) => {
            let note = format!("{e}");
            let first = note.lines().next().unwrap_or_default().to_string();
            if let Err(db) = state.update(&id, |r| {
                r.status = VmStatus::Failed;
                r.creator = None;
                r.note = Some(first);
            }) {
                tracing::warn!(error = %db, "cannot record the failed boot");
            }
            Err(anyhow::Error::new(e))
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
            "vm {id} is {} (start a new one with `hearth vm create`)",
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

/// Stops a VM, removes its directory and its record.
pub async fn destroy_vm(state: &State, rec: &VmRecord) -> anyhow::Result<()> {
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
