//! The frame layer: `[u32 BE length][u8 type][u32 BE seq][payload]`.
//!
//! `length` counts type + seq + payload, so it is at least [`HEADER_AFTER_LEN`].
//! The codec is sans-I/O: [`FrameDecoder::decode`] takes whatever bytes have
//! arrived and returns `Ok(None)` when it needs more. A length outside
//! `HEADER_AFTER_LEN..=max_frame_len` is refused before a single payload byte is
//! buffered, so a peer cannot make us allocate what its header claims.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Bytes counted by `length` before the payload: type (1) + seq (4).
pub const HEADER_AFTER_LEN: usize = 5;
/// Whole header: length + type + seq.
pub const HEADER_LEN: usize = LEN_PREFIX + HEADER_AFTER_LEN;
/// Default cap on `length` (type + seq + payload): 4 MiB.
pub const DEFAULT_MAX_FRAME_LEN: u32 = 4 * 1024 * 1024;

/// One frame as it travels; `kind` is the raw type byte so that the frame layer
/// can carry types it does not know (the message layer rejects them).
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub seq: u32,
    pub payload: Bytes,
}

impl std::fmt::Debug for Frame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("kind", &format_args!("{:#04x}", self.kind))
            .field("seq", &self.seq)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Frame {
    pub fn new(kind: u8, seq: u32, payload: impl Into<Bytes>) -> Self {
        Self {
            kind,
            seq,
            payload: payload.into(),
        }
    }

    /// Value of the length prefix for this frame.
    pub fn wire_len(&self) -> usize {
        HEADER_AFTER_LEN + self.payload.len()
    }

    /// Appends the encoded frame to `dst`. Fails if the frame exceeds `max_frame_len`.
    pub fn encode(&self, dst: &mut BytesMut, max_frame_len: u32) -> Result<(), EncodeError> {
        let len = self.wire_len();
        if len > max_frame_len as usize {
            return Err(EncodeError::TooLarge {
                len,
                max: max_frame_len,
            });
        }
        dst.reserve(LEN_PREFIX + len);
        dst.put_u32(len as u32);
        dst.put_u8(self.kind);
        dst.put_u32(self.seq);
        dst.extend_from_slice(&self.payload);
        Ok(())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self, max_frame_len: u32) -> Result<Bytes, EncodeError> {
        let mut b = BytesMut::with_capacity(LEN_PREFIX + self.wire_len());
        self.encode(&mut b, max_frame_len)?;
        Ok(b.freeze())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("frame length {len} exceeds the maximum {max}")]
    TooLarge { len: usize, max: u32 },
}

/// Why a byte stream is not a valid sequence of frames. After any of these the
/// stream is out of sync and the connection must be closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame length {len} is below the minimum {min} (type + seq)")]
    TooShort { len: u32, min: u32 },
    #[error("frame length {len} exceeds the maximum {max}")]
    TooLarge { len: u32, max: u32 },
}

/// Incremental decoder; holds only the configured cap.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    max_frame_len: u32,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME_LEN)
    }
}

impl FrameDecoder {
    pub fn new(max_frame_len: u32) -> Self {
        Self { max_frame_len }
    }

    pub fn max_frame_len(&self) -> u32 {
        self.max_frame_len
    }

    /// Checks a length prefix without needing the rest of the frame.
    pub fn check_len(&self, len: u32) -> Result<(), DecodeError> {
        if (len as usize) < HEADER_AFTER_LEN {
            return Err(DecodeError::TooShort {
                len,
                min: HEADER_AFTER_LEN as u32,
            });
        }
        if len > self.max_frame_len {
            return Err(DecodeError::TooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        Ok(())
    }

    /// Takes one frame off the front of `src`, or `Ok(None)` if `src` does not
    /// hold a whole frame yet. On `Ok(None)` it reserves room for the rest of the
    /// frame (at most the cap), so reads can go straight into `src`.
    pub fn decode(&self, src: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        if src.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]);
        self.check_len(len)?;
        let total = LEN_PREFIX + len as usize;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        let mut frame = src.split_to(total);
        frame.advance(LEN_PREFIX);
        let kind = frame.get_u8();
        let seq = frame.get_u32();
        Ok(Some(Frame {
            kind,
            seq,
            payload: frame.freeze(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(bytes: &[u8]) -> Result<Option<Frame>, DecodeError> {
        FrameDecoder::default().decode(&mut BytesMut::from(bytes))
    }

    #[test]
    fn encodes_ping_with_empty_payload_as_pinned_bytes() {
        let f = Frame::new(0x01, 7, Bytes::new());
        let b = f.to_bytes(DEFAULT_MAX_FRAME_LEN).unwrap();
        assert_eq!(&b[..], &[0, 0, 0, 5, 0x01, 0, 0, 0, 7]);
    }

    #[test]
    fn decodes_frame_with_payload() {
        let f = dec(&[0, 0, 0, 8, 0x03, 0, 0, 1, 0, b'a', b'b', b'c'])
            .unwrap()
            .unwrap();
        assert_eq!(f.kind, 0x03);
        assert_eq!(f.seq, 256);
        assert_eq!(&f.payload[..], b"abc");
    }

    #[test]
    fn needs_more_bytes_is_not_an_error() {
        assert_eq!(dec(&[]).unwrap(), None);
        assert_eq!(dec(&[0, 0, 0]).unwrap(), None);
        assert_eq!(dec(&[0, 0, 0, 8, 0x03, 0, 0]).unwrap(), None);
    }

    #[test]
    fn zero_and_short_lengths_are_refused() {
        for len in 0u8..5 {
            assert_eq!(
                dec(&[0, 0, 0, len]),
                Err(DecodeError::TooShort {
                    len: len as u32,
                    min: 5
                })
            );
        }
    }

    #[test]
    fn oversize_length_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        let cap_before = buf.capacity();
        let err = FrameDecoder::default().decode(&mut buf).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                len: u32::MAX,
                max: DEFAULT_MAX_FRAME_LEN
            }
        );
        assert_eq!(
            buf.capacity(),
            cap_before,
            "no allocation for a refused length"
        );
    }

    #[test]
    fn max_length_frame_is_accepted() {
        let d = FrameDecoder::new(16);
        let mut b = BytesMut::new();
        Frame::new(9, 1, vec![0u8; 11]).encode(&mut b, 16).unwrap();
        assert_eq!(d.decode(&mut b).unwrap().unwrap().payload.len(), 11);
        let mut b = BytesMut::from(&[0, 0, 0, 17][..]);
        assert!(matches!(
            d.decode(&mut b),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn encode_refuses_oversize_frame() {
        let f = Frame::new(9, 1, vec![0u8; 12]);
        assert_eq!(
            f.to_bytes(16),
            Err(EncodeError::TooLarge { len: 17, max: 16 })
        );
    }

    #[test]
    fn two_frames_back_to_back() {
        let mut b =
            BytesMut::from(&[0, 0, 0, 5, 1, 0, 0, 0, 1, 0, 0, 0, 6, 2, 0, 0, 0, 1, b'x'][..]);
        let d = FrameDecoder::default();
        assert_eq!(d.decode(&mut b).unwrap().unwrap().kind, 1);
        let f = d.decode(&mut b).unwrap().unwrap();
        assert_eq!((f.kind, &f.payload[..]), (2, &b"x"[..]));
        assert!(b.is_empty());
        assert_eq!(d.decode(&mut b).unwrap(), None);
    }
}
