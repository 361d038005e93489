//! Agent tier: exec through the real client against the real agent binary.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{live_processes_in_group, pattern, sha256, Agent};
use hearth_client::{exit_code, pb, ExecEvent};
use pb::exec_outcome::Kind;

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

fn kind(o: &Option<pb::ExecOutcome>) -> &Kind {
    o.as_ref()
        .and_then(|o| o.kind.as_ref())
        .expect("exec result carries an outcome")
}

/// Runs a session to the end, collecting (stdout, stderr, exit).
async fn collect(
    h: &mut hearth_client::ExecHandle,
) -> (Vec<u8>, Vec<u8>, pb::ExecExit, Option<u32>) {
    let (mut out, mut err, mut pid) = (Vec::new(), Vec::new(), None);
    loop {
        match h.next_event().await.expect("session event") {
            Some(ExecEvent::Started { pid: p }) => pid = Some(p),
            Some(ExecEvent::Stdout(d)) => out.extend_from_slice(&d),
            Some(ExecEvent::Stderr(d)) => err.extend_from_slice(&d),
            Some(ExecEvent::Exit(x)) => return (out, err, x, pid),
            None => panic!("session ended without EXEC_EXIT"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_and_signals_are_told_apart() {
    let agent = Agent::start();
    let c = agent.client().await;
    for (script, want) in [("exit 0", 0), ("exit 3", 3), ("exit 255", 255)] {
        let r = c
            .exec(pb::Exec {
                argv: sh(script),
                ..Default::default()
            })
            .await
            .expect("one-shot exec");
        assert_eq!(
            kind(&r.outcome),
            &Kind::Exited(pb::Exited { code: want }),
            "{script}"
        );
        let mut h = c
            .exec_stream(pb::ExecStart {
                argv: sh(script),
                ..Default::default()
            })
            .await
            .expect("exec_stream");
        let (_, _, x, pid) = collect(&mut h).await;
        assert!(pid.is_some(), "EXEC_STARTED precedes the exit");
        assert_eq!(exit_code(x.outcome.as_ref()), want);
    }
    let r = c
        .exec(pb::Exec {
            argv: sh("kill -9 $$"),
            ..Default::default()
        })
        .await
        .unwrap();
    match kind(&r.outcome) {
        Kind::Killed(k) => assert_eq!(k.signal, 9),
        other => panic!("expected killed, got {other:?}"),
    }
    assert_eq!(exit_code(r.outcome.as_ref()), 137);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_stay_apart() {
    let agent = Agent::start();
    let c = agent.client().await;
    let r = c
        .exec(pb::Exec {
            argv: sh("echo out; echo err >&2; echo out2"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(&r.stdout[..], b"out\nout2\n");
    assert_eq!(&r.stderr[..], b"err\n");
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: sh("printf a; printf b >&2; printf c"),
            ..Default::default()
        })
        .await
        .unwrap();
    let (out, err, x, _) = collect(&mut h).await;
    assert_eq!((&out[..], &err[..]), (&b"ac"[..], &b"b"[..]));
    assert_eq!((x.stdout_bytes, x.stderr_bytes), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_round_trips() {
    let agent = Agent::start();
    let c = agent.client().await;
    // One-shot: stdin bytes in the request.
    let r = c
        .exec(pb::Exec {
            argv: vec!["cat".into()],
            stdin: Bytes::from_static(b"hello\n"),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(&r.stdout[..], b"hello\n");
    // Streaming: initial stdin, more frames, then EOF.
    let data = pattern(3 * 1024 * 1024 + 17, 7);
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["cat".into()],
            stdin: Bytes::from_static(b"head:"),
            stdin_open: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let ctl = h.control();
    let payload = Bytes::from(data.clone());
    let writer = tokio::spawn(async move {
        ctl.write_stdin(payload).await.expect("write_stdin");
        ctl.close_stdin().await;
    });
    let (out, _, x, _) = collect(&mut h).await;
    writer.await.unwrap();
    assert_eq!(exit_code(x.outcome.as_ref()), 0);
    assert_eq!(&out[..5], b"head:");
    assert_eq!(out.len(), data.len() + 5);
    assert_eq!(sha256(&out[5..]), sha256(&data), "stdin came back intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_and_cwd_are_applied() {
    let agent = Agent::start();
    let c = agent.client().await;
    let r = c
        .exec(pb::Exec {
            argv: sh("echo \"$FOO|$BAR\"; pwd; echo \"$PATH\" | grep -q bin && echo has-path"),
            env: vec![
                pb::EnvVar {
                    key: "FOO".into(),
                    value: "foo value".into(),
                },
                pb::EnvVar {
                    key: "BAR".into(),
                    value: "a=b".into(),
                },
            ],
            cwd: "/tmp".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "foo value|a=b\n/tmp\nhas-path\n"
    );
    let r = c
        .exec(pb::Exec {
            argv: vec!["pwd".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(&r.stdout[..], b"/\n", "cwd defaults to /");
    let r = c
        .exec(pb::Exec {
            argv: vec!["/usr/bin/env".into()],
            clear_env: true,
            env: vec![pb::EnvVar {
                key: "ONLY".into(),
                value: "1".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(&r.stdout[..], b"ONLY=1\n", "clear_env starts from nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_grandchildren() {
    let agent = Agent::start();
    let c = agent.client().await;
    let t0 = Instant::now();
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: sh("sleep 300 & sleep 300 & echo $$; wait"),
            timeout_ms: 500,
            ..Default::default()
        })
        .await
        .unwrap();
    let (out, _, x, pid) = collect(&mut h).await;
    let elapsed = t0.elapsed();
    let pgid: u32 = String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .expect("the shell printed its pid");
    assert_eq!(Some(pgid), pid, "the shell is the session leader");
    assert!(
        matches!(kind(&x.outcome), Kind::TimedOut(_)),
        "{:?}",
        x.outcome
    );
    assert_eq!(exit_code(x.outcome.as_ref()), 124);
    assert!(
        elapsed < Duration::from_secs(10),
        "timeout took {elapsed:?}"
    );
    // Reaping of reparented grandchildren may lag a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let left = live_processes_in_group(pgid);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "processes of group {pgid} survived: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failure_is_never_started_with_errno() {
    let agent = Agent::start();
    let c = agent.client().await;
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["/nonexistent/hearth-prog".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let (out, err, x, pid) = collect(&mut h).await;
    assert_eq!(pid, None, "no EXEC_STARTED for a spawn failure");
    assert!(out.is_empty() && err.is_empty());
    match kind(&x.outcome) {
        Kind::NeverStarted(n) => {
            assert_eq!(n.kind, pb::SpawnErrorKind::NotFound as i32, "{n:?}");
            assert_eq!(n.errno, libc::ENOENT);
        }
        other => panic!("expected never_started, got {other:?}"),
    }
    assert_eq!(exit_code(x.outcome.as_ref()), 127);
    let r = c
        .exec(pb::Exec {
            argv: vec!["true".into()],
            cwd: "/nonexistent-dir".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    match kind(&r.outcome) {
        Kind::NeverStarted(n) => assert_eq!(n.kind, pb::SpawnErrorKind::BadCwd as i32, "{n:?}"),
        other => panic!("expected never_started BAD_CWD, got {other:?}"),
    }
    // The connection is still good.
    c.ping().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_stream_of_100_mib_arrives_intact() {
    let agent = Agent::start();
    let c = agent.client().await;
    let data = pattern(100 * 1024 * 1024, 42);
    let path = agent.path("big.bin");
    common::write_host_file(std::path::Path::new(&path), &data);
    let want = sha256(&data);
    drop(data);
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["cat".into(), path],
            ..Default::default()
        })
        .await
        .unwrap();
    let (out, err, x, _) = collect(&mut h).await;
    assert!(err.is_empty(), "{}", String::from_utf8_lossy(&err));
    assert_eq!(exit_code(x.outcome.as_ref()), 0);
    assert_eq!(out.len(), 100 * 1024 * 1024);
    assert_eq!(x.stdout_bytes, out.len() as u64);
    assert_eq!(sha256(&out), want, "stream content differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_execs_share_one_connection() {
    let agent = Agent::start();
    let c = agent.client().await;
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = c
                .exec_stream(pb::ExecStart {
                    argv: vec![
                        "/bin/sh".into(),
                        "-c".into(),
                        "sleep 0.2; echo out-$1; echo err-$1 >&2; exit $(($1 % 7))".into(),
                        "sh".into(),
                        i.to_string(),
                    ],
                    ..Default::default()
                })
                .await
                .expect("exec_stream");
            let (out, err, x, _) = collect(&mut h).await;
            (i, out, err, exit_code(x.outcome.as_ref()))
        }));
    }
    for t in tasks {
        let (i, out, err, code) = t.await.unwrap();
        assert_eq!(String::from_utf8_lossy(&out), format!("out-{i}\n"));
        assert_eq!(String::from_utf8_lossy(&err), format!("err-{i}\n"));
        assert_eq!(code, (i % 7) as i32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_does_not_grow_agent_memory() {
    let agent = Agent::start();
    let c = agent.client().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = agent.rss_kib();
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["cat".into(), "/dev/zero".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    // Take the first event, then stop reading while the child writes flat out.
    h.next_event().await.unwrap();
    let mut peak = before;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(agent.rss_kib());
    }
    // Other work on the same connection is not blocked by the stalled session.
    c.ping().await.expect("ping while a session is stalled");
    let r = c
        .exec(pb::Exec {
            argv: vec!["echo".into(), "ok".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(&r.stdout[..], b"ok\n");
    assert!(
        peak < before + 32 * 1024,
        "agent RSS grew from {before} KiB to {peak} KiB while the reader was stalled"
    );
    // Now read some more: the stream resumes.
    let mut got = 0usize;
    while got < 8 * 1024 * 1024 {
        match h.next_event().await.unwrap() {
            Some(ExecEvent::Stdout(d)) => got += d.len(),
            Some(other) => panic!("unexpected {other:?}"),
            None => panic!("stream ended"),
        }
    }
    h.signal(libc::SIGKILL).await;
    let x = h.wait().await.unwrap();
    match kind(&x.outcome) {
        Kind::Killed(k) => assert_eq!(k.signal, libc::SIGKILL),
        other => panic!("expected killed, got {other:?}"),
    }
}

/// `text` occurs exactly once in `s`.
fn once(s: &str, text: &str) -> bool {
    s.matches(text).count() == 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_program_error_says_the_errno_once() {
    let agent = Agent::start();
    let c = agent.client().await;
    let h = c
        .exec_stream(pb::ExecStart {
            argv: vec!["/nonexistent/hearth-prog".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let x = h.wait().await.unwrap();
    let d = hearth_client::describe_outcome(x.outcome.as_ref());
    assert!(once(&d, "errno 2"), "{d}");
    assert!(once(&d, "No such file or directory"), "{d}");
    assert!(!d.contains("os error"), "{d}");
    assert!(d.contains("/nonexistent/hearth-prog"), "{d}");
    match kind(&x.outcome) {
        Kind::NeverStarted(n) => assert_eq!(
            n.message, "/nonexistent/hearth-prog: No such file or directory",
            "the wire message carries the text, not the number"
        ),
        other => panic!("expected never_started, got {other:?}"),
    }
}
