//! Booting VMs with their records: `vm create` (and `hearth run`) make a new
//! VM, its disks and its record; `vm start` boots a stopped one again with the
//! same disks. A record becomes `running` only after the agent said READY.
//!
//! Disks of a VM with a root image (language or `--image`):
//! - the image itself, read-only (lower), shared by every VM using it;
//! - `<vm dir>/upper.ext4`, a sparse ext4 disk (`--disk`, default 2 GiB) holding
//!   the overlay's writable layer; kept across stop/start, removed by `clean`;
//! - with `--persist`: `<state>/persist/<NAME>.ext4` (NAME: `--persist-name`,
//!   default the VM id), mounted at `/persist`. `vm clean` removes it,
//!   `vm clean --keep-persist` keeps it, and `vm create --persist-name NAME`
//!   attaches an existing volume again.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use hearth_client::Client;
use hearth_vmm::{Accel, Network, ProcessId, QemuFactory, RootDisks, SandboxConfig};

use super::common::Progress;
use crate::commands::image::{self, language};
use crate::state::{new_vm_id, now_secs, State, VmRecord, VmStatus, UPPER_DISK};

/// Default size of the writable upper disk.
pub const DEFAULT_DISK_MIB: u64 = 2048;
/// Default size of a new `--persist` volume.
pub const DEFAULT_PERSIST_MIB: u64 = 1024;
/// ext4 label of the upper disk (the persist label is the contract's serial).
const UPPER_LABEL: &str = "hearth-upper";

/// What `vm create` and `hearth run` ask for.
#[derive(Debug, Clone)]
pub struct CreateOpts {
    pub language: String,
    pub image: Option<PathBuf>,
    pub cpus: u32,
    pub mem_mib: u32,
    pub network: String,
    pub kernel: Option<PathBuf>,
    /// Boot this initramfs instead of the built one (debugging).
    pub initrd: Option<PathBuf>,
    pub persist: bool,
    pub persist_name: Option<String>,
    pub persist_mib: Option<u64>,
    pub disk_mib: Option<u64>,
    pub name: Option<String>,
    pub boot_timeout: Option<Duration>,
}

impl Default for CreateOpts {
    fn default() -> Self {
        Self {
            language: "none".into(),
            image: None,
            cpus: 1,
            mem_mib: 256,
            network: "none".into(),
            kernel: None,
            initrd: None,
            persist: false,
            persist_name: None,
            persist_mib: None,
            disk_mib: None,
            name: None,
            boot_timeout: None,
        }
    }
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

/// A persist volume name: 1-64 of `[A-Za-z0-9._-]`, not starting with `.` or `-`.
pub fn check_persist_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with(['.', '-']);
    if !ok {
        bail!("invalid --persist-name {name:?} (1-64 letters, digits, '.', '_' or '-')");
    }
    Ok(())
}

/// Checks the numbers and names before anything is built or booted.
fn check_opts(o: &CreateOpts) -> anyhow::Result<(Network, Option<hearth_image::rootfs::Language>)> {
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
    let network = Network::parse(&o.network).map_err(anyhow::Error::new)?;
    let lang = match o.language.as_str() {
        "" | "none" => None,
        name => Some(language::parse_language(name)?),
    };
    if lang.is_some() && o.image.is_some() {
        bail!("give either --language or --image, not both");
    }
    for (flag, v) in [("--disk", o.disk_mib), ("--persist-size", o.persist_mib)] {
        if let Some(v) = v {
            if !(8..=1 << 20).contains(&v) {
                bail!("{flag} {v} MiB is out of range (8..=1048576)");
            }
        }
    }
    if let Some(n) = &o.persist_name {
        check_persist_name(n)?;
    }
    if (o.persist || o.persist_name.is_some()) && lang.is_none() && o.image.is_none() {
        bail!("--persist needs a root image: add --language or --image");
    }
    if o.disk_mib.is_some() && lang.is_none() && o.image.is_none() {
        bail!("--disk needs a root image: add --language or --image");
    }
    Ok((network, lang))
}

/// Runs `create_ext4` off the async runtime.
async fn make_ext4(path: PathBuf, mib: u64, label: &'static str) -> anyhow::Result<()> {
    let p = path.clone();
    tokio::task::spawn_blocking(move || hearth_image::rootfs::create_ext4(&p, mib, label))
        .await
        .context("the disk creation task failed")?
        .with_context(|| format!("cannot create the disk {}", path.display()))
}

/// Validates, builds the images, makes the disks, boots, and records the VM.
/// Bad input fails before anything is written; a failure while making disks
/// removes the VM again; a failed boot leaves a `failed` record (with its
/// console log) for `vm clean`.
pub async fn create_vm(state: &State, o: &CreateOpts) -> anyhow::Result<(VmRecord, Client)> {
    let (network, lang) = check_opts(o)?;
    let root = match (&o.image, lang) {
        (Some(p), _) => Some(language::user_image(p)?),
        (None, Some(l)) => Some(language::language_image(state.images_dir(), l).await?),
        (None, None) => None,
    };
    let kernel = image::kernel(o.kernel.as_deref())?;
    let initrd = match &o.initrd {
        Some(p) if p.is_file() => {
            std::fs::canonicalize(p).with_context(|| format!("cannot resolve {}", p.display()))?
        }
        Some(p) => bail!("initramfs not found: {}", p.display()),
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

    let persist_volume = if o.persist || o.persist_name.is_some() {
        let name = o.persist_name.clone().unwrap_or_else(|| id.clone());
        let path = state.persist_dir().join(format!("{name}.ext4"));
        if let Some(r) = state
            .list()
            .await?
            .into_iter()
            .find(|r| r.persist_volume.as_deref() == Some(path.as_path()))
        {
            bail!(
                "persist volume {name} belongs to vm {} ({}); run `hearth vm clean --vm {} --keep-persist` first to hand it over",
                r.id,
                r.status.as_str(),
                r.id
            );
        }
        Some(path)
    } else {
        None
    };

    let rec = VmRecord {
        id: id.clone(),
        name: o.name.clone(),
        created_at: now_secs(),
        status: VmStatus::Creating,
        cpus: o.cpus,
        mem_mib: o.mem_mib,
        language: root
            .as_ref()
            .map(|r| r.language.clone())
            .unwrap_or_else(|| "none".into()),
        image: initrd,
        custom_initrd: o.initrd.is_some(),
        kernel: kernel.path.clone(),
        accel: Some(factory.accel),
        qemu: None,
        vhost: None,
        creator: ProcessId::of_child(std::process::id()),
        dir: dir.clone(),
        persist: persist_volume.is_some(),
        note: None,
        rootfs: root.as_ref().map(|r| r.path.clone()),
        lowerfs: root.as_ref().map(|r| r.fs),
        image_hash: root.as_ref().and_then(|r| r.hash.clone()),
        disk_mib: if root.is_some() {
            o.disk_mib.unwrap_or(DEFAULT_DISK_MIB)
        } else {
            0
        },
        network,
        persist_volume: persist_volume.clone(),
        env: root.as_ref().map(|r| r.env.clone()).unwrap_or_default(),
        hello: root.as_ref().map(|r| r.hello.clone()).unwrap_or_default(),
    };
    state.insert(&rec)?;
    if let Err(e) = make_disks(state, &rec, o.persist_mib.unwrap_or(DEFAULT_PERSIST_MIB)).await {
        let _ = std::fs::remove_dir_all(&dir);
        if let Err(db) = state.remove(&id) {
            tracing::warn!(error = %db, "cannot remove the record of a vm whose disks failed");
        }
        return Err(e);
    }
    boot_record(state, rec, &factory, o.boot_timeout).await
}

/// Creates the VM directory, the upper disk and (when new) the persist volume.
/// On failure removes what it made here (the caller removes the directory).
async fn make_disks(state: &State, rec: &VmRecord, persist_mib: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(&rec.dir)
        .with_context(|| format!("cannot create {}", rec.dir.display()))?;
    if rec.rootfs.is_some() {
        make_ext4(rec.dir.join(UPPER_DISK), rec.disk_mib, UPPER_LABEL).await?;
    }
    if let Some(vol) = &rec.persist_volume {
        if vol.is_file() {
            tracing::info!(volume = %vol.display(), "attaching an existing persist volume");
        } else {
            let pdir = state.persist_dir();
            std::fs::create_dir_all(&pdir)
                .with_context(|| format!("cannot create {}", pdir.display()))?;
            make_ext4(
                vol.clone(),
                persist_mib,
                hearth_vmm::guest_contract::PERSIST_SERIAL,
            )
            .await?;
        }
    }
    Ok(())
}

/// Checks that a stopped VM's disks are all there, with errors naming the file.
pub fn check_disks(rec: &VmRecord) -> anyhow::Result<()> {
    if let Some(img) = &rec.rootfs {
        if !img.is_file() {
            bail!(
                "the root image {} of vm {} is gone (removed with `hearth image rm`?); clean the vm and create a new one",
                img.display(),
                rec.id
            );
        }
    }
    if let Some(up) = rec.upper_disk() {
        if !up.is_file() {
            bail!(
                "the upper disk {} of vm {} is missing",
                up.display(),
                rec.id
            );
        }
    }
    if let Some(vol) = &rec.persist_volume {
        if !vol.is_file() {
            bail!(
                "the persist volume {} of vm {} is missing (was it deleted by hand?); \
                 clean the vm, or create a new one with --persist",
                vol.display(),
                rec.id
            );
        }
    }
    Ok(())
}

/// Boots a stopped (or failed) VM again with its disks.
pub async fn start_vm(
    state: &State,
    id: &str,
    timeout: Option<Duration>,
) -> anyhow::Result<(VmRecord, Client)> {
    let rec = state.get(id).await?;
    match rec.status {
        VmStatus::Stopped | VmStatus::Failed => {}
        VmStatus::Running | VmStatus::Creating => {
            bail!("vm {id} is already {}", rec.status.as_str())
        }
    }
    check_disks(&rec)?;
    let explicit = rec.kernel.is_file().then_some(rec.kernel.as_path());
    let kernel = image::kernel(explicit)?;
    // The built initramfs is re-checked (a new guest binary makes a new one).
    let initrd = if rec.custom_initrd {
        rec.image.clone()
    } else {
        let st = state.clone();
        let k = kernel.clone();
        tokio::task::spawn_blocking(move || image::ensure(&st, &k))
            .await??
            .path
    };
    let factory = QemuFactory::detect(&kernel.path, state.dir()).await?;
    let me = ProcessId::of_child(std::process::id());
    let rec = state.update(id, |r| {
        r.status = VmStatus::Creating;
        r.creator = me;
        r.qemu = None;
        r.vhost = None;
        r.note = None;
        r.image = initrd.clone();
        r.kernel = kernel.path.clone();
        r.accel = Some(factory.accel);
    })?;
    boot_record(state, rec, &factory, timeout).await
}

/// The sandbox configuration a record describes.
pub fn sandbox_config(rec: &VmRecord, timeout: Duration) -> anyhow::Result<SandboxConfig> {
    let root = match (&rec.rootfs, rec.lowerfs, rec.upper_disk()) {
        (Some(image), Some(fs), Some(upper)) => Some(RootDisks {
            image: image.clone(),
            fs,
            upper,
        }),
        (None, _, _) => None,
        _ => bail!(
            "the record of vm {} has a root image but no filesystem type",
            rec.id
        ),
    };
    Ok(SandboxConfig {
        id: rec.id.clone(),
        cpus: rec.cpus,
        mem_mib: rec.mem_mib,
        kernel: rec.kernel.clone(),
        initrd: rec.image.clone(),
        cmdline_extra: std::env::var("HEARTH_KERNEL_EXTRA").unwrap_or_default(),
        network: rec.network,
        root,
        persist: rec.persist_volume.clone(),
        dir: rec.dir.clone(),
        boot_timeout: timeout,
        vmm_uid: None,
    })
}

/// Boots the VM a `creating` record describes and records the outcome:
/// `running` after READY, `failed` (with the first error line) otherwise.
async fn boot_record(
    state: &State,
    rec: VmRecord,
    factory: &QemuFactory,
    timeout: Option<Duration>,
) -> anyhow::Result<(VmRecord, Client)> {
    let id = rec.id.clone();
    let booted = match sandbox_config(&rec, boot_timeout(timeout, factory.accel)) {
        Ok(cfg) => {
            let progress = Progress::start(&format!("booting vm {id} ({})", factory.accel));
            let r = factory.boot(&cfg).await.map_err(anyhow::Error::new);
            drop(progress);
            r
        }
        Err(e) => Err(e),
    };
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
            Err(e)
        }
    }
}

/// Removes a persist volume file (plain `vm clean`).
pub fn remove_persist_volume(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persist_names() {
        for ok in ["a", "data-1", "x.y_z", "ab12cd34"] {
            assert!(check_persist_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", &"n".repeat(65)] {
            assert!(check_persist_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_options_are_refused_before_any_work() {
        let o = |f: &dyn Fn(&mut CreateOpts)| {
            let mut o = CreateOpts::default();
            f(&mut o);
            check_opts(&o).map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(o(&|_| {}).is_ok());
        let e = o(&|c| c.language = "cobol".into()).unwrap_err();
        assert!(e.contains("cobol") && e.contains("python, javascript, node, ruby, golang"));
        let e = o(&|c| c.network = "bridge".into()).unwrap_err();
        assert!(e.contains("none, allow_all"), "{e}");
        let e = o(&|c| {
            c.language = "python".into();
            c.image = Some("/x".into());
        })
        .unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = o(&|c| c.persist = true).unwrap_err();
        assert!(e.contains("--persist needs a root image"), "{e}");
        let e = o(&|c| {
            c.language = "python".into();
            c.disk_mib = Some(4);
        })
        .unwrap_err();
        assert!(e.contains("--disk 4"), "{e}");
        assert!(o(&|c| {
            c.language = "ruby".into();
            c.network = "allow_all".into();
            c.persist_name = Some("data".into());
        })
        .is_ok());
    }

    fn rec(dir: &Path) -> VmRecord {
        let mut r: VmRecord = serde_json::from_value(serde_json::json!({
            "id": "ab12cd34", "name": null, "created_at": 1, "status": "stopped",
            "cpus": 1, "mem_mib": 256, "language": "python", "image": "/i", "kernel": "/k",
            "accel": "tcg", "qemu": null, "vhost": null, "creator": null,
            "dir": dir, "persist": true, "note": null,
        }))
        .unwrap();
        r.rootfs = Some(dir.join("img.squashfs"));
        r.lowerfs = Some(hearth_vmm::LowerFs::Squashfs);
        r.persist_volume = Some(dir.join("p.ext4"));
        r
    }

    #[test]
    fn missing_disks_are_named() {
        let d = tempfile::tempdir().unwrap();
        let r = rec(d.path());
        let e = check_disks(&r).unwrap_err().to_string();
        assert!(e.contains("img.squashfs") && e.contains("image rm"), "{e}");
        std::fs::write(d.path().join("img.squashfs"), b"x").unwrap();
        std::fs::write(d.path().join(UPPER_DISK), b"x").unwrap();
        let e = check_disks(&r).unwrap_err().to_string();
        assert!(
            e.contains("persist volume") && e.contains("p.ext4") && e.contains("deleted by hand"),
            "{e}"
        );
        std::fs::write(d.path().join("p.ext4"), b"x").unwrap();
        check_disks(&r).unwrap();
        let cfg = sandbox_config(&r, Duration::from_secs(1)).unwrap();
        assert_eq!(cfg.root.unwrap().upper, d.path().join(UPPER_DISK));
        assert_eq!(cfg.persist, Some(d.path().join("p.ext4")));
    }
}
