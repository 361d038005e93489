//! Agent tier: host-to-guest flow control (stdin and uploads under input
//! credit) and the agent's answers to stream frames it cannot take, with the
//! real agent binary and the real client or a raw socket.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{pattern, sha256, Agent, Raw};
use hearth_client::{exit_code, pb, ClientError, ExecEvent};
use hearth_proto::{has_capability, Message, MessageType};
use pb::exec_outcome::Kind;

/// How the CLI feeds stdin: one read of its own stdin per frame.
const SMALL_WRITE: usize = 64 * 1024;

fn window(raw: &Raw) -> usize {
    match raw.ready.input_window {
        0 => hearth_proto::DEFAULT_INPUT_WINDOW as usize,
        w => w as usize,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_mib_through_cat_stdin_with_output_read_concurrently() {
    let agent = Agent::start();
    let c = agent.client().await;
    assert!(
        has_capability(c.ready().capabilities, pb::Capability::InputFlowControl),
        "the agent announces input flow control"
    );
    let data = pattern(8 * 1024 * 1024, 11);
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["cat".into()],
            stdin_open: true,
            ..Default::default()
        })
        .await
        .expect("exec_stream");
    let ctl = h.control();
    let input = Bytes::from(data.clone());
    let writer = tokio::spawn(async move {
        let mut rest = input;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(SMALL_WRITE));
            ctl.write_stdin(piece).await?;
        }
        ctl.close_stdin().await;
        Ok::<_, ClientError>(())
    });
    let read = async {
        let mut out = Vec::with_capacity(data.len());
        loop {
            match h.next_event().await.expect("session event") {
                Some(ExecEvent::Stdout(d)) => out.extend_from_slice(&d),
                Some(ExecEvent::Started { .. }) => {}
                Some(ExecEvent::Exit(x)) => return (out, x),
                other => panic!("unexpected {other:?}"),
            }
        }
    };
    let (out, x) = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("8 MiB through cat did not finish in 60 s (deadlock)");
    writer.await.unwrap().expect("write_stdin");
    assert_eq!(exit_code(x.outcome.as_ref()), 0);
    assert_eq!(out.len(), data.len());
    assert_eq!(sha256(&out), sha256(&data), "cat returned other bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stdin_session_leaves_the_connection_working() {
    let agent = Agent::start();
    let c = agent.client().await;
    let rss_before = agent.rss_kib();
    // The child never reads its stdin; the host keeps writing.
    let mut stalled = c
        .exec_stream(pb::ExecStart {
            argv: vec!["sleep".into(), "1000".into()],
            stdin_open: true,
            ..Default::default()
        })
        .await
        .expect("exec_stream");
    let ctl = stalled.control();
    let writer = tokio::spawn(async move {
        let data = Bytes::from(vec![7u8; 16 * 1024 * 1024]);
        let mut rest = data;
        while !rest.is_empty() {
            let piece = rest.split_to(rest.len().min(SMALL_WRITE));
            ctl.write_stdin(piece).await?;
        }
        Ok::<_, ClientError>(())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 0..3 {
        let t0 = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), c.ping())
            .await
            .expect("ping beside a stalled session")
            .expect("pong");
        let r = tokio::time::timeout(
            Duration::from_secs(10),
            c.exec(pb::Exec {
                argv: vec!["echo".into(), format!("ok {i}")],
                ..Default::default()
            }),
        )
        .await
        .expect("one-shot exec beside a stalled session")
        .expect("exec");
        assert_eq!(r.stdout, format!("ok {i}\n").into_bytes());
        let mut h = c
            .exec_stream(pb::ExecStart {
                argv: vec!["cat".into()],
                stdin: Bytes::from_static(b"piped"),
                ..Default::default()
            })
            .await
            .expect("exec_stream");
        let x = tokio::time::timeout(Duration::from_secs(10), async {
            let mut out = Vec::new();
            loop {
                match h.next_event().await.expect("event") {
                    Some(ExecEvent::Stdout(d)) => out.extend_from_slice(&d),
                    Some(ExecEvent::Exit(x)) => return (out, x),
                    Some(_) => {}
                    None => panic!("no exit"),
                }
            }
        })
        .await
        .expect("streaming exec beside a stalled session");
        assert_eq!(
            (&x.0[..], exit_code(x.1.outcome.as_ref())),
            (&b"piped"[..], 0)
        );
        assert!(t0.elapsed() < Duration::from_secs(10));
    }
    assert!(
        !writer.is_finished(),
        "16 MiB cannot have gone into a child that never reads"
    );
    assert!(
        agent.rss_kib() < rss_before + 16 * 1024,
        "the agent buffered the stalled stdin: {} KiB -> {} KiB",
        rss_before,
        agent.rss_kib()
    );
    stalled.signal(libc::SIGKILL).await;
    let x = loop {
        match stalled.next_event().await.expect("event") {
            Some(ExecEvent::Exit(x)) => break x,
            Some(_) => {}
            None => panic!("no exit"),
        }
    };
    assert_eq!(exit_code(x.outcome.as_ref()), 128 + libc::SIGKILL);
    tokio::time::timeout(Duration::from_secs(5), writer)
        .await
        .expect("the blocked writer returns once the session ended")
        .unwrap()
        .expect("stdin for an ended session is dropped, not an error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_beyond_the_credit_is_a_session_error_not_a_dead_connection() {
    let agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    let win = window(&raw);
    raw.send_msg(
        Message::ExecStart(pb::ExecStart {
            argv: vec!["sleep".into(), "1000".into()],
            stdin_open: true,
            input_credit: true,
            ..Default::default()
        }),
        5,
    )
    .await;
    assert!(matches!(raw.msg().await, (5, Message::ExecStarted(_))));
    // Exactly the window is fine, even though the child reads nothing.
    for _ in 0..4 {
        let m = Message::ExecStdin(pb::StdinData {
            data: Bytes::from(vec![1u8; win / 4]),
            eof: false,
        });
        raw.send_msg(m, 5).await;
    }
    if let Some(f) = raw.frame_within(Duration::from_millis(300)).await {
        panic!("data within the credit was answered: {f:?}");
    }
    let m = Message::ExecStdin(pb::StdinData {
        data: Bytes::from_static(b"x"),
        eof: false,
    });
    raw.send_msg(m, 5).await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (5, pb::ErrorCode::FlowControl));
    match raw.msg().await {
        (5, Message::ExecExit(x)) => assert!(
            matches!(x.outcome.and_then(|o| o.kind), Some(Kind::Killed(_))),
            "a session whose stdin was refused is killed"
        ),
        other => panic!("expected EXEC_EXIT, got {other:?}"),
    }
    raw.send_msg(Message::Ping(pb::Ping { nonce: 1 }), 6).await;
    assert!(matches!(raw.msg().await, (6, Message::Pong(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_data_beyond_the_credit_fails_the_write_and_leaves_nothing() {
    let agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    let win = window(&raw);
    let path = agent.path("upload.bin");
    raw.send_msg(
        Message::FileWrite(pb::FileWrite {
            path: path.clone(),
            input_credit: true,
            ..Default::default()
        }),
        7,
    )
    .await;
    let m = Message::FileData(pb::FileData {
        data: Bytes::from(vec![2u8; win + 1]),
        eof: true,
    });
    raw.send_msg(m, 7).await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (7, pb::ErrorCode::FlowControl));
    let left: Vec<_> = std::fs::read_dir(agent.dir.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("upload"))
        .collect();
    assert!(left.is_empty(), "refused upload left {left:?}");
    raw.send_msg(Message::Ping(pb::Ping { nonce: 1 }), 8).await;
    assert!(matches!(raw.msg().await, (8, Message::Pong(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_follow_the_credit_and_arrive_intact() {
    let agent = Agent::start();
    let c = agent.client().await;
    let data = pattern(5 * 1024 * 1024 + 1, 3);
    let path = agent.path("credited.bin");
    let n = c
        .write_file(&path, &mut &data[..], 0o600, false)
        .await
        .expect("write_file");
    assert_eq!(n, data.len() as u64);
    assert_eq!(sha256(&std::fs::read(&path).unwrap()), sha256(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_frames_for_unknown_seqs_are_answered_rate_limited() {
    let agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    let stdin = |seq| {
        (
            Message::ExecStdin(pb::StdinData {
                data: Bytes::from_static(b"x"),
                eof: false,
            }),
            seq,
        )
    };
    let (m, seq) = stdin(4242);
    raw.send_msg(m, seq).await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (4242, pb::ErrorCode::UnknownSession));
    // A session that just ended: its late stdin is dropped without a word.
    raw.send_msg(
        Message::ExecStart(pb::ExecStart {
            argv: vec!["true".into()],
            ..Default::default()
        }),
        9,
    )
    .await;
    loop {
        match raw.msg().await {
            (9, Message::ExecExit(_)) => break,
            (9, _) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let (m, seq) = stdin(9);
    raw.send_msg(m, seq).await;
    raw.send_msg(Message::Ping(pb::Ping { nonce: 3 }), 10).await;
    assert!(
        matches!(raw.msg().await, (10, Message::Pong(_))),
        "late stdin for an ended session is dropped silently"
    );
    // A flood is answered a few times, not once per frame.
    for s in 5000..5100 {
        raw.send_msg(Message::ExecSignal(pb::ExecSignal { signal: 15 }), s)
            .await;
    }
    let mut answers = 0;
    while let Some(Some(f)) = raw.frame_within(Duration::from_millis(300)).await {
        assert_eq!(f.kind, MessageType::Error as u8, "{f:?}");
        answers += 1;
    }
    assert!(
        (1..=10).contains(&answers),
        "{answers} UNKNOWN_SESSION answers for 100 frames"
    );
    raw.send_msg(Message::Ping(pb::Ping { nonce: 4 }), 11).await;
    assert!(matches!(raw.msg().await, (11, Message::Pong(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_signal_is_refused_and_the_session_goes_on() {
    let agent = Agent::start();
    let c = agent.client().await;
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["sleep".into(), "1000".into()],
            ..Default::default()
        })
        .await
        .expect("exec_stream");
    assert!(matches!(
        h.next_event().await,
        Ok(Some(ExecEvent::Started { .. }))
    ));
    h.signal(99).await;
    match h.next_event().await {
        Err(e @ ClientError::Remote { .. }) => {
            assert_eq!(e.remote_code(), Some(pb::ErrorCode::InvalidArgument), "{e}");
            assert!(e.to_string().contains("out of range 1..=64"), "{e}");
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
    // The session is still there and still takes signals.
    h.signal(libc::SIGTERM).await;
    match h.next_event().await {
        Ok(Some(ExecEvent::Exit(x))) => {
            assert_eq!(exit_code(x.outcome.as_ref()), 128 + libc::SIGTERM)
        }
        other => panic!("expected the exit, got {other:?}"),
    }
}
