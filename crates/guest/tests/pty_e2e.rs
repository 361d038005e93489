//! Agent tier: exec on a pseudo-terminal through the real client against the
//! real agent binary.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Agent;
use hearth_client::{exit_code, pb, ExecEvent, ExecHandle};

fn pty(rows: u32, cols: u32) -> Option<pb::PtySpec> {
    Some(pb::PtySpec {
        rows,
        cols,
        term: "xterm-256color".into(),
    })
}

/// Reads output until `want` appears (returns everything read), or panics
/// after 20 s with what came.
async fn until(h: &mut ExecHandle, seen: &mut Vec<u8>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !String::from_utf8_lossy(seen).contains(want) {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, h.next_event()).await {
            Ok(Ok(Some(ExecEvent::Stdout(d)))) => seen.extend_from_slice(&d),
            Ok(Ok(Some(ExecEvent::Stderr(d)))) => panic!("a pty session sent stderr: {d:?}"),
            Ok(Ok(Some(ExecEvent::Started { .. }))) => {}
            Ok(other) => panic!(
                "waiting for {want:?}: {other:?}; output so far: {:?}",
                String::from_utf8_lossy(seen)
            ),
            Err(_) => panic!(
                "{want:?} did not appear within 20 s; output: {:?}",
                String::from_utf8_lossy(seen)
            ),
        }
    }
}

async fn exit(h: &mut ExecHandle) -> pb::ExecExit {
    loop {
        match h.next_event().await.expect("session event") {
            Some(ExecEvent::Exit(x)) => return x,
            Some(_) => {}
            None => panic!("session ended without EXEC_EXIT"),
        }
    }
}

async fn start(c: &hearth_client::Client, argv: &[&str], rows: u32, cols: u32) -> ExecHandle {
    c.exec_stream(pb::ExecStart {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        stdin_open: true,
        pty: pty(rows, cols),
        ..Default::default()
    })
    .await
    .expect("pty exec starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_echoes_input_and_sets_term() {
    let agent = Agent::start();
    let c = agent.client().await;
    let mut h = start(
        &c,
        &["/bin/sh", "-c", "echo TERM=$TERM; tty; exec cat"],
        24,
        80,
    )
    .await;
    let mut seen = Vec::new();
    until(&mut h, &mut seen, "TERM=xterm-256color").await;
    until(&mut h, &mut seen, "/dev/pts/").await;
    h.write_stdin(Bytes::from_static(b"hello pty\n"))
        .await
        .unwrap();
    // Once echoed by the terminal, once written back by cat; a terminal
    // ends lines with CR LF.
    until(&mut h, &mut seen, "hello pty\r\nhello pty\r\n").await;
    // Ctrl-D at the start of a line: cat reads end of file.
    h.write_stdin(Bytes::from_static(&[0x04])).await.unwrap();
    let x = exit(&mut h).await;
    assert_eq!(exit_code(x.outcome.as_ref()), 0, "{x:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stty_size_follows_resize() {
    let agent = Agent::start();
    let c = agent.client().await;
    let mut h = start(
        &c,
        &["/bin/sh", "-c", "stty size; read x; stty size"],
        30,
        90,
    )
    .await;
    let mut seen = Vec::new();
    until(&mut h, &mut seen, "30 90\r\n").await;
    h.control().resize(41, 123).await.expect("resize");
    h.write_stdin(Bytes::from_static(b"go\n")).await.unwrap();
    until(&mut h, &mut seen, "41 123\r\n").await;
    let x = exit(&mut h).await;
    assert_eq!(exit_code(x.outcome.as_ref()), 0, "{x:?}");
}

/// Pids of `sleep 1000` processes whose parent is `ppid`.
fn sleeps_of(ppid: u32) -> Vec<u32> {
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let parent = stat
            .rsplit_once(") ")
            .and_then(|(_, r)| r.split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if cmd == b"sleep\x001000\x00" && parent == Some(ppid) {
            v.push(pid);
        }
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_byte_interrupts_the_foreground_job() {
    let agent = Agent::start();
    let c = agent.client().await;
    let mut h = start(&c, &["/bin/sh", "-i"], 24, 80).await;
    let pid = match h.next_event().await.unwrap() {
        Some(ExecEvent::Started { pid }) => pid,
        other => panic!("expected Started, got {other:?}"),
    };
    h.write_stdin(Bytes::from_static(b"sleep 1000\n"))
        .await
        .unwrap();
    let t0 = Instant::now();
    let sleep = loop {
        if let Some(&p) = sleeps_of(pid).first() {
            break p;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "sleep 1000 never started"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    h.write_stdin(Bytes::from_static(&[0x03])).await.unwrap();
    assert!(
        common::gone_within(sleep, Duration::from_secs(10)).await,
        "Ctrl-C did not end sleep {sleep}"
    );
    // The shell itself survived and still takes commands.
    h.write_stdin(Bytes::from_static(b"echo back$((40+2))\n"))
        .await
        .unwrap();
    let mut seen = Vec::new();
    until(&mut h, &mut seen, "back42").await;
    h.write_stdin(Bytes::from_static(b"exit 5\n"))
        .await
        .unwrap();
    let x = exit(&mut h).await;
    assert_eq!(exit_code(x.outcome.as_ref()), 5, "{x:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_without_a_pty_is_refused_and_the_session_goes_on() {
    let agent = Agent::start();
    let c = agent.client().await;
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["/bin/sh".into(), "-c".into(), "read x; echo done".into()],
            stdin_open: true,
            ..Default::default()
        })
        .await
        .unwrap();
    h.control().resize(10, 10).await.unwrap();
    let mut err = None;
    loop {
        match h.next_event().await {
            Ok(Some(ExecEvent::Started { .. })) => {
                h.write_stdin(Bytes::from_static(b"x\n")).await.unwrap();
            }
            Ok(Some(ExecEvent::Exit(x))) => {
                assert_eq!(exit_code(x.outcome.as_ref()), 0);
                break;
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("no exit"),
            Err(e) => err = Some(e.to_string()),
        }
    }
    let err = err.expect("the resize was refused");
    assert!(err.contains("has no pty"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_output_follows_flow_control_without_loss() {
    let agent = Agent::start();
    let c = agent.client().await;
    // 2 MB through a 64 KiB window: the process is held back, nothing lost.
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec![
                "/bin/sh".into(),
                "-c".into(),
                "stty raw -echo; head -c 2000000 /dev/zero | tr '\\0' x".into(),
            ],
            pty: pty(24, 80),
            window: 64 * 1024,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut n = 0usize;
    loop {
        match h.next_event().await.unwrap() {
            Some(ExecEvent::Stdout(d)) => {
                assert!(d.iter().all(|&b| b == b'x'), "unexpected bytes");
                n += d.len();
                if n < 100_000 {
                    // A slow reader at first.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            Some(ExecEvent::Exit(x)) => {
                assert_eq!(exit_code(x.outcome.as_ref()), 0, "{x:?}");
                break;
            }
            Some(_) => {}
            None => panic!("no exit"),
        }
    }
    assert_eq!(n, 2_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resize_right_after_the_start_is_not_lost() {
    let agent = Agent::start();
    let c = agent.client().await;
    for _ in 0..5 {
        let mut h = start(&c, &["/bin/sh", "-c", "read x; stty size"], 24, 80).await;
        // No wait for EXEC_STARTED: the agent must already know the session.
        h.control().resize(12, 34).await.unwrap();
        h.write_stdin(Bytes::from_static(b"\n")).await.unwrap();
        let mut seen = Vec::new();
        until(&mut h, &mut seen, "12 34\r\n").await;
        let x = exit(&mut h).await;
        assert_eq!(exit_code(x.outcome.as_ref()), 0, "{x:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pty_session_ends_with_its_connection() {
    use hearth_proto::Message;
    let agent = Agent::start();
    // Raw frames: the connection closes without any kill from a client.
    let mut raw = common::Raw::connect(&agent).await;
    raw.send_msg(
        Message::ExecStart(pb::ExecStart {
            argv: vec!["/bin/sh".into(), "-c".into(), "exec sleep 1000".into()],
            pty: pty(24, 80),
            ..Default::default()
        }),
        3,
    )
    .await;
    let pid = match raw.msg().await {
        (3, Message::ExecStarted(s)) => s.pid,
        other => panic!("expected EXEC_STARTED, got {other:?}"),
    };
    assert!(common::alive(pid));
    drop(raw);
    assert!(
        common::gone_within(pid, Duration::from_secs(10)).await,
        "the pty session outlived its connection"
    );
    // Foreground sessions are not listed as background processes.
    let c = agent.client().await;
    assert!(c.processes().await.unwrap().is_empty());
}
