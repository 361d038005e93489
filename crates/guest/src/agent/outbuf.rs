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
/// Buffers kept per session.
const POOL: usize = 4;

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
}

impl Pool {
    /// Buffers hold `HEADROOM + chunk_max` bytes.
    pub fn new(chunk_max: usize) -> Self {
        Self {
            free: Vec::new(),
            size: HEADROOM + chunk_max,
        }
    }

    /// A buffer with `HEADROOM` initialised bytes and room for `chunk_max` more.
    pub fn get(&mut self) -> BytesMut {
        let size = self.size;
        // A buffer whose last frame the writer has dropped is ours again.
        let mut b = match self.free.iter_mut().position(|b| b.try_reclaim(size)) {
            Some(i) => self.free.swap_remove(i),
            None => BytesMut::with_capacity(size),
        };
        b.clear();
        b.extend_from_slice(&[0u8; HEADROOM]);
        b
    }

    /// Returns what is left of a buffer after its frame was split off.
    pub fn put(&mut self, b: BytesMut) {
        if self.free.len() < POOL {
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
    let start = HEADROOM - h;
    buf[start..HEADROOM].copy_from_slice(&head[..h]);
    buf.advance(start);
    buf.split().freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_proto::{pb, Message, DEFAULT_MAX_FRAME_LEN};

    #[test]
    fn chunks_encode_exactly_like_the_codec() {
        let mut pool = Pool::new(300_000);
        for (index, n) in [
            (0u64, 1usize),
            (0, 127),
            (1, 128),
            (300, 16_384),
            (u64::MAX, 262_144),
        ] {
            let data: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            let mut b = pool.get();
            b.extend_from_slice(&data);
            let wire = finish_chunk(&mut b, 0x09, 77, index);
            pool.put(b);
            let want = Message::ExecStdout(pb::OutputChunk {
                index,
                data: data.into(),
            })
            .into_frame(77)
            .to_bytes(DEFAULT_MAX_FRAME_LEN)
            .unwrap();
            assert_eq!(wire, want, "index {index} len {n}");
        }
    }

    #[test]
    fn buffers_are_reused_once_the_frame_is_dropped() {
        let mut pool = Pool::new(1024);
        let mut b = pool.get();
        b.extend_from_slice(b"hello");
        let ptr = b.as_ptr();
        let wire = finish_chunk(&mut b, 0x09, 1, 0);
        pool.put(b);
        drop(wire);
        let b = pool.get();
        assert_eq!(b.as_ptr(), ptr, "the dropped frame's buffer was not reused");
        assert_eq!(b.len(), HEADROOM);
    }
}
