//! Agent-wide state of the snapshot hooks: the generation `GUEST_RESTORED`
//! set, the live connections (each with the generation it was accepted in),
//! a bounded record of exec sessions that ended because their connection was
//! lost, and the filesystems `FS_FREEZE` holds frozen.
//!
//! A restored or forked VM wakes up with the connections of the old host
//! still open in its memory; `GUEST_RESTORED` shuts every other connection
//! down (`shutdown(2)` on a duplicate of its socket), so its sessions end the
//! usual way (TERM, grace, KILL) and are recorded here. An `ATTACH` to one
//! of them then says what happened instead of a bare "not found".

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use super::fs_freeze::Frozen;

/// Sessions remembered as lost; older ones are forgotten.
const MAX_LOST: usize = 256;

/// A foreground exec session that ended because its connection went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lost {
    pid: u32,
    /// The generation of the connection it belonged to.
    generation: u64,
}

struct ConnEntry {
    /// A duplicate of the connection's socket, so a shutdown never reaches a
    /// recycled descriptor number.
    sock: Option<OwnedFd>,
}

/// See the module documentation.
pub struct RestoreState {
    /// The agent was started by hearth's init, inside a VM: only then does it
    /// set the clock, the hostname, feed the kernel's entropy pool or freeze
    /// filesystems (a stand-alone agent under test runs on the host).
    in_vm: bool,
    /// Where `hostname`, `hosts` and `machine-id` are (`--etc-dir`; `/etc`
    /// in a VM, nothing outside one unless given).
    etc_dir: OnceLock<PathBuf>,
    generation: AtomicU64,
    next_conn: AtomicU64,
    conns: Mutex<HashMap<u64, ConnEntry>>,
    lost: Mutex<VecDeque<Lost>>,
    /// Held by every `GUEST_RESTORED` and `FS_FREEZE` for its whole run, so
    /// they never interleave.
    frozen: Mutex<Frozen>,
    /// The frozen mount points, readable without waiting for a request.
    frozen_list: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data; a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RestoreState {
    /// `role` is `READY.role`: "init+agent" when init started the agent.
    pub fn new(role: &str) -> Self {
        Self {
            in_vm: role == "init+agent",
            etc_dir: OnceLock::new(),
            generation: AtomicU64::new(0),
            next_conn: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
            lost: Mutex::new(VecDeque::new()),
            frozen: Mutex::new(Frozen::default()),
            frozen_list: Mutex::new(Vec::new()),
        }
    }

    /// Sets `--etc-dir` (once, at start).
    pub fn set_etc_dir(&self, dir: Option<PathBuf>) {
        let dir = dir.or_else(|| self.in_vm.then(|| PathBuf::from("/etc")));
        if let Some(d) = dir {
            let _ = self.etc_dir.set(d);
        }
    }

    pub fn in_vm(&self) -> bool {
        self.in_vm
    }

    pub fn etc_dir(&self) -> Option<&Path> {
        self.etc_dir.get().map(PathBuf::as_path)
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    pub fn set_generation(&self, g: u64) {
        self.generation.store(g, Ordering::SeqCst);
    }

    /// The freeze state, locked for one whole request.
    pub fn frozen(&self) -> MutexGuard<'_, Frozen> {
        lock(&self.frozen)
    }

    /// Records what is frozen now (for `SYSTEM_INFO`).
    pub fn publish_frozen(&self, paths: Vec<String>) {
        *lock(&self.frozen_list) = paths;
    }

    pub fn frozen_paths(&self) -> Vec<String> {
        lock(&self.frozen_list).clone()
    }

    /// Lists a new connection (its socket is `fd`); dropping the guard
    /// unlists it.
    pub fn register(self: &Arc<Self>, fd: RawFd) -> ConnGuard {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        // SAFETY: `fd` is the open socket of the connection being served,
        // which stays open for the duration of this call.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let sock = match borrowed.try_clone_to_owned() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "cannot duplicate a connection's socket; a restore will not end it");
                None
            }
        };
        lock(&self.conns).insert(id, ConnEntry { sock });
        ConnGuard {
            state: self.clone(),
            id,
            generation: self.generation(),
        }
    }

    /// Shuts down every connection but `keep`; returns how many.
    pub fn end_other_connections(&self, keep: u64) -> usize {
        let conns = lock(&self.conns);
        let mut ended = 0;
        for (id, c) in conns.iter() {
            if *id == keep {
                continue;
            }
            let Some(sock) = &c.sock else { continue };
            // SAFETY: shutdown(2) on a descriptor we own; it only changes the
            // socket's state, and a non-socket answers ENOTSOCK.
            let rc = unsafe { libc::shutdown(sock.as_raw_fd(), libc::SHUT_RDWR) };
            if rc == 0 {
                ended += 1;
            } else {
                let e = std::io::Error::last_os_error();
                tracing::warn!(conn = id, error = %e, "cannot end a connection of the previous generation");
            }
        }
        ended
    }

    /// Remembers foreground sessions (their pids) of a connection of
    /// `generation` that just closed.
    pub fn record_lost(&self, generation: u64, pids: impl IntoIterator<Item = u32>) {
        let mut lost = lock(&self.lost);
        for pid in pids {
            lost.retain(|l| l.pid != pid);
            if lost.len() == MAX_LOST {
                lost.pop_front();
            }
            lost.push_back(Lost { pid, generation });
        }
    }

    /// Why `pid` cannot be attached to, when it was a lost session.
    pub fn lost_reason(&self, pid: u32) -> Option<String> {
        let l = lock(&self.lost).iter().rfind(|l| l.pid == pid).copied()?;
        let now = self.generation();
        Some(if l.generation < now {
            format!(
                "process {pid} was an exec session of generation {}, lost when the sandbox \
                 was restored from a snapshot (generation {now})",
                l.generation
            )
        } else {
            format!(
                "process {pid} was an exec session that ended when its connection was lost \
                 (generation {now})"
            )
        })
    }
}

/// A listed connection.
pub struct ConnGuard {
    state: Arc<RestoreState>,
    pub id: u64,
    /// The generation when it was accepted.
    pub generation: u64,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        lock(&self.state.conns).remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_sessions_say_which_generation_lost_them() {
        let s = RestoreState::new("agent");
        s.record_lost(0, [10, 11]);
        assert!(s.lost_reason(12).is_none());
        let r = s.lost_reason(10).unwrap();
        assert!(r.contains("ended when its connection was lost"), "{r}");
        s.set_generation(2);
        let r = s.lost_reason(11).unwrap();
        assert!(
            r.contains(
                "generation 0, lost when the sandbox was restored from a snapshot (generation 2)"
            ),
            "{r}"
        );
    }

    #[test]
    fn the_lost_record_is_bounded() {
        let s = RestoreState::new("agent");
        s.record_lost(0, 0..(MAX_LOST as u32 + 10));
        assert_eq!(lock(&s.lost).len(), MAX_LOST);
        assert!(s.lost_reason(0).is_none());
        assert!(s.lost_reason(MAX_LOST as u32 + 9).is_some());
    }

    #[test]
    fn outside_a_vm_there_is_no_default_etc() {
        let s = RestoreState::new("agent");
        s.set_etc_dir(None);
        assert!(s.etc_dir().is_none() && !s.in_vm());
        let s = RestoreState::new("init+agent");
        s.set_etc_dir(None);
        assert_eq!(s.etc_dir(), Some(Path::new("/etc")));
    }
}
