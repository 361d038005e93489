//! Agent tier: PROCESS_STDIN_CLOSE through the real client against the real
//! agent — a background process reads end of file once its stdin is closed,
//! even while attaches hold copies of the pipe, and bad targets are clear
//! errors that leave the agent serving.

mod common;

use std::time::Duration;

use common::Agent;
use hearth_client::{pb, Client, Detached, ExecEvent, ProcessRef};

async fn detach(c: &Client, script: &str, stdin_open: bool, pty: bool) -> u32 {
    let req = pb::ExecStart {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        stdin_open,
        pty: pty.then(|| pb::PtySpec {
            rows: 24,
            cols: 80,
            term: String::new(),
        }),
        ..Default::default()
    };
    match c.exec_detached(req).await.expect("detached exec") {
        Detached::Started { pid } => pid,
        other => panic!("did not start: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_stdin_gives_end_of_file_despite_attaches() {
    let agent = Agent::start();
    let c = agent.client().await;
    assert!(
        hearth_proto::has_capability(c.ready().capabilities, pb::Capability::ProcessStdinClose),
        "the agent announces PROCESS_STDIN_CLOSE"
    );
    let pid = detach(&c, "cat; echo eof-seen", true, false).await;
    let target = ProcessRef::Pid(pid);
    let mut writer = c.attach(&target, Some(0)).await.expect("attach");
    // A second attach holds its own copy of the pipe and never writes.
    let idle = c.attach(&target, Some(0)).await.expect("second attach");
    writer
        .control()
        .write_stdin("hello\n".into())
        .await
        .expect("stdin");
    c.close_process_stdin(&target).await.expect("close stdin");
    let mut out = Vec::new();
    let exit = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match writer.next_event().await.expect("attach event") {
                Some(ExecEvent::Stdout(d)) | Some(ExecEvent::Stderr(d)) => {
                    out.extend_from_slice(&d)
                }
                Some(ExecEvent::Exit(x)) => return x,
                Some(ExecEvent::Started { .. }) => {}
                None => panic!("attach ended without EXEC_EXIT"),
            }
        }
    })
    .await
    .expect("cat did not see end of file after PROCESS_STDIN_CLOSE");
    assert_eq!(String::from_utf8_lossy(&out), "hello\neof-seen\n");
    assert_eq!(hearth_client::exit_code(exit.outcome.as_ref()), 0);
    drop(idle);
    // An exited process is not found.
    let e = c.close_process_stdin(&target).await.expect_err("exited");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::NotFound), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_targets_are_refused_by_name() {
    let agent = Agent::start();
    let c = agent.client().await;
    let e = c
        .close_process_stdin(&ProcessRef::Pid(999_999))
        .await
        .expect_err("unknown pid");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::NotFound), "{e}");
    assert!(e.to_string().contains("999999"), "{e}");

    let no_stdin = detach(&c, "exec sleep 1000", false, false).await;
    let e = c
        .close_process_stdin(&ProcessRef::Pid(no_stdin))
        .await
        .expect_err("no stdin pipe");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::InvalidArgument), "{e}");

    let on_pty = detach(&c, "exec sleep 1000", false, true).await;
    let e = c
        .close_process_stdin(&ProcessRef::Pid(on_pty))
        .await
        .expect_err("pty");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::InvalidArgument), "{e}");
    assert!(e.to_string().contains("pty"), "{e}");

    // Closed twice: the second is refused, and the process lives on.
    let twice = detach(&c, "cat; exec sleep 1000", true, false).await;
    c.close_process_stdin(&ProcessRef::Pid(twice))
        .await
        .expect("first close");
    let e = c
        .close_process_stdin(&ProcessRef::Pid(twice))
        .await
        .expect_err("second close");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::InvalidArgument), "{e}");
    assert!(common::alive(twice));

    for pid in [no_stdin, on_pty, twice] {
        c.kill_process(&ProcessRef::Pid(pid), 9)
            .await
            .expect("kill");
    }
    // The agent still serves.
    assert!(!c.processes().await.expect("list").is_empty());
}
