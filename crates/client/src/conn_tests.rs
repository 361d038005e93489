//! Client behaviour against a misbehaving peer (things the real agent never
//! does, so they are tested against a scripted stream).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hearth_proto::{capability_bit, pb, Frame, FrameDecoder, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::{Client, ClientError, ConnectOptions};

fn ready(version: u32) -> Bytes {
    let caps = [
        pb::Capability::OneshotExec,
        pb::Capability::ExecStream,
        pb::Capability::Files,
        pb::Capability::FlowControl,
    ]
    .into_iter()
    .map(capability_bit)
    .fold(0, |a, b| a | b);
    Message::Ready(pb::Ready {
        protocol_version: version,
        agent_version: "test".into(),
        capabilities: caps,
        max_frame_len: 1 << 20,
        ..Default::default()
    })
    .into_frame(0)
    .to_bytes(u32::MAX)
    .unwrap()
}

fn opts() -> ConnectOptions {
    ConnectOptions {
        timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

async fn connected() -> (Client, DuplexStream) {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    b.write_all(&ready(1)).await.unwrap();
    (Client::from_stream(a, &opts()).await.unwrap(), b)
}

async fn read_frame(b: &mut DuplexStream) -> Frame {
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = FrameDecoder::default().decode(&mut buf).unwrap() {
            return f;
        }
        assert_ne!(b.read_buf(&mut buf).await.unwrap(), 0, "client closed");
    }
}

#[tokio::test]
async fn peer_closing_fails_pending_requests() {
    let (c, mut b) = connected().await;
    let ping = tokio::spawn({
        let c = c.clone();
        async move { c.ping().await }
    });
    let f = read_frame(&mut b).await;
    assert_eq!(f.kind, 0x01);
    assert_ne!(f.seq, 0);
    drop(b);
    let r = tokio::time::timeout(Duration::from_secs(2), ping)
        .await
        .unwrap()
        .unwrap();
    match r {
        Err(ClientError::ConnectionClosed { reason }) => {
            assert!(reason.contains("closed"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.ping().await,
        Err(ClientError::ConnectionClosed { .. })
    ));
}

#[tokio::test]
async fn oversize_length_from_peer_ends_the_connection() {
    let (c, mut b) = connected().await;
    let ping = tokio::spawn({
        let c = c.clone();
        async move { c.ping().await }
    });
    let _ = read_frame(&mut b).await;
    b.write_all(&[0xff, 0xff, 0xff, 0xf0, 1, 0, 0, 0, 1])
        .await
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), ping)
        .await
        .unwrap()
        .unwrap();
    match r {
        Err(ClientError::ConnectionClosed { reason }) => {
            assert!(reason.contains("exceeds the maximum"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn missing_ready_times_out() {
    let (a, _b) = tokio::io::duplex(64);
    let o = ConnectOptions {
        timeout: Duration::from_millis(100),
        ..Default::default()
    };
    assert!(matches!(
        Client::from_stream(a, &o).await,
        Err(ClientError::ReadyTimeout { .. })
    ));
}

#[tokio::test]
async fn newer_protocol_version_is_refused() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    b.write_all(&ready(2)).await.unwrap();
    match Client::from_stream(a, &opts()).await {
        Err(
            e @ ClientError::ProtocolVersion {
                agent: 2,
                client: 1,
            },
        ) => {
            assert!(e.to_string().contains("version 2"))
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn seq0_error_ends_the_connection() {
    let (c, mut b) = connected().await;
    let err = hearth_proto::message::error(pb::ErrorCode::BadFrame, "garbage", 0).into_frame(0);
    b.write_all(&err.to_bytes(u32::MAX).unwrap()).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), c.ping())
        .await
        .unwrap();
    match r {
        Err(ClientError::ConnectionClosed { reason }) => {
            assert!(reason.contains("BadFrame"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn output_beyond_granted_credit_fails_the_session() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    b.write_all(&ready(1)).await.unwrap();
    let o = ConnectOptions {
        max_frame_len: 1 << 20,
        ..opts()
    };
    let c = Client::from_stream(a, &o).await.unwrap();
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["x".into()],
            window: 1024,
            ..Default::default()
        })
        .await
        .unwrap();
    let start = read_frame(&mut b).await;
    // 1024 bytes of credit plus one frame of slack (1 MiB here) is exceeded.
    for i in 0..3u64 {
        let chunk = Message::ExecStdout(pb::OutputChunk {
            index: i,
            data: Bytes::from(vec![0u8; 600 * 1024]),
        })
        .into_frame(start.seq);
        b.write_all(&chunk.to_bytes(u32::MAX).unwrap())
            .await
            .unwrap();
    }
    // Let the reader route everything before the handle returns any credit.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(2), h.next_event())
            .await
            .unwrap()
        {
            Ok(Some(e)) => got.push(e),
            Ok(None) => panic!("session ended without an error"),
            Err(e) => {
                assert!(e.to_string().contains("flow-control"), "{e}");
                break;
            }
        }
    }
    assert_eq!(
        got.len(),
        1,
        "only the chunk within credit + slack is delivered"
    );
}

#[tokio::test]
async fn seqs_skip_zero_and_in_flight() {
    let (c, mut b) = connected().await;
    c.inner.routes.set_next_seq_for_test(u32::MAX);
    let p1 = tokio::spawn({
        let c = c.clone();
        async move { c.ping().await }
    });
    let f1 = read_frame(&mut b).await;
    assert_eq!(f1.seq, u32::MAX);
    let p2 = tokio::spawn({
        let c = c.clone();
        async move { c.ping().await }
    });
    let f2 = read_frame(&mut b).await;
    assert_eq!(f2.seq, 1, "seq 0 is skipped");
    c.inner.routes.set_next_seq_for_test(u32::MAX);
    let p3 = tokio::spawn({
        let c = c.clone();
        async move { c.ping().await }
    });
    let f3 = read_frame(&mut b).await;
    assert_eq!(f3.seq, 2, "seqs in flight are skipped");
    for f in [f1, f2, f3] {
        let Message::Ping(p) = Message::from_frame(&f).unwrap() else {
            panic!()
        };
        let pong = Message::Pong(pb::Pong {
            nonce: p.nonce,
            agent_version: String::new(),
        });
        b.write_all(&pong.into_frame(f.seq).to_bytes(u32::MAX).unwrap())
            .await
            .unwrap();
    }
    for p in [p1, p2, p3] {
        p.await.unwrap().unwrap();
    }
}
