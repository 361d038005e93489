//! Output frames built in place: the child's pipe is read straight into a
//! buffer that has room for the frame header in front, the header is written
//! right before the data, and the finished wire bytes go to the writer without
//! another copy. Buffers come back to a small per-session pool once the
//! writer has sent them (`BytesMut::try_reclaim`), so a long stream does not
//! allocate (or page-fault) per chunk.

use bytes::{Buf, Bytes, BytesMut};
use hearth_proto::HEADER_LEN;

/// Room in front of the data: frame header (9) + index field (1 + 10) +
/// data tag (1) + data length varint (≤ 5).
pub const HEADROOM: usize = 32;
/// Most buffers kept per session.
const POOL_MAX: usize = 16;
/// Data room of a fallback buffer: small enough for malloc's heap (the agent
/// sets a 128 KiB mmap threshold), so it costs no page faults.
const FALLBACK: usize = 64 * 1024 - HEADROOM - 64;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(dst: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        dst[i] = (v as u8) | 0x80;
        v >>= 7;
        i += 1;
    }
    dst[i] = v as u8;
    i + 1
}

/// Reusable buffers for one session's output frames.
pub struct Pool {
    free: Vec<BytesMut>,
    size: usize,
    keep: usize,
    /// Full-size buffers allocated; each is either in `free` or out until
    /// its `put`, so there are never more than `keep`.
    lent: usize,
}

impl Pool {
    /// Buffers hold `HEADROOM + chunk_max` bytes. With `window` bytes of
    /// credit, frames in flight are bounded by the window over the chunk
    /// size, and chunks are often smaller than `chunk_max` (credit comes back
    /// in parts), so plan for 16 KiB ones. Only the pages a read touched are
    /// resident, so a kept buffer costs about what its last frame carried.
    pub fn new(chunk_max: usize, window: u64) -> Self {
        let in_flight = (window / (16 * 1024)).min(POOL_MAX as u64) as usize;
        Self {
            free: Vec::new(),
            size: HEADROOM + chunk_max,
            keep: (in_flight + 2).clamp(2, POOL_MAX),
            lent: 0,
        }
    }

    /// A buffer with `HEADROOM` initialised bytes and room for up to `take`
    /// more (less when it is a fallback buffer; read only what fits), and
    /// whether it belongs to the pool (give it back with [`Pool::put`]).
    pub fn get(&mut self, take: usize) -> (BytesMut, bool) {
        let size = self.size;
        // A buffer whose last frame the writer has dropped is ours again.
        let (mut b, pooled) = match self.free.iter_mut().position(|b| b.try_reclaim(size)) {
            Some(i) => (self.free.swap_remove(i), true),
            None if self.lent < self.keep => {
                self.lent += 1;
                (BytesMut::with_capacity(size), true)
            }
            // Every pooled buffer is still in flight (many small frames): a
            // small one from the heap, which malloc recycles without faults.
            None => (
                BytesMut::with_capacity(HEADROOM + take.min(FALLBACK)),
                false,
            ),
        };
        b.clear();
        b.extend_from_slice(&[0u8; HEADROOM]);
        (b, pooled)
    }

    /// Returns what is left of a buffer after its frame was split off.
    pub fn put(&mut self, mut b: BytesMut, pooled: bool) {
        if pooled {
            b.clear();
            self.free.push(b);
        }
    }
}

/// Turns `buf` = `HEADROOM` bytes + `n` data bytes into the wire bytes of an
/// `EXEC_STDOUT`/`EXEC_STDERR` (`kind`) frame for `seq` carrying
/// `OutputChunk { index, data }`, encoded as prost would. The rest of `buf`
/// (empty, sharing the allocation) stays behind for the pool.
pub fn finish_chunk(buf: &mut BytesMut, kind: u8, seq: u32, index: u64) -> Bytes {
    let n = buf.len() - HEADROOM;
    let (head, h) = chunk_header(kind, seq, index, n);
    let start = HEADROOM - h;
    buf[start..HEADROOM].copy_from_slice(&head[..h]);
    buf.advance(start);
    buf.split().freeze()
}

/// The wire bytes that precede `n` data bytes in an `EXEC_STDOUT`/
/// `EXEC_STDERR` (`kind`) frame for `seq` carrying `OutputChunk { index,
/// data }`: frame header, index field, data tag and length. Returns the
/// buffer and how many of its bytes are the header.
pub fn chunk_header(kind: u8, seq: u32, index: u64, n: usize) -> ([u8; HEADROOM], usize) {
    let mut head = [0u8; HEADROOM];
    let mut pb = [0u8; HEADROOM];
    let mut p = 0;
    if index != 0 {
        pb[p] = 0x08; // field 1, varint
        p += 1;
        p += put_varint(&mut pb[p..], index);
    }
    pb[p] = 0x12; // field 2, length-delimited
    p += 1;
    p += put_varint(&mut pb[p..], n as u64);
    let wire_len = (HEADER_LEN - 4 + p + n) as u32;
    head[..4].copy_from_slice(&wire_len.to_be_bytes());
    head[4] = kind;
    head[5..9].copy_from_slice(&seq.to_be_bytes());
    head[9..9 + p].copy_from_slice(&pb[..p]);
    let h = HEADER_LEN + p;
    debug_assert!(h <= HEADROOM);
    debug_assert_eq!(
        h,
        HEADER_LEN + 1 + varint_len(n as u64) + if index != 0 { 1 + varint_len(index) } else { 0 }
    );
    (head, h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::{pb, Message, DEFAULT_MAX_FRAME_LEN};

    #[test]
    fn chunks_encode_exactly_like_the_codec() {
        let mut pool = Pool::new(300_000, 1 << 20);
        for (index, n) in [
            (0u64, 1usize),
            (0, 127),
            (1, 128),
            (300, 16_384),
            (u64::MAX, 262_144),
        ] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let (mut b, pooled) = pool.get(n);
            b.extend_from_slice(&data);
            let wire = finish_chunk(&mut b, 0x09, 77, index);
            pool.put(b, pooled);
            let want = Message::ExecStdout(pb::OutputChunk {
                index,
                data: data.clone().into(),
                ..Default::default()
            })
            .into_frame(77)
            .to_bytes(DEFAULT_MAX_FRAME_LEN)
            .unwrap();
            assert_eq!(wire, want, "index {index} len {n}");
            // The splice path: header, then the data moved from the pipe.
            let (head, h) = chunk_header(0x09, 77, index, n);
            let mut spliced = head[..h].to_vec();
            spliced.extend_from_slice(&data);
            assert_eq!(spliced, want, "spliced header, index {index} len {n}");
        }
    }

    #[test]
    fn buffers_are_reused_once_the_frame_is_dropped() {
        let mut pool = Pool::new(1024, 4096);
        let (mut b, pooled) = pool.get(5);
        assert!(pooled);
        b.extend_from_slice(b"hello");
        let ptr = b.as_ptr();
        let wire = finish_chunk(&mut b, 0x09, 1, 0);
        pool.put(b, pooled);
        drop(wire);
        let (b, pooled) = pool.get(5);
        assert!(pooled);
        assert_eq!(b.as_ptr(), ptr, "the dropped frame's buffer was not reused");
        assert_eq!(b.len(), HEADROOM);
    }
}
