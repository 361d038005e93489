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
