//! Agent tier: `GUEST_RESTORED` and `FS_FREEZE` against the real agent on a
//! Unix socket. The agent runs on the host here, not under hearth init, so it
//! must not touch the host's clock, entropy pool, hostname or filesystems:
//! it skips those steps and says so, writes the hostname and machine-id files
//! under `--etc-dir`, records the generation and ends the old host's
//! sessions. The privileged effects are tested in a real VM
//! (`crates/cli/tests/vm_restore_hooks.rs`).

mod common;

use std::time::Duration;

use common::{gone_within, Agent, Raw};
use hearth_client::{pb, ClientError, ExecEvent, ProcessRef};
use hearth_proto::Message;

const MACHINE_ID: &str = "0123456789abcdef0123456789abcdef";

fn restored(generation: u64) -> pb::GuestRestored {
    pb::GuestRestored {
        generation,
        realtime_ns: 1_700_000_000_000_000_000,
        entropy: vec![0x5a; 64].into(),
        hostname: None,
        machine_id: None,
    }
}

fn host_name() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn remote(e: ClientError) -> (pb::ErrorCode, String) {
    match e {
        ClientError::Remote { code, message, .. } => (code, message),
        other => panic!("expected an agent ERROR, got {other:?}"),
    }
}

#[tokio::test]
async fn restore_outside_a_vm_writes_the_etc_files_and_names_what_it_skipped() {
    let etc = tempfile::tempdir().unwrap();
    std::fs::write(
        etc.path().join("hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\ttemplate\n::1\tlocalhost ip6-localhost\n",
    )
    .unwrap();
    let agent = Agent::start_with(&["--etc-dir", etc.path().to_str().unwrap()]);
    let c = agent.client().await;
    let caps = c.ready().capabilities;
    assert!(hearth_proto::has_capability(
        caps,
        pb::Capability::RestoreHooks
    ));
    assert!(hearth_proto::has_capability(caps, pb::Capability::FsFreeze));
    assert_eq!(c.system_info().await.unwrap().generation, 0);
    let before = host_name();

    let req = pb::GuestRestored {
        hostname: Some("clone-7".into()),
        machine_id: Some(MACHINE_ID.into()),
        ..restored(3)
    };
    let (code, msg) = remote(c.guest_restored(req).await.unwrap_err());
    assert_eq!(code, pb::ErrorCode::Unsupported, "{msg}");
    for want in [
        "not in a VM",
        "skipped setting CLOCK_REALTIME, RNDADDENTROPY and RNDRESEEDCRNG, sethostname",
        "generation 0 -> 3",
        "hostname",
        "machine-id",
    ] {
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
    assert_eq!(host_name(), before, "the host's hostname changed");
    let read = |n: &str| std::fs::read_to_string(etc.path().join(n)).unwrap();
    assert_eq!(read("hostname"), "clone-7\n");
    assert_eq!(read("machine-id"), format!("{MACHINE_ID}\n"));
    assert_eq!(
        read("hosts"),
        "127.0.0.1\tlocalhost\n127.0.1.1\tclone-7\n::1\tlocalhost ip6-localhost\n"
    );
    let leftovers: Vec<_> = std::fs::read_dir(etc.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    let info = c.system_info().await.unwrap();
    assert_eq!((info.generation, info.frozen.len()), (3, 0));
}

#[tokio::test]
async fn without_etc_dir_a_host_agent_writes_nothing_and_says_so() {
    let agent = Agent::start();
    let c = agent.client().await;
    let req = pb::GuestRestored {
        machine_id: Some(MACHINE_ID.into()),
        ..restored(1)
    };
    let (code, msg) = remote(c.guest_restored(req).await.unwrap_err());
    assert_eq!(code, pb::ErrorCode::Unsupported);
    assert!(
        msg.contains("the /etc files (no --etc-dir outside a VM)"),
        "{msg}"
    );
    assert_eq!(c.system_info().await.unwrap().generation, 1);
}

#[tokio::test]
async fn freeze_outside_a_vm_is_refused_naming_what_was_skipped() {
    let agent = Agent::start();
    let c = agent.client().await;
    let (code, msg) = remote(
        c.fs_freeze(Vec::new(), Duration::from_secs(1))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, pb::ErrorCode::Unsupported);
    assert!(
        msg.contains("not in a VM") && msg.contains("FIFREEZE skipped"),
        "{msg}"
    );
    let (code, msg) = remote(c.fs_thaw(Vec::new()).await.unwrap_err());
    assert_eq!(code, pb::ErrorCode::Unsupported);
    assert!(msg.contains("FITHAW skipped"), "{msg}");
    assert!(c.system_info().await.unwrap().frozen.is_empty());
}

/// Sends `m` and returns the ERROR message for it.
async fn refused(raw: &mut Raw, m: Message, seq: u32) -> (pb::ErrorCode, String) {
    raw.send_msg(m, seq).await;
    match raw.msg().await {
        (s, Message::Error(e)) if s == seq => (e.code.try_into().unwrap(), e.message),
        other => panic!("expected ERROR for seq {seq}, got {other:?}"),
    }
}

#[tokio::test]
async fn malformed_requests_name_the_field_and_the_agent_keeps_serving() {
    let mut agent = Agent::start();
    let mut raw = Raw::connect(&agent).await;
    let cases: Vec<(Message, &str)> = vec![
        (
            Message::GuestRestored(pb::GuestRestored {
                entropy: vec![1; 513].into(),
                ..restored(1)
            }),
            "entropy of 513 bytes is outside 32..=512",
        ),
        (
            Message::GuestRestored(pb::GuestRestored {
                entropy: vec![1; 8].into(),
                ..restored(1)
            }),
            "entropy of 8 bytes",
        ),
        (
            Message::GuestRestored(pb::GuestRestored {
                machine_id: Some("ABCDEF".into()),
                ..restored(1)
            }),
            "machine_id \"ABCDEF\" is not 32 lowercase hex digits",
        ),
        (
            Message::GuestRestored(pb::GuestRestored {
                hostname: Some("under_score".into()),
                ..restored(1)
            }),
            "hostname \"under_score\" is not a valid host name",
        ),
        (
            Message::GuestRestored(pb::GuestRestored {
                hostname: Some("h".repeat(65)),
                ..restored(1)
            }),
            "hostname of 65 bytes is longer than 64",
        ),
        (
            Message::GuestRestored(restored(0)),
            "generation 0 is the cold boot's",
        ),
        (
            Message::FsFreeze(pb::FsFreeze {
                action: 1,
                timeout_ms: 60_001,
                ..Default::default()
            }),
            "timeout_ms 60001 is above the maximum 60000",
        ),
        (
            Message::FsFreeze(pb::FsFreeze::default()),
            "action 0 is neither FREEZE (1) nor THAW (2)",
        ),
        (
            Message::FsFreeze(pb::FsFreeze {
                action: 1,
                paths: vec!["relative".into()],
                ..Default::default()
            }),
            "paths[0] \"relative\" is not an absolute path",
        ),
    ];
    for (i, (m, want)) in cases.into_iter().enumerate() {
        let (code, msg) = refused(&mut raw, m, 10 + i as u32).await;
        assert_eq!(code, pb::ErrorCode::InvalidArgument, "{msg}");
        assert!(msg.contains(want), "{msg:?} lacks {want:?}");
    }
    // Nothing was applied, and the agent serves this and new connections.
    let c = agent.client().await;
    assert_eq!(c.system_info().await.unwrap().generation, 0);
    raw.send_msg(Message::Ping(pb::Ping { nonce: 9 }), 99).await;
    assert!(matches!(raw.msg().await, (99, Message::Pong(p)) if p.nonce == 9));
    agent.assert_serves_new_connection().await;
}

/// Starts `sh -c script` as a foreground session on a raw connection and
/// returns its pid.
async fn foreground(raw: &mut Raw, script: &str, seq: u32) -> u32 {
    let start = pb::ExecStart {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    };
    raw.send_msg(Message::ExecStart(start), seq).await;
    match raw.msg().await {
        (s, Message::ExecStarted(st)) if s == seq => st.pid,
        other => panic!("expected EXEC_STARTED, got {other:?}"),
    }
}

#[tokio::test]
async fn a_restore_ends_the_old_hosts_sessions_and_attach_says_they_were_lost() {
    let agent = Agent::start();
    // The old host: a foreground session, and a background process.
    let mut old = Raw::connect(&agent).await;
    let fg = foreground(&mut old, "sleep 60", 1).await;
    let c = agent.client().await;
    let bg = match c
        .exec_detached(pb::ExecStart {
            argv: vec!["/bin/sh".into(), "-c".into(), "echo bg; sleep 60".into()],
            ..Default::default()
        })
        .await
        .unwrap()
    {
        hearth_client::Detached::Started { pid } => pid,
        other => panic!("{other:?}"),
    };
    drop(c);
    // A session whose connection is simply lost, before any restore.
    let mut dropped = Raw::connect(&agent).await;
    let lost_early = foreground(&mut dropped, "sleep 60", 1).await;
    drop(dropped);
    assert!(
        gone_within(lost_early, Duration::from_secs(10)).await,
        "a lost connection's session kept running"
    );

    // The new host says the VM was restored.
    let new = agent.client().await;
    let (code, msg) = remote(new.guest_restored(restored(1)).await.unwrap_err());
    assert_eq!(code, pb::ErrorCode::Unsupported, "{msg}");
    assert!(
        msg.contains("ended 1 connection(s) of the old host"),
        "{msg}"
    );
    old.expect_eof().await;
    assert!(
        gone_within(fg, Duration::from_secs(10)).await,
        "the old host's session kept running"
    );

    let attach_err = |pid: u32| {
        let new = new.clone();
        async move {
            match new.attach(&ProcessRef::Pid(pid), None).await {
                Ok(_) => panic!("attached to pid {pid}"),
                Err(e) => remote(e),
            }
        }
    };
    let (code, msg) = attach_err(fg).await;
    assert_eq!(code, pb::ErrorCode::NotFound);
    assert!(
        msg.contains(&format!(
            "process {fg} was an exec session of generation 0, lost when the sandbox was \
             restored from a snapshot (generation 1)"
        )),
        "{msg}"
    );
    let (_, msg) = attach_err(lost_early).await;
    assert!(msg.contains("lost when the sandbox was restored"), "{msg}");
    let (_, msg) = attach_err(999_999).await;
    assert!(
        msg.contains("no background process with pid 999999"),
        "{msg}"
    );

    // A session lost now (generation 1, no restore since) says just that.
    let mut later = Raw::connect(&agent).await;
    let lost_late = foreground(&mut later, "sleep 60", 1).await;
    drop(later);
    assert!(gone_within(lost_late, Duration::from_secs(10)).await);
    let (_, msg) = attach_err(lost_late).await;
    assert!(
        msg.contains(&format!(
            "process {lost_late} was an exec session that ended when its connection was lost \
             (generation 1)"
        )),
        "{msg}"
    );

    // The background process kept running and can be attached to.
    let mut h = new.attach(&ProcessRef::Pid(bg), None).await.unwrap();
    match h.next_event().await.unwrap() {
        Some(ExecEvent::Stdout(b)) => assert_eq!(&b[..], b"bg\n"),
        other => panic!("{other:?}"),
    }
    new.kill_process(&ProcessRef::Pid(bg), 9).await.unwrap();
    assert!(gone_within(bg, Duration::from_secs(10)).await);
}
