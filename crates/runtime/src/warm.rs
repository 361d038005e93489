//! Warm start: a create restores from a cached post-boot snapshot (a
//! *template*) of its shape instead of booting.
//!
//! Templates live in `<image_cache>/templates/<key>/` with a snapshot's
//! layout (`vmstate`, `upper.ext4`, `meta.json`). The key hashes everything
//! the guest's memory and disk depend on: the hearth version, the root image
//! (its recipe hash, or path, size and mtime) or `none`, the kernel and the
//! initramfs (which holds the guest binary) by path, size and mtime, the
//! guest binary, the kernel command line extras, the accelerator, cpus,
//! memory, upper disk size, network mode, language and default user. The
//! sandbox's environment is not in the guest (the runtime adds it to every
//! exec), so it is not in the key.
//!
//! The first create of a key builds the template under a lock file
//! (`.<key>.lock`, flock): it cold-boots a sandbox of the same shape,
//! snapshots it with the vCPUs left stopped, removes it, and renames the
//! finished directory into place; a second creator waiting on the lock then
//! finds it. Every create of the key then restores it into its own record
//! (name, labels, lifetime, environment are the user's) and the guest is told
//! its new hostname (the id), machine-id, clock and entropy. A template that
//! cannot be built or restored never fails the create: it falls back to a
//! cold boot with a warning naming the reason, and a template that failed to
//! restore is removed so the next create rebuilds it.
//!
//! Not warm: `--cold`, [`crate::RuntimeConfig::warm_start`] off, a
//! `/persist` volume (the template's memory has none mounted), a user's own
//! `--initrd`.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::lifecycle::CreateSpec;
use crate::progress::{NoProgress, SharedProgress, Step};
use crate::runtime::Runtime;
use crate::sandbox::Sandbox;
use crate::snapshot::{check_compatible, file_id, read_meta, SnapshotMeta};
use crate::state::VmRecord;

/// Label put on the short-lived sandbox a template is built from.
pub const TEMPLATE_LABEL: &str = "hearth.template";

/// A template on disk.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TemplateInfo {
    pub key: String,
    pub dir: PathBuf,
    pub language: String,
    pub cpus: u32,
    pub mem_mib: u32,
    pub disk_mib: u64,
    pub created_at: u64,
    /// Bytes on disk (state + disk data).
    pub bytes: u64,
}

impl From<(&SnapshotMeta, PathBuf)> for TemplateInfo {
    fn from((m, dir): (&SnapshotMeta, PathBuf)) -> Self {
        Self {
            key: m.name.clone(),
            dir,
            language: m.source.language.clone(),
            cpus: m.source.cpus,
            mem_mib: m.source.mem_mib,
            disk_mib: m.source.disk_mib,
            created_at: m.created_at,
            bytes: m.state_bytes + m.disk_bytes,
        }
    }
}

/// Whether a create may be warm; `Err` is why not (for the debug log).
fn eligible(rt: &Runtime, spec: &CreateSpec) -> std::result::Result<(), &'static str> {
    if spec.cold {
        Err("--cold")
    } else if !rt.config().warm_start {
        Err("warm start is off (HEARTH_WARM=0)")
    } else if spec.persist.is_some() {
        Err("a /persist volume cannot be swapped into a template")
    } else if spec.initrd.is_some() {
        Err("a user's own initramfs")
    } else {
        Ok(())
    }
}

/// The template key of a record about to boot.
pub fn template_key(rt: &Runtime, rec: &VmRecord, accel: &str) -> Result<String> {
    let mut h = Sha256::new();
    let mut put = |k: &str, v: &str| {
        h.update(k.as_bytes());
        h.update(b"=");
        h.update(v.as_bytes());
        h.update(b"\n");
    };
    put("hearth", hearth_proto::VERSION);
    match (&rec.rootfs, &rec.image_hash) {
        (Some(p), Some(hash)) => put("rootfs", &format!("{}:{hash}", p.display())),
        (Some(p), None) => put("rootfs", &format!("{}:{}", p.display(), file_id(p)?)),
        (None, _) => put("rootfs", "none"),
    }
    put("lowerfs", &format!("{:?}", rec.lowerfs));
    put(
        "kernel",
        &format!("{}:{}", rec.kernel.display(), file_id(&rec.kernel)?),
    );
    put(
        "initrd",
        &format!("{}:{}", rec.initrd.display(), file_id(&rec.initrd)?),
    );
    match &rt.config().guest_binary {
        Some(g) => put("guest", &format!("{}:{}", g.display(), file_id(g)?)),
        None => put("guest", "none"),
    }
    put("cmdline", &rt.config().kernel_cmdline_extra);
    put("accel", accel);
    put("cpus", &rec.cpus.to_string());
    put("mem_mib", &rec.mem_mib.to_string());
    put("disk_mib", &rec.disk_mib.to_string());
    put("network", &format!("{:?}", rec.network));
    put("language", &rec.language);
    put("user", rec.user.as_deref().unwrap_or(""));
    Ok(hex::encode(&h.finalize()[..12]))
}

impl Runtime {
    /// Where warm-start templates live.
    pub fn templates_dir(&self) -> PathBuf {
        self.config().image_cache().join("templates")
    }

    /// The templates on disk, oldest first.
    pub fn list_templates(&self) -> Result<Vec<TemplateInfo>> {
        let root = self.templates_dir();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot list", &root, e)),
        };
        let mut v: Vec<TemplateInfo> = entries
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| match read_meta(&e.path()) {
                Ok(m) => Some(TemplateInfo::from((&m, e.path()))),
                Err(err) => {
                    tracing::warn!(dir = %e.path().display(), error = %err, "skipping an unreadable template");
                    None
                }
            })
            .collect();
        v.sort_by_key(|t| (t.created_at, t.key.clone()));
        Ok(v)
    }

    /// Removes every template (they are rebuilt on use); returns how many.
    pub fn remove_templates(&self) -> Result<usize> {
        let root = self.templates_dir();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(Error::io("cannot list", &root, e)),
        };
        let mut n = 0;
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p).map_err(|err| Error::io("cannot remove", &p, err))?;
                if !e.file_name().to_string_lossy().starts_with('.') {
                    n += 1;
                }
            }
        }
        Ok(n)
    }

    /// Called by create with its record (not yet inserted): the sandbox
    /// restored from the shape's template, `None` to boot cold. Only errors
    /// the cold boot would hit too (the name is taken, admission refused)
    /// are returned; everything else falls back with a warning.
    pub(crate) async fn try_warm(
        &self,
        spec: &CreateSpec,
        rec: &VmRecord,
        accel: &str,
        progress: &SharedProgress,
        cancel: &CancellationToken,
    ) -> Result<Option<Sandbox>> {
        if let Err(why) = eligible(self, spec) {
            tracing::debug!(sandbox_id = %rec.id, why, "cold boot");
            return Ok(None);
        }
        let key = match template_key(self, rec, accel) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(sandbox_id = %rec.id, error = %e, "no warm start: cannot key the template; booting cold");
                return Ok(None);
            }
        };
        let dir = self.templates_dir().join(&key);
        match self
            .ensure_template(spec, &key, &dir, progress, cancel)
            .await
        {
            Ok(()) => {}
            Err(e @ Error::Cancelled(_)) => return Err(e),
            Err(e) => {
                tracing::warn!(sandbox_id = %rec.id, template = %key, error = %e,
                "no warm start: cannot build the template; booting cold");
                return Ok(None);
            }
        }
        if cancel.is_cancelled() {
            return Err(Error::Cancelled("before restoring the template".into()));
        }
        let meta = match read_meta(&dir).and_then(|m| check_compatible(&m, &dir).map(|()| m)) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(sandbox_id = %rec.id, template = %key, error = %e,
                    "no warm start: the template is unusable and was removed; booting cold");
                self.drop_template(&dir);
                return Ok(None);
            }
        };
        progress.step(Step::Boot {
            id: rec.id.clone(),
            accel: format!("{accel}, warm"),
        });
        if cancel.is_cancelled() {
            return Err(Error::Cancelled(format!("while starting vm {}", rec.id)));
        }
        let mut r = rec.clone();
        r.warm_template = Some(key.clone());
        match self.restore_into(r, &dir, &meta).await {
            Ok(sb) if cancel.is_cancelled() => {
                let id = sb.id().to_string();
                drop(sb);
                let none: SharedProgress = std::sync::Arc::new(NoProgress);
                let _ = self.remove(&id, false, &none).await;
                Err(Error::Cancelled(format!(
                    "while restoring vm {id}; it was removed"
                )))
            }
            Ok(sb) => Ok(Some(sb)),
            Err(e @ (Error::InvalidSpec(_) | Error::Admission(_))) => Err(e),
            Err(e) => {
                tracing::warn!(sandbox_id = %rec.id, template = %key, error = %e,
                    "no warm start: restoring the template failed (it was removed); booting cold");
                self.drop_template(&dir);
                Ok(None)
            }
        }
    }

    fn drop_template(&self, dir: &Path) {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a bad template");
            }
        }
    }

    /// Builds the template `key` into `dir` unless it exists.
    async fn ensure_template(
        &self,
        spec: &CreateSpec,
        key: &str,
        dir: &Path,
        progress: &SharedProgress,
        cancel: &CancellationToken,
    ) -> Result<()> {
        if dir.join(crate::snapshot::META_FILE).is_file() {
            return Ok(());
        }
        let root = self.templates_dir();
        std::fs::create_dir_all(&root).map_err(|e| Error::io("cannot create", &root, e))?;
        let lock_path = root.join(format!(".{key}.lock"));
        let lock = {
            let lp = lock_path.clone();
            tokio::task::spawn_blocking(move || -> Result<nix::fcntl::Flock<std::fs::File>> {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&lp)
                    .map_err(|e| Error::io("cannot open", &lp, e))?;
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
                    Error::io(
                        "cannot lock",
                        &lp,
                        std::io::Error::from_raw_os_error(e as i32),
                    )
                })
            })
            .await
            .map_err(|e| Error::Internal(format!("lock task: {e}")))??
        };
        // Another creator may have built it while we waited.
        if dir.join(crate::snapshot::META_FILE).is_file() {
            drop(lock);
            return Ok(());
        }
        let _ = std::fs::remove_dir_all(dir);
        tracing::info!(template = %key, "building a warm-start template (a cold boot and a snapshot)");
        progress.step(Step::Boot {
            id: format!("template {key}"),
            accel: "cold boot for the warm-start template".into(),
        });
        let r = self.build_template(spec, key, &root, cancel).await;
        let r = r.and_then(|tmp| match std::fs::rename(&tmp, dir) {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(Error::io("cannot move the template into place at", dir, e))
            }
        });
        drop(lock);
        r
    }

    /// Cold-boots a sandbox of `spec`'s shape, snapshots it stopped into a
    /// hidden directory under `root`, removes it; returns the directory.
    async fn build_template(
        &self,
        spec: &CreateSpec,
        key: &str,
        root: &Path,
        cancel: &CancellationToken,
    ) -> Result<PathBuf> {
        let mut t = spec.clone();
        t.cold = true;
        t.name = None;
        t.env.clear();
        t.lifetime = None;
        t.metadata = [(TEMPLATE_LABEL.to_string(), key.to_string())].into();
        let none: SharedProgress = std::sync::Arc::new(NoProgress);
        let sb = match Box::pin(self.create_inner(&t, &none, cancel)).await {
            Ok(sb) => sb,
            Err(e) => {
                // A failed boot leaves a `failed` record: remove it.
                for r in self.reconcile().await.unwrap_or_default() {
                    if r.metadata.get(TEMPLATE_LABEL).map(String::as_str) == Some(key)
                        && r.status == crate::state::VmStatus::Failed
                    {
                        let _ = self.remove(&r.id, false, &none).await;
                    }
                }
                return Err(e);
            }
        };
        let id = sb.id().to_string();
        let r = self.snapshot_to_tmp(&sb, key, root, false).await;
        drop(sb);
        if let Err(e) = self.remove(&id, false, &none).await {
            tracing::warn!(sandbox_id = %id, error = %e, "cannot remove the template's source sandbox");
        }
        Ok(r?.1)
    }
}
