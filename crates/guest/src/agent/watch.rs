//! `WATCH`: inotify events for a path as `WATCH_EVENT` frames under a credit
//! window, through a bounded queue; `STREAM_END` when the watched root goes
//! away or the host sends `STREAM_CLOSE`.
//!
//! One event per operation: a file's writes are reported once, when it is
//! closed after writing (`IN_CLOSE_WRITE`), not per `write(2)`; a rename whose
//! two ends are both watched is one `RENAME` (paired by the inotify cookie).
//! Recursive watches add a watch to every new directory *before* its
//! `CREATE` is queued, then scan it and report what was already inside as
//! `CREATE`s (entries made between the directory's creation and its watch
//! would otherwise be missed); a `CREATE` the new watch later reports for
//! an entry the scan already reported is dropped.
//!
//! While the host grants no credit the agent keeps reading inotify into a
//! queue of `queue_limit` events; beyond it events are dropped and counted,
//! and one `OVERFLOW { lost }` takes their place once there is room. The
//! kernel's own overflow (`IN_Q_OVERFLOW`) is an `OVERFLOW` with `lost` 0.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hearth_proto::message::error;
use hearth_proto::{pb, Message};
use nix::errno::Errno;
use nix::sys::inotify::{AddWatchFlags as F, InitFlags, Inotify, InotifyEvent, WatchDescriptor};
use prost::Message as _;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::credit::Credit;
use super::files::io_error;
use super::routes::Routes;
use super::writer::Writer;

/// Default output credit of a watch stream, in payload bytes.
pub const DEFAULT_WINDOW: u64 = 64 * 1024;
/// Default and largest agent-side queue, in events.
const DEFAULT_QUEUE: usize = 4096;
const MAX_QUEUE: usize = 65536;
/// Most directories one recursive watch follows; deeper trees are cut there
/// (logged once).
const MAX_WATCHES: usize = 8192;
/// Paths a scan reported, remembered so that the new watch's own `CREATE`
/// for them is dropped.
const MAX_SCANNED: usize = 4096;
/// How long a `MOVED_FROM` waits for its `MOVED_TO` in a later read.
const PAIR_WAIT: Duration = Duration::from_millis(20);

fn mask() -> F {
    F::IN_CREATE
        | F::IN_CLOSE_WRITE
        | F::IN_DELETE
        | F::IN_MOVED_FROM
        | F::IN_MOVED_TO
        | F::IN_ATTRIB
        | F::IN_DELETE_SELF
        | F::IN_MOVE_SELF
}

fn event(kind: pb::WatchEventKind, path: &Path, is_dir: bool) -> pb::WatchEvent {
    pb::WatchEvent {
        kind: kind as i32,
        path: path.to_string_lossy().into_owned(),
        to: String::new(),
        is_dir,
        lost: 0,
    }
}

fn overflow(lost: u64) -> pb::WatchEvent {
    pb::WatchEvent {
        kind: pb::WatchEventKind::Overflow as i32,
        lost,
        ..Default::default()
    }
}

/// Events waiting for credit, bounded, with a count of what was dropped.
struct Queue {
    events: VecDeque<pb::WatchEvent>,
    limit: usize,
    lost: u64,
}

impl Queue {
    fn push(&mut self, ev: pb::WatchEvent) {
        if self.events.len() >= self.limit {
            self.lost += 1;
            return;
        }
        self.flush_lost();
        self.events.push_back(ev);
    }

    /// Puts the `OVERFLOW` for dropped events in line (it may take the queue
    /// one past its limit).
    fn flush_lost(&mut self) {
        if self.lost > 0 {
            self.events
                .push_back(overflow(std::mem::take(&mut self.lost)));
        }
    }
}

/// A `MOVED_FROM` waiting for its `MOVED_TO`.
struct Pending {
    cookie: u32,
    path: PathBuf,
    is_dir: bool,
}

/// The inotify instance and what its watch descriptors stand for.
struct Tree {
    ino: Inotify,
    root: PathBuf,
    root_wd: WatchDescriptor,
    root_is_dir: bool,
    recursive: bool,
    dirs: HashMap<WatchDescriptor, PathBuf>,
    scanned: HashSet<PathBuf>,
    scanned_order: VecDeque<PathBuf>,
    pending: Option<Pending>,
    capped: bool,
    root_gone: bool,
}

impl AsRawFd for Tree {
    fn as_raw_fd(&self) -> RawFd {
        self.ino.as_fd().as_raw_fd()
    }
}

impl Tree {
    fn open(path: &str, recursive: bool) -> Result<Tree, Box<Message>> {
        let root = PathBuf::from(path);
        let fail = |e: std::io::Error| Box::new(io_error("watch", path, &e));
        let meta = std::fs::metadata(&root).map_err(fail)?;
        let ino = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|e| fail(e.into()))?;
        let root_wd = ino.add_watch(&root, mask()).map_err(|e| fail(e.into()))?;
        let mut t = Tree {
            ino,
            root: root.clone(),
            root_wd,
            root_is_dir: meta.is_dir(),
            recursive: recursive && meta.is_dir(),
            dirs: HashMap::new(),
            scanned: HashSet::new(),
            scanned_order: VecDeque::new(),
            pending: None,
            capped: false,
            root_gone: false,
        };
        t.dirs.insert(root_wd, root.clone());
        if t.recursive {
            t.add_subdirs(&root, None);
        }
        Ok(t)
    }

    /// Watches every directory below `dir`; with `report`, queues a `CREATE`
    /// for each entry found (and remembers it, see [`MAX_SCANNED`]).
    fn add_subdirs(&mut self, dir: &Path, mut report: Option<&mut Queue>) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut entries: Vec<_> = rd.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let p = e.path();
                let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if is_dir {
                    self.add_dir(&p);
                }
                if let Some(q) = report.as_deref_mut() {
                    q.push(event(pb::WatchEventKind::Create, &p, is_dir));
                    self.remember(p.clone());
                }
                if is_dir {
                    stack.push(p);
                }
            }
        }
    }

    fn add_dir(&mut self, p: &Path) {
        if self.dirs.len() >= MAX_WATCHES {
            if !self.capped {
                self.capped = true;
                tracing::warn!(root = %self.root.display(), "recursive watch capped at {MAX_WATCHES} directories");
            }
            return;
        }
        match self
            .ino
            .add_watch(p, mask() | F::IN_ONLYDIR | F::IN_DONT_FOLLOW)
        {
            Ok(wd) => {
                self.dirs.insert(wd, p.to_path_buf());
            }
            Err(e) => tracing::debug!(path = %p.display(), error = %e, "cannot watch directory"),
        }
    }

    fn remember(&mut self, p: PathBuf) {
        if self.scanned.insert(p.clone()) {
            self.scanned_order.push_back(p);
            if self.scanned_order.len() > MAX_SCANNED {
                if let Some(old) = self.scanned_order.pop_front() {
                    self.scanned.remove(&old);
                }
            }
        }
    }

    /// A directory moved within the tree: its watches now stand for new paths.
    fn renamed_dir(&mut self, from: &Path, to: &Path) {
        for p in self.dirs.values_mut() {
            if let Ok(rest) = p.strip_prefix(from) {
                *p = if rest.as_os_str().is_empty() {
                    to.to_path_buf()
                } else {
                    to.join(rest)
                };
            }
        }
    }

    /// A directory left the tree: stop watching it and what is below.
    fn forget_dir(&mut self, dir: &Path) {
        let gone: Vec<_> = self
            .dirs
            .iter()
            .filter(|(wd, p)| **wd != self.root_wd && p.starts_with(dir))
            .map(|(wd, _)| *wd)
            .collect();
        for wd in gone {
            self.dirs.remove(&wd);
            let _ = self.ino.rm_watch(wd);
        }
    }

    /// Reads what inotify has now (until `EAGAIN`) and queues its events.
    fn drain(&mut self, q: &mut Queue) -> std::io::Result<bool> {
        let mut any = false;
        loop {
            match self.ino.read_events() {
                Ok(evs) if evs.is_empty() => return Ok(any),
                Ok(evs) => {
                    any = true;
                    for ev in evs {
                        self.translate(ev, q);
                    }
                }
                Err(Errno::EAGAIN) => return Ok(any),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The pending `MOVED_FROM` found no `MOVED_TO`: the entry left the watch.
    fn flush_pending(&mut self, q: &mut Queue) {
        if let Some(p) = self.pending.take() {
            if p.is_dir {
                self.forget_dir(&p.path);
            }
            let mut ev = event(pb::WatchEventKind::Rename, &p.path, p.is_dir);
            ev.to.clear();
            q.push(ev);
        }
    }

    fn translate(&mut self, ev: InotifyEvent, q: &mut Queue) {
        let m = ev.mask;
        if m.contains(F::IN_Q_OVERFLOW) {
            self.flush_pending(q);
            q.push(overflow(0));
            return;
        }
        let is_root = ev.wd == self.root_wd;
        if m.contains(F::IN_IGNORED) {
            self.dirs.remove(&ev.wd);
            if is_root && !self.root_gone {
                self.flush_pending(q);
                self.root_gone = true;
            }
            return;
        }
        let Some(dir) = self.dirs.get(&ev.wd).cloned() else {
            return;
        };
        let is_dir = m.contains(F::IN_ISDIR);
        let path = match &ev.name {
            Some(n) => dir.join(n),
            None => dir.clone(),
        };
        if let Some(p) = &self.pending {
            let pairs = m.contains(F::IN_MOVED_TO) && ev.cookie == p.cookie && ev.name.is_some();
            if pairs {
                let p = self.pending.take().expect("checked above");
                if p.is_dir {
                    self.renamed_dir(&p.path, &path);
                }
                let mut e = event(pb::WatchEventKind::Rename, &p.path, p.is_dir);
                e.to = path.to_string_lossy().into_owned();
                q.push(e);
                return;
            }
            self.flush_pending(q);
        }
        if ev.name.is_none() {
            // Events about a watched directory itself: its parent reports them,
            // except for the root.
            if !is_root {
                return;
            }
            if m.intersects(F::IN_DELETE_SELF | F::IN_MOVE_SELF) {
                let kind = if m.contains(F::IN_DELETE_SELF) {
                    pb::WatchEventKind::Remove
                } else {
                    pb::WatchEventKind::Rename
                };
                q.push(event(kind, &path, self.root_is_dir));
                self.root_gone = true;
                return;
            }
        }
        if m.contains(F::IN_CREATE) {
            if self.scanned.remove(&path) {
                return;
            }
            if is_dir && self.recursive {
                self.add_dir(&path);
                q.push(event(pb::WatchEventKind::Create, &path, true));
                self.add_subdirs(&path, Some(q));
                return;
            }
            q.push(event(pb::WatchEventKind::Create, &path, is_dir));
        } else if m.contains(F::IN_CLOSE_WRITE) {
            q.push(event(pb::WatchEventKind::Write, &path, false));
        } else if m.contains(F::IN_DELETE) {
            q.push(event(pb::WatchEventKind::Remove, &path, is_dir));
        } else if m.contains(F::IN_MOVED_FROM) {
            self.pending = Some(Pending {
                cookie: ev.cookie,
                path,
                is_dir,
            });
        } else if m.contains(F::IN_MOVED_TO) {
            // From outside the watch.
            if is_dir && self.recursive {
                self.add_dir(&path);
            }
            let mut e = event(pb::WatchEventKind::Rename, Path::new(""), is_dir);
            e.path.clear();
            e.to = path.to_string_lossy().into_owned();
            q.push(e);
            if is_dir && self.recursive {
                self.add_subdirs(&path, Some(q));
            }
        } else if m.contains(F::IN_ATTRIB) {
            q.push(event(pb::WatchEventKind::Attrib, &path, is_dir));
        }
    }
}

fn stream_end(reason: pb::StreamEndReason, message: impl Into<String>) -> Message {
    Message::StreamEnd(pb::StreamEnd {
        reason: reason as i32,
        message: message.into(),
    })
}

/// Runs watch stream `seq` until its end (see the module doc).
pub async fn run(req: pb::Watch, seq: u32, credit: Arc<Credit>, writer: Writer, routes: Routes) {
    let path = req.path.clone();
    let recursive = req.recursive;
    let opened = tokio::task::spawn_blocking(move || Tree::open(&path, recursive)).await;
    let tree = match opened {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => return finish(&routes, seq, &writer, *e).await,
        Err(e) => {
            let e = error(
                pb::ErrorCode::Internal,
                format!("watch task failed: {e}"),
                0,
            );
            return finish(&routes, seq, &writer, e).await;
        }
    };
    // SAFETY: the Tree owns its inotify fd for as long as it lives, and
    // `as_raw_fd` always returns that one fd.
    let registered = unsafe { AsyncFd::register_with_interest(tree, Interest::READABLE) };
    let mut afd = match registered {
        Ok(a) => a,
        Err(e) => {
            let e = io_error("watch", &req.path, &e.into_parts().1);
            return finish(&routes, seq, &writer, e).await;
        }
    };
    let limit = match req.queue_limit {
        0 => DEFAULT_QUEUE,
        n => (n as usize).min(MAX_QUEUE),
    };
    let mut q = Queue {
        events: VecDeque::new(),
        limit,
        lost: 0,
    };
    q.events.push_back(pb::WatchEvent {
        kind: pb::WatchEventKind::Started as i32,
        ..Default::default()
    });
    tracing::debug!(seq, path = %req.path, recursive, "watch started");
    let end = loop {
        // Send what the credit allows.
        while credit.available() > 0 && !credit.is_closed() {
            let Some(ev) = q.events.pop_front() else {
                break;
            };
            credit.take(ev.encoded_len() as u64);
            if writer
                .send_data(seq, &Message::WatchEvent(ev))
                .await
                .is_err()
            {
                routes.remove(seq);
                return;
            }
            if q.events.is_empty() {
                q.flush_lost();
            }
        }
        if q.events.is_empty() && afd.get_ref().root_gone && !credit.is_closed() {
            break stream_end(
                pb::StreamEndReason::RootGone,
                format!("{} was removed", req.path),
            );
        }
        let notified = credit.notified();
        if credit.is_closed() {
            match credit.take_abort() {
                Some(reason) => break reason,
                None => {
                    // The connection is gone.
                    routes.remove(seq);
                    return;
                }
            }
        }
        let pairing = afd.get_ref().pending.is_some();
        let root_gone = afd.get_ref().root_gone;
        let mut unpaired = false;
        tokio::select! {
            _ = notified => {}
            r = afd.readable_mut(), if !root_gone => {
                let mut guard = match r {
                    Ok(g) => g,
                    Err(e) => break io_error("watch", &req.path, &e),
                };
                match guard.get_inner_mut().drain(&mut q) {
                    Ok(_) => guard.clear_ready(),
                    Err(e) => break io_error("watch", &req.path, &e),
                }
            }
            _ = tokio::time::sleep(PAIR_WAIT), if pairing => unpaired = true,
        }
        if unpaired {
            // No MOVED_TO followed: the entry left the watch.
            let tree = afd.get_mut();
            if tree.drain(&mut q).is_ok() && tree.pending.is_some() {
                tree.flush_pending(&mut q);
            }
        }
    };
    tracing::debug!(seq, path = %req.path, "watch ended");
    drop(afd);
    finish(&routes, seq, &writer, end).await;
}

/// `STREAM_END` for a host's `STREAM_CLOSE`.
pub fn closed_by_host() -> Message {
    stream_end(pb::StreamEndReason::Closed, "closed by the host")
}

/// Sends the terminal frame after forgetting the route.
async fn finish(routes: &Routes, seq: u32, writer: &Writer, msg: Message) {
    routes.remove(seq);
    let _ = writer.send_data(seq, &msg).await;
}
