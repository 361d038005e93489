//! Arbitrary bytes into the frame decoder, fed in two differently chunked ways:
//! it must never panic, and both ways must yield the same frames and error.
#![no_main]

use bytes::BytesMut;
use hearth_proto::{FrameDecoder, Message};
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], chunk: usize) -> (Vec<hearth_proto::Frame>, bool) {
    let dec = FrameDecoder::new(1 << 16);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    for part in data.chunks(chunk.max(1)) {
        buf.extend_from_slice(part);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(f)) => {
                    let _ = Message::from_frame(&f);
                    frames.push(f);
                }
                Ok(None) => break,
                Err(_) => return (frames, true),
            }
        }
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let whole = run(rest, rest.len());
    let chunked = run(rest, first as usize % 17 + 1);
    assert_eq!(whole, chunked);
});
