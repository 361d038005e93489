//! Agent tier: `owner` on FILE_WRITE (CAPABILITY_FILE_OWNER) — the written
//! file belongs to the given uid and gid from the start. The agent runs as
//! root here (as in the guest); fchown needs it.

mod common;

use std::os::unix::fs::MetadataExt;

use common::Agent;
use hearth_client::pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn written_files_get_the_owner() {
    let agent = Agent::start();
    let c = agent.client().await;
    assert!(
        hearth_proto::has_capability(c.ready().capabilities, pb::Capability::FileOwner),
        "the agent announces CAPABILITY_FILE_OWNER"
    );
    let p = agent.path("owned.txt");
    let owner = pb::FileOwner {
        uid: 1234,
        gid: 5678,
    };
    let n = c
        .write_file_owned(&p, &mut &b"mine"[..], 0o640, false, Some(owner))
        .await
        .expect("write_file_owned (the agent must run as root to chown)");
    assert_eq!(n, 4);
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 5678, 0o640));
    // An overwrite gets the owner again (it is a new file, renamed over).
    c.write_file_owned(
        &p,
        &mut &b"again"[..],
        0,
        false,
        Some(pb::FileOwner { uid: 7, gid: 8 }),
    )
    .await
    .unwrap();
    let m = std::fs::metadata(&p).unwrap();
    assert_eq!((m.uid(), m.gid()), (7, 8));
    assert_eq!(std::fs::read(&p).unwrap(), b"again");
    // Without an owner the file is the agent's (root's).
    let q = agent.path("plain.txt");
    c.write_file(&q, &mut &b"x"[..], 0, false).await.unwrap();
    assert_eq!(std::fs::metadata(&q).unwrap().uid(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_of_minus_one_is_refused_and_the_agent_goes_on() {
    let agent = Agent::start();
    let c = agent.client().await;
    let p = agent.path("bad.txt");
    let err = c
        .write_file_owned(
            &p,
            &mut &b"x"[..],
            0,
            false,
            Some(pb::FileOwner {
                uid: u32::MAX,
                gid: 0,
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(
        err.remote_code(),
        Some(pb::ErrorCode::InvalidArgument),
        "{err}"
    );
    assert!(err.to_string().contains("4294967295"), "{err}");
    assert!(!std::path::Path::new(&p).exists());
    // Nothing left behind, and the connection still serves.
    let names: Vec<_> = std::fs::read_dir(agent.path(""))
        .unwrap()
        .flatten()
        .collect();
    assert!(names
        .iter()
        .all(|e| !e.file_name().to_string_lossy().contains("hearth-tmp")));
    c.write_file(&p, &mut &b"ok"[..], 0, false).await.unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"ok");
}
