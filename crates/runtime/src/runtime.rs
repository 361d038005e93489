//! [`Runtime`]: the entry point. Opens the state, holds the backend, and
//! answers "which sandboxes exist and how are they" — reconciling once per call.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use hearth_vmm::{Backend, Health, QemuBackend};

use crate::config::RuntimeConfig;
use crate::error::{Error, Result};
use crate::host::HostCapacity;
use crate::reconcile::judge;
use crate::sandbox::Sandbox;
use crate::state::{StateDb, VmRecord, VmStatus};

/// Which records [`Runtime::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    /// Only these statuses; empty means all.
    pub status: Vec<VmStatus>,
    /// Only this name.
    pub name: Option<String>,
}

impl ListFilter {
    /// Running, paused and creating sandboxes.
    pub fn active() -> Self {
        Self {
            status: vec![VmStatus::Running, VmStatus::Creating, VmStatus::Paused],
            name: None,
        }
    }

    pub fn matches(&self, r: &VmRecord) -> bool {
        (self.status.is_empty() || self.status.contains(&r.status))
            && self
                .name
                .as_ref()
                .is_none_or(|n| r.name.as_ref() == Some(n))
    }
}

pub(crate) struct Inner {
    pub config: RuntimeConfig,
    pub db: StateDb,
    pub backend: Arc<dyn Backend>,
    pub host: HostCapacity,
}

/// The sandbox runtime. Cheap to clone; every clone shares the same state.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("state_dir", &self.inner.config.state_dir)
            .field("backend", &self.inner.backend.name())
            .finish()
    }
}

impl Runtime {
    /// Opens the runtime with the QEMU backend.
    pub async fn open(config: RuntimeConfig) -> Result<Self> {
        let backend = Arc::new(QemuBackend::new(config.qemu.clone()));
        Self::with_backend(config, backend).await
    }

    /// Opens the runtime with any backend. Creates the state dir (0700); the
    /// DB is created (0600) or migrated from an older schema by the first call
    /// that opens it.
    pub async fn with_backend(config: RuntimeConfig, backend: Arc<dyn Backend>) -> Result<Self> {
        let dir = config.state_dir.clone();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io("cannot create the state dir", &dir, e))?;
        if let Err(e) = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot make the state dir 0700");
        }
        // The DB is opened (created, migrated) by the first call that needs it.
        let db = StateDb::new(config.db_path(), config.db_lock_timeout);
        let host = HostCapacity::probe()?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                db,
                backend,
                host,
            }),
        })
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    pub fn backend(&self) -> &dyn Backend {
        self.inner.backend.as_ref()
    }

    pub fn host(&self) -> HostCapacity {
        self.inner.host
    }

    pub(crate) fn db(&self) -> &StateDb {
        &self.inner.db
    }

    /// The records as stored, without looking at processes (no side effects).
    pub async fn records(&self) -> Result<Vec<VmRecord>> {
        self.db().read_all().await
    }

    /// Reconciles every record against the processes that really run: records
    /// whose status changed are written back (only if nobody changed them
    /// meanwhile), and processes left behind by dead or broken sandboxes are
    /// ended. Returns the true records. Every public call does this once.
    pub async fn reconcile(&self) -> Result<Vec<VmRecord>> {
        let records = self.db().read_all().await?;
        let mut out = Vec::with_capacity(records.len());
        let mut changes = Vec::new();
        let mut kills = Vec::new();
        for rec in records {
            let health = match (&rec.status, &rec.backend) {
                (s, Some(h)) if s.has_vmm() => {
                    Some(self.backend().health(h).unwrap_or_else(|e| Health::Broken {
                        reason: e.to_string(),
                    }))
                }
                _ => None,
            };
            match judge(&rec, health.as_ref(), &|p| p.is_alive()) {
                Some(v) => {
                    tracing::info!(sandbox_id = %rec.id, from = %rec.status, to = %v.record.status,
                        note = v.record.note.as_deref().unwrap_or(""), "reconciled");
                    kills.push((
                        v.kill.then(|| rec.backend.clone()).flatten(),
                        v.kill_leftovers.then(|| rec.dir.clone()),
                    ));
                    out.push(v.record.clone());
                    changes.push((rec, v.record));
                }
                None => out.push(rec),
            }
        }
        self.db().replace_unchanged(changes).await?;
        for (handle, dir) in kills {
            if let Some(h) = handle {
                if let Err(e) = self.backend().kill(&h).await {
                    tracing::warn!(error = %e, "cannot end a dead sandbox's processes");
                }
            }
            if let Some(d) = dir {
                self.backend().kill_leftovers(&d).await;
            }
        }
        Ok(out)
    }

    /// The reconciled records `filter` selects, oldest first.
    pub async fn list(&self, filter: &ListFilter) -> Result<Vec<VmRecord>> {
        let mut v: Vec<VmRecord> = self
            .reconcile()
            .await?
            .into_iter()
            .filter(|r| filter.matches(r))
            .collect();
        v.sort_by(|x, y| x.created_at.cmp(&y.created_at).then(x.id.cmp(&y.id)));
        Ok(v)
    }

    /// A sandbox by id or name.
    pub async fn get(&self, key: &str) -> Result<Sandbox> {
        let all = self.reconcile().await?;
        Ok(Sandbox::new(self.clone(), resolve(&all, key)?.clone()))
    }

    /// A handle on a record the caller already holds (from [`Runtime::list`]),
    /// without reconciling again.
    pub fn sandbox(&self, record: VmRecord) -> Sandbox {
        Sandbox::new(self.clone(), record)
    }

    /// How long to wait for an agent connection.
    pub(crate) fn connect_timeout(&self) -> Duration {
        Duration::from_secs(10)
    }
}

/// The record `key` names: an id, else the one record with that name.
pub fn resolve<'a>(records: &'a [VmRecord], key: &str) -> Result<&'a VmRecord> {
    if let Some(r) = records.iter().find(|r| r.id == key) {
        return Ok(r);
    }
    let named: Vec<&VmRecord> = records
        .iter()
        .filter(|r| r.name.as_deref() == Some(key))
        .collect();
    match named.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::NotFound(key.to_string())),
        many => Err(Error::AmbiguousName {
            name: key.to_string(),
            ids: many.iter().map(|r| r.id.clone()).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::rec;

    #[test]
    fn ids_win_over_names_and_names_resolve() {
        let mut a = rec("aaaa0001", VmStatus::Running);
        a.name = Some("web".into());
        let mut b = rec("bbbb0002", VmStatus::Stopped);
        b.name = Some("aaaa0001".into());
        let all = vec![a, b];
        assert_eq!(resolve(&all, "web").unwrap().id, "aaaa0001");
        assert_eq!(resolve(&all, "aaaa0001").unwrap().id, "aaaa0001");
        assert_eq!(resolve(&all, "bbbb0002").unwrap().id, "bbbb0002");
        let e = resolve(&all, "db").unwrap_err().to_string();
        assert!(e.contains("no such vm: db"), "{e}");
        let mut c = rec("cccc0003", VmStatus::Running);
        c.name = Some("web".into());
        let all = vec![all[0].clone(), c];
        let e = resolve(&all, "web").unwrap_err().to_string();
        assert!(e.contains("aaaa0001") && e.contains("cccc0003"), "{e}");
    }
}
