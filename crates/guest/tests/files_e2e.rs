//! Agent tier: file requests through the real client against the real agent.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{pattern, sha256, Agent};
use hearth_client::{pb, ClientError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_mib_file_round_trips_intact() {
    let agent = Agent::start();
    let c = agent.client().await;
    let data = pattern(50 * 1024 * 1024 + 3, 9);
    let path = agent.path("sub/dir/big.bin");
    let n = c
        .write_file(&path, &mut &data[..], 0o640, true)
        .await
        .expect("write_file");
    assert_eq!(n, data.len() as u64);
    let on_disk = std::fs::read(&path).expect("the file exists on the guest side");
    assert_eq!(sha256(&on_disk), sha256(&data), "written content differs");
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    let back = c.read_file(&path).await.expect("read_file");
    assert_eq!(back.len(), data.len());
    assert_eq!(sha256(&back), sha256(&data), "read content differs");
    let st = c.stat(&path).await.unwrap();
    assert_eq!(
        (st.kind, st.size, st.mode),
        (pb::FileKind::File as i32, data.len() as u64, 0o640)
    );
    // No temporary files are left next to it.
    let names: Vec<_> = std::fs::read_dir(agent.path("sub/dir"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("big.bin")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_and_empty_files_and_overwrite() {
    let agent = Agent::start();
    let c = agent.client().await;
    let p = agent.path("e");
    assert_eq!(c.write_file(&p, &mut &b""[..], 0, false).await.unwrap(), 0);
    assert_eq!(c.read_file(&p).await.unwrap().len(), 0);
    assert_eq!(
        std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
        0o644,
        "mode 0 means 0644"
    );
    c.write_file(&p, &mut &b"first"[..], 0o600, false)
        .await
        .unwrap();
    c.write_file(&p, &mut &b"second"[..], 0o600, false)
        .await
        .unwrap();
    assert_eq!(&c.read_file(&p).await.unwrap()[..], b"second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directory_operations() {
    let agent = Agent::start();
    let c = agent.client().await;
    let d = agent.path("d/e/f");
    c.mkdir(&d, 0o750, true).await.expect("mkdir -p");
    let st = c.stat(&d).await.unwrap();
    assert_eq!((st.kind, st.mode), (pb::FileKind::Dir as i32, 0o750));
    let e = c.mkdir(&d, 0o750, false).await.unwrap_err();
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::AlreadyExists), "{e}");
    for name in ["b", "a", "c"] {
        c.write_file(&format!("{d}/{name}"), &mut name.as_bytes(), 0o644, false)
            .await
            .unwrap();
    }
    let names: Vec<String> = c
        .list_dir(&d)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert_eq!(names, ["a", "b", "c"], "entries sorted by name");
    c.rename(&format!("{d}/a"), &format!("{d}/z"))
        .await
        .unwrap();
    assert_eq!(&c.read_file(&format!("{d}/z")).await.unwrap()[..], b"a");
    let e = c.remove(&agent.path("d"), false).await.unwrap_err();
    assert!(
        e.remote_code().is_some(),
        "removing a non-empty dir without recursive fails: {e}"
    );
    c.remove(&agent.path("d"), true).await.unwrap();
    let e = c.stat(&agent.path("d")).await.unwrap_err();
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::NotFound), "{e}");
    assert_eq!(e.remote_errno(), Some(libc::ENOENT));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_errno_and_path() {
    let mut agent = Agent::start();
    let c = agent.client().await;
    let missing = agent.path("missing");
    match c.read_file(&missing).await {
        Err(e @ ClientError::Remote { .. }) => {
            assert_eq!(e.remote_code(), Some(pb::ErrorCode::NotFound), "{e}");
            assert_eq!(e.remote_errno(), Some(libc::ENOENT));
            assert!(
                e.to_string().contains(&missing),
                "message names the path: {e}"
            );
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    // Nothing can be created under /proc, not even by root.
    let e = c
        .write_file("/proc/hearth-test-file", &mut &b"x"[..], 0o644, false)
        .await
        .expect_err("writing into /proc must fail");
    assert!(e.remote_errno().is_some(), "error carries an errno: {e}");
    let e = c
        .write_file("/proc/self/hearth/x", &mut &b"x"[..], 0o644, true)
        .await
        .unwrap_err();
    assert!(e.remote_errno().is_some(), "error carries an errno: {e}");
    // Relative paths are refused without touching anything.
    let e = c.stat("relative/path").await.unwrap_err();
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::InvalidArgument), "{e}");
    c.ping().await.unwrap();
    agent.assert_serves_new_connection().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_file_error_says_the_errno_once() {
    let agent = Agent::start();
    let c = agent.client().await;
    let missing = agent.path("missing");
    let e = c.stat(&missing).await.expect_err("stat of a missing file");
    let s = e.to_string();
    assert_eq!(s.matches("errno 2").count(), 1, "{s}");
    assert_eq!(s.matches("No such file or directory").count(), 1, "{s}");
    assert!(!s.contains("os error"), "{s}");
    assert!(s.contains(&missing), "{s}");
    // On the wire: the OS text in the message, the number only in `errno`.
    let mut raw = common::Raw::connect(&agent).await;
    raw.send_msg(
        hearth_proto::Message::Stat(pb::Stat {
            path: missing.clone(),
            follow_symlinks: false,
        }),
        3,
    )
    .await;
    match raw.msg().await {
        (3, hearth_proto::Message::Error(e)) => {
            assert_eq!(
                e.message,
                format!("stat {missing}: No such file or directory")
            );
            assert_eq!(e.errno, libc::ENOENT);
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
}
