//! Arbitrary payloads under every frame type: decoding and validation never panic,
//! and whatever decodes re-encodes to something that decodes to the same message.
#![no_main]

use hearth_proto::{Frame, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&kind, payload)) = data.split_first() else { return };
    if let Ok(m) = Message::from_frame(&Frame::new(kind, 1, payload.to_vec())) {
        let again = Message::from_frame(&m.into_frame(1)).expect("re-encoded message decodes");
        // Compare encodings, not values: a NaN load average is not equal to itself.
        assert_eq!(again.encode_payload(), m.encode_payload());
    }
});
