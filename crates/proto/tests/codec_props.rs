//! Property tests: decoding is independent of chunking; garbage never panics.
use bytes::BytesMut;
use hearth_proto::{Frame, FrameDecoder, Message, DEFAULT_MAX_FRAME_LEN};
use proptest::prelude::*;

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        any::<u8>(),
        any::<u32>(),
        proptest::collection::vec(any::<u8>(), 0..2048),
    )
        .prop_map(|(k, s, p)| Frame::new(k, s, p))
}

proptest! {
    #[test]
    fn decoding_is_independent_of_chunking(
        frames in proptest::collection::vec(arb_frame(), 1..8),
        cuts in proptest::collection::vec(1usize..300, 1..64),
    ) {
        let mut wire = BytesMut::new();
        for f in &frames {
            f.encode(&mut wire, DEFAULT_MAX_FRAME_LEN).unwrap();
        }
        let wire = wire.freeze();
        let dec = FrameDecoder::default();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < wire.len() {
            let n = cuts[i % cuts.len()].min(wire.len() - pos);
            buf.extend_from_slice(&wire[pos..pos + n]);
            pos += n;
            i += 1;
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let dec = FrameDecoder::new(1 << 16);
        let mut buf = BytesMut::from(&data[..]);
        while let Ok(Some(f)) = dec.decode(&mut buf) {
            let _ = Message::from_frame(&f);
        }
    }

    #[test]
    fn arbitrary_payload_for_every_type_never_panics(
        kind in any::<u8>(),
        payload in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let _ = Message::from_frame(&Frame::new(kind, 1, payload));
    }
}
