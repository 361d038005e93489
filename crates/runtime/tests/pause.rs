//! Runtime tier: pause and resume through hearth-runtime alone (no CLI),
//! with a real microVM. Run: `cargo test -p hearth-runtime --test pause`.

mod common;

use common::{quiet, vm_lock, Env};
use hearth_runtime::{CreateSpec, Error, ExecSpec, ListFilter, VmStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_sandbox_refuses_agent_calls_with_a_typed_error_and_resumes() {
    let _g = vm_lock().await;
    let env = Env::new();
    let rt = env.runtime().await;
    let p = quiet();
    let sb = rt
        .create(
            &CreateSpec {
                mem_mib: 256,
                ..Default::default()
            },
            &p,
        )
        .await
        .expect("create");
    let id = sb.id().to_string();
    sb.write_bytes("/tmp/kept", b"before\n", 0o644)
        .await
        .unwrap();

    let rec = sb.pause().await.expect("pause");
    assert_eq!(rec.status, VmStatus::Paused);
    assert!(rt
        .backend()
        .is_paused(rec.backend.as_ref().unwrap())
        .await
        .unwrap());
    // Active, so listed by default, and it still holds its memory for admission.
    let active = rt.list(&ListFilter::active()).await.unwrap();
    assert!(active
        .iter()
        .any(|r| r.id == id && r.status == VmStatus::Paused));
    assert!(VmStatus::Paused.is_active());

    let fresh = rt.get(&id).await.unwrap();
    match fresh.exec(&ExecSpec::shell("true")).await {
        Err(Error::Paused { id: got }) => assert_eq!(got, id),
        other => panic!("exec on a paused sandbox: {other:?}"),
    }
    match fresh.read_file("/tmp/kept").await {
        Err(e @ Error::Paused { .. }) => assert!(e.is_user_error()),
        other => panic!("read on a paused sandbox: {other:?}"),
    }
    match rt.pause(&id).await {
        Err(Error::WrongState { status, .. }) => assert_eq!(status, VmStatus::Paused),
        other => panic!("second pause: {other:?}"),
    }
    // Reconcile leaves a paused sandbox paused (its QEMU runs).
    assert_eq!(rt.get(&id).await.unwrap().status(), VmStatus::Paused);

    let rec = rt.resume(&id).await.expect("resume");
    assert_eq!(rec.status, VmStatus::Running);
    assert_eq!(rec.note, None);
    let sb = rt.get(&id).await.unwrap();
    assert_eq!(&sb.read_file("/tmp/kept").await.unwrap()[..], b"before\n");
    match rt.resume(&id).await {
        Err(Error::WrongState { status, .. }) => assert_eq!(status, VmStatus::Running),
        other => panic!("resume of a running sandbox: {other:?}"),
    }

    rt.pause(&id).await.unwrap();
    let rec = rt.stop(&id, &p).await.expect("stop of a paused sandbox");
    assert_eq!(rec.status, VmStatus::Stopped);
    rt.remove(&id, false, &p).await.unwrap();
}
