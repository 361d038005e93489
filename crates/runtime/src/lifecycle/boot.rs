//! The shared boot step: a `creating` record becomes a running sandbox (the
//! record says `running` only after the agent's READY), or a `failed` one with
//! the first line of the reason.

use std::time::Duration;

use hearth_vmm::{RootDisks, SandboxConfig};
use tokio_util::sync::CancellationToken;

use crate::agent::Agent;
use crate::error::{Error, Result};
use crate::progress::{Progress, Step};
use crate::runtime::Runtime;
use crate::sandbox::Sandbox;
use crate::state::{VmRecord, VmStatus};

/// The backend configuration a record describes.
pub fn sandbox_config(
    rt: &Runtime,
    rec: &VmRecord,
    accel: &str,
    timeout: Option<Duration>,
) -> Result<SandboxConfig> {
    let root = match (&rec.rootfs, rec.lowerfs, rec.upper_disk()) {
        (Some(image), Some(fs), Some(upper)) => Some(RootDisks {
            image: image.clone(),
            fs,
            upper,
        }),
        (None, _, _) => None,
        _ => {
            return Err(Error::CorruptRecord {
                id: rec.id.clone(),
                reason: "it has a root image but no filesystem type".into(),
            })
        }
    };
    Ok(SandboxConfig {
        id: rec.id.clone(),
        cpus: rec.cpus,
        mem_mib: rec.mem_mib,
        kernel: rec.kernel.clone(),
        initrd: rec.initrd.clone(),
        cmdline_extra: cmdline_extra(rt, rec),
        network: rec.network,
        root,
        persist: rec.persist_volume.clone(),
        dir: rec.dir.clone(),
        boot_timeout: timeout.unwrap_or_else(|| rt.config().boot_timeout_for(accel)),
        vmm_uid: rec.vmm_uid,
        console: rt.config().console,
        vm_proxy: rt.config().guest_binary.clone().ok_or_else(|| {
            Error::InvalidSpec(format!(
                "no guest binary configured (the static hearth-guest, which also runs on the host as the VM link's proxy); {}",
                crate::paths::GUEST_BUILD_HINT
            ))
        })?,
        // hearth's own kernel finds its virtio-mmio devices on the command line.
        acpi: rec.kernel_kind != Some(hearth_image::KernelKind::Own),
    })
}

/// The configured extra kernel words; on hearth's own kernel (no ACPI, see
/// `SandboxConfig::acpi`) plus `reboot=t`: a restart is a triple fault, which
/// QEMU's `-no-reboot` turns into an exit, instead of trying the keyboard
/// controller and firmware first.
fn cmdline_extra(rt: &Runtime, rec: &VmRecord) -> String {
    let extra = rt.config().kernel_cmdline_extra.clone();
    if rec.kernel_kind == Some(hearth_image::KernelKind::Own) {
        format!("reboot=t {extra}").trim_end().to_owned()
    } else {
        extra
    }
}

/// What became of a boot.
pub enum BootOutcome {
    Booted(Box<Sandbox>),
    /// Cancelled: its processes were ended; the record is still `creating`
    /// for the caller to remove or mark.
    Cancelled,
}

/// Boots the sandbox a `creating` record describes and records the outcome.
pub async fn boot(
    rt: &Runtime,
    rec: VmRecord,
    accel: &str,
    timeout: Option<Duration>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<BootOutcome> {
    boot_from(rt, rec, accel, timeout, progress, cancel, None).await
}

/// [`boot`], or with `snapshot` the state file of a snapshot to start from
/// (the record's disks already hold the snapshot's copies).
pub async fn boot_from(
    rt: &Runtime,
    rec: VmRecord,
    accel: &str,
    timeout: Option<Duration>,
    progress: &dyn Progress,
    cancel: &CancellationToken,
    snapshot: Option<&std::path::Path>,
) -> Result<BootOutcome> {
    let id = rec.id.clone();
    let booted = match sandbox_config(rt, &rec, accel, timeout) {
        Ok(cfg) => {
            progress.step(Step::Boot {
                id: id.clone(),
                accel: accel.to_string(),
            });
            tokio::select! {
                r = async {
                    match snapshot {
                        Some(state) => rt.backend().restore(&cfg, state).await,
                        None => rt.backend().boot(&cfg).await,
                    }
                } => r.map_err(Error::from),
                _ = cancel.cancelled() => {
                    rt.backend().kill_leftovers(&rec.dir).await;
                    return Ok(BootOutcome::Cancelled);
                }
            }
        }
        Err(e) => Err(e),
    };
    match booted {
        Ok(b) => {
            let handle = b.handle.clone();
            let accel = accel.to_string();
            let updated = rt
                .db()
                .update(&id, move |_, r| {
                    r.status = VmStatus::Running;
                    r.backend = Some(handle);
                    r.accel = Some(accel);
                    r.creator = None;
                    r.note = None;
                    Ok(())
                })
                .await;
            match updated {
                Ok(rec) => {
                    let agent = Agent::new(b.client, format!("vm {id}"), rec.env.clone())
                        .with_user(rec.user.clone());
                    Ok(BootOutcome::Booted(Box::new(Sandbox::with_agent(
                        rt.clone(),
                        rec,
                        agent,
                    ))))
                }
                Err(e) => {
                    // Not recorded as running: do not leave it behind unrecorded.
                    if let Err(k) = rt.backend().kill(&b.handle).await {
                        tracing::warn!(sandbox_id = %id, error = %k, "cannot end an unrecorded vm");
                    }
                    Err(e)
                }
            }
        }
        Err(e) => {
            let first = e.to_string().lines().next().unwrap_or_default().to_string();
            if let Err(db) = rt
                .db()
                .update(&id, move |_, r| {
                    r.status = VmStatus::Failed;
                    r.creator = None;
                    r.note = Some(first);
                    Ok(())
                })
                .await
            {
                tracing::warn!(sandbox_id = %id, error = %db, "cannot record the failed boot");
            }
            Err(e)
        }
    }
}
