//! Validation and limits for PTY execs and background processes
//! (`CAPABILITY_PTY`, `CAPABILITY_BACKGROUND`): `ExecStart` fields 13–16,
//! `PTY_RESIZE`, `ATTACH`, `PROCESS_KILL`.

use crate::pb;

/// Ring buffer of a background process when `buffer_bytes` is 0.
pub const DEFAULT_BUFFER_BYTES: u32 = 1024 * 1024;
/// Largest ring buffer one background process may ask for.
pub const MAX_BUFFER_BYTES: u32 = 64 * 1024 * 1024;
/// Smallest ring buffer (smaller requests are refused).
pub const MIN_BUFFER_BYTES: u32 = 1024;
/// Longest tag.
pub const MAX_TAG_LEN: usize = 128;
/// Largest terminal side.
pub const MAX_PTY_SIDE: u32 = 10_000;

/// `ExecStart` fields 13–16.
pub fn validate_start(m: &pb::ExecStart) -> Result<(), String> {
    if let Some(p) = &m.pty {
        validate_size(p.rows, p.cols)?;
        if p.term.contains('\0') || p.term.contains('=') {
            return Err(format!("pty term {:?} contains NUL or '='", p.term));
        }
    }
    if !m.detach {
        if !m.tag.is_empty() {
            return Err(format!("tag {:?} needs detach", m.tag));
        }
        if m.buffer_bytes != 0 {
            return Err(format!("buffer_bytes {} needs detach", m.buffer_bytes));
        }
        return Ok(());
    }
    validate_tag(&m.tag)?;
    if m.buffer_bytes != 0 && !(MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES).contains(&m.buffer_bytes) {
        return Err(format!(
            "buffer_bytes {} is outside {MIN_BUFFER_BYTES}..={MAX_BUFFER_BYTES}",
            m.buffer_bytes
        ));
    }
    Ok(())
}

/// A tag: empty, or up to [`MAX_TAG_LEN`] printable characters, not all digits
/// (so it never reads as a pid).
pub fn validate_tag(tag: &str) -> Result<(), String> {
    if tag.is_empty() {
        return Ok(());
    }
    if tag.len() > MAX_TAG_LEN {
        return Err(format!("tag is {} bytes, over {MAX_TAG_LEN}", tag.len()));
    }
    if tag.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "tag {tag:?} contains whitespace or a control character"
        ));
    }
    if tag.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "tag {tag:?} is all digits (it would read as a pid)"
        ));
    }
    Ok(())
}

/// Terminal size: 0 (the default, 24x80) or 1..=[`MAX_PTY_SIDE`] each.
pub fn validate_size(rows: u32, cols: u32) -> Result<(), String> {
    if rows > MAX_PTY_SIDE || cols > MAX_PTY_SIDE {
        return Err(format!("pty size {rows}x{cols} is over {MAX_PTY_SIDE}"));
    }
    Ok(())
}

/// Exactly one of a non-zero pid and a tag names a background process.
pub fn validate_target(pid: u32, tag: &str) -> Result<(), String> {
    match (pid, tag.is_empty()) {
        (0, true) => Err("neither pid nor tag is set".into()),
        (p, false) if p != 0 => Err(format!("both pid {p} and tag {tag:?} are set")),
        (0, false) => validate_tag(tag),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;
    use prost::Message as _;

    #[test]
    fn bad_values_are_refused_with_their_value() {
        let start = |f: &dyn Fn(&mut pb::ExecStart)| {
            let mut m = pb::ExecStart {
                argv: vec!["/bin/sh".into()],
                ..Default::default()
            };
            f(&mut m);
            Message::ExecStart(m).validate()
        };
        assert!(start(&|_| {}).is_ok());
        let e = start(&|m| m.tag = "x".into()).unwrap_err().to_string();
        assert!(e.contains("\"x\" needs detach"), "{e}");
        let e = start(&|m| {
            m.detach = true;
            m.buffer_bytes = 10
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("buffer_bytes 10"), "{e}");
        let e = start(&|m| {
            m.detach = true;
            m.tag = "12".into()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"12\""), "{e}");
        let e = start(&|m| {
            m.pty = Some(pb::PtySpec {
                rows: 20_000,
                cols: 80,
                term: String::new(),
            })
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("20000x80"), "{e}");
        assert!(Message::Attach(pb::Attach::default()).validate().is_err());
        let both = pb::ProcessKill {
            pid: 3,
            tag: "t".into(),
            signal: 15,
        };
        assert!(Message::ProcessKill(both).validate().is_err());
        let sig = pb::ProcessKill {
            pid: 3,
            tag: String::new(),
            signal: 99,
        };
        let e = Message::ProcessKill(sig)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("99"), "{e}");
    }

    #[test]
    fn stdin_close_needs_one_target() {
        let close = |pid: u32, tag: &str| {
            Message::ProcessStdinClose(pb::ProcessStdinClose {
                pid,
                tag: tag.into(),
            })
            .validate()
        };
        assert!(close(7, "").is_ok());
        assert!(close(0, "web").is_ok());
        assert!(close(0, "").unwrap_err().to_string().contains("neither"));
        let e = close(7, "web").unwrap_err().to_string();
        assert!(e.contains("7") && e.contains("web"), "{e}");
    }

    #[test]
    fn new_fields_keep_their_numbers() {
        let m = pb::ExecStart {
            detach: true,
            ..Default::default()
        };
        assert_eq!(m.encode_to_vec(), [14 << 3, 1]);
        let m = pb::ExecStart {
            buffer_bytes: 1,
            ..Default::default()
        };
        // Tag 16 needs a two-byte varint.
        assert_eq!(m.encode_to_vec(), [0x80, 0x01, 1]);
        let m = pb::ExecStart {
            tag: "a".into(),
            ..Default::default()
        };
        assert_eq!(m.encode_to_vec(), [15 << 3 | 2, 1, b'a']);
        let m = pb::ExecStart {
            pty: Some(pb::PtySpec::default()),
            ..Default::default()
        };
        assert_eq!(m.encode_to_vec(), [13 << 3 | 2, 0]);
        let c = pb::OutputChunk {
            offset: 1,
            ..Default::default()
        };
        assert_eq!(c.encode_to_vec(), [3 << 3, 1]);
    }
}
