//! Tracking detached processes by pid *and* start time, so a recycled pid is never
//! mistaken for ours or signalled.
//!
//! The start time is field 22 of `/proc/PID/stat` (clock ticks since boot). Signals
//! go through a pidfd opened *before* the start time is re-checked, so the process
//! the pidfd names is the one that was checked.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A process we started: its pid and the start time read when it was launched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    /// `/proc/PID/stat` field 22 (starttime, clock ticks after boot).
    pub start_time: u64,
}

/// What `/proc/PID/stat` says about a pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatInfo {
    pub state: char,
    pub start_time: u64,
}

/// Parses the state and start time out of a `/proc/PID/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(line: &str) -> Option<StatInfo> {
    let close = line.rfind(')')?;
    let mut rest = line.get(close + 1..)?.split_ascii_whitespace();
    // After ')' the fields are numbered from 3 (state).
    let state = rest.next()?.chars().next()?;
    // starttime is field 22: skip fields 4..=21 (18 fields).
    let start_time = rest.nth(18)?.parse().ok()?;
    Some(StatInfo { state, start_time })
}

/// Reads `/proc/PID/stat`; `None` when the pid does not exist.
pub fn read_stat(pid: u32) -> Option<StatInfo> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

impl ProcessId {
    /// Records a freshly spawned child.
    pub fn of_child(pid: u32) -> Option<Self> {
        let st = read_stat(pid)?;
        Some(Self {
            pid,
            start_time: st.start_time,
        })
    }

    /// True while the same process (same start time) exists and is not a zombie.
    pub fn is_alive(&self) -> bool {
        match read_stat(self.pid) {
            Some(st) => st.start_time == self.start_time && st.state != 'Z' && st.state != 'X',
            None => false,
        }
    }

    /// Sends `signal` only if the pid still names the process we started. Returns
    /// false when it is already gone (or was replaced by another process).
    pub fn signal(&self, signal: i32) -> bool {
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return false;
        };
        // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1; no
        // memory is shared with the kernel.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return false;
        }
        let Ok(fd) = i32::try_from(fd) else {
            return false;
        };
        // SAFETY: `fd` was just returned by pidfd_open and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // The pidfd now pins the identity: if the start time matches, it is ours.
        if !self.is_alive() {
            return false;
        }
        // SAFETY: pidfd_send_signal with a valid pidfd, a null siginfo and no flags.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.as_raw_fd(),
                signal,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        rc == 0
    }

    /// Waits until the process is gone, polling; true if it ended within `timeout`.
    pub async fn wait_gone(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if !self.is_alive() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, wait up to `grace`, then SIGKILL and wait a little more.
    /// Returns true when the process is gone at the end.
    pub async fn terminate(&self, grace: Duration) -> bool {
        if !self.is_alive() {
            return true;
        }
        self.signal(libc::SIGTERM);
        if self.wait_gone(grace).await {
            return true;
        }
        self.signal(libc::SIGKILL);
        self.wait_gone(Duration::from_secs(5)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_stat_handles_spaces_and_parens_in_comm() {
        let line = "1234 (qemu (x) y) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 3 0 98765 1000 200";
        let st = parse_stat(line).expect("parses");
        assert_eq!(st.state, 'S');
        assert_eq!(st.start_time, 98765);
    }

    #[test]
    fn parse_stat_rejects_garbage() {
        assert_eq!(parse_stat(""), None);
        assert_eq!(parse_stat("12 (x) R 1 2"), None);
        assert_eq!(parse_stat("12 x R"), None);
    }

    #[test]
    fn own_process_is_alive_and_wrong_start_time_is_not() {
        let me = ProcessId::of_child(std::process::id()).expect("own stat");
        assert!(me.is_alive());
        let other = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
        // A mismatched start time must never be signalled.
        assert!(!other.signal(0));
        assert!(me.signal(0));
    }

    #[tokio::test]
    async fn terminate_kills_a_child_and_zombie_counts_as_dead() {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let id = ProcessId::of_child(child.id()).expect("stat");
        assert!(id.is_alive());
        // Not reaped: it becomes a zombie, which must count as gone.
        assert!(id.terminate(Duration::from_secs(2)).await);
        drop(child);
    }
}
