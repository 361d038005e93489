//! A background process's output ring: the last `cap` bytes of its output
//! (stdout and stderr interleaved in the order they were read, or the pty),
//! addressed by absolute offset, so each attacher keeps its own cursor and
//! sees exactly which bytes were overwritten.

use std::collections::VecDeque;

/// Stream switches kept; past it the oldest bytes go early, so a process
/// alternating stdout and stderr byte by byte cannot grow the segment list
/// beyond this.
const MAX_SEGMENTS: usize = 4096;

/// Bytes read from a ring: `data` starts at `offset` (at or after what was
/// asked; later means the bytes between were overwritten).
#[derive(Debug, PartialEq, Eq)]
pub struct Piece {
    pub offset: u64,
    pub data: Vec<u8>,
    pub is_stderr: bool,
}

#[derive(Debug)]
pub struct Ring {
    cap: usize,
    buf: VecDeque<u8>,
    /// Offset of `buf[0]`.
    start: u64,
    /// Where each run of one stream begins (offset, is_stderr), oldest first;
    /// the first covers `start`.
    segs: VecDeque<(u64, bool)>,
    pub stdout_total: u64,
    pub stderr_total: u64,
}

impl Ring {
    pub fn new(cap: usize) -> Ring {
        Ring {
            cap: cap.max(1),
            buf: VecDeque::new(),
            start: 0,
            segs: VecDeque::new(),
            stdout_total: 0,
            stderr_total: 0,
        }
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Offset of the oldest byte kept.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Offset of the next byte to be written (all output so far).
    pub fn end(&self) -> u64 {
        self.start + self.buf.len() as u64
    }

    /// Appends output, overwriting the oldest bytes beyond the capacity.
    pub fn push(&mut self, data: &[u8], is_stderr: bool) {
        if data.is_empty() {
            return;
        }
        if is_stderr {
            self.stderr_total += data.len() as u64;
        } else {
            self.stdout_total += data.len() as u64;
        }
        let end = self.end();
        if self.segs.back().map(|s| s.1) != Some(is_stderr) {
            self.segs.push_back((end, is_stderr));
        }
        let keep = if data.len() > self.cap {
            // Only the tail fits; the rest is overwritten at once.
            let skip = data.len() - self.cap;
            self.buf.clear();
            self.start = end + skip as u64;
            &data[skip..]
        } else {
            data
        };
        let over = (self.buf.len() + keep.len()).saturating_sub(self.cap);
        self.drop_front(over);
        self.buf.extend(keep);
        if self.segs.len() > MAX_SEGMENTS {
            let to = self.segs[1].0;
            let n = (to - self.start) as usize;
            self.drop_front(n);
        }
        self.trim_segs();
    }

    fn drop_front(&mut self, n: usize) {
        let n = n.min(self.buf.len());
        self.buf.drain(..n);
        self.start += n as u64;
        self.trim_segs();
    }

    fn trim_segs(&mut self) {
        while self.segs.len() > 1 && self.segs[1].0 <= self.start {
            self.segs.pop_front();
        }
    }

    /// Up to `max` bytes from `from` (or from the oldest kept byte, if `from`
    /// was overwritten), all of one stream; `None` when nothing is there yet.
    pub fn read(&self, from: u64, max: usize) -> Option<Piece> {
        let from = from.max(self.start);
        if from >= self.end() || max == 0 {
            return None;
        }
        // The segment holding `from` and where the next one begins.
        let i = self.segs.partition_point(|s| s.0 <= from).saturating_sub(1);
        let (_, is_stderr) = self.segs[i];
        let seg_end = self.segs.get(i + 1).map_or(self.end(), |s| s.0);
        let n = ((seg_end - from) as usize).min(max);
        let at = (from - self.start) as usize;
        let data: Vec<u8> = self.buf.range(at..at + n).copied().collect();
        Some(Piece {
            offset: from,
            data,
            is_stderr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(r: &Ring, from: u64) -> (Vec<u8>, Vec<(u64, bool)>) {
        let mut out = Vec::new();
        let mut kinds = Vec::new();
        let mut at = from;
        while let Some(p) = r.read(at, 3) {
            kinds.push((p.offset, p.is_stderr));
            at = p.offset + p.data.len() as u64;
            out.extend(p.data);
        }
        (out, kinds)
    }

    #[test]
    fn keeps_order_and_streams_and_overwrites_the_oldest() {
        let mut r = Ring::new(8);
        r.push(b"abcd", false);
        r.push(b"EF", true);
        r.push(b"gh", false);
        assert_eq!((r.start(), r.end()), (0, 8));
        let (data, kinds) = all(&r, 0);
        assert_eq!(data, b"abcdEFgh");
        assert_eq!(kinds, [(0, false), (3, false), (4, true), (6, false)]);
        r.push(b"ijk", false);
        assert_eq!((r.start(), r.end()), (3, 11));
        // Asking for overwritten bytes starts at the oldest kept one.
        let (data, kinds) = all(&r, 1);
        assert_eq!(data, b"dEFghijk");
        assert_eq!(kinds[0], (3, false));
        assert_eq!(kinds[1], (4, true));
        assert_eq!((r.stdout_total, r.stderr_total), (9, 2));
    }

    #[test]
    fn a_push_bigger_than_the_ring_keeps_its_tail() {
        let mut r = Ring::new(4);
        r.push(b"xy", true);
        r.push(b"0123456789", false);
        assert_eq!((r.start(), r.end()), (8, 12));
        assert_eq!(
            r.read(0, 10),
            Some(Piece {
                offset: 8,
                data: b"6789".to_vec(),
                is_stderr: false
            })
        );
        assert_eq!(r.read(12, 10), None);
    }

    #[test]
    fn segments_are_bounded() {
        let mut r = Ring::new(1 << 20);
        for i in 0..(MAX_SEGMENTS * 3) {
            r.push(b"x", i % 2 == 0);
        }
        assert!(r.segs.len() <= MAX_SEGMENTS + 1);
        assert!(r.start() > 0);
        let (data, _) = all(&r, 0);
        assert_eq!(data.len() as u64, r.end() - r.start());
    }
}
