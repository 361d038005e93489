//! The agent's own log, kept in memory for `AGENT_LOG`: every line the agent
//! logs also goes into a bounded ring ([`RING_BYTES`]), from which requests
//! take the tail and followers take new lines as they come. The console gets
//! the same lines (init hands the agent the console as stderr); the ring is
//! what the host can ask for without reading the console, and what a
//! workload writing to /dev/console cannot forge.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use hearth_proto::{pb, Message};
use tokio::sync::watch;

use super::writer::Writer;

/// Text kept in the ring, over all lines.
pub const RING_BYTES: usize = 256 * 1024;
/// Longest line kept; longer ones are cut.
pub const LINE_MAX: usize = 4096;
/// Text per AGENT_LOG_LINES frame (well under the smallest frame limit).
const BATCH_BYTES: usize = 48 * 1024;

#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    at_ms: i64,
    level: &'static str,
    text: String,
}

impl Entry {
    fn to_pb(&self) -> pb::LogLine {
        pb::LogLine {
            at_ms: self.at_ms,
            level: self.level.to_string(),
            text: self.text.clone(),
        }
    }
}

#[derive(Default)]
struct Inner {
    lines: VecDeque<Entry>,
    bytes: usize,
    /// Seq of the next line pushed.
    next: u64,
}

/// The ring. One per agent process ([`ring`]).
pub struct LogRing {
    inner: Mutex<Inner>,
    /// The seq of the next line, sent after every push.
    changed: watch::Sender<u64>,
    capacity: usize,
}

impl LogRing {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            changed: watch::channel(0).0,
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds one formatted line (`LEVEL target: message fields`).
    pub fn push(&self, line: &str) {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            return;
        }
        let (level, text) = split_level(line);
        let mut text = text.to_string();
        if text.len() > LINE_MAX {
            let mut cut = LINE_MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let next = {
            let mut g = self.lock();
            let seq = g.next;
            g.next += 1;
            g.bytes += text.len();
            g.lines.push_back(Entry {
                seq,
                at_ms: now_ms(),
                level,
                text,
            });
            while g.bytes > self.capacity {
                match g.lines.pop_front() {
                    Some(old) => g.bytes -= old.text.len(),
                    None => break,
                }
            }
            g.next
        };
        self.changed.send_replace(next);
    }

    /// Retained lines matching `since_ms`, the last `tail` of them (0 = all),
    /// and the seq after the newest retained line.
    fn snapshot(&self, since_ms: i64, tail: u32) -> (Vec<Entry>, u64) {
        let g = self.lock();
        let mut v: Vec<Entry> = g
            .lines
            .iter()
            .filter(|e| e.at_ms >= since_ms)
            .cloned()
            .collect();
        if tail > 0 {
            let cut = v.len().saturating_sub(tail as usize);
            v.drain(..cut);
        }
        (v, g.next)
    }

    /// Lines with seq ≥ `from`, how many of those already fell out, and the
    /// seq to continue from.
    fn since(&self, from: u64) -> (Vec<Entry>, u64, u64) {
        let g = self.lock();
        let oldest = g.lines.front().map_or(g.next, |e| e.seq);
        let dropped = oldest.saturating_sub(from);
        let v = g.lines.iter().filter(|e| e.seq >= from).cloned().collect();
        (v, dropped, g.next)
    }
}

/// "INFO hearth_guest::agent: …" → ("INFO", "hearth_guest::agent: …").
fn split_level(line: &str) -> (&'static str, &str) {
    const LEVELS: [&str; 5] = ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"];
    let trimmed = line.trim_start();
    for l in LEVELS {
        if let Some(rest) = trimmed.strip_prefix(l) {
            if rest.starts_with(' ') {
                return (l, rest.trim_start());
            }
        }
    }
    ("INFO", line)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The agent's ring.
pub fn ring() -> &'static LogRing {
    static RING: OnceLock<LogRing> = OnceLock::new();
    RING.get_or_init(|| LogRing::new(RING_BYTES))
}

/// A `MakeWriter` for the fmt layer: each event's text goes into [`ring`].
#[derive(Clone, Copy, Default)]
pub struct RingWriter;

/// Collects one formatted event; pushed when dropped.
pub struct LineBuf(Vec<u8>);

impl std::io::Write for LineBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.0.len() < LINE_MAX * 2 {
            self.0.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuf {
    fn drop(&mut self) {
        for line in String::from_utf8_lossy(&self.0).lines() {
            ring().push(line);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RingWriter {
    type Writer = LineBuf;
    fn make_writer(&'a self) -> LineBuf {
        LineBuf(Vec::with_capacity(256))
    }
}

/// Sends `lines` as AGENT_LOG_LINES frames of at most [`BATCH_BYTES`] of
/// text each; the first carries `dropped`, the last `end`. Nothing is sent
/// for no lines unless there is something to say.
async fn send(
    writer: &Writer,
    seq: u32,
    lines: &[Entry],
    dropped: u64,
    end: bool,
) -> Result<(), super::writer::Closed> {
    let mut batches: Vec<&[Entry]> = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, e) in lines.iter().enumerate() {
        bytes += e.text.len() + 16;
        if bytes >= BATCH_BYTES {
            batches.push(&lines[start..=i]);
            (start, bytes) = (i + 1, 0);
        }
    }
    if start < lines.len() || (batches.is_empty() && (end || dropped > 0)) {
        batches.push(&lines[start..]);
    }
    let last = batches.len().saturating_sub(1);
    for (k, batch) in batches.into_iter().enumerate() {
        let msg = Message::AgentLogLines(pb::AgentLogLines {
            lines: batch.iter().map(Entry::to_pb).collect(),
            end: end && k == last,
            dropped: if k == 0 { dropped } else { 0 },
        });
        writer.send(seq, &msg).await?;
    }
    Ok(())
}

/// Answers one `AGENT_LOG`. A follower runs until its connection closes
/// (`closed` turns true) or cannot be written to.
pub async fn serve(req: pb::AgentLog, seq: u32, writer: Writer, mut closed: watch::Receiver<bool>) {
    let ring = ring();
    // Subscribed before the snapshot, so no line falls between the two.
    let mut changed = ring.changed.subscribe();
    let (lines, mut next) = ring.snapshot(req.since_ms, req.tail);
    if send(&writer, seq, &lines, 0, !req.follow).await.is_err() || !req.follow {
        return;
    }
    loop {
        tokio::select! {
            r = changed.changed() => if r.is_err() { return },
            _ = closed.wait_for(|c| *c) => return,
        }
        let (lines, dropped, after) = ring.since(next);
        next = after;
        if send(&writer, seq, &lines, dropped, false).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_keeps_the_newest() {
        let r = LogRing::new(100);
        for i in 0..50 {
            r.push(&format!("INFO t: line {i:02}"));
        }
        let (v, next) = r.snapshot(0, 0);
        assert_eq!(next, 50);
        assert!(v.iter().map(|e| e.text.len()).sum::<usize>() <= 100);
        assert_eq!(v.last().unwrap().text, "t: line 49");
        assert_eq!(v.last().unwrap().level, "INFO");
        let (tail, _) = r.snapshot(0, 2);
        assert_eq!(tail.len(), 2);
        assert_eq!(tail[0].text, "t: line 48");
        let (_, dropped, _) = r.since(0);
        assert_eq!(dropped, 50 - v.len() as u64);
    }

    #[test]
    fn levels_are_split_and_long_lines_cut() {
        assert_eq!(split_level(" WARN x: y"), ("WARN", "x: y"));
        assert_eq!(split_level("INFOx"), ("INFO", "INFOx"));
        let r = LogRing::new(RING_BYTES);
        r.push(&format!("DEBUG {}", "é".repeat(LINE_MAX)));
        let (v, _) = r.snapshot(0, 0);
        assert_eq!(v[0].level, "DEBUG");
        assert!(v[0].text.len() <= LINE_MAX);
    }
}
