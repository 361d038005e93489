//! Agent tier: `WATCH` streams through the real client against the real agent
//! (inotify on the host's filesystem, the agent over a Unix socket).

mod common;

use std::time::Duration;

use common::Agent;
use hearth_client::{pb, WatchOptions, WatchStream};
use pb::WatchEventKind as K;

/// One event as (kind, path, to, is_dir), for comparing lists.
type Ev = (K, String, String, bool);

fn ev(kind: K, path: &str, to: &str, is_dir: bool) -> Ev {
    (kind, path.to_string(), to.to_string(), is_dir)
}

fn simple(e: &pb::WatchEvent) -> Ev {
    (
        K::try_from(e.kind).unwrap_or(K::Unspecified),
        e.path.clone(),
        e.to.clone(),
        e.is_dir,
    )
}

/// The next `n` events (bounded wait, so a missing event fails the test).
async fn take(w: &mut WatchStream, n: usize) -> Vec<Ev> {
    let mut out = Vec::new();
    while out.len() < n {
        match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
            Ok(Ok(Some(e))) => out.push(simple(&e)),
            Ok(Ok(None)) => panic!("stream ended after {out:?}: {:?}", w.end()),
            Ok(Err(e)) => panic!("watch failed after {out:?}: {e}"),
            Err(_) => panic!("only {} of {n} events arrived: {out:?}", out.len()),
        }
    }
    out
}

/// Runs `script` with `sh -c` in `dir`. Writes go through a child process:
/// a file the (multi-threaded) test process closes may still be open in a
/// child that another test is forking at that moment, which delays its
/// `IN_CLOSE_WRITE` past later operations.
fn sh(dir: &str, script: &str) {
    let st = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .expect("run sh");
    assert!(st.success(), "sh -c {script:?} failed: {st}");
}

fn recursive() -> WatchOptions {
    WatchOptions {
        recursive: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_per_operation_in_order() {
    let agent = Agent::start();
    let c = agent.client().await;
    let d = agent.path("w");
    std::fs::create_dir(&d).unwrap();
    let mut w = c.watch(&d, &WatchOptions::default()).await.expect("watch");
    let f = format!("{d}/f");
    let g = format!("{d}/g");
    let sub = format!("{d}/sub");
    // Many write(2) calls in one open: still one WRITE. The last operation
    // makes anything extra before it show up in the list.
    sh(
        &d,
        "for i in $(seq 50); do printf x; done > f && mv f g && chmod 600 g && \
         printf again > g && rm g && mkdir sub && rmdir sub && : > end",
    );
    let got = take(&mut w, 10).await;
    let end = format!("{d}/end");
    assert_eq!(
        got,
        vec![
            ev(K::Create, &f, "", false),
            ev(K::Write, &f, "", false),
            ev(K::Rename, &f, &g, false),
            ev(K::Attrib, &g, "", false),
            ev(K::Write, &g, "", false),
            ev(K::Remove, &g, "", false),
            ev(K::Create, &sub, "", true),
            ev(K::Remove, &sub, "", true),
            ev(K::Create, &end, "", false),
            ev(K::Write, &end, "", false),
        ]
    );
    let end = w.close().await.expect("close");
    assert_eq!(end.reason, pb::StreamEndReason::Closed as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recursive_watch_follows_new_and_moved_in_directories() {
    let agent = Agent::start();
    let c = agent.client().await;
    let d = agent.path("w");
    std::fs::create_dir(&d).unwrap();
    let mut w = c.watch(&d, &recursive()).await.expect("watch");
    let a = format!("{d}/a");
    std::fs::create_dir(&a).unwrap();
    // The CREATE of a directory comes once its own watch is in place.
    assert_eq!(take(&mut w, 1).await, vec![ev(K::Create, &a, "", true)]);
    sh(&a, "echo 1 > f && mkdir b");
    assert_eq!(
        take(&mut w, 3).await,
        vec![
            ev(K::Create, &format!("{a}/f"), "", false),
            ev(K::Write, &format!("{a}/f"), "", false),
            ev(K::Create, &format!("{a}/b"), "", true),
        ]
    );
    // A rename across two watched directories is still one RENAME.
    std::fs::rename(format!("{a}/f"), format!("{a}/b/f")).unwrap();
    assert_eq!(
        take(&mut w, 1).await,
        vec![ev(K::Rename, &format!("{a}/f"), &format!("{a}/b/f"), false)]
    );
    // A tree made outside and moved in: its contents are scanned and reported.
    let outside = agent.path("outside");
    std::fs::create_dir_all(format!("{outside}/t/u")).unwrap();
    sh(&outside, "echo x > t/u/file");
    let t = format!("{d}/t");
    std::fs::rename(format!("{outside}/t"), &t).unwrap();
    assert_eq!(
        take(&mut w, 3).await,
        vec![
            ev(K::Rename, "", &t, true),
            ev(K::Create, &format!("{t}/u"), "", true),
            ev(K::Create, &format!("{t}/u/file"), "", false),
        ]
    );
    // Renamed directories keep reporting under their new paths.
    let t2 = format!("{d}/t2");
    std::fs::rename(&t, &t2).unwrap();
    sh(&t2, "echo y > u/new");
    assert_eq!(
        take(&mut w, 3).await,
        vec![
            ev(K::Rename, &t, &t2, true),
            ev(K::Create, &format!("{t2}/u/new"), "", false),
            ev(K::Write, &format!("{t2}/u/new"), "", false),
        ]
    );
    // Moved out of the watch: a RENAME without a destination, then silence
    // from that tree (the next event is about the watched tree again).
    std::fs::rename(&t2, format!("{outside}/back")).unwrap();
    sh(&outside, "echo z > back/u/ignored");
    sh(&d, ": > last");
    assert_eq!(
        take(&mut w, 3).await,
        vec![
            ev(K::Rename, &t2, "", true),
            ev(K::Create, &format!("{d}/last"), "", false),
            ev(K::Write, &format!("{d}/last"), "", false),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_reports_how_many_events_were_lost() {
    let agent = Agent::start();
    let c = agent.client().await;
    let d = agent.path("w");
    std::fs::create_dir(&d).unwrap();
    // Credit for about one event at a time, and room for four more.
    let opts = WatchOptions {
        queue_limit: 4,
        window: 1,
        ..Default::default()
    };
    let mut w = c.watch(&d, &opts).await.expect("watch");
    const FILES: u64 = 100;
    sh(&d, &format!("for i in $(seq {FILES}); do : > f$i; done"));
    // Every file makes CREATE + WRITE; what is not delivered is counted.
    let (mut delivered, mut lost, mut overflows) = (0u64, 0u64, 0);
    while delivered + lost < 2 * FILES {
        let e = match tokio::time::timeout(Duration::from_secs(20), w.next()).await {
            Ok(Ok(Some(e))) => e,
            other => panic!("after {delivered} delivered and {lost} lost: {other:?}"),
        };
        match K::try_from(e.kind) {
            Ok(K::Overflow) => {
                assert!(e.lost > 0, "the agent knows how many it dropped: {e:?}");
                lost += e.lost;
                overflows += 1;
            }
            Ok(K::Create | K::Write) => delivered += 1,
            other => panic!("unexpected event {other:?}: {e:?}"),
        }
    }
    assert_eq!(delivered + lost, 2 * FILES);
    assert!(overflows >= 1 && lost > 0, "no overflow reported");
    // The stream goes on normally afterwards.
    sh(&d, ": > after");
    let got = take(&mut w, 2).await;
    assert_eq!(got[0], ev(K::Create, &format!("{d}/after"), "", false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_path_is_not_found_and_the_connection_goes_on() {
    let agent = Agent::start();
    let c = agent.client().await;
    let missing = agent.path("nope");
    let e = c
        .watch(&missing, &WatchOptions::default())
        .await
        .expect_err("a missing path cannot be watched");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::NotFound), "{e}");
    assert!(e.to_string().contains(&missing), "{e}");
    let e = c
        .watch("relative", &WatchOptions::default())
        .await
        .expect_err("relative");
    assert_eq!(e.remote_code(), Some(pb::ErrorCode::InvalidArgument), "{e}");
    c.ping().await.expect("the connection still serves");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_root_ends_the_stream_after_a_last_event() {
    let agent = Agent::start();
    let c = agent.client().await;
    let d = agent.path("w");
    std::fs::create_dir_all(format!("{d}/x")).unwrap();
    let mut w = c.watch(&d, &recursive()).await.expect("watch");
    std::fs::remove_dir_all(&d).unwrap();
    let got = take(&mut w, 2).await;
    assert_eq!(
        got,
        vec![
            ev(K::Remove, &format!("{d}/x"), "", true),
            ev(K::Remove, &d, "", true)
        ]
    );
    let next = tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("the end comes");
    assert!(matches!(next, Ok(None)), "{next:?}");
    assert_eq!(
        w.end().map(|e| e.reason),
        Some(pb::StreamEndReason::RootGone as i32)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_ends_one_watch_and_others_go_on() {
    let agent = Agent::start();
    let c = agent.client().await;
    let d = agent.path("w");
    std::fs::create_dir(&d).unwrap();
    let w1 = c
        .watch(&d, &WatchOptions::default())
        .await
        .expect("watch 1");
    let mut w2 = c
        .watch(&d, &WatchOptions::default())
        .await
        .expect("watch 2");
    sh(&d, ": > a");
    let end = w1.close().await.expect("close");
    assert_eq!(end.reason, pb::StreamEndReason::Closed as i32);
    sh(&d, ": > b");
    let got = take(&mut w2, 4).await;
    assert_eq!(got[0].1, format!("{d}/a"));
    assert_eq!(got[2].1, format!("{d}/b"));
    // STREAM_CLOSE for a seq with no stream is refused, not fatal.
    let mut raw = common::Raw::connect(&agent).await;
    raw.send_msg(hearth_proto::Message::StreamClose(pb::StreamClose {}), 77)
        .await;
    let (seq, code, _) = raw.expect_error().await;
    assert_eq!((seq, code), (77, pb::ErrorCode::UnknownSession));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_file_reports_writes_and_its_move_ends_the_stream() {
    let agent = Agent::start();
    let c = agent.client().await;
    let f = agent.path("file");
    sh(agent.dir.path().to_str().unwrap(), "echo 0 > file");
    let mut w = c.watch(&f, &recursive()).await.expect("watch a file");
    sh(
        agent.dir.path().to_str().unwrap(),
        "echo 1 > file && chmod 640 file && mv file moved",
    );
    assert_eq!(
        take(&mut w, 3).await,
        vec![
            ev(K::Write, &f, "", false),
            ev(K::Attrib, &f, "", false),
            ev(K::Rename, &f, "", false),
        ]
    );
    let next = tokio::time::timeout(Duration::from_secs(20), w.next())
        .await
        .expect("the end comes");
    assert!(matches!(next, Ok(None)), "{next:?}");
    assert_eq!(
        w.end().map(|e| e.reason),
        Some(pb::StreamEndReason::RootGone as i32)
    );
}
