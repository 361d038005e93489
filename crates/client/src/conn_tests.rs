//! Client behaviour against a misbehaving peer (things the real agent never
//! does, so they are tested against a scripted stream).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hearth_proto::{capability_bit, pb, Frame, FrameDecoder, Message};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use crate::{Client, ClientError, ConnectOptions, ExecEvent};

fn ready(version: u32) -> Bytes {
    ready_with(version, &[], 0)
}

/// READY with the base capabilities, `more` of them, and `input_window`.
fn ready_with(version: u32, more: &[pb::Capability], input_window: u32) -> Bytes {
    let caps = [
        pb::Capability::OneshotExec,
        pb::Capability::ExecStream,
        pb::Capability::Files,
        pb::Capability::FlowControl,
    ]
    .iter()
    .chain(more)
    .map(|c| capability_bit(*c))
    .fold(0, |a, b| a | b);
    Message::Ready(pb::Ready {
        protocol_version: version,
        agent_version: "test".into(),
        capabilities: caps,
        max_frame_len: 1 << 20,
        input_window,
        ..Default::default()
    })
    .into_frame(0)
    .to_bytes(u32::MAX)
    .unwrap()
}

async fn send(b: &mut DuplexStream, seq: u32, m: Message) {
    b.write_all(&m.into_frame(seq).to_bytes(u32::MAX).unwrap())
        .await
        .unwrap();
}

/// Reads frames until `want` bytes of EXEC_STDIN data came; panics on
/// anything else.
async fn read_stdin(b: &mut DuplexStream, want: usize) -> (usize, bool) {
    let (mut got, mut eof) = (0, false);
    while got < want && !eof {
        let f = read_frame(b).await;
        match Message::from_frame(&f).unwrap() {
            Message::ExecStdin(d) => {
                got += d.data.len();
                eof = d.eof;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    (got, eof)
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
    // Byte by byte, so no bytes of a following frame are consumed.
    let mut buf = BytesMut::new();
    loop {
        if let Some(f) = FrameDecoder::default().decode(&mut buf).unwrap() {
            return f;
        }
        let mut one = [0u8; 1];
        assert_ne!(b.read(&mut one).await.unwrap(), 0, "client closed");
        buf.extend_from_slice(&one);
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
            ..Default::default()
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

#[tokio::test]
async fn stdin_waits_for_the_agents_input_credit() {
    let (a, mut b) = tokio::io::duplex(1 << 20);
    b.write_all(&ready_with(1, &[pb::Capability::InputFlowControl], 1000))
        .await
        .unwrap();
    let c = Client::from_stream(a, &opts()).await.unwrap();
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["cat".into()],
            stdin_open: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let start = read_frame(&mut b).await;
    let Ok(Message::ExecStart(req)) = Message::from_frame(&start) else {
        panic!("expected EXEC_START")
    };
    assert!(req.input_credit, "the client asks for input credit");
    let ctl = h.control();
    let writer = tokio::spawn(async move { ctl.write_stdin(Bytes::from(vec![1u8; 2500])).await });
    assert_eq!(read_stdin(&mut b, 1000).await, (1000, false));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!writer.is_finished(), "no stdin beyond the window");
    send(
        &mut b,
        start.seq,
        Message::WindowUpdate(pb::WindowUpdate { bytes: 1000 }),
    )
    .await;
    assert_eq!(read_stdin(&mut b, 1000).await, (1000, false));
    // The session ends: the writer stops waiting and the rest is dropped.
    send(
        &mut b,
        start.seq,
        Message::ExecStarted(pb::ExecStarted { pid: 1 }),
    )
    .await;
    send(
        &mut b,
        start.seq,
        Message::ExecExit(pb::ExecExit::default()),
    )
    .await;
    tokio::time::timeout(Duration::from_secs(2), writer)
        .await
        .expect("writer returns after the exit")
        .unwrap()
        .expect("stdin for an ended session is dropped");
    assert!(matches!(
        h.next_event().await,
        Ok(Some(ExecEvent::Started { .. }))
    ));
    assert!(matches!(h.next_event().await, Ok(Some(ExecEvent::Exit(_)))));
}

#[tokio::test]
async fn without_input_credit_stdin_goes_out_at_once() {
    let (c, mut b) = connected().await;
    let h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["cat".into()],
            stdin_open: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let start = read_frame(&mut b).await;
    let Ok(Message::ExecStart(req)) = Message::from_frame(&start) else {
        panic!("expected EXEC_START")
    };
    assert!(
        !req.input_credit,
        "an agent without the bit gets the old protocol"
    );
    let ctl = h.control();
    let writer = tokio::spawn(async move { ctl.write_stdin(Bytes::from(vec![1u8; 5000])).await });
    assert_eq!(read_stdin(&mut b, 5000).await, (5000, false));
    writer.await.unwrap().expect("write_stdin");
}

#[tokio::test]
async fn an_error_during_a_session_does_not_end_it() {
    let (c, mut b) = connected().await;
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["x".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let seq = read_frame(&mut b).await.seq;
    send(
        &mut b,
        seq,
        Message::ExecStarted(pb::ExecStarted { pid: 1 }),
    )
    .await;
    let refusal = hearth_proto::message::error(pb::ErrorCode::InvalidArgument, "bad signal", 0);
    send(&mut b, seq, refusal).await;
    let out = pb::OutputChunk {
        index: 0,
        data: Bytes::from_static(b"after"),
        ..Default::default()
    };
    send(&mut b, seq, Message::ExecStdout(out)).await;
    send(&mut b, seq, Message::ExecExit(pb::ExecExit::default())).await;
    assert!(matches!(
        h.next_event().await,
        Ok(Some(ExecEvent::Started { .. }))
    ));
    let e = h.next_event().await.expect_err("the refusal is reported");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::InvalidArgument));
    assert!(matches!(h.next_event().await, Ok(Some(ExecEvent::Stdout(d))) if &d[..] == b"after"));
    assert!(matches!(h.next_event().await, Ok(Some(ExecEvent::Exit(_)))));
}

#[tokio::test]
async fn an_error_before_started_ends_the_session() {
    let (c, mut b) = connected().await;
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["x".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let seq = read_frame(&mut b).await.seq;
    let refusal = hearth_proto::message::error(pb::ErrorCode::ShuttingDown, "shutting down", 0);
    send(&mut b, seq, refusal).await;
    let e = h.next_event().await.expect_err("the refusal");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::ShuttingDown));
    assert!(matches!(h.next_event().await, Ok(None)));
}

#[tokio::test]
async fn an_agent_frame_limit_above_the_clients_is_refused() {
    let (a, mut b) = tokio::io::duplex(1 << 16);
    b.write_all(&ready(1)).await.unwrap();
    let o = ConnectOptions {
        max_frame_len: 64 * 1024,
        ..opts()
    };
    match Client::from_stream(a, &o).await {
        Err(ClientError::Protocol { reason }) => {
            assert!(
                reason.contains("1048576") && reason.contains("65536"),
                "{reason}"
            )
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}
