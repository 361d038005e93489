//! Agent tier: `PORT_OPEN` streams through the real client against the real
//! agent, to TCP servers the test binds on 127.0.0.1.

mod common;

use std::time::Duration;

use common::{pattern, sha256, Agent};
use hearth_client::pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A TCP echo server on 127.0.0.1:0: echoes until the peer half-closes, then
/// sends a trailer with the byte count (so half-close must work both ways)
/// and closes.
async fn echo_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            total += n as u64;
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
                let _ = s.write_all(format!("END {total}").as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_connections_echo_intact_with_half_close() {
    let agent = Agent::start();
    let c = agent.client().await;
    let port = echo_server().await;
    let mut tasks = Vec::new();
    for i in 0..32u64 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let data = pattern(256 * 1024 + i as usize * 1000, i);
            let stream = c.port_connect(port).await.expect("port connect");
            // The test's end of the "local" connection, and the pump's.
            let (mut mine, theirs) = tokio::io::duplex(16 * 1024);
            let pump = tokio::spawn(stream.pump(theirs));
            let (mut rd, mut wr) = tokio::io::split(&mut mine);
            let sent = data.clone();
            let writer = async move {
                wr.write_all(&sent).await.expect("write");
                wr.shutdown().await.expect("half-close");
            };
            let reader = async move {
                let mut got = Vec::new();
                rd.read_to_end(&mut got).await.expect("read");
                got
            };
            let ((), got) = tokio::join!(writer, reader);
            let end = pump.await.expect("pump task").expect("pump");
            let trailer = format!("END {}", data.len());
            assert_eq!(got.len(), data.len() + trailer.len(), "stream {i}");
            assert_eq!(sha256(&got[..data.len()]), sha256(&data), "stream {i}");
            assert_eq!(&got[data.len()..], trailer.as_bytes(), "stream {i}");
            assert_eq!(
                end.end.reason,
                pb::StreamEndReason::Finished as i32,
                "stream {i}: {end:?}"
            );
            assert_eq!(end.to_guest, data.len() as u64);
            assert_eq!(end.from_guest, (data.len() + trailer.len()) as u64);
        }));
    }
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(120), t)
            .await
            .expect("a stream did not finish")
            .expect("stream task");
    }
    c.ping().await.expect("the connection still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_fails_that_stream_only() {
    let agent = Agent::start();
    let c = agent.client().await;
    // A port nobody listens on.
    let free = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let e = match c.port_connect(free).await {
        Err(e) => e,
        Ok(_) => panic!("connect to a closed port succeeded"),
    };
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::Io), "{e}");
    let text = e.to_string();
    assert!(
        text.contains(&format!("127.0.0.1:{free}")) && text.contains("refused"),
        "{text}"
    );
    // Port 0 is invalid.
    let e = match c.port_connect(0).await {
        Err(e) => e,
        Ok(_) => panic!("port 0 accepted"),
    };
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::InvalidArgument), "{e}");
    // The same connection forwards to a live port.
    let port = echo_server().await;
    let s = c.port_connect(port).await.expect("port connect");
    let (mut mine, theirs) = tokio::io::duplex(1024);
    let pump = tokio::spawn(s.pump(theirs));
    mine.write_all(b"hi").await.unwrap();
    mine.shutdown().await.unwrap();
    let mut got = Vec::new();
    mine.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"hiEND 2");
    pump.await.unwrap().expect("pump");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_close_closes_the_guest_connection() {
    let agent = Agent::start();
    let c = agent.client().await;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let s = c.port_connect(port).await.expect("port connect");
    let (mut server, _) = l.accept().await.unwrap();
    server.write_all(b"hello").await.unwrap();
    let end = s.close().await.expect("close");
    assert_eq!(
        end.end.reason,
        pb::StreamEndReason::Closed as i32,
        "{end:?}"
    );
    // The guest side sees its connection end.
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(20), server.read_to_end(&mut rest))
        .await
        .expect("the agent closes the guest connection");
    if let Ok(n) = r {
        assert_eq!(n, 0, "nothing reached the guest server");
    }
    c.ping().await.expect("the connection still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_local_reader_does_not_stall_other_streams() {
    let agent = Agent::start();
    let c = agent.client().await;
    // A guest server that sends 8 MiB to whoever connects, then closes.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let blob = pattern(8 * 1024 * 1024, 3);
    let served = blob.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let b = served.clone();
            tokio::spawn(async move {
                let _ = s.write_all(&b).await;
                let _ = s.shutdown().await;
            });
        }
    });
    // Stream 1: nobody reads its local end.
    let s1 = c.port_connect(port).await.expect("port connect 1");
    let (stalled, theirs1) = tokio::io::duplex(1024);
    let pump1 = tokio::spawn(s1.pump(theirs1));
    // Stream 2 on the same agent connection gets everything.
    let s2 = c.port_connect(port).await.expect("port connect 2");
    let (mut mine, theirs2) = tokio::io::duplex(64 * 1024);
    let pump2 = tokio::spawn(s2.pump(theirs2));
    mine.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), mine.read_to_end(&mut got))
        .await
        .expect("stream 2 is not stalled by stream 1")
        .unwrap();
    assert_eq!(sha256(&got), sha256(&blob));
    pump2.await.unwrap().expect("pump 2");
    c.ping().await.expect("pings go through");
    drop(stalled);
    let end = tokio::time::timeout(Duration::from_secs(20), pump1)
        .await
        .expect("stream 1 ends once its local side is gone")
        .unwrap()
        .expect("pump 1");
    assert_eq!(
        end.end.reason,
        pb::StreamEndReason::Closed as i32,
        "{end:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn input_beyond_the_credit_fails_only_that_stream() {
    use hearth_proto::Message;
    let agent = Agent::start();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let mut raw = common::Raw::connect(&agent).await;
    let window = raw.ready.input_window as usize;
    assert!(window > 0, "the agent grants input credit");
    let open = |input_credit| {
        Message::PortOpen(pb::PortOpen {
            port: port as u32,
            window: 0,
            input_credit,
        })
    };
    raw.send_msg(open(true), 5).await;
    let (_guest, _) = l.accept().await.unwrap();
    assert!(matches!(raw.msg().await, (5, Message::PortOpened(_))));
    // One byte more than the credit.
    let data = bytes::Bytes::from(vec![7u8; window + 1]);
    raw.send_msg(Message::PortData(pb::PortData { data, eof: false }), 5)
        .await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (5, pb::ErrorCode::FlowControl));
    match raw.msg().await {
        (5, Message::StreamEnd(e)) => {
            assert_eq!(e.reason, pb::StreamEndReason::Failed as i32, "{e:?}")
        }
        other => panic!("expected STREAM_END, got {other:?}"),
    }
    // A seq in flight cannot be opened twice; unknown seqs are refused.
    raw.send_msg(open(true), 6).await;
    let (_guest2, _) = l.accept().await.unwrap();
    assert!(matches!(raw.msg().await, (6, Message::PortOpened(_))));
    raw.send_msg(open(true), 6).await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (6, pb::ErrorCode::DuplicateSeq));
    let data = bytes::Bytes::from_static(b"x");
    raw.send_msg(Message::PortData(pb::PortData { data, eof: false }), 99)
        .await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (99, pb::ErrorCode::UnknownSession));
    // Stream 6 still works: close it.
    raw.send_msg(Message::StreamClose(pb::StreamClose {}), 6)
        .await;
    match raw.msg().await {
        (6, Message::StreamEnd(e)) => {
            assert_eq!(e.reason, pb::StreamEndReason::Closed as i32, "{e:?}")
        }
        other => panic!("expected STREAM_END, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_sides_writing_before_reading_do_not_deadlock() {
    let agent = Agent::start();
    let c = agent.client().await;
    // The guest server writes DOWN bytes before it reads anything. DOWN fits
    // the pump's output credit (4 MiB), so it can all be in flight while the
    // local side is not reading yet; UP is more than any buffering between
    // the local side and the guest, so it gets through only if the pump keeps
    // reading the local side while its writes to it wait.
    const DOWN: usize = 2 * 1024 * 1024;
    const UP: usize = 8 * 1024 * 1024;
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        s.write_all(&pattern(DOWN, 1)).await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        sha256(&got)
    });
    let stream = c.port_connect(port).await.expect("port connect");
    let (mut mine, theirs) = tokio::io::duplex(16 * 1024);
    let pump = tokio::spawn(stream.pump(theirs));
    // So does the local side.
    let up = pattern(UP, 2);
    let done = tokio::time::timeout(Duration::from_secs(120), async {
        mine.write_all(&up).await.unwrap();
        mine.shutdown().await.unwrap();
        let mut got = Vec::new();
        mine.read_to_end(&mut got).await.unwrap();
        got
    })
    .await
    .expect("the two directions must not wait on each other");
    assert_eq!(sha256(&done), sha256(&pattern(DOWN, 1)));
    assert_eq!(server.await.unwrap(), sha256(&up));
    let end = pump.await.unwrap().expect("pump");
    assert_eq!(end.end.reason, pb::StreamEndReason::Finished as i32);
    assert_eq!((end.to_guest, end.from_guest), (UP as u64, DOWN as u64));
}
