//! The VM transport's stream multiplexer: many byte streams over one
//! ordered byte pipe (a virtio-serial port), with per-stream credit and a
//! resynchronisation point that survives snapshots.
//!
//! QEMU cannot migrate a VM with vhost-user-vsock (VM-NOTES, "Snapshots"),
//! so the QEMU backend carries the agent over one virtio-serial port. The
//! host side (`hearth-guest vm-proxy`) keeps the Firecracker hybrid contract
//! for host clients and turns each of their connections into one stream
//! here; the guest side (the agent) turns each stream into one agent
//! connection. This module is the codec both sides share, with no I/O.
//!
//! Frame: `[u8 kind][u32 BE stream][u32 BE len][len bytes]`. Streams are
//! opened by the host only. Data frames carry at most [`MAX_MUX_PAYLOAD`]
//! bytes, and never more than the receiver granted: every stream starts
//! with [`INITIAL_WINDOW`] bytes of credit in each direction and the
//! receiver returns credit ([`MuxFrame::Credit`]) as it consumes data, so a
//! slow reader stalls only its own stream.
//!
//! Sync frames (hello, suspend, resume and their answers) have stream 0, a
//! 16-byte payload of [`SYNC_MAGIC`] and a `u64` nonce, so their first 17
//! bytes are fixed and a side that lost its place in the byte stream finds
//! the next one by scanning ([`MuxDecoder::scan_for`]). A new host sends
//! `HELLO(nonce)`; the guest drops every stream of the previous host and
//! answers `HELLO_ACK(nonce)`; the host ignores everything before that
//! answer. Before a snapshot the host sends `SUSPEND` and waits for
//! `SUSPENDED`: both directions then stand at a frame boundary with nothing
//! in flight, which is the state a restored guest wakes up in.

use thiserror::Error;

/// Bytes before a frame's payload.
pub const MUX_HEADER_LEN: usize = 9;
/// Largest payload of one frame.
pub const MAX_MUX_PAYLOAD: u32 = 64 * 1024;
/// Credit each side has for a new stream, each way.
pub const INITIAL_WINDOW: u32 = 256 * 1024;
/// Streams open at once on one pipe.
pub const MAX_STREAMS: usize = 1024;
/// The fixed start of every sync frame's payload.
pub const SYNC_MAGIC: [u8; 8] = *b"hearthMX";
/// Payload length of every sync frame.
const SYNC_PAYLOAD_LEN: u32 = 16;
/// Longest refusal reason carried.
pub const MAX_REASON_LEN: usize = 1024;

/// Frame kinds on the wire (pinned by a test).
pub mod kind {
    pub const OPEN: u8 = 0x01;
    pub const OPENED: u8 = 0x02;
    pub const REFUSED: u8 = 0x03;
    pub const DATA: u8 = 0x04;
    pub const CREDIT: u8 = 0x05;
    pub const FIN: u8 = 0x06;
    pub const RESET: u8 = 0x07;
    pub const HELLO: u8 = 0x10;
    pub const HELLO_ACK: u8 = 0x11;
    pub const SUSPEND: u8 = 0x12;
    pub const SUSPENDED: u8 = 0x13;
    pub const RESUME: u8 = 0x14;
}

/// The sync frames, which a side can scan for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    Hello,
    HelloAck,
    Suspend,
    Suspended,
    Resume,
}

impl Sync {
    pub fn kind(self) -> u8 {
        match self {
            Sync::Hello => kind::HELLO,
            Sync::HelloAck => kind::HELLO_ACK,
            Sync::Suspend => kind::SUSPEND,
            Sync::Suspended => kind::SUSPENDED,
            Sync::Resume => kind::RESUME,
        }
    }

    fn of_kind(k: u8) -> Option<Sync> {
        Some(match k {
            kind::HELLO => Sync::Hello,
            kind::HELLO_ACK => Sync::HelloAck,
            kind::SUSPEND => Sync::Suspend,
            kind::SUSPENDED => Sync::Suspended,
            kind::RESUME => Sync::Resume,
            _ => return None,
        })
    }

    /// The first 17 bytes of this sync frame (header + magic).
    pub fn prefix(self) -> [u8; MUX_HEADER_LEN + 8] {
        let mut p = [0u8; MUX_HEADER_LEN + 8];
        p[0] = self.kind();
        p[5..9].copy_from_slice(&SYNC_PAYLOAD_LEN.to_be_bytes());
        p[9..].copy_from_slice(&SYNC_MAGIC);
        p
    }
}

/// One multiplexer frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MuxFrame {
    /// Host → guest: open `stream` to the guest's `port`.
    Open { stream: u32, port: u32 },
    /// Guest → host: the stream is open.
    Opened { stream: u32 },
    /// Guest → host: the stream could not be opened, and why.
    Refused { stream: u32, reason: String },
    /// Bytes of a stream, within the receiver's credit.
    Data { stream: u32, data: Vec<u8> },
    /// The sender may send `bytes` more on `stream`.
    Credit { stream: u32, bytes: u32 },
    /// The sender sends no more data on `stream` (it may still receive).
    Fin { stream: u32 },
    /// The stream is gone both ways.
    Reset { stream: u32 },
    /// A sync frame with its nonce.
    Sync { sync: Sync, nonce: u64 },
}

/// A frame that breaks the multiplexer's rules. Either side answers it by
/// dropping its place in the stream and resynchronising.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MuxError {
    #[error("unknown mux frame kind {0:#04x}")]
    UnknownKind(u8),
    #[error("mux frame kind {kind:#04x} has length {len}, over the limit {max}")]
    TooLong { kind: u8, len: u32, max: u32 },
    #[error("mux frame kind {kind:#04x} must have a {expected}-byte payload, not {len}")]
    BadLength { kind: u8, len: u32, expected: u32 },
    #[error("mux {what} frame on stream 0 (stream 0 is for sync frames)")]
    StreamZero { what: &'static str },
    #[error("sync frame kind {kind:#04x} without the magic (stream {stream})")]
    BadSync { kind: u8, stream: u32 },
}

impl MuxFrame {
    fn kind(&self) -> u8 {
        match self {
            MuxFrame::Open { .. } => kind::OPEN,
            MuxFrame::Opened { .. } => kind::OPENED,
            MuxFrame::Refused { .. } => kind::REFUSED,
            MuxFrame::Data { .. } => kind::DATA,
            MuxFrame::Credit { .. } => kind::CREDIT,
            MuxFrame::Fin { .. } => kind::FIN,
            MuxFrame::Reset { .. } => kind::RESET,
            MuxFrame::Sync { sync, .. } => sync.kind(),
        }
    }

    fn stream(&self) -> u32 {
        match self {
            MuxFrame::Open { stream, .. }
            | MuxFrame::Opened { stream }
            | MuxFrame::Refused { stream, .. }
            | MuxFrame::Data { stream, .. }
            | MuxFrame::Credit { stream, .. }
            | MuxFrame::Fin { stream }
            | MuxFrame::Reset { stream } => *stream,
            MuxFrame::Sync { .. } => 0,
        }
    }

    /// Appends the encoded frame to `out`. Data longer than
    /// [`MAX_MUX_PAYLOAD`] and reasons longer than [`MAX_REASON_LEN`] are the
    /// caller's bug; reasons are cut, data panics in debug builds.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let header = |out: &mut Vec<u8>, len: usize| {
            out.push(self.kind());
            out.extend_from_slice(&self.stream().to_be_bytes());
            out.extend_from_slice(&(len as u32).to_be_bytes());
        };
        match self {
            MuxFrame::Open { port, .. } => {
                header(out, 4);
                out.extend_from_slice(&port.to_be_bytes());
            }
            MuxFrame::Opened { .. } | MuxFrame::Fin { .. } | MuxFrame::Reset { .. } => {
                header(out, 0)
            }
            MuxFrame::Refused { reason, .. } => {
                let r = cut(reason, MAX_REASON_LEN);
                header(out, r.len());
                out.extend_from_slice(r.as_bytes());
            }
            MuxFrame::Data { data, .. } => {
                debug_assert!(data.len() <= MAX_MUX_PAYLOAD as usize);
                header(out, data.len());
                out.extend_from_slice(data);
            }
            MuxFrame::Credit { bytes, .. } => {
                header(out, 4);
                out.extend_from_slice(&bytes.to_be_bytes());
            }
            MuxFrame::Sync { nonce, .. } => {
                header(out, SYNC_PAYLOAD_LEN as usize);
                out.extend_from_slice(&SYNC_MAGIC);
                out.extend_from_slice(&nonce.to_be_bytes());
            }
        }
    }

    /// The encoded frame.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Where a decoder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Frames follow one another.
    Framed,
    /// Bytes are discarded up to the next sync frame of this kind (and this
    /// nonce, when given).
    Scanning(Sync, Option<u64>),
}

/// Sans-I/O decoder: [`push`](Self::push) bytes in, [`next`](Self::next)
/// frames out. A length over the limit is refused from the header alone,
/// before any payload is buffered.
#[derive(Debug)]
pub struct MuxDecoder {
    buf: Vec<u8>,
    mode: Mode,
    /// Bytes thrown away while scanning, for diagnostics.
    discarded: u64,
}

impl Default for MuxDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl MuxDecoder {
    /// A decoder at a frame boundary.
    pub fn new() -> Self {
        Self {
            buf: Vec::new(),
            mode: Mode::Framed,
            discarded: 0,
        }
    }

    /// Throws away what is buffered and everything after it up to the next
    /// `sync` frame (with `nonce`, when given), which [`next`](Self::next)
    /// then returns.
    pub fn scan_for(&mut self, sync: Sync, nonce: Option<u64>) {
        self.discarded += self.buf.len() as u64;
        self.buf.clear();
        self.mode = Mode::Scanning(sync, nonce);
    }

    /// Whether the decoder is looking for a sync frame.
    pub fn is_scanning(&self) -> bool {
        matches!(self.mode, Mode::Scanning(..))
    }

    /// Bytes discarded by scanning so far.
    pub fn discarded(&self) -> u64 {
        self.discarded
    }

    /// Bytes buffered (an incomplete frame).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole frame, `None` when more bytes are needed. After an
    /// error the decoder is left scanning for a `HELLO` (the guest's way
    /// back); a host calls [`scan_for`](Self::scan_for) with what it wants.
    #[allow(clippy::should_implement_trait)] // fallible, and `None` means "need more bytes"
    pub fn next(&mut self) -> Result<Option<MuxFrame>, MuxError> {
        if let Mode::Scanning(sync, nonce) = self.mode {
            if !self.scan(sync, nonce) {
                return Ok(None);
            }
            self.mode = Mode::Framed;
        }
        match self.decode_one() {
            Ok(f) => Ok(f),
            Err(e) => {
                self.scan_for(Sync::Hello, None);
                Err(e)
            }
        }
    }

    /// Drops bytes until `buf` starts with the wanted sync frame; `true` when
    /// it does (whole frame buffered).
    fn scan(&mut self, sync: Sync, nonce: Option<u64>) -> bool {
        let prefix = sync.prefix();
        let whole = MUX_HEADER_LEN + SYNC_PAYLOAD_LEN as usize;
        let mut from = 0;
        loop {
            let hay = &self.buf[from..];
            let found = hay.windows(prefix.len()).position(|w| w == prefix);
            match found {
                Some(i) => {
                    let at = from + i;
                    if self.buf.len() < at + whole {
                        self.drop_front(at);
                        return false;
                    }
                    let n = u64::from_be_bytes(self.buf[at + 17..at + 25].try_into().unwrap());
                    if nonce.is_none_or(|want| want == n) {
                        self.drop_front(at);
                        return true;
                    }
                    from = at + 1;
                }
                None => {
                    // Keep a tail that may be the start of the prefix.
                    let keep = (prefix.len() - 1).min(self.buf.len());
                    let cut = self.buf.len() - keep;
                    self.drop_front(cut.max(from.min(self.buf.len())));
                    return false;
                }
            }
        }
    }

    fn drop_front(&mut self, n: usize) {
        self.discarded += n as u64;
        self.buf.drain(..n);
    }

    fn decode_one(&mut self) -> Result<Option<MuxFrame>, MuxError> {
        if self.buf.len() < MUX_HEADER_LEN {
            return Ok(None);
        }
        let k = self.buf[0];
        let stream = u32::from_be_bytes(self.buf[1..5].try_into().unwrap());
        let len = u32::from_be_bytes(self.buf[5..9].try_into().unwrap());
        let fixed = |expected: u32| {
            if len == expected {
                Ok(())
            } else {
                Err(MuxError::BadLength {
                    kind: k,
                    len,
                    expected,
                })
            }
        };
        match k {
            kind::OPEN | kind::CREDIT => fixed(4)?,
            kind::OPENED | kind::FIN | kind::RESET => fixed(0)?,
            kind::REFUSED if len as usize > MAX_REASON_LEN => {
                return Err(MuxError::TooLong {
                    kind: k,
                    len,
                    max: MAX_REASON_LEN as u32,
                })
            }
            kind::REFUSED => {}
            kind::DATA if len > MAX_MUX_PAYLOAD => {
                return Err(MuxError::TooLong {
                    kind: k,
                    len,
                    max: MAX_MUX_PAYLOAD,
                })
            }
            kind::DATA => {}
            _ if Sync::of_kind(k).is_some() => fixed(SYNC_PAYLOAD_LEN)?,
            other => return Err(MuxError::UnknownKind(other)),
        }
        let total = MUX_HEADER_LEN + len as usize;
        if self.buf.len() < total {
            return Ok(None);
        }
        let payload = &self.buf[MUX_HEADER_LEN..total];
        let u32_at = |p: &[u8]| u32::from_be_bytes(p[..4].try_into().unwrap());
        let frame = match Sync::of_kind(k) {
            Some(sync) => {
                if stream != 0 || payload[..8] != SYNC_MAGIC {
                    return Err(MuxError::BadSync { kind: k, stream });
                }
                MuxFrame::Sync {
                    sync,
                    nonce: u64::from_be_bytes(payload[8..16].try_into().unwrap()),
                }
            }
            None => {
                if stream == 0 {
                    return Err(MuxError::StreamZero { what: kind_name(k) });
                }
                match k {
                    kind::OPEN => MuxFrame::Open {
                        stream,
                        port: u32_at(payload),
                    },
                    kind::OPENED => MuxFrame::Opened { stream },
                    kind::REFUSED => MuxFrame::Refused {
                        stream,
                        reason: String::from_utf8_lossy(payload).into_owned(),
                    },
                    kind::DATA => MuxFrame::Data {
                        stream,
                        data: payload.to_vec(),
                    },
                    kind::CREDIT => MuxFrame::Credit {
                        stream,
                        bytes: u32_at(payload),
                    },
                    kind::FIN => MuxFrame::Fin { stream },
                    _ => MuxFrame::Reset { stream },
                }
            }
        };
        self.buf.drain(..total);
        Ok(Some(frame))
    }
}

fn kind_name(k: u8) -> &'static str {
    match k {
        kind::OPEN => "OPEN",
        kind::OPENED => "OPENED",
        kind::REFUSED => "REFUSED",
        kind::DATA => "DATA",
        kind::CREDIT => "CREDIT",
        kind::FIN => "FIN",
        _ => "RESET",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(bytes: &[u8]) -> Vec<MuxFrame> {
        let mut d = MuxDecoder::new();
        d.push(bytes);
        let mut out = Vec::new();
        while let Some(f) = d.next().unwrap() {
            out.push(f);
        }
        assert_eq!(d.buffered(), 0);
        out
    }

    #[test]
    fn wire_values_are_pinned() {
        assert_eq!(
            MuxFrame::Open {
                stream: 1,
                port: 1000
            }
            .to_bytes(),
            [0x01, 0, 0, 0, 1, 0, 0, 0, 4, 0, 0, 0x03, 0xE8]
        );
        assert_eq!(
            MuxFrame::Data {
                stream: 0x0102_0304,
                data: b"hi".to_vec()
            }
            .to_bytes(),
            [0x04, 1, 2, 3, 4, 0, 0, 0, 2, b'h', b'i']
        );
        assert_eq!(
            MuxFrame::Credit {
                stream: 7,
                bytes: 65536
            }
            .to_bytes(),
            [0x05, 0, 0, 0, 7, 0, 0, 0, 4, 0, 1, 0, 0]
        );
        assert_eq!(
            MuxFrame::Opened { stream: 2 }.to_bytes(),
            [0x02, 0, 0, 0, 2, 0, 0, 0, 0]
        );
        assert_eq!(MuxFrame::Fin { stream: 2 }.to_bytes()[0], 0x06);
        assert_eq!(MuxFrame::Reset { stream: 2 }.to_bytes()[0], 0x07);
        assert_eq!(
            MuxFrame::Refused {
                stream: 3,
                reason: "no".into()
            }
            .to_bytes(),
            [0x03, 0, 0, 0, 3, 0, 0, 0, 2, b'n', b'o']
        );
        let mut hello = vec![0x10, 0, 0, 0, 0, 0, 0, 0, 16];
        hello.extend_from_slice(b"hearthMX");
        hello.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 9]);
        assert_eq!(
            MuxFrame::Sync {
                sync: Sync::Hello,
                nonce: 9
            }
            .to_bytes(),
            hello
        );
        let kinds = [
            Sync::Hello,
            Sync::HelloAck,
            Sync::Suspend,
            Sync::Suspended,
            Sync::Resume,
        ]
        .map(Sync::kind);
        assert_eq!(kinds, [0x10, 0x11, 0x12, 0x13, 0x14]);
    }

    #[test]
    fn frames_split_anywhere_decode_whole() {
        let frames = vec![
            MuxFrame::Sync {
                sync: Sync::Hello,
                nonce: 42,
            },
            MuxFrame::Open {
                stream: 1,
                port: 1000,
            },
            MuxFrame::Data {
                stream: 1,
                data: vec![7; 1000],
            },
            MuxFrame::Fin { stream: 1 },
        ];
        let mut bytes = Vec::new();
        frames.iter().for_each(|f| f.encode(&mut bytes));
        for split in 0..bytes.len() {
            let mut d = MuxDecoder::new();
            let mut got = Vec::new();
            d.push(&bytes[..split]);
            while let Some(f) = d.next().unwrap() {
                got.push(f);
            }
            d.push(&bytes[split..]);
            while let Some(f) = d.next().unwrap() {
                got.push(f);
            }
            assert_eq!(got, frames, "split at {split}");
        }
    }

    #[test]
    fn an_oversize_length_is_refused_from_the_header_alone() {
        let mut d = MuxDecoder::new();
        d.push(&[kind::DATA, 0, 0, 0, 1, 0x00, 0x01, 0x00, 0x01]);
        assert_eq!(
            d.next(),
            Err(MuxError::TooLong {
                kind: kind::DATA,
                len: 65537,
                max: MAX_MUX_PAYLOAD
            })
        );
        assert!(
            d.is_scanning(),
            "after an error the guest looks for a HELLO"
        );
    }

    #[test]
    fn bad_frames_name_the_problem() {
        let cases: [(&[u8], &str); 5] = [
            (
                &[0x09, 0, 0, 0, 1, 0, 0, 0, 0],
                "unknown mux frame kind 0x09",
            ),
            (
                &[kind::OPEN, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0],
                "4-byte payload, not 2",
            ),
            (
                &[kind::DATA, 0, 0, 0, 0, 0, 0, 0, 0],
                "DATA frame on stream 0",
            ),
            (
                &[kind::FIN, 0, 0, 0, 1, 0, 0, 0, 1, 0],
                "0-byte payload, not 1",
            ),
            (
                &[
                    kind::HELLO,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    16,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                ],
                "without the magic",
            ),
        ];
        for (bytes, want) in cases {
            let mut d = MuxDecoder::new();
            d.push(bytes);
            let e = d.next().unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn scanning_skips_garbage_and_half_frames_up_to_the_wanted_hello() {
        let mut stale = MuxFrame::Data {
            stream: 5,
            data: vec![1; 300],
        }
        .to_bytes();
        stale.truncate(100); // half a frame left over from the previous host
        let mut bytes = stale.clone();
        // A HELLO with the wrong nonce (an older host's) is skipped too.
        MuxFrame::Sync {
            sync: Sync::Hello,
            nonce: 1,
        }
        .encode(&mut bytes);
        MuxFrame::Sync {
            sync: Sync::Hello,
            nonce: 2,
        }
        .encode(&mut bytes);
        MuxFrame::Open {
            stream: 1,
            port: 1000,
        }
        .encode(&mut bytes);
        for step in [1, 3, 17, bytes.len()] {
            let mut d = MuxDecoder::new();
            d.scan_for(Sync::Hello, Some(2));
            let mut got = Vec::new();
            for chunk in bytes.chunks(step) {
                d.push(chunk);
                while let Some(f) = d.next().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(
                got,
                [
                    MuxFrame::Sync {
                        sync: Sync::Hello,
                        nonce: 2
                    },
                    MuxFrame::Open {
                        stream: 1,
                        port: 1000
                    }
                ],
                "chunks of {step}"
            );
            assert_eq!(d.discarded(), (stale.len() + 25) as u64);
        }
    }

    #[test]
    fn a_refusal_reason_is_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_REASON_LEN);
        let f = MuxFrame::Refused {
            stream: 1,
            reason: long,
        };
        match &decode_all(&f.to_bytes())[0] {
            MuxFrame::Refused { reason, .. } => {
                assert!(reason.len() <= MAX_REASON_LEN && reason.chars().all(|c| c == 'é'))
            }
            other => panic!("{other:?}"),
        }
    }

    fn arb_frame() -> impl Strategy<Value = MuxFrame> {
        let stream = 1u32..;
        prop_oneof![
            (stream.clone(), any::<u32>())
                .prop_map(|(stream, port)| MuxFrame::Open { stream, port }),
            stream
                .clone()
                .prop_map(|stream| MuxFrame::Opened { stream }),
            (stream.clone(), "[a-z ]{0,40}")
                .prop_map(|(stream, reason)| MuxFrame::Refused { stream, reason }),
            (
                stream.clone(),
                proptest::collection::vec(any::<u8>(), 0..2000)
            )
                .prop_map(|(stream, data)| MuxFrame::Data { stream, data }),
            (stream.clone(), any::<u32>())
                .prop_map(|(stream, bytes)| MuxFrame::Credit { stream, bytes }),
            stream.clone().prop_map(|stream| MuxFrame::Fin { stream }),
            stream.prop_map(|stream| MuxFrame::Reset { stream }),
            (0usize..5, any::<u64>()).prop_map(|(i, nonce)| MuxFrame::Sync {
                sync: [
                    Sync::Hello,
                    Sync::HelloAck,
                    Sync::Suspend,
                    Sync::Suspended,
                    Sync::Resume
                ][i],
                nonce
            }),
        ]
    }

    proptest! {
        #[test]
        fn round_trip(frames in proptest::collection::vec(arb_frame(), 0..20), chunk in 1usize..300) {
            let mut bytes = Vec::new();
            frames.iter().for_each(|f| f.encode(&mut bytes));
            let mut d = MuxDecoder::new();
            let mut got = Vec::new();
            for c in bytes.chunks(chunk) {
                d.push(c);
                while let Some(f) = d.next().unwrap() {
                    got.push(f);
                }
            }
            prop_assert_eq!(got, frames);
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut d = MuxDecoder::new();
            d.push(&bytes);
            for _ in 0..100 {
                if let Ok(None) = d.next() {
                    break;
                }
            }
        }
    }
}
