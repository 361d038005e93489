//! Creating a sandbox: validate the spec (before anything is made), prepare
//! the images, insert the record under admission control, make the disks,
//! boot. A failure while making disks removes the sandbox again; a failed boot
//! leaves a `failed` record (with its console log) to inspect and remove; a
//! cancelled create removes everything it made.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use hearth_vmm::{Network, ProcessId, MAX_CPUS, MIN_MEM_MIB};
use tokio_util::sync::CancellationToken;

use super::boot::{boot, BootOutcome};
use super::disks;
use crate::error::{Error, Result};
use crate::host::{admit, allocate_uid};
use crate::images::{rootfs, RootImage};
use crate::progress::{SharedProgress, Step};
use crate::runtime::Runtime;
use crate::sandbox::Sandbox;
use crate::state::{VmRecord, VmStatus};

/// A persistent volume for `/persist`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PersistSpec {
    /// The volume's name (default: the sandbox id); an existing volume of that
    /// name is attached again.
    pub name: Option<String>,
    /// Size of a new volume in MiB (default 1024, sparse).
    pub size_mib: Option<u64>,
}

/// What a new sandbox is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateSpec {
    /// A language image (python, javascript, node, ruby, golang); `None` or
    /// `none` boots the bare initramfs guest.
    pub language: Option<String>,
    /// A user's own squashfs or ext4 root image instead of a language image.
    pub image: Option<PathBuf>,
    pub cpus: u32,
    pub mem_mib: u32,
    pub network: Network,
    /// The kernel (default: the runtime config's, else the newest cloud kernel).
    pub kernel: Option<PathBuf>,
    /// Boot this initramfs instead of the built one (debugging).
    pub initrd: Option<PathBuf>,
    pub persist: Option<PersistSpec>,
    /// Size of the writable upper disk in MiB (root images only; default 2048).
    pub disk_mib: Option<u64>,
    /// A unique name usable instead of the id.
    pub name: Option<String>,
    /// How long the boot may take (default: the runtime config's).
    pub boot_timeout: Option<Duration>,
    /// Environment of every exec, after the image's (later entries win).
    pub env: Vec<(String, String)>,
    /// Free-form labels kept in the record.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Remove the sandbox this long after it was created (a server's reaper
    /// does it; see [`crate::VmRecord::deadline_ms`]).
    pub lifetime: Option<Duration>,
    /// Boot it even when a warm-start template could be used
    /// ([`crate::warm`]).
    pub cold: bool,
}

impl Default for CreateSpec {
    fn default() -> Self {
        Self {
            language: None,
            image: None,
            cpus: 1,
            mem_mib: 256,
            network: Network::None,
            kernel: None,
            initrd: None,
            persist: None,
            disk_mib: None,
            name: None,
            boot_timeout: None,
            env: Vec::new(),
            metadata: Default::default(),
            lifetime: None,
            cold: false,
        }
    }
}

/// The longest lifetime a sandbox can be given (30 days).
pub const MAX_LIFETIME: Duration = Duration::from_secs(30 * 24 * 3600);

/// Language images, and initramfs files with their sizes.
pub type ImageList = (Vec<hearth_image::rootfs::ImageInfo>, Vec<(PathBuf, u64)>);

/// A volume, sandbox or persist name: 1-64 of `[A-Za-z0-9._-]`, not starting
/// with `.` or `-`.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidSpec(format!(
            "invalid {what} {name:?} (1-64 letters, digits, '.', '_' or '-', not starting with '.' or '-')"
        )))
    }
}

impl CreateSpec {
    /// Checks everything that can be checked without building or booting.
    pub fn validate(&self) -> Result<Option<hearth_image::rootfs::Language>> {
        if self.mem_mib < MIN_MEM_MIB {
            return Err(Error::InvalidSpec(format!(
                "memory {} MiB is below the minimum of {MIN_MEM_MIB} MiB a guest needs to boot",
                self.mem_mib
            )));
        }
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(Error::InvalidSpec(format!(
                "cpu count {} is out of range (1..={MAX_CPUS})",
                self.cpus
            )));
        }
        let lang = match self.language.as_deref() {
            None | Some("") | Some("none") => None,
            Some(name) => Some(rootfs::parse_language(name)?),
        };
        let has_root = lang.is_some() || self.image.is_some();
        if lang.is_some() && self.image.is_some() {
            return Err(Error::InvalidSpec(
                "give either a language or an image, not both".into(),
            ));
        }
        for (what, v) in [
            ("upper disk size", self.disk_mib),
            (
                "persist volume size",
                self.persist.as_ref().and_then(|p| p.size_mib),
            ),
        ] {
            if let Some(v) = v {
                if !(8..=1 << 20).contains(&v) {
                    return Err(Error::InvalidSpec(format!(
                        "{what} {v} MiB is out of range (8..=1048576)"
                    )));
                }
            }
        }
        if let Some(n) = self.persist.as_ref().and_then(|p| p.name.as_deref()) {
            check_name("persist volume name", n)?;
        }
        if let Some(n) = &self.name {
            check_name("vm name", n)?;
        }
        if let Some(k) = self
            .env
            .iter()
            .map(|(k, _)| k)
            .find(|k| k.is_empty() || k.contains(['=', '\0']))
        {
            return Err(Error::InvalidSpec(format!(
                "environment variable name {k:?} is empty or contains '=' or NUL"
            )));
        }
        if let Some(l) = self.lifetime {
            if l.is_zero() || l > MAX_LIFETIME {
                return Err(Error::InvalidSpec(format!(
                    "lifetime {} s is out of range (1..={} s)",
                    l.as_secs(),
                    MAX_LIFETIME.as_secs()
                )));
            }
        }
        if self.persist.is_some() && !has_root {
            return Err(Error::InvalidSpec(
                "a persist volume needs a root image: add a language or an image".into(),
            ));
        }
        if self.disk_mib.is_some() && !has_root {
            return Err(Error::InvalidSpec(
                "an upper disk size needs a root image: add a language or an image".into(),
            ));
        }
        Ok(lang)
    }
}

impl Runtime {
    /// Builds what is missing, boots a new sandbox and returns it once its
    /// agent answered.
    pub async fn create(&self, spec: &CreateSpec, progress: &SharedProgress) -> Result<Sandbox> {
        self.create_cancellable(spec, progress, &CancellationToken::new())
            .await
    }

    /// [`Runtime::create`] that stops when `cancel` fires, removing whatever
    /// it made (the record, the disks, a new persist volume, the processes).
    pub async fn create_cancellable(
        &self,
        spec: &CreateSpec,
        progress: &SharedProgress,
        cancel: &CancellationToken,
    ) -> Result<Sandbox> {
        let r = self.create_inner(spec, progress, cancel).await;
        progress.done();
        r
    }

    pub(crate) async fn create_inner(
        &self,
        spec: &CreateSpec,
        progress: &SharedProgress,
        cancel: &CancellationToken,
    ) -> Result<Sandbox> {
        let lang = spec.validate()?;
        let cfg = self.config().clone();
        crate::host::check_shape(self.host(), &cfg.admission, spec.cpus, spec.mem_mib)?;
        let root: Option<RootImage> = match (&spec.image, lang) {
            (Some(p), _) => Some(rootfs::user_image(p)?),
            (None, Some(l)) => {
                let cache = cfg.image_cache.clone();
                let p = Arc::clone(progress);
                let job = tokio::task::spawn_blocking(move || {
                    rootfs::ensure_blocking(&cache, l, p.as_ref())
                });
                let (info, _) = tokio::select! {
                    r = job => r.map_err(|e| Error::Internal(format!("image task: {e}")))??,
                    _ = cancel.cancelled() => return Err(Error::Cancelled("while building the image".into())),
                };
                Some(rootfs::language_image(l, info))
            }
            (None, None) => None,
        };
        let kernel_path = spec.kernel.clone().or_else(|| cfg.kernel.clone());
        let kernel = crate::images::kernel(kernel_path.as_deref(), &cfg)?;
        let initrd = match &spec.initrd {
            Some(p) if p.is_file() => {
                std::fs::canonicalize(p).map_err(|e| Error::io("cannot resolve", p, e))?
            }
            Some(p) => {
                return Err(Error::InvalidSpec(format!(
                    "initramfs not found: {}",
                    p.display()
                )))
            }
            None => self.ensure_initramfs(&kernel, progress).await?.path,
        };
        let accel = self.backend().accel(&kernel.path).await?;
        let id = super::new_id()?;
        let dir = cfg.vm_dir(&id);
        let persist_volume = spec
            .persist
            .as_ref()
            .map(|p| cfg.persist_volume(p.name.as_deref().unwrap_or(&id)));
        let new_volume = persist_volume.as_ref().is_some_and(|v| !v.exists());
        let rec = VmRecord {
            id: id.clone(),
            name: spec.name.clone(),
            created_at: super::now_secs(),
            status: VmStatus::Creating,
            cpus: spec.cpus,
            mem_mib: spec.mem_mib,
            language: root
                .as_ref()
                .map(|r| r.language.clone())
                .unwrap_or_else(|| "none".into()),
            initrd,
            custom_initrd: spec.initrd.is_some(),
            kernel: kernel.path.clone(),
            kernel_kind: Some(kernel.kind),
            kernel_release: Some(kernel.release.clone()),
            accel: Some(accel.clone()),
            backend: None,
            creator: ProcessId::of_child(std::process::id()),
            dir: dir.clone(),
            note: None,
            rootfs: root.as_ref().map(|r| r.path.clone()),
            lowerfs: root.as_ref().map(|r| r.fs),
            image_hash: root.as_ref().and_then(|r| r.hash.clone()),
            disk_mib: if root.is_some() {
                spec.disk_mib.unwrap_or(disks::DEFAULT_DISK_MIB)
            } else {
                0
            },
            network: spec.network,
            persist_volume,
            env: root
                .as_ref()
                .map(|r| r.env.clone())
                .unwrap_or_default()
                .into_iter()
                .chain(spec.env.iter().cloned())
                .collect(),
            hello: root.as_ref().map(|r| r.hello.clone()).unwrap_or_default(),
            vmm_uid: None,
            user: root.as_ref().and_then(|r| r.user.clone()),
            metadata: spec.metadata.clone(),
            deadline_ms: spec
                .lifetime
                .map(|l| super::now_millis().saturating_add(l.as_millis() as u64)),
            warm_template: None,
        };
        if let Some(sb) = self.try_warm(spec, &rec, &accel, progress, cancel).await? {
            return Ok(sb);
        }
        let rec = self.insert_admitted(rec).await?;
        progress.step(Step::MakeDisks { id: id.clone() });
        let persist_mib = spec
            .persist
            .as_ref()
            .and_then(|p| p.size_mib)
            .unwrap_or(disks::DEFAULT_PERSIST_MIB);
        let persist_dir = cfg.persist_dir();
        let made = tokio::select! {
            r = disks::make(&rec, &persist_dir, persist_mib) => r,
            _ = cancel.cancelled() => Err(Error::Cancelled("while making the disks".into())),
        };
        if let Err(e) = made {
            self.discard(&rec, new_volume).await;
            return Err(e);
        }
        match boot(
            self,
            rec.clone(),
            &accel,
            spec.boot_timeout,
            progress.as_ref(),
            cancel,
        )
        .await
        {
            Ok(BootOutcome::Booted(s)) => Ok(*s),
            Ok(BootOutcome::Cancelled) => {
                self.discard(&rec, new_volume).await;
                Err(Error::Cancelled(format!(
                    "while booting vm {id}; it was removed"
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Records `rec` if the host admits it: its name is free, its persist
    /// volume unused, the shape fits ([`admit`]), and it gets a VMM uid when
    /// VMMs are jailed. Shared by create and restore.
    pub(crate) async fn insert_admitted(&self, rec: VmRecord) -> Result<VmRecord> {
        let host = self.host();
        let policy = self.config().admission.clone();
        let iso = self.config().isolation.clone();
        self.db()
            .insert(rec, move |others, new| {
                if let Some(n) = &new.name {
                    if let Some(o) = others.iter().find(|o| o.is_called(n)) {
                        return Err(Error::InvalidSpec(format!(
                            "the name {n} is taken by vm {}",
                            o.id
                        )));
                    }
                }
                if let Some(vol) = &new.persist_volume {
                    if let Some(o) = others
                        .iter()
                        .find(|o| o.persist_volume.as_ref() == Some(vol))
                    {
                        return Err(Error::PersistInUse {
                            name: new.persist_name().unwrap_or_default(),
                            owner: o.id.clone(),
                            status: o.status,
                        });
                    }
                }
                admit(host, &policy, others, new)?;
                if let Some(base) = iso.vmm_uid_base {
                    new.vmm_uid = Some(allocate_uid(base, iso.vmm_uid_count, others)?);
                }
                Ok(())
            })
            .await
    }

    /// Removes a sandbox that never ran: its directory, a persist volume made
    /// for it, and its record.
    async fn discard(&self, rec: &VmRecord, remove_volume: bool) {
        if let Err(e) = tokio::fs::remove_dir_all(&rec.dir).await {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(sandbox_id = %rec.id, error = %e, "cannot remove the vm directory");
            }
        }
        if remove_volume {
            if let Some(v) = &rec.persist_volume {
                if let Err(e) = disks::remove_persist_volume(v) {
                    tracing::warn!(sandbox_id = %rec.id, error = %e, "cannot remove the new persist volume");
                }
            }
        }
        if let Err(e) = self.db().remove(&rec.id).await {
            tracing::warn!(sandbox_id = %rec.id, error = %e, "cannot remove the record");
        }
    }

    /// Builds or finds the initramfs for `kernel`.
    pub async fn ensure_initramfs(
        &self,
        kernel: &hearth_image::KernelInfo,
        progress: &SharedProgress,
    ) -> Result<crate::images::Initramfs> {
        progress.step(Step::PrepareInitramfs);
        let cfg = self.config().clone();
        let k = kernel.clone();
        tokio::task::spawn_blocking(move || crate::images::initramfs::ensure_blocking(&cfg, &k))
            .await
            .map_err(|e| Error::Internal(format!("initramfs task: {e}")))?
    }

    /// Cached language images and initramfs files.
    pub fn list_images(&self) -> Result<ImageList> {
        let cache = self.config().image_cache();
        Ok((rootfs::list(cache)?, crate::images::initramfs::list(cache)))
    }

    /// Removes the language images `selector` names; refuses images that
    /// sandboxes still use unless `force`.
    pub async fn remove_image(
        &self,
        selector: &hearth_image::rootfs::ImageSelector,
        force: bool,
    ) -> Result<Vec<hearth_image::rootfs::ImageInfo>> {
        let records = self.reconcile().await?;
        rootfs::remove(self.config().image_cache(), selector, &records, force)
    }

    /// Builds or finds a language image.
    pub async fn ensure_language_image(
        &self,
        language: &str,
        progress: &SharedProgress,
    ) -> Result<(hearth_image::rootfs::ImageInfo, bool)> {
        let l = rootfs::parse_language(language)?;
        let cache = self.config().image_cache.clone();
        let p = Arc::clone(progress);
        let r = tokio::task::spawn_blocking(move || rootfs::ensure_blocking(&cache, l, p.as_ref()))
            .await
            .map_err(|e| Error::Internal(format!("image task: {e}")))?;
        progress.done();
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "data-1", "x.y_z", "ab12cd34"] {
            assert!(check_name("n", ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "-x", "a/b", "a b", &"n".repeat(65)] {
            assert!(check_name("n", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn bad_specs_are_refused_before_any_work() {
        let o = |f: &dyn Fn(&mut CreateSpec)| {
            let mut o = CreateSpec::default();
            f(&mut o);
            o.validate().map(|_| ()).map_err(|e| e.to_string())
        };
        assert!(o(&|_| {}).is_ok());
        let e = o(&|c| c.language = Some("cobol".into())).unwrap_err();
        assert!(e.contains("cobol") && e.contains("python, javascript, node, ruby, golang"));
        let e = o(&|c| c.mem_mib = 16).unwrap_err();
        assert!(e.contains("16 MiB is below the minimum"), "{e}");
        let e = o(&|c| {
            c.language = Some("python".into());
            c.image = Some("/x".into());
        })
        .unwrap_err();
        assert!(e.contains("not both"), "{e}");
        let e = o(&|c| c.persist = Some(PersistSpec::default())).unwrap_err();
        assert!(e.contains("persist volume needs a root image"), "{e}");
        let e = o(&|c| {
            c.language = Some("python".into());
            c.disk_mib = Some(4);
        })
        .unwrap_err();
        assert!(e.contains("4 MiB is out of range"), "{e}");
        assert!(o(&|c| {
            c.language = Some("ruby".into());
            c.network = Network::AllowAll;
            c.persist = Some(PersistSpec {
                name: Some("data".into()),
                size_mib: None,
            });
        })
        .is_ok());
    }
}
