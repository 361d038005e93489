//! Snapshots, restores and forks of sandboxes.
//!
//! A snapshot lives in `<state>/snapshots/<name>/`: `vmstate` (the VMM's
//! device state and guest RAM), `upper.ext4` (the writable root disk as it
//! was, holes kept) and `meta.json` ([`SnapshotMeta`]: the source's record,
//! the shape it needs and the versions it was made by). It is made in a
//! hidden directory and renamed into place when complete, so a failed or
//! interrupted snapshot leaves nothing under its name.
//!
//! Taking one: the guest's writable filesystems are frozen (after a sync) so
//! the disk copy is consistent on its own, the backend stops the vCPUs,
//! writes the state and copies the disk, and the sandbox runs on; then the
//! filesystems are thawed. A restore makes a new sandbox from it: a new id,
//! record and directory with its own copy of the disk, the VMM started from
//! the state, and the agent told ([`RestoreInfo`]) its new generation, the
//! host's clock, fresh entropy, and its own hostname and machine-id. A fork
//! is a snapshot restored N times.
//!
//! A sandbox with a `/persist` volume cannot be snapshotted or forked: the
//! volume would be shared by two VMs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::lifecycle::boot::{boot_from, BootOutcome};
use crate::progress::NoProgress;
use crate::restore_hooks::RestoreInfo;
use crate::runtime::Runtime;
use crate::sandbox::Sandbox;
use crate::state::{VmRecord, VmStatus, UPPER_DISK};

/// Layout version of a snapshot directory.
pub const SNAPSHOT_FORMAT: u32 = 1;
/// The state file in a snapshot directory.
pub const STATE_FILE: &str = "vmstate";
/// The metadata file in a snapshot directory.
pub const META_FILE: &str = "meta.json";
/// How long the guest's filesystems may stay frozen if the host goes away.
const FREEZE_AUTO_THAW: Duration = Duration::from_secs(30);

/// What a snapshot records besides its files.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub format: u32,
    pub name: String,
    /// The hearth version that made it (restores need the same).
    pub hearth_version: String,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    /// The snapshotted sandbox's record at the time.
    pub source: VmRecord,
    /// Size and mtime of the kernel and initramfs, which must not change.
    pub kernel_id: String,
    pub initrd_id: String,
    /// The guest's generation in the snapshot (a restore gets this + 1).
    pub generation: u64,
    pub state_bytes: u64,
    pub disk_bytes: u64,
    /// How long the source's vCPUs were stopped.
    pub paused_ms: u64,
}

/// A snapshot on disk.
#[derive(Debug, Clone, Serialize)]
pub struct SnapshotInfo {
    pub name: String,
    pub dir: PathBuf,
    pub source_id: String,
    pub language: String,
    pub cpus: u32,
    pub mem_mib: u32,
    pub created_at: u64,
    /// Bytes on disk (state + disk data).
    pub bytes: u64,
    pub paused_ms: u64,
}

impl SnapshotMeta {
    fn info(&self, dir: PathBuf) -> SnapshotInfo {
        SnapshotInfo {
            name: self.name.clone(),
            dir,
            source_id: self.source.id.clone(),
            language: self.source.language.clone(),
            cpus: self.source.cpus,
            mem_mib: self.source.mem_mib,
            created_at: self.created_at,
            bytes: self.state_bytes + self.disk_bytes,
            paused_ms: self.paused_ms,
        }
    }
}

/// `size:mtime` of a file, to notice that it changed.
pub(crate) fn file_id(p: &Path) -> Result<String> {
    let m = std::fs::metadata(p).map_err(|e| Error::io("cannot read", p, e))?;
    let mtime = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    Ok(format!("{}:{mtime}", m.len()))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Runtime {
    /// Where snapshots live.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.config().state_dir.join("snapshots")
    }

    fn snapshot_dir(&self, name: &str) -> Result<PathBuf> {
        crate::lifecycle::create::check_name("snapshot", name)?;
        Ok(self.snapshots_dir().join(name))
    }

    /// Snapshots the running sandbox `key` as `name` (default: a new id);
    /// the sandbox runs on.
    pub async fn snapshot(&self, key: &str, name: Option<&str>) -> Result<SnapshotInfo> {
        let name = match name {
            Some(n) => n.to_string(),
            None => format!("snap-{}", crate::lifecycle::new_id()?),
        };
        let dir = self.snapshot_dir(&name)?;
        if dir.exists() {
            return Err(Error::InvalidSpec(format!(
                "a snapshot named {name} exists already"
            )));
        }
        let sb = self.get(key).await?;
        let (meta, tmp) = self
            .snapshot_to_tmp(&sb, &name, &self.snapshots_dir(), true)
            .await?;
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(Error::io("cannot move the snapshot into place at", &dir, e));
        }
        Ok(meta.info(dir))
    }

    /// Writes a snapshot of `sb` into a hidden directory under `root`; the
    /// caller renames or removes it. Without `resume` the sandbox is left
    /// stopped (and its filesystems frozen) for the caller to remove.
    pub(crate) async fn snapshot_to_tmp(
        &self,
        sb: &Sandbox,
        name: &str,
        root: &Path,
        resume: bool,
    ) -> Result<(SnapshotMeta, PathBuf)> {
        let rec = sb.record().clone();
        if rec.status != VmStatus::Running {
            return Err(Error::WrongState {
                id: rec.id.clone(),
                status: rec.status,
                hint: "; only a running sandbox can be snapshotted",
            });
        }
        if rec.persist_volume.is_some() {
            return Err(Error::InvalidSpec(format!(
                "vm {} has a /persist volume, which a snapshot or fork would share between two vms; \
                 snapshot a sandbox without --persist",
                rec.id
            )));
        }
        let handle = rec.backend.clone().ok_or_else(|| Error::CorruptRecord {
            id: rec.id.clone(),
            reason: "running but without a backend handle".into(),
        })?;
        std::fs::create_dir_all(root).map_err(|e| Error::io("cannot create", root, e))?;
        let tmp = root.join(format!(".tmp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir(&tmp).map_err(|e| Error::io("cannot create", &tmp, e))?;
        let r = async {
            let generation = sb.system_info().await?.generation;
            let frozen = sb.freeze_fs(FREEZE_AUTO_THAW).await?;
            tracing::debug!(sandbox_id = %rec.id, ?frozen, "filesystems frozen for the snapshot");
            let disks: Vec<(PathBuf, PathBuf)> = rec
                .upper_disk()
                .map(|u| (u, tmp.join(UPPER_DISK)))
                .into_iter()
                .collect();
            let taken = self
                .backend()
                .snapshot(&handle, &tmp.join(STATE_FILE), &disks, resume)
                .await;
            let stats = if resume {
                let thawed = sb.thaw_fs().await;
                let stats = taken?;
                thawed?;
                stats
            } else {
                // Stopped: the restore thaws (GUEST_RESTORED).
                taken?
            };
            let meta = SnapshotMeta {
                format: SNAPSHOT_FORMAT,
                name: name.to_string(),
                hearth_version: hearth_proto::VERSION.to_string(),
                created_at: now_secs(),
                kernel_id: file_id(&rec.kernel)?,
                initrd_id: file_id(&rec.initrd)?,
                source: rec.clone(),
                generation,
                state_bytes: stats.state_bytes,
                disk_bytes: stats.disk_bytes,
                paused_ms: stats.paused_ms,
            };
            let json = serde_json::to_vec_pretty(&meta)
                .map_err(|e| Error::Internal(format!("snapshot metadata: {e}")))?;
            let mp = tmp.join(META_FILE);
            std::fs::write(&mp, json).map_err(|e| Error::io("cannot write", &mp, e))?;
            Ok(meta)
        }
        .await;
        match r {
            Ok(meta) => Ok((meta, tmp)),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&tmp);
                Err(e)
            }
        }
    }

    /// The snapshots on disk, oldest first. Directories that do not read as
    /// snapshots are skipped with a warning.
    pub fn list_snapshots(&self) -> Result<Vec<SnapshotInfo>> {
        let root = self.snapshots_dir();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("cannot list", &root, e)),
        };
        let mut v = Vec::new();
        for e in entries.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') {
                continue;
            }
            match read_meta(&e.path()) {
                Ok(m) => v.push(m.info(e.path())),
                Err(err) => {
                    tracing::warn!(snapshot = %n, error = %err, "skipping an unreadable snapshot")
                }
            }
        }
        v.sort_by_key(|s| (s.created_at, s.name.clone()));
        Ok(v)
    }

    /// Removes the snapshot `name`.
    pub fn remove_snapshot(&self, name: &str) -> Result<()> {
        let dir = self.snapshot_dir(name)?;
        if !dir.join(META_FILE).is_file() {
            return Err(Error::InvalidSpec(format!(
                "no snapshot named {name} (see `hearth snapshot list`)"
            )));
        }
        std::fs::remove_dir_all(&dir).map_err(|e| Error::io("cannot remove", &dir, e))
    }

    /// A new sandbox from the snapshot `snapshot`, named `name`.
    pub async fn restore(&self, snapshot: &str, name: Option<&str>) -> Result<Sandbox> {
        let dir = self.snapshot_dir(snapshot)?;
        if !dir.is_dir() {
            return Err(Error::InvalidSpec(format!(
                "no snapshot named {snapshot} (see `hearth snapshot list`)"
            )));
        }
        self.restore_dir(&dir, name).await
    }

    /// Restores the snapshot in `dir`.
    async fn restore_dir(&self, dir: &Path, name: Option<&str>) -> Result<Sandbox> {
        let meta = read_meta(dir)?;
        check_compatible(&meta, dir)?;
        let src = &meta.source;
        let id = crate::lifecycle::new_id()?;
        let mut rec = src.clone();
        rec.id = id.clone();
        rec.name = name.map(str::to_string);
        rec.created_at = now_secs();
        rec.status = VmStatus::Creating;
        rec.backend = None;
        rec.creator = hearth_vmm::ProcessId::of_child(std::process::id());
        rec.dir = self.config().vm_dir(&id);
        rec.note = None;
        rec.vmm_uid = None;
        rec.deadline_ms = None;
        rec.warm_template = None;
        self.restore_into(rec, dir, &meta).await
    }

    /// Makes the `creating` record `rec` (its own id, name, directory,
    /// labels; the snapshot's shape) a sandbox running from the snapshot in
    /// `dir`, already checked with [`check_compatible`]: inserts it under
    /// admission control, copies the disk, starts the VMM from the state and
    /// tells the agent it was restored. On failure nothing is left.
    pub(crate) async fn restore_into(
        &self,
        rec: VmRecord,
        dir: &Path,
        meta: &SnapshotMeta,
    ) -> Result<Sandbox> {
        let id = rec.id.clone();
        let vm_dir = rec.dir.clone();
        let rec = self.insert_admitted(rec).await?;
        let made = (|| -> Result<()> {
            std::fs::create_dir_all(&vm_dir).map_err(|e| Error::io("cannot create", &vm_dir, e))?;
            if let Some(upper) = rec.upper_disk() {
                let from = dir.join(UPPER_DISK);
                hearth_vmm::qemu::snapshot::copy_sparse(&from, &upper)
                    .map_err(|e| Error::io("cannot copy the snapshot's disk to", &upper, e))?;
            }
            Ok(())
        })();
        if let Err(e) = made {
            self.discard_new(&rec).await;
            return Err(e);
        }
        let accel = self.backend().accel(&rec.kernel).await?;
        let state = dir.join(STATE_FILE);
        let outcome = boot_from(
            self,
            rec.clone(),
            &accel,
            None,
            &NoProgress,
            &CancellationToken::new(),
            Some(&state),
        )
        .await;
        let sb = match outcome {
            Ok(BootOutcome::Booted(sb)) => *sb,
            Ok(BootOutcome::Cancelled) => {
                self.discard_new(&rec).await;
                return Err(Error::Cancelled("restore".into()));
            }
            Err(e) => {
                self.discard_new(&rec).await;
                return Err(e);
            }
        };
        let info = RestoreInfo {
            generation: meta.generation + 1,
            hostname: Some(id.clone()),
            machine_id: Some(RestoreInfo::random_machine_id()?),
        };
        if let Err(e) = sb.notify_restored(&info).await {
            let _ = self.remove(&id, false, &no_progress()).await;
            return Err(e);
        }
        Ok(sb)
    }

    /// `count` new sandboxes, each a copy of the running sandbox `key` as it
    /// is now (which runs on).
    pub async fn fork(&self, key: &str, count: usize) -> Result<Vec<Sandbox>> {
        if count == 0 || count > 64 {
            return Err(Error::InvalidSpec(format!(
                "--count {count} is outside 1..=64"
            )));
        }
        let sb = self.get(key).await?;
        let name = format!("fork-{}", crate::lifecycle::new_id()?);
        let t0 = Instant::now();
        let (_, tmp) = self
            .snapshot_to_tmp(&sb, &name, &self.snapshots_dir(), true)
            .await?;
        tracing::info!(sandbox_id = %sb.id(), ms = t0.elapsed().as_millis() as u64, "fork snapshot taken");
        let mut made = Vec::new();
        let mut failed = None;
        for _ in 0..count {
            match self.restore_dir(&tmp, None).await {
                Ok(s) => made.push(s),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let _ = std::fs::remove_dir_all(&tmp);
        if let Some(e) = failed {
            for s in &made {
                let _ = self.remove(s.id(), false, &no_progress()).await;
            }
            return Err(e);
        }
        Ok(made)
    }

    /// Removes a record (and its directory) that never ran.
    async fn discard_new(&self, rec: &VmRecord) {
        self.backend().kill_leftovers(&rec.dir).await;
        let _ = tokio::fs::remove_dir_all(&rec.dir).await;
        if let Err(e) = self.db().remove(&rec.id).await {
            tracing::warn!(sandbox_id = %rec.id, error = %e, "cannot remove the record");
        }
    }
}

fn no_progress() -> crate::progress::SharedProgress {
    std::sync::Arc::new(NoProgress)
}

pub(crate) fn read_meta(dir: &Path) -> Result<SnapshotMeta> {
    let p = dir.join(META_FILE);
    let bytes =
        std::fs::read(&p).map_err(|e| Error::io("cannot read the snapshot metadata", &p, e))?;
    let meta: SnapshotMeta = serde_json::from_slice(&bytes).map_err(|e| {
        Error::InvalidSpec(format!(
            "the snapshot metadata {} is corrupt: {e}",
            p.display()
        ))
    })?;
    if meta.format != SNAPSHOT_FORMAT {
        return Err(Error::InvalidSpec(format!(
            "snapshot {} has layout version {}; this hearth reads version {SNAPSHOT_FORMAT}",
            meta.name, meta.format
        )));
    }
    Ok(meta)
}

/// Refuses a snapshot this hearth cannot restore, before starting anything.
pub(crate) fn check_compatible(meta: &SnapshotMeta, dir: &Path) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::InvalidSpec(format!(
            "cannot restore snapshot {}: {reason}",
            meta.name
        )))
    };
    if meta.hearth_version != hearth_proto::VERSION {
        return bad(format!(
            "it was made by hearth {}, this is hearth {}",
            meta.hearth_version,
            hearth_proto::VERSION
        ));
    }
    for (what, path, id) in [
        ("kernel", &meta.source.kernel, &meta.kernel_id),
        ("initramfs", &meta.source.initrd, &meta.initrd_id),
    ] {
        match file_id(path) {
            Ok(now) if &now == id => {}
            Ok(_) => return bad(format!("its {what} {} changed since", path.display())),
            Err(_) => return bad(format!("its {what} {} is gone", path.display())),
        }
    }
    if let Some(r) = &meta.source.rootfs {
        if !r.is_file() {
            return bad(format!("its root image {} is gone", r.display()));
        }
    }
    let state = dir.join(STATE_FILE);
    match std::fs::metadata(&state) {
        Ok(m) if m.len() == meta.state_bytes => {}
        Ok(m) => {
            return bad(format!(
                "its state file {} has {} bytes, not the {} it was written with (truncated or replaced)",
                state.display(),
                m.len(),
                meta.state_bytes
            ))
        }
        Err(e) => return bad(format!("its state file {}: {e}", state.display())),
    }
    if meta.source.upper_disk().is_some() && !dir.join(UPPER_DISK).is_file() {
        return bad(format!(
            "its disk {} is missing",
            dir.join(UPPER_DISK).display()
        ));
    }
    Ok(())
}
