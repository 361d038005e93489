//! Agent tier: how the real agent binary starts and stops — its socket
//! appears only once it listens, sessions end with their connection, and
//! SIGTERM/SHUTDOWN reach the workloads before the agent exits.

mod common;

use std::ffi::CStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{alive, gone_within, read_pid_file, Agent, Raw};
use hearth_client::{pb, ExecEvent};
use hearth_proto::Message;

fn sh(script: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), script.into()]
}

/// Reads inotify events on `fd` for up to `limit`; each is (mask, name).
fn inotify_events(fd: &OwnedFd, limit: Duration) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    let mut buf = vec![0u8; 64 * 1024];
    while t0.elapsed() < limit {
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll(2) on one pollfd we own.
        if unsafe { libc::poll(&mut pfd, 1, 50) } <= 0 {
            continue;
        }
        // SAFETY: read(2) into our buffer, at most its length.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            continue;
        }
        let mut off = 0usize;
        let head = std::mem::size_of::<libc::inotify_event>();
        while off + head <= n as usize {
            // SAFETY: the kernel wrote whole events; read_unaligned copes with
            // the byte buffer's alignment.
            let ev: libc::inotify_event =
                unsafe { std::ptr::read_unaligned(buf[off..].as_ptr().cast()) };
            let name_bytes = &buf[off + head..off + head + ev.len as usize];
            let name = CStr::from_bytes_until_nul(name_bytes)
                .map(|c| c.to_string_lossy().into_owned())
                .unwrap_or_default();
            out.push((ev.mask, name));
            off += head + ev.len as usize;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_appears_by_rename_only_once_it_listens() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("a.sock");
    // SAFETY: inotify_init1 returns a new descriptor that we then own.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    assert!(fd >= 0, "inotify_init1");
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let cdir = std::ffi::CString::new(dir.path().to_str().unwrap()).unwrap();
    // SAFETY: a watch on a NUL-terminated path, with the descriptor we own.
    let wd = unsafe {
        libc::inotify_add_watch(
            fd.as_raw_fd(),
            cdir.as_ptr(),
            libc::IN_CREATE | libc::IN_MOVED_TO,
        )
    };
    assert!(wd >= 0, "inotify_add_watch");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hearth-guest"))
        .arg("agent")
        .arg("--unix-socket")
        .arg(&sock)
        .stdin(Stdio::null())
        .spawn()
        .expect("start hearth-guest");
    // Connect the moment the file is there: it must already listen.
    let t0 = Instant::now();
    while !sock.exists() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no socket");
        std::hint::spin_loop();
    }
    let first = common::read_ready(&sock);
    let events = inotify_events(&fd, Duration::from_millis(300));
    let _ = child.kill();
    let _ = child.wait();
    first.expect("a socket that exists answers at once");
    let for_sock: Vec<u32> = events
        .iter()
        .filter(|(_, n)| n == "a.sock")
        .map(|(m, _)| *m)
        .collect();
    assert_eq!(
        for_sock,
        [libc::IN_MOVED_TO],
        "a.sock must appear by one rename, never be created in place: {events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_their_connection_closes() {
    let agent = Agent::start();
    // A raw connection: no client handle that would kill its session itself.
    let mut raw = Raw::connect(&agent).await;
    let stream_pid = agent.dir.path().join("stream.pid");
    let oneshot_pid = agent.dir.path().join("oneshot.pid");
    let script = |f: &std::path::Path| format!("echo $$ > {}; exec sleep 1000", f.display());
    raw.send_msg(
        Message::ExecStart(pb::ExecStart {
            argv: sh(&script(&stream_pid)),
            stdin_open: true,
            ..Default::default()
        }),
        1,
    )
    .await;
    raw.send_msg(
        Message::Exec(pb::Exec {
            argv: sh(&script(&oneshot_pid)),
            ..Default::default()
        }),
        2,
    )
    .await;
    let p1 = read_pid_file(&stream_pid, Duration::from_secs(10)).await;
    let p2 = read_pid_file(&oneshot_pid, Duration::from_secs(10)).await;
    assert!(alive(p1) && alive(p2));
    drop(raw);
    assert!(
        gone_within(p1, Duration::from_secs(5)).await,
        "the streaming session's sleep {p1} outlived its connection"
    );
    assert!(
        gone_within(p2, Duration::from_secs(5)).await,
        "the one-shot exec's sleep {p2} outlived its connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_reaches_workloads_before_the_agent_exits() {
    let mut agent = Agent::start();
    let c = agent.client().await;
    let mark = agent.dir.path().join("term.mark");
    let mut h = c
        .exec_stream(pb::ExecStart {
            argv: sh(
                r#"trap "echo term > $MARK; exit 0" TERM; echo ready; while :; do sleep 0.1; done"#,
            ),
            env: vec![pb::EnvVar {
                key: "MARK".into(),
                value: mark.display().to_string(),
            }],
            ..Default::default()
        })
        .await
        .expect("exec_stream");
    // The trap is set once "ready" is out.
    loop {
        match h.next_event().await.expect("event") {
            Some(ExecEvent::Stdout(d)) if d.starts_with(b"ready") => break,
            Some(ExecEvent::Started { .. }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    agent.signal(libc::SIGTERM);
    let t0 = Instant::now();
    while !mark.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the workload's TERM trap did not run"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "term\n");
    let x = h.wait().await.expect("EXEC_EXIT before the agent exits");
    assert_eq!(hearth_client::exit_code(x.outcome.as_ref()), 0);
    let st = agent
        .wait_exit(Duration::from_secs(5))
        .expect("the agent exits after its sessions ended");
    assert!(st.success(), "agent exit status {st}");
    assert!(
        !agent.sock.exists(),
        "the agent removes its socket when it exits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_kills_workloads_that_ignore_term_after_the_grace() {
    let mut agent = Agent::start();
    let c = agent.client().await;
    let pid_file = agent.dir.path().join("stubborn.pid");
    let h = c
        .exec_stream(pb::ExecStart {
            argv: sh(&format!(
                r#"trap "" TERM; echo $$ > {}; while :; do sleep 0.1; done"#,
                pid_file.display()
            )),
            ..Default::default()
        })
        .await
        .expect("exec_stream");
    let pid = read_pid_file(&pid_file, Duration::from_secs(10)).await;
    let t0 = Instant::now();
    c.shutdown().await.expect("shutdown answered");
    let x = h.wait().await.expect("EXEC_EXIT");
    let took = t0.elapsed();
    assert!(
        matches!(
            x.outcome.and_then(|o| o.kind),
            Some(pb::exec_outcome::Kind::Killed(pb::Killed { signal: 9, .. }))
        ),
        "a workload ignoring TERM is KILLed"
    );
    assert!(
        took >= Duration::from_secs(2),
        "KILL came before the grace: {took:?}"
    );
    assert!(!alive(pid));
    let st = agent
        .wait_exit(Duration::from_secs(5))
        .expect("the agent exits");
    assert!(st.success(), "agent exit status {st}");
}
