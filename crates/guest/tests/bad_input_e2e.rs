//! Agent tier: malformed input over a raw socket. After each case the agent
//! must still serve a new connection.

mod common;

use bytes::Bytes;
use common::{Agent, Raw};
use hearth_proto::{pb, Message, MessageType};
use pb::ErrorCode;

async fn ping_on(raw: &mut Raw, seq: u32) {
    raw.send_msg(Message::Ping(pb::Ping { nonce: 77 }), seq)
        .await;
    let f = raw.frame().await.expect("PONG");
    assert_eq!((f.kind, f.seq), (MessageType::Pong as u8, seq), "{f:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_bytes_close_only_that_connection() {
    let mut agent = Agent::start();
    let mut other = Raw::connect(&agent).await;
    let mut raw = Raw::connect(&agent).await;
    raw.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (0, ErrorCode::BadFrame));
    raw.expect_eof().await;
    ping_on(&mut other, 1).await;
    agent.assert_serves_new_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_frame_then_close() {
    let mut agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    raw.send(&[0, 0, 0, 100, 0x01, 0, 0, 0, 1, 1, 2, 3]).await;
    raw.s.shutdown().await.unwrap();
    drop(raw);
    agent.assert_serves_new_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_type_is_answered_and_connection_kept() {
    let mut agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    raw.send(&[0, 0, 0, 5, 0x7e, 0, 0, 0, 5]).await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (5, ErrorCode::UnknownType));
    ping_on(&mut raw, 6).await;
    agent.assert_serves_new_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_length_is_a_framing_error() {
    let mut agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    raw.send(&[0, 0, 0, 0]).await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (0, ErrorCode::BadFrame));
    raw.expect_eof().await;
    agent.assert_serves_new_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_over_max_is_refused_before_buffering() {
    let mut agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    let rss_before = agent.rss_kib();
    // 4 MiB + 1: just over the default cap; the rest never comes.
    raw.send(&[0x00, 0x40, 0x00, 0x01, 0x03, 0, 0, 0, 1]).await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (0, ErrorCode::BadFrame));
    raw.expect_eof().await;
    let mut raw = Raw::connect(&agent).await;
    raw.send(&[0xff, 0xff, 0xff, 0xff]).await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (0, ErrorCode::BadFrame));
    raw.expect_eof().await;
    assert!(
        agent.rss_kib() < rss_before + 4 * 1024,
        "the agent allocated for a refused length"
    );
    agent.assert_serves_new_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_payload_is_answered_with_decode() {
    let mut agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    let f = hearth_proto::Frame::new(
        MessageType::Exec as u8,
        9,
        Bytes::from_static(&[0xff, 0xff, 0xff]),
    );
    raw.send(&f.to_bytes(u32::MAX).unwrap()).await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (9, ErrorCode::Decode));
    // A request that decodes but fails validation.
    raw.send_msg(Message::Exec(pb::Exec::default()), 10).await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (10, ErrorCode::InvalidArgument));
    ping_on(&mut raw, 11).await;
    agent.assert_serves_new_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_of_missing_program_then_new_connection() {
    let mut agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    raw.send_msg(
        Message::ExecStart(pb::ExecStart {
            argv: vec!["/no/such/program".into()],
            ..Default::default()
        }),
        3,
    )
    .await;
    let f = raw.frame().await.expect("EXEC_EXIT");
    assert_eq!(
        (f.kind, f.seq),
        (MessageType::ExecExit as u8, 3),
        "never-started sends only EXEC_EXIT"
    );
    agent.assert_serves_new_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_outside_writable_dirs_is_an_error_with_errno() {
    let mut agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    raw.send_msg(
        Message::WriteFile(pb::WriteFile {
            path: "/proc/hearth-nope".into(),
            data: Bytes::from_static(b"x"),
            ..Default::default()
        }),
        4,
    )
    .await;
    let (seq, _code, errno) = raw.expect_error().await;
    assert_eq!(seq, 4);
    assert_ne!(errno, 0, "the error carries the guest errno");
    ping_on(&mut raw, 5).await;
    agent.assert_serves_new_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abrupt_close_with_sessions_running_leaves_agent_healthy() {
    let mut agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    for seq in 1..=4 {
        raw.send_msg(
            Message::ExecStart(pb::ExecStart {
                argv: vec!["cat".into(), "/dev/zero".into()],
                ..Default::default()
            }),
            seq,
        )
        .await;
    }
    let _ = raw.frame().await;
    drop(raw);
    agent.assert_serves_new_connection().await;
}

use tokio::io::AsyncWriteExt as _;
