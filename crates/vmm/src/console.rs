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
/// with vhost-user-vsock, a connection request that arrived before the guest's
/// vsock driver was up was seen to wedge the device (about 4 boots in 60), and
/// waiting costs nothing since the agent cannot answer earlier anyway.
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
        // Rotated by the console logger: the new file starts over.
        if f.metadata().is_ok_and(|m| m.len() < self.offset) {
            self.offset = 0;
            self.partial.clear();
        }
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

/// Whether any complete line of `text` starts with `marker`, after the console
/// logger's timestamp (and a `\r`, as serial consoles write).
fn contains_marker_line(text: &[u8], marker: &[u8]) -> bool {
    let complete = match text.iter().rposition(|&b| b == b'\n') {
        Some(i) => &text[..i],
        None => return false,
    };
    complete
        .split(|&b| b == b'\n')
        .map(|l| split_stamp(l).1)
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

/// Splits the console logger's timestamp (see [`crate::console_log`]) off a
/// raw line: `(milliseconds since the epoch, the rest)`. Lines without one
/// (written by QEMU itself, or by an older hearth) give `None`.
pub fn split_stamp(line: &[u8]) -> (Option<i64>, &[u8]) {
    use crate::console_log::STAMP_LEN;
    match line.get(..STAMP_LEN).and_then(parse_stamp) {
        Some(ms) => (Some(ms), &line[STAMP_LEN..]),
        None => (None, line),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ ` → milliseconds since the epoch.
fn parse_stamp(s: &[u8]) -> Option<i64> {
    let digits = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |a, &d| a * 10 + i64::from(d - b'0')))
    };
    let seps = [
        (4, b'-'),
        (7, b'-'),
        (10, b'T'),
        (13, b':'),
        (16, b':'),
        (19, b'.'),
        (23, b'Z'),
        (24, b' '),
    ];
    if seps.iter().any(|&(i, c)| s.get(i) != Some(&c)) {
        return None;
    }
    let (y, mo, d) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (h, mi, sec, ms) = (
        digits(11..13)?,
        digits(14..16)?,
        digits(17..19)?,
        digits(20..23)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    Some(((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) + ms)
}

/// An RFC 3339 time (`2026-12-01T12:00:00Z`, with an optional fraction and
/// a `Z` or `±HH:MM` offset) → milliseconds since the epoch.
pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let p = b.get(r)?;
        p.iter()
            .all(u8::is_ascii_digit)
            .then(|| p.iter().fold(0i64, |a, &d| a * 10 + i64::from(d - b'0')))
    };
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut ms = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if end == start {
            return None;
        }
        let frac = &s[start..end.min(start + 3)];
        ms = format!("{frac:0<3}").parse().ok()?;
        i = end;
    }
    let offset_min = match b.get(i..)? {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), ..] if b.len() == i + 6 && b[i + 3] == b':' => {
            let m = num(i + 1..i + 3)? * 60 + num(i + 4..i + 6)?;
            if *sign == b'+' {
                m
            } else {
                -m
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_min * 60;
    Some(secs * 1000 + ms)
}

/// (year, month, day) → days since 1970-01-01 (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// One line of a log, made safe to print: control characters other than tab
/// are dropped (a guest must not drive the user's terminal).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch, when known.
    pub at_ms: Option<i64>,
    pub text: String,
}

impl LogLine {
    pub fn from_raw(raw: &[u8]) -> Self {
        let (at_ms, rest) = split_stamp(raw);
        let text = String::from_utf8_lossy(rest)
            .chars()
            .filter(|c| !c.is_control() || *c == '\t')
            .collect();
        Self { at_ms, text }
    }
}

/// Which lines of a log to show.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only the last N lines (after `since`).
    pub tail: Option<usize>,
    /// Only lines stamped at or after this (ms since the epoch); unstamped
    /// lines before the first stamped one that matches are left out too.
    pub since_ms: Option<i64>,
}

impl LogQuery {
    /// Applies the query to lines in order.
    pub fn apply(&self, mut lines: Vec<LogLine>) -> Vec<LogLine> {
        let mut lines = match self.since_ms {
            Some(since) => {
                let first = lines
                    .iter()
                    .position(|l| l.at_ms.is_some_and(|t| t >= since))
                    .unwrap_or(lines.len());
                lines.split_off(first)
            }
            None => lines,
        };
        if let Some(n) = self.tail {
            let cut = lines.len().saturating_sub(n);
            lines.drain(..cut);
        }
        lines
    }
}

/// Opens a log file of a VM directory for reading, refusing anything but a
/// regular file with one link (the directory belongs to the jailed VMM).
fn open_log(dir: &Path, name: &str) -> Option<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(dir.join(name))
        .ok()?;
    let m = f.metadata().ok()?;
    (m.is_file() && m.nlink() == 1).then_some(f)
}

/// The console log of the VM directory `dir`, oldest line first: the rotated
/// file, then the current one (together at most twice the logger's limit).
pub fn read_console(dir: &Path, query: LogQuery) -> Vec<LogLine> {
    use crate::console_log::{CONSOLE_LOG, CONSOLE_LOG_ROTATED};
    let mut raw = Vec::new();
    for name in [CONSOLE_LOG_ROTATED, CONSOLE_LOG] {
        if let Some(mut f) = open_log(dir, name) {
            let _ = f.read_to_end(&mut raw);
            if !raw.is_empty() && raw.last() != Some(&b'\n') {
                raw.push(b'\n');
            }
        }
    }
    let lines = raw
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(LogLine::from_raw)
        .collect();
    query.apply(lines)
}

/// Follows `console.log` as it grows, across rotations: after a rotation
/// the rest of the old file is read before the new one.
pub struct ConsoleFollower {
    dir: std::path::PathBuf,
    file: Option<std::fs::File>,
    ino: u64,
    partial: Vec<u8>,
}

/// Longest unfinished line kept while following; beyond it the line is cut.
const FOLLOW_LINE_MAX: usize = 64 * 1024;

impl ConsoleFollower {
    /// Starts at the current end of the log (what [`read_console`] showed
    /// comes before).
    pub fn at_end(dir: &Path) -> Self {
        let mut f = Self {
            dir: dir.to_path_buf(),
            file: None,
            ino: 0,
            partial: Vec::new(),
        };
        if let Some(mut file) = open_log(dir, crate::console_log::CONSOLE_LOG) {
            use std::os::unix::fs::MetadataExt;
            f.ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
            let _ = file.seek(SeekFrom::End(0));
            f.file = Some(file);
        }
        f
    }

    /// The complete lines appended since the last call.
    pub fn poll(&mut self) -> Vec<LogLine> {
        use std::os::unix::fs::MetadataExt;
        let mut raw = Vec::new();
        if let Some(f) = &mut self.file {
            let _ = f.take(4 << 20).read_to_end(&mut raw);
        }
        let current = open_log(&self.dir, crate::console_log::CONSOLE_LOG);
        let ino = current
            .as_ref()
            .and_then(|f| f.metadata().ok())
            .map(|m| m.ino());
        if let (Some(file), Some(ino)) = (current, ino) {
            if ino != self.ino || self.file.is_none() {
                // Rotated (or created): the rest of the old file was read above.
                if let Some(old) = &mut self.file {
                    let _ = old.read_to_end(&mut raw);
                }
                self.file = Some(file);
                self.ino = ino;
                if let Some(f) = &mut self.file {
                    let _ = f.take(4 << 20).read_to_end(&mut raw);
                }
            }
        }
        self.partial.extend_from_slice(&raw);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            if self.partial.len() > FOLLOW_LINE_MAX {
                let line = LogLine::from_raw(&self.partial);
                self.partial.clear();
                return vec![line];
            }
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let lines = self
            .partial
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(LogLine::from_raw)
            .collect();
        self.partial = rest;
        lines
    }
}

#[cfg(test)]
mod reader_tests {
    use super::*;
    use crate::console_log::{format_stamp, CONSOLE_LOG, CONSOLE_LOG_ROTATED, STAMP_LEN};

    fn stamped(ms: i64, text: &str) -> String {
        let mut b = [0u8; STAMP_LEN];
        format_stamp(ms, &mut b);
        format!("{}{text}\n", String::from_utf8_lossy(&b))
    }

    #[test]
    fn stamps_round_trip_and_bad_ones_are_text() {
        for ms in [0, 951_782_400_123, 1_796_126_399_999] {
            let line = stamped(ms, "x");
            assert_eq!(split_stamp(line.as_bytes()), (Some(ms), &b"x\n"[..]));
        }
        assert_eq!(split_stamp(b"[    0.1] boot").0, None);
        assert_eq!(split_stamp(b"2026-13-01T00:00:00.000Z x").0, None);
        assert_eq!(split_stamp(b"2026-12-01T00:00:00.000Zx").0, None);
    }

    #[test]
    fn rfc3339_times_parse_with_fractions_and_offsets() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00.123Z"),
            Some(951_782_400_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T00:00:00.1234567Z"),
            Some(951_782_400_123)
        );
        assert_eq!(
            parse_rfc3339_ms("2000-02-29T01:00:00.5+01:00"),
            Some(951_782_400_500)
        );
        assert_eq!(
            parse_rfc3339_ms("1970-01-01T00:00:00-00:30"),
            Some(1_800_000)
        );
        for bad in [
            "",
            "2000-02-29",
            "2000-02-29T00:00:00",
            "2000-13-01T00:00:00Z",
            "2000-02-29T00:00:00.Z",
            "2000-02-29T00:00:00+0100",
        ] {
            assert_eq!(parse_rfc3339_ms(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn read_joins_rotated_then_current_and_applies_the_query() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(CONSOLE_LOG_ROTATED),
            stamped(1000, "one") + &stamped(2000, "two\x1b[31m"),
        )
        .unwrap();
        std::fs::write(
            d.path().join(CONSOLE_LOG),
            stamped(3000, "three\r") + &stamped(4000, "four"),
        )
        .unwrap();
        let texts = |q| -> Vec<String> {
            read_console(d.path(), q)
                .into_iter()
                .map(|l| l.text)
                .collect()
        };
        assert_eq!(
            texts(LogQuery::default()),
            ["one", "two[31m", "three", "four"]
        );
        let q = LogQuery {
            tail: Some(2),
            since_ms: None,
        };
        assert_eq!(texts(q), ["three", "four"]);
        let q = LogQuery {
            tail: None,
            since_ms: Some(2500),
        };
        assert_eq!(texts(q), ["three", "four"]);
        let q = LogQuery {
            tail: Some(1),
            since_ms: Some(0),
        };
        assert_eq!(texts(q), ["four"]);
        let q = LogQuery {
            tail: None,
            since_ms: Some(9999),
        };
        assert!(texts(q).is_empty());
    }

    #[test]
    fn a_symlinked_log_is_not_read() {
        let d = tempfile::tempdir().unwrap();
        let secret = d.path().join("secret");
        std::fs::write(&secret, "secret\n").unwrap();
        std::os::unix::fs::symlink(&secret, d.path().join(CONSOLE_LOG)).unwrap();
        assert!(read_console(d.path(), LogQuery::default()).is_empty());
    }

    #[test]
    fn follower_sees_appends_and_survives_rotation() {
        use std::io::Write;
        let d = tempfile::tempdir().unwrap();
        let cur = d.path().join(CONSOLE_LOG);
        std::fs::write(&cur, stamped(1, "before")).unwrap();
        let mut f = ConsoleFollower::at_end(d.path());
        assert!(f.poll().is_empty(), "starts at the end");
        let mut w = std::fs::OpenOptions::new().append(true).open(&cur).unwrap();
        w.write_all(stamped(2, "a").as_bytes()).unwrap();
        w.write_all(b"partial").unwrap();
        let got: Vec<_> = f.poll().into_iter().map(|l| l.text).collect();
        assert_eq!(got, ["a"]);
        w.write_all(b" end\n").unwrap();
        drop(w);
        std::fs::rename(&cur, d.path().join(CONSOLE_LOG_ROTATED)).unwrap();
        std::fs::write(&cur, stamped(3, "b")).unwrap();
        let got: Vec<_> = f.poll().into_iter().map(|l| l.text).collect();
        assert_eq!(got, ["partial end", "b"]);
    }
}
