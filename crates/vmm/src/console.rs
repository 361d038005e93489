//! Reading the tail of a console or helper log for error messages.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The last `lines` lines of a file (at most the last 64 KiB are read), lossily
/// decoded; control characters other than tab are dropped so a guest cannot
/// send escape sequences to the user's terminal.
pub fn tail_lines(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(64 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    if f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    tail_of(&String::from_utf8_lossy(&buf), lines)
}

/// Pure part of [`tail_lines`].
pub fn tail_of(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..]
        .iter()
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_last_lines_and_strips_escapes() {
        let t = "a\nb\nc\x1b[31m\nd\r\n";
        assert_eq!(tail_of(t, 2), "c[31m\nd");
        assert_eq!(tail_of(t, 10), "a\nb\nc[31m\nd");
        assert_eq!(tail_of("", 3), "");
    }

    #[test]
    fn missing_file_says_so() {
        assert!(tail_lines(Path::new("/nonexistent/console.log"), 5).contains("no log"));
    }
}

/// Follows a growing console log and reports when a marker line has appeared.
///
/// The boot watchdog waits for the agent's listening line before the first `CONNECT`:
/// a connection request that reaches vhost-device-vsock before the guest's vsock
/// driver is up was seen to wedge the device (about 4 boots in 60 when the host
/// connected from QEMU start), and waiting costs nothing since the agent cannot
/// answer earlier anyway.
pub struct ConsoleWatch {
    path: std::path::PathBuf,
    offset: u64,
    /// The unfinished last line of what was read so far.
    partial: Vec<u8>,
}

impl ConsoleWatch {
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            offset: 0,
            partial: Vec::new(),
        }
    }

    /// Reads what was appended since the last call; true once a line starting
    /// with `marker` has been seen. A missing file is "not yet".
    pub fn poll(&mut self, marker: &str) -> bool {
        let Ok(mut f) = std::fs::File::open(&self.path) else {
            return false;
        };
        if f.seek(SeekFrom::Start(self.offset)).is_err() {
            return false;
        }
        let mut buf = Vec::new();
        // At most 1 MiB per poll; the rest is read on the next one.
        if f.by_ref().take(1 << 20).read_to_end(&mut buf).is_err() {
            return false;
        }
        self.offset += buf.len() as u64;
        self.partial.extend_from_slice(&buf);
        let found = contains_marker_line(&self.partial, marker.as_bytes());
        // Keep only the unfinished line (bounded, so a guest cannot grow it).
        if let Some(i) = self.partial.iter().rposition(|&b| b == b'\n') {
            self.partial.drain(..=i);
        }
        if self.partial.len() > 4096 {
            let cut = self.partial.len() - 4096;
            self.partial.drain(..cut);
        }
        found
    }
}

/// Whether any complete line of `text` starts with `marker` (a `\r` before the
/// newline, as serial consoles write, is ignored).
fn contains_marker_line(text: &[u8], marker: &[u8]) -> bool {
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(i) => &text[..i],
        None => return false,
    };
    complete
        .split(|&b| b == b'\n')
        .any(|l| l.strip_prefix(b"\r").unwrap_or(l).starts_with(marker))
}

#[cfg(test)]
mod watch_tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn marker_is_found_only_on_a_complete_line_start() {
        assert!(contains_marker_line(
            b"x\nhearth-init: ready in 3 ms\n",
            b"hearth-init: ready"
        ));
        assert!(!contains_marker_line(
            b"hearth-init: ready in 3",
            b"hearth-init: ready"
        ));
        assert!(!contains_marker_line(
            b"echo hearth-init: ready\n",
            b"hearth-init: ready"
        ));
    }

    #[test]
    fn watch_follows_appends_across_polls() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("console.log");
        let mut w = ConsoleWatch::new(&p);
        assert!(!w.poll("hearth-init: ready"), "missing file is not ready");
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(b"[    0.1] booting\nhearth-init: rea").unwrap();
        assert!(!w.poll("hearth-init: ready"));
        f.write_all(b"dy in 5 ms\n").unwrap();
        assert!(w.poll("hearth-init: ready"));
    }
}
