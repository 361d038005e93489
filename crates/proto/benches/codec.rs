//! Codec throughput: decoding 64 KiB frames vs a plain memcpy of the same bytes.
use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use hearth_proto::{pb, Frame, FrameDecoder, Message, DEFAULT_MAX_FRAME_LEN};

const PAYLOAD: usize = 64 * 1024;
const FRAMES: usize = 64;

fn wire() -> Vec<u8> {
    let mut b = BytesMut::new();
    for i in 0..FRAMES {
        Frame::new(0x09, i as u32, vec![0xabu8; PAYLOAD])
            .encode(&mut b, DEFAULT_MAX_FRAME_LEN)
            .unwrap();
    }
    b.to_vec()
}

fn bench(c: &mut Criterion) {
    let wire = wire();
    let mut g = c.benchmark_group("64KiB frames x64");
    g.throughput(Throughput::Bytes(wire.len() as u64));
    g.bench_function("baseline memcpy", |b| {
        let mut dst = vec![0u8; wire.len()];
        b.iter(|| {
            dst.copy_from_slice(black_box(&wire));
            black_box(&dst);
        })
    });
    g.bench_function("frame decode (copy into read buffer + split)", |b| {
        let dec = FrameDecoder::default();
        let mut buf = BytesMut::with_capacity(wire.len());
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(black_box(&wire));
            let mut n = 0;
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                n += f.payload.len();
            }
            black_box(n)
        })
    });
    g.bench_function("frame + message decode (OutputChunk)", |b| {
        let dec = FrameDecoder::default();
        let mut wire2 = BytesMut::new();
        for i in 0..FRAMES {
            Message::ExecStdout(pb::OutputChunk {
                index: i as u64,
                data: vec![0xab; PAYLOAD].into(),
                ..Default::default()
            })
            .into_frame(1)
            .encode(&mut wire2, DEFAULT_MAX_FRAME_LEN)
            .unwrap();
        }
        let mut buf = BytesMut::with_capacity(wire2.len());
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(black_box(&wire2));
            let mut n = 0;
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                if let Ok(Message::ExecStdout(c)) = Message::from_frame(&f) {
                    n += c.data.len();
                }
            }
            black_box(n)
        })
    });
    g.finish();
    c.bench_function("encode ping", |b| {
        b.iter(|| {
            black_box(
                Message::Ping(pb::Ping { nonce: 1 })
                    .into_frame(1)
                    .to_bytes(DEFAULT_MAX_FRAME_LEN),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
