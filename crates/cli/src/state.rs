//! The durable state DB: `state.redb` under the state dir.
//!
//! Tables: `meta` (`schema_version` → u64) and `vms` (id → JSON [`VmRecord`]).
//! Every change is one write transaction; the file is opened for each operation and
//! closed right after, never held across a boot. redb locks the file, so a second
//! process waits (bounded, [`lock_timeout`]) instead of failing spuriously.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use hearth_vmm::{Accel, LowerFs, Network, ProcessId, VmHandle};
use redb::{Database, DatabaseError, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub const DB_FILE: &str = "state.redb";
pub const SCHEMA_VERSION: u64 = 1;
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VMS: TableDefinition<&str, &str> = TableDefinition::new("vms");

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmStatus {
    Creating,
    Running,
    Stopped,
    Failed,
}

impl VmStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            VmStatus::Creating => "creating",
            VmStatus::Running => "running",
            VmStatus::Stopped => "stopped",
            VmStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "creating" => VmStatus::Creating,
            "running" => VmStatus::Running,
            "stopped" => VmStatus::Stopped,
            "failed" => VmStatus::Failed,
            other => bail!("unknown status {other:?} (creating, running, stopped, failed)"),
        })
    }
}

/// One VM, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmRecord {
    pub id: String,
    pub name: Option<String>,
    /// Seconds since the Unix epoch.
    pub created_at: u64,
    pub status: VmStatus,
    pub cpus: u32,
    pub mem_mib: u32,
    pub language: String,
    /// The boot initramfs (guest binary + modules).
    pub image: PathBuf,
    /// `image` was given with `--initrd` (kept on `vm start`).
    #[serde(default)]
    pub custom_initrd: bool,
    pub kernel: PathBuf,
    pub accel: Option<Accel>,
    pub qemu: Option<ProcessId>,
    pub vhost: Option<ProcessId>,
    /// The CLI process that is booting it (status `creating`).
    pub creator: Option<ProcessId>,
    pub dir: PathBuf,
    pub persist: bool,
    /// Why it failed or stopped, when known.
    pub note: Option<String>,
    /// The read-only root image (language squashfs or `--image`); `None` for
    /// the bare initramfs guest.
    #[serde(default)]
    pub rootfs: Option<PathBuf>,
    #[serde(default)]
    pub lowerfs: Option<LowerFs>,
    /// Recipe hash of a language image.
    #[serde(default)]
    pub image_hash: Option<String>,
    /// Size of the writable upper disk (`<dir>/upper.ext4`).
    #[serde(default)]
    pub disk_mib: u64,
    #[serde(default)]
    pub network: Network,
    /// The `--persist` volume (kept by `vm clean --keep-persist`).
    #[serde(default)]
    pub persist_volume: Option<PathBuf>,
    /// Environment every exec gets (the language image's).
    #[serde(default)]
    pub env: Vec<(String, String)>,
    /// The command printing hello world through the image's runtime.
    #[serde(default)]
    pub hello: Vec<String>,
}

/// File name of the writable upper disk inside a VM's directory.
pub const UPPER_DISK: &str = "upper.ext4";

impl VmRecord {
    /// The handle to reach its processes, once it has them.
    pub fn upper_disk(&self) -> Option<PathBuf> {
        self.rootfs.as_ref().map(|_| self.dir.join(UPPER_DISK))
    }

    pub fn handle(&self) -> Option<VmHandle> {
        Some(VmHandle {
            id: self.id.clone(),
            dir: self.dir.clone(),
            accel: self.accel?,
            qemu: self.qemu?,
            vhost: self.vhost?,
        })
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// How long to wait for another hearth process holding the DB
/// (`HEARTH_DB_LOCK_TIMEOUT_MS`, default 10 s).
pub fn lock_timeout() -> Duration {
    std::env::var("HEARTH_DB_LOCK_TIMEOUT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(10))
}

/// The state DB of one state dir.
#[derive(Debug, Clone)]
pub struct State {
    dir: PathBuf,
}

/// What reconciling decided for one record: the new record, and processes left
/// behind that should be ended.
#[derive(Debug, PartialEq)]
pub struct Reconciled {
    pub record: VmRecord,
    pub leftovers: Vec<ProcessId>,
}

/// Pure reconcile step: given which processes are alive, the record's true status.
pub fn reconcile_record(
    rec: &VmRecord,
    alive: &dyn Fn(&ProcessId) -> bool,
    pid_files: &[ProcessId],
) -> Option<Reconciled> {
    match rec.status {
        VmStatus::Running => {
            if rec.qemu.as_ref().is_some_and(alive) {
                return None;
            }
            let mut r = rec.clone();
            r.status = VmStatus::Stopped;
            r.note = Some("the VMM process exited".into());
            let leftovers = rec.vhost.iter().filter(|p| alive(p)).copied().collect();
            Some(Reconciled {
                record: r,
                leftovers,
            })
        }
        VmStatus::Creating => {
            if rec.creator.as_ref().is_some_and(alive) {
                return None;
            }
            let mut r = rec.clone();
            r.status = VmStatus::Failed;
            r.note = Some("the hearth process that was booting it exited".into());
            let leftovers = pid_files.iter().filter(|p| alive(p)).copied().collect();
            Some(Reconciled {
                record: r,
                leftovers,
            })
        }
        VmStatus::Stopped | VmStatus::Failed => None,
    }
}

/// Reads `pid start_time` files a booting VM leaves in its directory.
fn read_pid_files(dir: &Path) -> Vec<ProcessId> {
    ["qemu.pid", "vhost.pid"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(dir.join(f)).ok())
        .filter_map(|t| {
            let mut it = t.split_ascii_whitespace();
            Some(ProcessId {
                pid: it.next()?.parse().ok()?,
                start_time: it.next()?.parse().ok()?,
            })
        })
        .collect()
}

impl State {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.join(DB_FILE)
    }

    pub fn vms_dir(&self) -> PathBuf {
        self.dir.join("vms")
    }

    /// The image cache: `HEARTH_IMAGE_CACHE` when set, else `<state>/images`.
    pub fn images_dir(&self) -> PathBuf {
        crate::paths::resolve_image_cache(
            std::env::var_os("HEARTH_IMAGE_CACHE").map(PathBuf::from),
            &self.dir,
        )
    }

    /// Where `--persist` volumes live: `<state>/persist/<name>.ext4`.
    pub fn persist_dir(&self) -> PathBuf {
        self.dir.join("persist")
    }

    /// Opens (creating if needed) the DB, waiting while another process holds it.
    fn open(&self) -> anyhow::Result<Database> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create state dir {}", self.dir.display()))?;
        let path = self.db_path();
        let limit = lock_timeout();
        let start = Instant::now();
        let db = loop {
            match Database::create(&path) {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) if start.elapsed() < limit => {
                    std::thread::sleep(Duration::from_millis(25));
                }
                Err(DatabaseError::DatabaseAlreadyOpen) => bail!(
                    "state DB {} is locked by another process (waited {:.1} s); is another hearth command stuck?",
                    path.display(),
                    limit.as_secs_f64()
                ),
                Err(e) => {
                    return Err(anyhow::Error::new(e)
                        .context(format!("cannot open state DB {}", path.display())))
                }
            }
        };
        self.check_schema(&db)?;
        Ok(db)
    }

    /// Checks the schema version; writes only for a new DB, so a full disk does not
    /// stop reads.
    fn check_schema(&self, db: &Database) -> anyhow::Result<()> {
        let found = {
            let txn = db.begin_read().context("cannot read the state DB")?;
            match txn.open_table(META) {
                Ok(meta) => {
                    let v = meta.get("schema_version")?.map(|v| v.value());
                    v.filter(|_| txn.open_table(VMS).is_ok())
                }
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(anyhow::Error::new(e).context("cannot open the meta table")),
            }
        };
        match found {
            Some(SCHEMA_VERSION) => return Ok(()),
            Some(v) => bail!(
                "state DB {} has schema version {v}; this hearth understands {SCHEMA_VERSION}",
                self.db_path().display()
            ),
            None => {}
        }
        let txn = db
            .begin_write()
            .context("cannot start a state DB transaction")?;
        {
            let mut meta = txn.open_table(META).context("cannot open the meta table")?;
            let existing = meta.get("schema_version")?.map(|v| v.value());
            if let Some(v) = existing.filter(|v| *v != SCHEMA_VERSION) {
                bail!(
                    "state DB {} has schema version {v}; this hearth understands {SCHEMA_VERSION}",
                    self.db_path().display()
                );
            }
            meta.insert("schema_version", SCHEMA_VERSION)?;
            txn.open_table(VMS).context("cannot open the vms table")?;
        }
        txn.commit()
            .context("cannot commit to the state DB (is the disk full?)")?;
        Ok(())
    }

    fn decode(id: &str, json: &str) -> anyhow::Result<VmRecord> {
        serde_json::from_str(json)
            .with_context(|| format!("corrupt record for vm {id} in the state DB"))
    }

    /// Inserts a new record; fails if the id exists.
    pub fn insert(&self, rec: &VmRecord) -> anyhow::Result<()> {
        let db = self.open()?;
        let txn = db.begin_write()?;
        {
            let mut t = txn.open_table(VMS)?;
            if t.get(rec.id.as_str())?.is_some() {
                bail!("vm {} already exists", rec.id);
            }
            let json = serde_json::to_string(rec)?;
            t.insert(rec.id.as_str(), json.as_str())?;
        }
        txn.commit()
            .context("cannot commit to the state DB (is the disk full?)")?;
        Ok(())
    }

    /// Changes one record in one transaction.
    pub fn update(&self, id: &str, f: impl FnOnce(&mut VmRecord)) -> anyhow::Result<VmRecord> {
        let db = self.open()?;
        let txn = db.begin_write()?;
        let rec = {
            let mut t = txn.open_table(VMS)?;
            let mut rec = match t.get(id)? {
                Some(v) => Self::decode(id, v.value())?,
                None => bail!("no such vm: {id}"),
            };
            f(&mut rec);
            let json = serde_json::to_string(&rec)?;
            t.insert(id, json.as_str())?;
            rec
        };
        txn.commit()
            .context("cannot commit to the state DB (is the disk full?)")?;
        Ok(rec)
    }

    pub fn remove(&self, id: &str) -> anyhow::Result<()> {
        let db = self.open()?;
        let txn = db.begin_write()?;
        {
            let mut t = txn.open_table(VMS)?;
            t.remove(id)?;
        }
        txn.commit()
            .context("cannot commit to the state DB (is the disk full?)")?;
        Ok(())
    }

    /// Every record after reconciling with the processes that really run. Records
    /// whose status changed are written back in one transaction; processes left
    /// behind by dead VMs are ended after it commits.
    pub async fn list(&self) -> anyhow::Result<Vec<VmRecord>> {
        let (records, changed, leftovers) = {
            let db = self.open()?;
            let mut out = Vec::new();
            let mut changed = Vec::new();
            let mut leftovers = Vec::new();
            {
                let txn = db.begin_read().context("cannot read the state DB")?;
                let t = txn.open_table(VMS)?;
                for entry in t.iter()? {
                    let (k, v) = entry?;
                    let rec = Self::decode(k.value(), v.value())?;
                    let pid_files = if rec.status == VmStatus::Creating {
                        read_pid_files(&rec.dir)
                    } else {
                        Vec::new()
                    };
                    match reconcile_record(&rec, &|p| p.is_alive(), &pid_files) {
                        Some(r) => {
                            tracing::info!(id = %rec.id, from = rec.status.as_str(), to = r.record.status.as_str(), "reconciled");
                            leftovers.extend(r.leftovers);
                            changed.push(rec);
                            out.push(r.record);
                        }
                        None => out.push(rec),
                    }
                }
            }
            if !changed.is_empty() {
                let txn = db.begin_write()?;
                {
                    let mut t = txn.open_table(VMS)?;
                    for old in &changed {
                        // Re-check inside the write transaction: only the record we
                        // judged is replaced, never one another process just changed.
                        let current = t
                            .get(old.id.as_str())?
                            .map(|v| Self::decode(&old.id, v.value()))
                            .transpose()?;
                        if current.as_ref() != Some(old) {
                            continue;
                        }
                        if let Some(new) = out.iter().find(|r| r.id == old.id) {
                            let json = serde_json::to_string(new)?;
                            t.insert(new.id.as_str(), json.as_str())?;
                        }
                    }
                }
                txn.commit()
                    .context("cannot commit to the state DB (is the disk full?)")?;
            }
            (out, changed.len(), leftovers)
        };
        tracing::debug!(records = records.len(), changed, "state listed");
        for p in leftovers {
            p.terminate(Duration::from_secs(2)).await;
        }
        Ok(records)
    }

    /// One record (reconciled), or a clear error naming the id.
    pub async fn get(&self, id: &str) -> anyhow::Result<VmRecord> {
        self.list()
            .await?
            .into_iter()
            .find(|r| r.id == id)
            .ok_or_else(|| anyhow::anyhow!("no such vm: {id} (see `hearth vm list --all`)"))
    }
}

/// A fresh VM id: 8 random hex characters.
pub fn new_vm_id() -> anyhow::Result<String> {
    let mut b = [0u8; 4];
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("cannot read /dev/urandom")?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, status: VmStatus) -> VmRecord {
        VmRecord {
            id: id.into(),
            name: None,
            created_at: 1,
            status,
            cpus: 1,
            mem_mib: 256,
            language: "none".into(),
            image: "/i".into(),
            custom_initrd: false,
            kernel: "/k".into(),
            accel: Some(Accel::Tcg),
            qemu: Some(ProcessId {
                pid: 10,
                start_time: 1,
            }),
            vhost: Some(ProcessId {
                pid: 11,
                start_time: 1,
            }),
            creator: Some(ProcessId {
                pid: 12,
                start_time: 1,
            }),
            dir: "/nonexistent".into(),
            persist: false,
            note: None,
            rootfs: None,
            lowerfs: None,
            image_hash: None,
            disk_mib: 0,
            network: Network::None,
            persist_volume: None,
            env: Vec::new(),
            hello: Vec::new(),
        }
    }

    #[test]
    fn old_records_without_language_fields_still_decode() {
        let mut v = serde_json::to_value(rec("old", VmStatus::Stopped)).unwrap();
        let obj = v.as_object_mut().unwrap();
        for k in [
            "custom_initrd",
            "rootfs",
            "lowerfs",
            "image_hash",
            "disk_mib",
            "network",
            "persist_volume",
            "env",
            "hello",
        ] {
            obj.remove(k);
        }
        let r = State::decode("old", &v.to_string()).unwrap();
        assert_eq!(r.network, Network::None);
        assert!(r.rootfs.is_none() && r.upper_disk().is_none() && r.env.is_empty());
        let mut lang = rec("new", VmStatus::Stopped);
        lang.rootfs = Some("/c/python.squashfs".into());
        lang.network = Network::AllowAll;
        let back = State::decode("new", &serde_json::to_string(&lang).unwrap()).unwrap();
        assert_eq!(back, lang);
        assert_eq!(
            back.upper_disk(),
            Some(PathBuf::from("/nonexistent/upper.ext4"))
        );
        assert!(serde_json::to_string(&lang)
            .unwrap()
            .contains("\"allow_all\""));
    }

    #[test]
    fn running_with_dead_qemu_becomes_stopped_and_vhost_is_a_leftover() {
        let r = rec("a", VmStatus::Running);
        let alive_vhost = |p: &ProcessId| p.pid == 11;
        let out = reconcile_record(&r, &alive_vhost, &[]).expect("changes");
        assert_eq!(out.record.status, VmStatus::Stopped);
        assert_eq!(
            out.leftovers,
            vec![ProcessId {
                pid: 11,
                start_time: 1
            }]
        );
        let all_alive = |_: &ProcessId| true;
        assert_eq!(reconcile_record(&r, &all_alive, &[]), None);
    }

    #[test]
    fn creating_with_dead_creator_fails_and_kills_pid_file_processes() {
        let r = rec("a", VmStatus::Creating);
        let q = ProcessId {
            pid: 99,
            start_time: 5,
        };
        let only_q = |p: &ProcessId| *p == q;
        let out = reconcile_record(&r, &only_q, &[q]).expect("changes");
        assert_eq!(out.record.status, VmStatus::Failed);
        assert_eq!(out.leftovers, vec![q]);
        let creator_alive = |p: &ProcessId| p.pid == 12;
        assert_eq!(reconcile_record(&r, &creator_alive, &[q]), None);
    }

    #[test]
    fn stopped_and_failed_stay() {
        let none = |_: &ProcessId| false;
        assert_eq!(
            reconcile_record(&rec("a", VmStatus::Stopped), &none, &[]),
            None
        );
        assert_eq!(
            reconcile_record(&rec("a", VmStatus::Failed), &none, &[]),
            None
        );
    }

    #[tokio::test]
    async fn records_round_trip_and_reconcile_persists() {
        let d = tempfile::tempdir().unwrap();
        let st = State::new(d.path());
        st.insert(&rec("aa", VmStatus::Running)).unwrap();
        assert!(
            st.insert(&rec("aa", VmStatus::Running)).is_err(),
            "duplicate id accepted"
        );
        // pid 10 with start time 1 is not a live process: reconcile stops it.
        let all = st.list().await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].status, VmStatus::Stopped);
        // Persisted: a fresh State (as another process) sees it too.
        let again = State::new(d.path()).get("aa").await.unwrap();
        assert_eq!(again.status, VmStatus::Stopped);
        let u = st.update("aa", |r| r.persist = true).unwrap();
        assert!(u.persist);
        st.remove("aa").unwrap();
        let e = st.get("aa").await.unwrap_err().to_string();
        assert!(e.contains("no such vm: aa"), "{e}");
    }

    #[test]
    fn locked_db_gives_clear_error_after_bounded_wait() {
        let d = tempfile::tempdir().unwrap();
        let st = State::new(d.path());
        st.insert(&rec("x", VmStatus::Stopped)).unwrap();
        let _held = Database::create(st.db_path()).unwrap();
        std::env::set_var("HEARTH_DB_LOCK_TIMEOUT_MS", "300");
        let t0 = Instant::now();
        let e = st
            .insert(&rec("y", VmStatus::Stopped))
            .unwrap_err()
            .to_string();
        assert!(t0.elapsed() >= Duration::from_millis(300));
        assert!(e.contains("locked by another process"), "{e}");
    }

    #[test]
    fn newer_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let st = State::new(d.path());
        {
            let db = Database::create(st.db_path()).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", 99)
                .unwrap();
            txn.commit().unwrap();
        }
        let e = st.remove("x").unwrap_err().to_string();
        assert!(e.contains("schema version 99"), "{e}");
    }

    #[test]
    fn vm_ids_are_8_hex_and_differ() {
        let a = new_vm_id().unwrap();
        let b = new_vm_id().unwrap();
        assert_eq!(a.len(), 8);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
