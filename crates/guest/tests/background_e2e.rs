//! Agent tier: background processes (detach, ring buffer, attach, list,
//! kill) through the real client and raw frames against the real agent.

mod common;

use std::time::{Duration, Instant};

use common::{Agent, Raw};
use hearth_client::{exit_code, pb, Client, Detached, ExecEvent, ExecHandle, ProcessRef};
use hearth_proto::Message;

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

async fn detach(c: &Client, script: &str, tag: &str, buffer: u32) -> u32 {
    match c
        .exec_detached(pb::ExecStart {
            argv: sh(script),
            tag: tag.into(),
            buffer_bytes: buffer,
            ..Default::default()
        })
        .await
        .expect("detached exec")
    {
        Detached::Started { pid } => pid,
        other => panic!("did not start: {other:?}"),
    }
}

async fn info(c: &Client, pid: u32) -> pb::ProcessInfo {
    c.processes()
        .await
        .expect("process list")
        .into_iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} is not listed"))
}

async fn wait_exited(c: &Client, pid: u32) -> pb::ProcessInfo {
    let t0 = Instant::now();
    loop {
        let i = info(c, pid).await;
        if i.state == pb::ProcessState::Exited as i32 {
            return i;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{pid} still running: {i:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Output (with each chunk's gap) up to the exit.
async fn drain(h: &mut ExecHandle) -> (Vec<u8>, u64, pb::ExecExit) {
    let (mut out, mut gaps) = (Vec::new(), 0);
    loop {
        match h.next_event().await.expect("attach event") {
            Some(ExecEvent::Stdout(d)) | Some(ExecEvent::Stderr(d)) => {
                gaps += h.gap();
                out.extend_from_slice(&d);
            }
            Some(ExecEvent::Exit(x)) => return (out, gaps, x),
            Some(ExecEvent::Started { .. }) => {}
            None => panic!("attach ended without EXEC_EXIT"),
        }
    }
}

fn lines(out: &[u8]) -> Vec<u64> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| {
            l.trim()
                .parse()
                .unwrap_or_else(|_| panic!("bad line {l:?}"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_survives_connection_close_and_is_killed_by_tag() {
    let agent = Agent::start();
    let c = agent.client().await;
    let pid = detach(&c, "echo up; exec sleep 1000", "sleeper", 0).await;
    drop(c);
    // Longer than the grace a closed connection gives its sessions.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        common::alive(pid),
        "the detached process died with its connection"
    );
    let c = agent.client().await;
    let i = info(&c, pid).await;
    assert_eq!(i.tag, "sleeper");
    assert_eq!(i.state, pb::ProcessState::Running as i32);
    assert_eq!(i.argv, sh("echo up; exec sleep 1000"));
    assert_eq!(i.output_bytes, 3);
    assert!(i.started_unix_ms > 1_600_000_000_000, "{i:?}");
    c.kill_process(&ProcessRef::Tag("sleeper".into()), 15)
        .await
        .expect("kill by tag");
    assert!(common::gone_within(pid, Duration::from_secs(10)).await);
    let i = wait_exited(&c, pid).await;
    let outcome = i.outcome.and_then(|o| o.kind);
    assert_eq!(
        outcome,
        Some(pb::exec_outcome::Kind::Killed(pb::Killed {
            signal: 15,
            core_dumped: false
        }))
    );
    // An exited process is no longer a kill target.
    let e = c
        .kill_process(&ProcessRef::Pid(pid), 9)
        .await
        .expect_err("killing an exited process");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::NotFound), "{e}");
    assert!(e.to_string().contains("already exited"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_replays_then_follows_without_gap_or_repeat() {
    let agent = Agent::start();
    let c = agent.client().await;
    let pid = detach(
        &c,
        "i=0; while [ $i -lt 60 ]; do echo $i; i=$((i+1)); sleep 0.02; done",
        "counter",
        0,
    )
    .await;
    // Let some output accumulate, then attach twice: one from the start, one
    // by tag from the live end.
    let t0 = Instant::now();
    while info(&c, pid).await.output_bytes < 20 {
        assert!(t0.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut a = c.attach(&ProcessRef::Pid(pid), None).await.expect("attach");
    let at = a.attached().unwrap().clone();
    assert_eq!((at.pid, at.offset, at.dropped), (pid, 0, 0));
    assert_eq!(at.tag, "counter");
    let now = info(&c, pid).await.output_bytes;
    let mut b = c
        .attach(&ProcessRef::Tag("counter".into()), Some(now))
        .await
        .expect("attach by tag");
    assert_eq!(b.attached().unwrap().offset, now);
    let (out, gaps, x) = drain(&mut a).await;
    assert_eq!(gaps, 0);
    assert_eq!(lines(&out), (0..60).collect::<Vec<_>>());
    assert_eq!(exit_code(x.outcome.as_ref()), 0);
    assert_eq!(x.stdout_bytes, out.len() as u64);
    let (tail, _, _) = drain(&mut b).await;
    assert_eq!(&out[now as usize..], &tail[..]);
    // Attaching after the exit replays and ends at once.
    let mut late = c.attach(&ProcessRef::Pid(pid), Some(5)).await.unwrap();
    let (again, _, _) = drain(&mut late).await;
    assert_eq!(&again[..], &out[5..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_overflow_reports_the_exact_dropped_count() {
    let agent = Agent::start();
    let c = agent.client().await;
    let pid = detach(
        &c,
        "head -c 5000 /dev/zero | tr '\\0' a; echo; exit 7",
        "",
        1024,
    )
    .await;
    let i = wait_exited(&c, pid).await;
    assert_eq!(i.output_bytes, 5001);
    assert_eq!(i.retained_from, 5001 - 1024);
    assert_eq!(
        i.outcome.and_then(|o| o.kind),
        Some(pb::exec_outcome::Kind::Exited(pb::Exited { code: 7 }))
    );
    let mut a = c.attach(&ProcessRef::Pid(pid), Some(0)).await.unwrap();
    let at = a.attached().unwrap().clone();
    assert_eq!((at.offset, at.dropped), (3977, 3977));
    let (out, _, x) = drain(&mut a).await;
    assert_eq!(out.len(), 1024);
    assert_eq!(exit_code(x.outcome.as_ref()), 7);
    // Beyond the end is refused with the numbers.
    let e = c
        .attach(&ProcessRef::Pid(pid), Some(9999))
        .await
        .err()
        .expect("attach beyond the end");
    assert!(e.to_string().contains("from_offset 9999"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_attacher_sees_the_offset_jump_over_what_was_overwritten() {
    let agent = Agent::start();
    let c = agent.client().await;
    // Writes 3000 bytes, waits for a file, then writes 5000 more.
    let flag = agent.path("go");
    let script = format!(
        "head -c 3000 /dev/zero | tr '\\0' a; while [ ! -e {flag} ]; do sleep 0.01; done; head -c 5000 /dev/zero | tr '\\0' b"
    );
    let pid = detach(&c, &script, "", 4096).await;
    let t0 = Instant::now();
    while info(&c, pid).await.output_bytes < 3000 {
        assert!(t0.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Raw frames: a 1000-byte window and no WINDOW_UPDATE until the end.
    let mut raw = Raw::connect(&agent).await;
    raw.send_msg(
        Message::Attach(pb::Attach {
            pid,
            from_offset: Some(0),
            window: 1000,
            ..Default::default()
        }),
        9,
    )
    .await;
    let (_, m) = raw.msg().await;
    assert!(
        matches!(m, Message::Attached(ref a) if a.offset == 0 && a.dropped == 0),
        "{m:?}"
    );
    let (_, m) = raw.msg().await;
    let Message::ExecStdout(first) = m else {
        panic!("{m:?}")
    };
    assert_eq!((first.offset, first.data.len()), (0, 1000));
    std::fs::write(&flag, b"").unwrap();
    wait_exited(&c, pid).await;
    raw.send_msg(
        Message::WindowUpdate(pb::WindowUpdate { bytes: 1 << 20 }),
        9,
    )
    .await;
    // 8000 written, 4096 kept: the next chunk starts at 3904.
    let (mut got, mut next) = (Vec::new(), None);
    loop {
        match raw.msg().await {
            (9, Message::ExecStdout(c)) => {
                next.get_or_insert(c.offset);
                got.extend_from_slice(&c.data);
            }
            (9, Message::ExecExit(_)) => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(next, Some(8000 - 4096));
    assert_eq!(got.len(), 4096);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_and_duplicate_tags_are_refused_by_name() {
    let agent = Agent::start();
    let c = agent.client().await;
    let e = c
        .attach(&ProcessRef::Pid(999_999), None)
        .await
        .err()
        .expect("attach to an unknown pid");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::NotFound), "{e}");
    assert!(e.to_string().contains("pid 999999"), "{e}");
    let e = c
        .kill_process(&ProcessRef::Tag("nope".into()), 15)
        .await
        .expect_err("kill an unknown tag");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::NotFound), "{e}");
    assert!(e.to_string().contains("\"nope\""), "{e}");
    let pid = detach(&c, "exec sleep 1000", "web", 0).await;
    let e = c
        .exec_detached(pb::ExecStart {
            argv: sh("true"),
            tag: "web".into(),
            ..Default::default()
        })
        .await
        .expect_err("a duplicate tag");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::AlreadyExists), "{e}");
    assert!(
        e.to_string()
            .contains(&format!("\"web\" is already used by running process {pid}")),
        "{e}"
    );
    // A bad value is refused with it, and the agent serves on.
    let e = c
        .exec_detached(pb::ExecStart {
            argv: sh("true"),
            buffer_bytes: 5,
            ..Default::default()
        })
        .await
        .expect_err("a tiny buffer");
    assert!(e.to_string().contains("buffer_bytes 5"), "{e}");
    c.kill_process(&ProcessRef::Pid(pid), 9).await.unwrap();
    wait_exited(&c, pid).await;
    // The tag is free again once its process exited.
    let again = detach(&c, "true", "web", 0).await;
    assert_ne!(again, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_pty_process_takes_input_through_an_attach() {
    let agent = Agent::start();
    let c = agent.client().await;
    let pid = match c
        .exec_detached(pb::ExecStart {
            argv: sh("read line; echo got:$line; stty size"),
            pty: Some(pb::PtySpec {
                rows: 20,
                cols: 70,
                term: String::new(),
            }),
            tag: "ask".into(),
            ..Default::default()
        })
        .await
        .unwrap()
    {
        Detached::Started { pid } => pid,
        other => panic!("{other:?}"),
    };
    let mut a = c
        .attach(&ProcessRef::Tag("ask".into()), None)
        .await
        .unwrap();
    assert!(a.attached().unwrap().pty);
    a.control().resize(33, 44).await.unwrap();
    a.write_stdin(bytes::Bytes::from_static(b"hi\n"))
        .await
        .unwrap();
    let (out, _, x) = drain(&mut a).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("got:hi\r\n"), "{out:?}");
    assert!(out.contains("33 44\r\n"), "{out:?}");
    assert_eq!(exit_code(x.outcome.as_ref()), 0);
    assert!(info(&c, pid).await.pty);
}
