//! The durable state DB: `state.redb` under the state dir.
//!
//! Tables: `meta` (`schema_version` → u64) and `vms` (id → JSON [`VmRecord`]).
//! Every change is one write transaction. The file is opened per operation and
//! closed right after, so several hearth processes share it; redb locks it, and
//! a locked DB is retried with async sleeps up to the configured timeout. All
//! file work runs on the blocking pool, never on an async worker.
//!
//! Reading never changes a record: a missing DB reads as empty (and is not
//! created). A schema migration runs once per process, inside the first open
//! of the file (or in [`StateDb::open`] when called).

pub mod migrate;
mod record;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableTable, TableDefinition};

pub use migrate::{migrate, SCHEMA_VERSION, V1_RUNNING_FIXTURE};
pub use record::{VmRecord, VmStatus, UPPER_DISK};

use crate::error::{Error, Result};

pub const DB_FILE: &str = "state.redb";
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VMS: TableDefinition<&str, &str> = TableDefinition::new("vms");

/// The state DB of one state dir.
#[derive(Debug, Clone)]
pub struct StateDb {
    path: PathBuf,
    lock_timeout: Duration,
    /// The schema was checked (and migrated) by this process.
    checked: Arc<AtomicBool>,
    /// Serializes this process's own uses of the file: redb refuses a second
    /// open in the same process like one from another process, and retrying
    /// that with sleeps starved callers under load (a server's 32 parallel
    /// creates timed out waiting). Other processes still meet redb's lock.
    gate: Arc<tokio::sync::Mutex<()>>,
}

fn db_err(path: &Path, context: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::Db {
        path: path.to_path_buf(),
        context: context.to_string(),
        source: Box::new(e),
    }
}

const COMMIT: &str = "cannot commit (is the disk full?)";

fn decode(id: &str, json: &str) -> Result<VmRecord> {
    serde_json::from_str(json).map_err(|e| Error::CorruptRecord {
        id: id.to_string(),
        reason: e.to_string(),
    })
}

fn encode(rec: &VmRecord) -> Result<String> {
    serde_json::to_string(rec).map_err(|e| Error::CorruptRecord {
        id: rec.id.clone(),
        reason: e.to_string(),
    })
}

/// What `open_file` found.
enum Opened {
    Db(Database),
    Missing,
    Locked,
}

impl StateDb {
    pub fn new(path: impl Into<PathBuf>, lock_timeout: Duration) -> Self {
        Self {
            path: path.into(),
            lock_timeout,
            checked: Arc::new(AtomicBool::new(false)),
            gate: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens the file on the blocking pool; `create` makes a missing one.
    async fn open_once(&self, create: bool) -> Result<Opened> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            if !path.exists() {
                if !create {
                    return Ok(Opened::Missing);
                }
                create_atomically(&path)?;
            }
            match Database::create(&path) {
                Ok(db) => Ok(Opened::Db(db)),
                Err(DatabaseError::DatabaseAlreadyOpen) => Ok(Opened::Locked),
                Err(e) => Err(db_err(&path, "cannot open", e)),
            }
        })
        .await
        .map_err(|e| Error::Internal(format!("state DB task: {e}")))?
    }

    /// Opens the DB, waiting (asynchronously) while another process holds it.
    async fn open_file(&self, create: bool) -> Result<Option<Arc<Database>>> {
        let start = Instant::now();
        loop {
            match self.open_once(create).await? {
                Opened::Db(db) => return Ok(Some(Arc::new(db))),
                Opened::Missing => return Ok(None),
                Opened::Locked if start.elapsed() < self.lock_timeout => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                }
                Opened::Locked => {
                    return Err(Error::DbLocked {
                        path: self.path.clone(),
                        waited_secs: self.lock_timeout.as_secs_f64(),
                    })
                }
            }
        }
    }

    /// Runs `f` on the blocking pool with the open DB (`None` when it does not exist
    /// and `create` is false). The first open in this process also brings the
    /// schema up to date ([`ensure_schema`]), in the same open: every redb open
    /// costs fsyncs, so a call opens the file once.
    async fn with_db<T, F>(&self, create: bool, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Option<&Database>, &Path) -> Result<T> + Send + 'static,
    {
        let _turn = self.gate.lock().await;
        let db = self.open_file(create).await?;
        let path = self.path.clone();
        let checked = Arc::clone(&self.checked);
        tokio::task::spawn_blocking(move || {
            if let Some(db) = db.as_deref() {
                if !checked.load(Ordering::Acquire) {
                    ensure_schema(db, &path)?;
                    checked.store(true, Ordering::Release);
                }
            }
            f(db.as_deref(), &path)
        })
        .await
        .map_err(|e| Error::Internal(format!("state DB task: {e}")))?
    }

    /// Creates the DB when missing and migrates an older schema now, rather
    /// than at the first operation. Returns the schema version found (`None`
    /// for a new DB).
    pub async fn open(&self) -> Result<Option<u64>> {
        let _turn = self.gate.lock().await;
        let existed = self.path.exists();
        let db = self.open_file(true).await?;
        let path = self.path.clone();
        let found = tokio::task::spawn_blocking(move || match db.as_deref() {
            Some(db) => ensure_schema(db, &path),
            None => Err(Error::Internal("state DB vanished".into())),
        })
        .await
        .map_err(|e| Error::Internal(format!("state DB task: {e}")))??;
        self.checked.store(true, Ordering::Release);
        Ok(found.filter(|_| existed))
    }

    /// Every record, as stored. No side effects.
    pub async fn read_all(&self) -> Result<Vec<VmRecord>> {
        self.with_db(false, |db, path| {
            let Some(db) = db else { return Ok(Vec::new()) };
            check_version(db, path)?;
            let txn = db
                .begin_read()
                .map_err(|e| db_err(path, "cannot read", e))?;
            let t = match txn.open_table(VMS) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(db_err(path, "cannot open the vms table", e)),
            };
            let mut out = Vec::new();
            for entry in t.iter().map_err(|e| db_err(path, "cannot read", e))? {
                let (k, v) = entry.map_err(|e| db_err(path, "cannot read", e))?;
                out.push(decode(k.value(), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    /// Inserts `rec` in one transaction after `admit` accepted it against every
    /// other record (it may fill in fields, e.g. an allocated uid).
    pub async fn insert<F>(&self, rec: VmRecord, admit: F) -> Result<VmRecord>
    where
        F: FnOnce(&[VmRecord], &mut VmRecord) -> Result<()> + Send + 'static,
    {
        self.write(move |t, path| {
            let others = all_in(t, path)?;
            if others.iter().any(|r| r.id == rec.id) {
                return Err(Error::InvalidSpec(format!("vm {} already exists", rec.id)));
            }
            let mut rec = rec;
            admit(&others, &mut rec)?;
            put(t, &rec, path)?;
            Ok(rec)
        })
        .await
    }

    /// Changes one record in one transaction; `f` may refuse.
    pub async fn update<F>(&self, id: &str, f: F) -> Result<VmRecord>
    where
        F: FnOnce(&[VmRecord], &mut VmRecord) -> Result<()> + Send + 'static,
    {
        let id = id.to_string();
        self.write(move |t, path| {
            let all = all_in(t, path)?;
            let mut rec = all
                .iter()
                .find(|r| r.id == id)
                .cloned()
                .ok_or_else(|| Error::NotFound(id.clone()))?;
            f(&all, &mut rec)?;
            put(t, &rec, path)?;
            Ok(rec)
        })
        .await
    }

    /// Replaces records that still equal what was judged (`old`), leaving any that
    /// another process changed meanwhile. Returns how many were replaced.
    pub async fn replace_unchanged(&self, changes: Vec<(VmRecord, VmRecord)>) -> Result<usize> {
        if changes.is_empty() {
            return Ok(0);
        }
        self.write(move |t, path| {
            let mut n = 0;
            for (old, new) in &changes {
                let current = t
                    .get(old.id.as_str())
                    .map_err(|e| db_err(path, "cannot read", e))?
                    .map(|v| decode(&old.id, v.value()))
                    .transpose()?;
                if current.as_ref() == Some(old) {
                    put(t, new, path)?;
                    n += 1;
                }
            }
            Ok(n)
        })
        .await
    }

    pub async fn remove(&self, id: &str) -> Result<()> {
        let id = id.to_string();
        self.write(move |t, path| {
            t.remove(id.as_str())
                .map_err(|e| db_err(path, "cannot remove a record", e))?;
            Ok(())
        })
        .await
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut redb::Table<&str, &str>, &Path) -> Result<T> + Send + 'static,
    {
        self.with_db(true, move |db, path| {
            let db = db.ok_or_else(|| Error::Internal("state DB vanished".into()))?;
            check_version(db, path)?;
            let txn = db
                .begin_write()
                .map_err(|e| db_err(path, "cannot start a transaction", e))?;
            let out = {
                let mut t = txn
                    .open_table(VMS)
                    .map_err(|e| db_err(path, "cannot open the vms table", e))?;
                f(&mut t, path)?
            };
            txn.commit().map_err(|e| db_err(path, COMMIT, e))?;
            Ok(out)
        })
        .await
    }
}

/// Makes a new DB under a temporary name and links it into place, so a
/// creation that fails half-way (a full disk) leaves no broken file behind:
/// the next read still sees "no DB". Losing a race to another process is fine.
fn create_atomically(path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| DB_FILE.to_string());
    // Per process: this process's own callers are serialized by the gate.
    let tmp = path.with_file_name(format!(".{name}.new-{}", std::process::id()));
    let made = (|| {
        let db = Database::create(&tmp).map_err(|e| db_err(path, "cannot create", e))?;
        ensure_schema(&db, &tmp)?;
        drop(db);
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(Error::io("cannot create", path, e)),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    made
}

fn all_in(t: &redb::Table<&str, &str>, path: &Path) -> Result<Vec<VmRecord>> {
    let mut out = Vec::new();
    for entry in t.iter().map_err(|e| db_err(path, "cannot read", e))? {
        let (k, v) = entry.map_err(|e| db_err(path, "cannot read", e))?;
        out.push(decode(k.value(), v.value())?);
    }
    Ok(out)
}

fn put(t: &mut redb::Table<&str, &str>, rec: &VmRecord, path: &Path) -> Result<()> {
    let json = encode(rec)?;
    t.insert(rec.id.as_str(), json.as_str())
        .map_err(|e| db_err(path, "cannot write a record", e))?;
    Ok(())
}

/// Brings the schema to [`SCHEMA_VERSION`]: a new DB gets it written, an
/// older one is migrated in one transaction, a newer one is refused; the file
/// is made 0600. Returns the version found.
fn ensure_schema(db: &Database, path: &Path) -> Result<Option<u64>> {
    let found = read_version(db, path)?;
    match found {
        Some(SCHEMA_VERSION) => {}
        Some(v) if v > SCHEMA_VERSION => {
            return Err(Error::SchemaTooNew {
                path: path.to_path_buf(),
                found: v,
                supported: SCHEMA_VERSION,
            })
        }
        from => {
            write_migrated(db, path, from)?;
            if let Some(v) = from {
                tracing::info!(from = v, to = SCHEMA_VERSION, "state DB migrated");
            }
        }
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
    if mode.is_ok_and(|m| m != 0o600) {
        if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
            tracing::warn!(path = %path.display(), error = %e, "cannot make the state DB 0600");
        }
    }
    Ok(found)
}

/// The stored schema version; `None` for a DB without one (new).
fn read_version(db: &Database, path: &Path) -> Result<Option<u64>> {
    let txn = db
        .begin_read()
        .map_err(|e| db_err(path, "cannot read", e))?;
    match txn.open_table(META) {
        Ok(meta) => Ok(meta
            .get("schema_version")
            .map_err(|e| db_err(path, "cannot read the schema version", e))?
            .map(|v| v.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(db_err(path, "cannot open the meta table", e)),
    }
}

/// Refuses a DB whose schema this runtime does not write (it must be opened
/// with [`StateDb::open`] first, which migrates).
fn check_version(db: &Database, path: &Path) -> Result<()> {
    match read_version(db, path)? {
        None | Some(SCHEMA_VERSION) => Ok(()),
        Some(v) if v > SCHEMA_VERSION => Err(Error::SchemaTooNew {
            path: path.to_path_buf(),
            found: v,
            supported: SCHEMA_VERSION,
        }),
        Some(v) => Err(Error::Db {
            path: path.to_path_buf(),
            context: format!("schema version {v} was not migrated"),
            source: "open the runtime first".into(),
        }),
    }
}

/// Writes the current schema version, migrating every record from `from` (a
/// new DB has none) in one transaction.
fn write_migrated(db: &Database, path: &Path, from: Option<u64>) -> Result<()> {
    let txn = db
        .begin_write()
        .map_err(|e| db_err(path, "cannot start a transaction", e))?;
    {
        let mut t = txn
            .open_table(VMS)
            .map_err(|e| db_err(path, "cannot open the vms table", e))?;
        if let Some(from) = from {
            let mut rows = Vec::new();
            for entry in t.iter().map_err(|e| db_err(path, "cannot read", e))? {
                let (k, v) = entry.map_err(|e| db_err(path, "cannot read", e))?;
                rows.push((k.value().to_string(), v.value().to_string()));
            }
            for (id, json) in rows {
                let bad = |reason: String| Error::CorruptRecord {
                    id: id.clone(),
                    reason,
                };
                let v: serde_json::Value =
                    serde_json::from_str(&json).map_err(|e| bad(e.to_string()))?;
                let v = migrate(from, v).map_err(bad)?;
                let rec: VmRecord = serde_json::from_value(v).map_err(|e| bad(e.to_string()))?;
                put(&mut t, &rec, path)?;
            }
        }
        let mut meta = txn
            .open_table(META)
            .map_err(|e| db_err(path, "cannot open the meta table", e))?;
        meta.insert("schema_version", SCHEMA_VERSION)
            .map_err(|e| db_err(path, "cannot write the schema version", e))?;
    }
    txn.commit().map_err(|e| db_err(path, COMMIT, e))
}

/// Test fixture: writes a DB the way hearth 0.1 (schema 1) did.
#[doc(hidden)]
pub fn write_v1_db(path: &Path, records: &[(String, String)]) -> Result<()> {
    let db = Database::create(path).map_err(|e| db_err(path, "cannot create", e))?;
    let txn = db
        .begin_write()
        .map_err(|e| db_err(path, "cannot start a transaction", e))?;
    {
        let mut meta = txn
            .open_table(META)
            .map_err(|e| db_err(path, "cannot open meta", e))?;
        meta.insert("schema_version", 1)
            .map_err(|e| db_err(path, "cannot write", e))?;
        let mut t = txn
            .open_table(VMS)
            .map_err(|e| db_err(path, "cannot open vms", e))?;
        for (id, json) in records {
            t.insert(id.as_str(), json.as_str())
                .map_err(|e| db_err(path, "cannot write", e))?;
        }
    }
    txn.commit().map_err(|e| db_err(path, COMMIT, e))
}

#[cfg(test)]
pub(crate) mod tests;
