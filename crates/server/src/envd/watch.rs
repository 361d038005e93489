//! Directory watches of the Filesystem service over hearth's watch
//! ([`hearth_runtime::Watch`]): the streaming `WatchDir` (async SDK) and the
//! polling trio `CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher` (sync
//! SDK), whose watchers live in a bounded registry: at most
//! [`MAX_WATCHERS`], each queueing at most [`MAX_QUEUED`] events, dropped
//! after [`IDLE`] without a poll or once their sandbox is gone.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use hearth_runtime::{Sandbox, WatchEvent, WatchEventKind};
use serde::Serialize;

use super::connect::{Code, ConnectError};
use super::entry::{entry_info, Accounts, EntryInfo};
use super::fs_rpc::FsState;

/// The most polling watchers the server keeps.
pub const MAX_WATCHERS: usize = 1024;
/// The most events a polling watcher holds between polls (older ones go).
pub const MAX_QUEUED: usize = 4096;
/// A polling watcher not polled for this long is dropped.
pub const IDLE: Duration = Duration::from_secs(600);
/// A watcher whose watch ended is kept this long for a last poll.
const ENDED_GRACE: Duration = Duration::from_secs(60);

/// envd's `EventType` names.
pub const EVENT_CREATE: &str = "EVENT_TYPE_CREATE";
pub const EVENT_WRITE: &str = "EVENT_TYPE_WRITE";
pub const EVENT_REMOVE: &str = "EVENT_TYPE_REMOVE";
pub const EVENT_RENAME: &str = "EVENT_TYPE_RENAME";
pub const EVENT_CHMOD: &str = "EVENT_TYPE_CHMOD";

/// `filesystem.FilesystemEvent` in proto3 JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FsEvent {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry: Option<EntryInfo>,
}

/// The name envd reports: the path relative to the watched directory.
fn rel(root: &str, path: &str) -> String {
    let root = root.trim_end_matches('/');
    match path.strip_prefix(root) {
        Some(r) if r.starts_with('/') => r.trim_start_matches('/').to_string(),
        Some("") => String::new(),
        _ => path.to_string(),
    }
}

/// The agent's atomic write goes through `.<name>.hearth-tmp-<random>` in
/// the target's directory; this is the target's path for such a name.
fn temp_target(path: &str) -> Option<String> {
    let (dir, base) = path.rsplit_once('/')?;
    let inner = base.strip_prefix('.')?;
    let at = inner.rfind(".hearth-tmp-")?;
    let name = &inner[..at];
    (!name.is_empty()).then(|| format!("{dir}/{name}"))
}

/// envd events (absolute path, type) of one hearth event. The agent's
/// temporary file of an atomic write is hidden: its rename over the target
/// reads as the target's CREATE and WRITE, as envd's in-place write would.
pub fn translate(ev: &WatchEvent) -> Vec<(String, &'static str)> {
    let p = ev.path.clone();
    let is_temp = |p: &Option<String>| p.as_deref().and_then(temp_target).is_some();
    match ev.kind {
        WatchEventKind::Create
        | WatchEventKind::Write
        | WatchEventKind::Remove
        | WatchEventKind::Attrib
            if is_temp(&p) =>
        {
            vec![]
        }
        WatchEventKind::Create => p.map(|p| vec![(p, EVENT_CREATE)]).unwrap_or_default(),
        WatchEventKind::Write => p.map(|p| vec![(p, EVENT_WRITE)]).unwrap_or_default(),
        WatchEventKind::Remove => p.map(|p| vec![(p, EVENT_REMOVE)]).unwrap_or_default(),
        WatchEventKind::Attrib => p.map(|p| vec![(p, EVENT_CHMOD)]).unwrap_or_default(),
        WatchEventKind::Rename => {
            if let (Some(from), Some(to)) = (&p, &ev.to) {
                if temp_target(from).as_deref() == Some(to.as_str()) {
                    return vec![(to.clone(), EVENT_CREATE), (to.clone(), EVENT_WRITE)];
                }
            }
            let mut out = Vec::new();
            if let Some(from) = p {
                out.push((from, EVENT_RENAME));
            }
            if let Some(to) = &ev.to {
                out.push((to.clone(), EVENT_CREATE));
            }
            out
        }
        WatchEventKind::Overflow => {
            tracing::warn!(lost = ?ev.lost, "watch events were lost in the guest");
            vec![]
        }
    }
}

/// What a watch reports and how.
#[derive(Clone)]
pub struct WatchSpec {
    pub root: String,
    pub include_entry: bool,
    pub accounts: Arc<Accounts>,
}

impl WatchSpec {
    /// The envd events of `ev`, with entries when asked for (a path gone
    /// by then has none).
    pub async fn events(&self, sbx: &Sandbox, ev: &WatchEvent) -> Vec<FsEvent> {
        let mut out = Vec::new();
        for (path, kind) in translate(ev) {
            let entry = if self.include_entry && kind != EVENT_REMOVE && kind != EVENT_RENAME {
                sbx.stat(&path)
                    .await
                    .ok()
                    .map(|i| entry_info(&i, &path, &self.accounts))
            } else {
                None
            };
            out.push(FsEvent {
                name: rel(&self.root, &path),
                kind,
                entry,
            });
        }
        out
    }
}

#[derive(Default)]
struct Queue {
    events: VecDeque<FsEvent>,
    dropped: u64,
    /// Set once the watch ended: `Ok` (root removed) or the error text.
    ended: Option<(Instant, Result<String, String>)>,
}

struct Watcher {
    sandbox: String,
    queue: Arc<Mutex<Queue>>,
    last_poll: Instant,
    task: tokio::task::AbortHandle,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The polling watchers.
#[derive(Default)]
pub struct Watchers {
    map: Mutex<HashMap<String, Watcher>>,
    sweeper: std::sync::OnceLock<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Watchers {
    /// Drops idle watchers and ended ones past their grace.
    pub fn sweep(&self) {
        let mut map = lock(&self.map);
        map.retain(|_, w| {
            let ended = lock(&w.queue)
                .ended
                .as_ref()
                .map(|(at, _)| at.elapsed() > ENDED_GRACE);
            w.last_poll.elapsed() < IDLE && ended != Some(true)
        });
    }

    fn start_sweeper(&self, fs: Weak<FsState>) {
        self.sweeper.get_or_init(|| {
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    match fs.upgrade() {
                        Some(fs) => fs.watchers.sweep(),
                        None => return,
                    }
                }
            });
        });
    }

    /// Registers a watcher pumping `watch` into its queue; returns its id.
    pub fn create(
        &self,
        fs: &Arc<FsState>,
        sbx: Arc<Sandbox>,
        mut watch: hearth_runtime::Watch,
        spec: WatchSpec,
    ) -> Result<String, ConnectError> {
        self.start_sweeper(Arc::downgrade(fs));
        self.sweep();
        if lock(&self.map).len() >= MAX_WATCHERS {
            return Err(ConnectError::new(
                Code::ResourceExhausted,
                format!(
                    "too many watchers (at most {MAX_WATCHERS}): remove some with RemoveWatcher"
                ),
            ));
        }
        let id = crate::auth::random_hex()
            .map(|h| h[..24].to_string())
            .map_err(|e| {
                ConnectError::new(Code::Internal, format!("cannot make a watcher id: {e}"))
            })?;
        let sandbox = sbx.id().to_string();
        let queue = Arc::new(Mutex::new(Queue::default()));
        let q = Arc::clone(&queue);
        let task = tokio::spawn(async move {
            let end = loop {
                match watch.next().await {
                    Ok(Some(ev)) => {
                        let evs = spec.events(&sbx, &ev).await;
                        let mut q = lock(&q);
                        for e in evs {
                            if q.events.len() >= MAX_QUEUED {
                                q.events.pop_front();
                                q.dropped += 1;
                            }
                            q.events.push_back(e);
                        }
                    }
                    Ok(None) => break Ok(watch.end_reason().unwrap_or_else(|| "ended".into())),
                    Err(e) => break Err(crate::error::chain(&e)),
                }
            };
            lock(&q).ended = Some((Instant::now(), end));
        });
        lock(&self.map).insert(
            id.clone(),
            Watcher {
                sandbox,
                queue,
                last_poll: Instant::now(),
                task: task.abort_handle(),
            },
        );
        Ok(id)
    }

    /// The events since the last poll. A watcher whose watch ended answers
    /// its last events, then an error saying why (and is gone).
    pub fn poll(&self, sandbox: &str, id: &str) -> Result<Vec<FsEvent>, ConnectError> {
        let mut map = lock(&self.map);
        let Some(w) = map.get_mut(id).filter(|w| w.sandbox == sandbox) else {
            return Err(ConnectError::new(
                Code::NotFound,
                format!("watcher {id} not found"),
            ));
        };
        w.last_poll = Instant::now();
        let mut q = lock(&w.queue);
        if q.dropped > 0 {
            tracing::warn!(
                watcher = id,
                dropped = q.dropped,
                "watcher queue overflowed between polls"
            );
            q.dropped = 0;
        }
        let events: Vec<FsEvent> = q.events.drain(..).collect();
        if events.is_empty() {
            if let Some((_, end)) = q.ended.clone() {
                drop(q);
                map.remove(id);
                return Err(match end {
                    Ok(why) => ConnectError::new(
                        Code::FailedPrecondition,
                        format!("watcher {id} ended: {why}"),
                    ),
                    Err(e) => {
                        ConnectError::new(Code::Unavailable, format!("watcher {id} ended: {e}"))
                    }
                });
            }
        }
        Ok(events)
    }

    pub fn remove(&self, sandbox: &str, id: &str) -> Result<(), ConnectError> {
        let mut map = lock(&self.map);
        match map.get(id) {
            Some(w) if w.sandbox == sandbox => {
                map.remove(id);
                Ok(())
            }
            _ => Err(ConnectError::new(
                Code::NotFound,
                format!("watcher {id} not found"),
            )),
        }
    }

    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(kind: WatchEventKind, path: Option<&str>, to: Option<&str>) -> WatchEvent {
        WatchEvent {
            kind,
            path: path.map(Into::into),
            to: to.map(Into::into),
            is_dir: false,
            lost: None,
        }
    }

    #[test]
    fn names_relative_to_the_root() {
        assert_eq!(rel("/home/user/d", "/home/user/d/a.txt"), "a.txt");
        assert_eq!(rel("/home/user/d/", "/home/user/d/sub/b"), "sub/b");
        assert_eq!(rel("/home/user/d", "/home/user/dx"), "/home/user/dx");
    }

    #[test]
    fn atomic_write_reads_as_create_and_write_of_the_target() {
        use WatchEventKind as K;
        let tmp = "/d/.f.txt.hearth-tmp-a1b2";
        assert_eq!(temp_target(tmp).as_deref(), Some("/d/f.txt"));
        assert_eq!(temp_target("/d/.hidden"), None);
        assert!(translate(&ev(K::Create, Some(tmp), None)).is_empty());
        assert!(translate(&ev(K::Write, Some(tmp), None)).is_empty());
        assert_eq!(
            translate(&ev(K::Rename, Some(tmp), Some("/d/f.txt"))),
            vec![
                ("/d/f.txt".into(), EVENT_CREATE),
                ("/d/f.txt".into(), EVENT_WRITE)
            ]
        );
    }

    #[test]
    fn plain_events_map_one_to_one() {
        use WatchEventKind as K;
        assert_eq!(
            translate(&ev(K::Create, Some("/d/a"), None)),
            vec![("/d/a".into(), EVENT_CREATE)]
        );
        assert_eq!(
            translate(&ev(K::Write, Some("/d/a"), None)),
            vec![("/d/a".into(), EVENT_WRITE)]
        );
        assert_eq!(
            translate(&ev(K::Remove, Some("/d/a"), None)),
            vec![("/d/a".into(), EVENT_REMOVE)]
        );
        assert_eq!(
            translate(&ev(K::Attrib, Some("/d/a"), None)),
            vec![("/d/a".into(), EVENT_CHMOD)]
        );
        assert_eq!(
            translate(&ev(K::Rename, Some("/d/a"), Some("/d/b"))),
            vec![("/d/a".into(), EVENT_RENAME), ("/d/b".into(), EVENT_CREATE)]
        );
        assert_eq!(
            translate(&ev(K::Rename, None, Some("/d/b"))),
            vec![("/d/b".into(), EVENT_CREATE)]
        );
        assert!(translate(&ev(K::Overflow, None, None)).is_empty());
        let j = serde_json::to_value(FsEvent {
            name: "a".into(),
            kind: EVENT_WRITE,
            entry: None,
        })
        .unwrap();
        assert_eq!(
            j,
            serde_json::json!({"name": "a", "type": "EVENT_TYPE_WRITE"})
        );
    }
}
