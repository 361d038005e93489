//! Agent tier over `Endpoint::Hybrid`: an in-test relay plays the VMM's part
//! (reads `CONNECT <port>\n`, answers `OK <port>\n`, splices to the agent).

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{pattern, sha256, Agent};
use hearth_client::{exit_code, pb, Client, ClientError, ConnectOptions, Endpoint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Starts a relay on `<agent dir>/hybrid.sock`. The first `refuse_first`
/// connections are closed before `OK` (a guest not listening yet).
fn relay(agent: &Agent, refuse_first: u32) -> (PathBuf, Arc<AtomicU32>) {
    let path = agent.dir.path().join("hybrid.sock");
    let listener = UnixListener::bind(&path).expect("bind relay");
    let target = agent.sock.clone();
    let seen = Arc::new(AtomicU32::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                let mut line = Vec::new();
                let mut b = [0u8; 1];
                while s.read_exact(&mut b).await.is_ok() {
                    line.push(b[0]);
                    if b[0] == b'\n' || line.len() > 32 {
                        break;
                    }
                }
                let Some(port) = line
                    .strip_prefix(b"CONNECT ")
                    .and_then(|r| r.strip_suffix(b"\n"))
                else {
                    return;
                };
                assert_eq!(port, b"1000", "the client asks for the agent port");
                if n < refuse_first {
                    return; // dropped before OK
                }
                let Ok(mut up) = UnixStream::connect(&target).await else {
                    return;
                };
                if s.write_all(b"OK 1073741824\n").await.is_err() {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut s, &mut up).await;
            });
        }
    });
    (path, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_and_files_over_hybrid_vsock() {
    let agent = Agent::start();
    let (path, _) = relay(&agent, 0);
    let ep: Endpoint = format!("hybrid:{}:1000", path.display()).parse().unwrap();
    let c = Client::connect(&ep, &common::opts())
        .await
        .expect("connect over hybrid");
    assert_eq!(c.ready().protocol_version, 1);
    c.ping().await.unwrap();
    let r = c
        .exec(pb::Exec {
            argv: vec!["/bin/sh".into(), "-c".into(), "echo hi; exit 5".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        (&r.stdout[..], exit_code(r.outcome.as_ref())),
        (&b"hi\n"[..], 5)
    );
    let data = pattern(3 * 1024 * 1024, 3); // initial stdin must fit in one frame
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["cat".into()],
            stdin: Bytes::from(data.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(ev) = h.next_event().await.unwrap() {
        if let hearth_client::ExecEvent::Stdout(d) = ev {
            out.extend_from_slice(&d);
        }
    }
    assert_eq!(sha256(&out), sha256(&data));
    let p = agent.path("via-hybrid");
    c.write_file(&p, &mut &data[..], 0o600, false)
        .await
        .unwrap();
    assert_eq!(sha256(&c.read_file(&p).await.unwrap()), sha256(&data));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_retries_while_the_guest_is_not_listening() {
    let agent = Agent::start();
    let (path, seen) = relay(&agent, 3);
    let ep = Endpoint::Hybrid { path, port: 1000 };
    let c = Client::connect(&ep, &common::opts())
        .await
        .expect("connect after retries");
    c.ping().await.unwrap();
    assert_eq!(
        seen.load(Ordering::SeqCst),
        4,
        "three refused attempts, then success"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_gives_up_at_the_deadline_with_a_clear_error() {
    let agent = Agent::start();
    let (path, seen) = relay(&agent, u32::MAX);
    let ep = Endpoint::Hybrid { path, port: 1000 };
    let opts = ConnectOptions {
        timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    let e = Client::connect(&ep, &opts)
        .await
        .expect_err("never listening");
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "deadline overshot: {:?}",
        t0.elapsed()
    );
    match &e {
        ClientError::ConnectTimeout { last, .. } => assert!(last.contains("not listening"), "{e}"),
        other => panic!("expected ConnectTimeout, got {other:?}"),
    }
    assert!(seen.load(Ordering::SeqCst) >= 2, "it retried");
}
