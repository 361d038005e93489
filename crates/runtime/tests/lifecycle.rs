//! Runtime tier: the whole lifecycle through hearth-runtime alone (no CLI),
//! with real microVMs.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{quiet, vm_lock, wait_no_processes, Env};
use hearth_runtime::pb::FileKind;
use hearth_runtime::{CreateSpec, Error, ExecSpec, ListFilter, Outcome, Progress, Step, VmStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_lives_its_whole_life_through_the_library() {
    let _g = vm_lock().await;
    let env = Env::new();
    let rt = env.runtime().await;
    let p = quiet();
    let spec = CreateSpec {
        name: Some("lib-web".into()),
        ..Default::default()
    };
    let sb = rt.create(&spec, &p).await.expect("create");
    let id = sb.id().to_string();
    assert_eq!(sb.status(), VmStatus::Running);
    assert_jailed(&rt, sb.record());

    // By name, from a fresh handle.
    let sb = rt.get("lib-web").await.unwrap();
    assert_eq!(sb.id(), id);
    let mut ex = ExecSpec::shell("cd; pwd; echo $A; cat; echo err >&2; exit 3");
    ex.env = vec![("A".into(), "one".into())];
    ex.cwd = Some("/tmp".into());
    ex.stdin = b"fed\n".to_vec();
    let out = sb.exec(&ex).await.unwrap();
    assert_eq!(out.exit.outcome, Outcome::Exited(3));
    assert_eq!(out.exit.outcome.exit_code(), 3);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.ends_with("one\nfed\n"), "{text}");
    assert_eq!(&out.stderr[..], b"err\n");
    // Stdin larger than the agent's input credit, into a command whose output
    // is collected only as it comes: no deadlock, every byte back.
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let mut cat = ExecSpec::argv(["cat"]);
    cat.stdin = big.clone();
    let echoed = sb.exec(&cat).await.unwrap();
    assert_eq!(echoed.exit.outcome, Outcome::Exited(0));
    assert!(
        echoed.stdout[..] == big[..],
        "cat returned {} bytes",
        echoed.stdout.len()
    );
    let missing = sb
        .exec(&ExecSpec::argv(["/no/such/program"]))
        .await
        .unwrap();
    assert_eq!(
        missing.exit.outcome.exit_code(),
        127,
        "{}",
        missing.exit.outcome
    );
    let mut slow = ExecSpec::shell("sleep 30");
    slow.timeout = Some(Duration::from_millis(300));
    assert!(matches!(
        sb.exec(&slow).await.unwrap().exit.outcome,
        Outcome::TimedOut { .. }
    ));

    // Files.
    sb.mkdir("/tmp/d/e", 0o755, true).await.unwrap();
    sb.write_bytes("/tmp/d/e/f.txt", b"hello", 0o640)
        .await
        .unwrap();
    assert_eq!(&sb.read_file("/tmp/d/e/f.txt").await.unwrap()[..], b"hello");
    let st = sb.stat("/tmp/d/e/f.txt").await.unwrap();
    assert_eq!((st.size, st.mode & 0o777), (5, 0o640));
    sb.rename("/tmp/d/e/f.txt", "/tmp/d/g.txt").await.unwrap();
    let names: Vec<String> = sb
        .list_dir("/tmp/d")
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert!(
        names.contains(&"g.txt".to_string()) && names.contains(&"e".to_string()),
        "{names:?}"
    );
    let e = sb.read_file("/tmp/d/e/f.txt").await.unwrap_err();
    assert!(e.to_string().contains("/tmp/d/e/f.txt"), "{e}");
    let host = tempfile::tempdir().unwrap();
    sb.copy_out("/tmp/d", host.path()).await.unwrap();
    assert_eq!(
        std::fs::read(host.path().join("d/g.txt")).unwrap(),
        b"hello"
    );
    std::fs::write(host.path().join("d/new.txt"), b"up").unwrap();
    sb.copy_in(&host.path().join("d"), "/tmp/up").await.unwrap();
    assert_eq!(&sb.read_file("/tmp/up/new.txt").await.unwrap()[..], b"up");
    assert_eq!(
        sb.stat("/tmp/up/e").await.unwrap().kind,
        FileKind::Dir as i32
    );
    sb.remove("/tmp/d", true).await.unwrap();
    assert!(sb.stat("/tmp/d").await.is_err());
    drop(sb);

    // Stop, start again, remove.
    let r = rt.stop(&id, &p).await.unwrap();
    assert_eq!(r.status, VmStatus::Stopped);
    let dir = r.dir.clone();
    assert!(
        wait_no_processes(dir.to_str().unwrap()).await.is_empty(),
        "processes left after stop"
    );
    let e = rt
        .get(&id)
        .await
        .unwrap()
        .exec(&ExecSpec::shell("true"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongState { .. }), "{e}");
    let sb = rt.start("lib-web", &p).await.expect("start");
    assert_eq!(
        sb.exec(&ExecSpec::shell("echo back")).await.unwrap().stdout,
        "back\n"
    );
    drop(sb);
    let removed = rt.remove("lib-web", false, &p).await.unwrap();
    assert_eq!(removed.record.id, id);
    assert!(!dir.exists(), "vm directory left");
    assert!(rt.list(&ListFilter::default()).await.unwrap().is_empty());
    assert!(matches!(rt.get(&id).await, Err(Error::NotFound(_))));
    assert!(wait_no_processes(dir.to_str().unwrap()).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_whose_link_proxy_died_is_reported_failed_with_the_reason() {
    let _g = vm_lock().await;
    let env = Env::new();
    let rt = env.runtime().await;
    let p = quiet();
    let sb = rt.create(&CreateSpec::default(), &p).await.unwrap();
    let rec = sb.record().clone();
    drop(sb);
    let procs = rt.backend().processes(rec.backend.as_ref().unwrap());
    let proxy = procs.iter().find(|(r, _)| *r == "proxy").unwrap().1;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(proxy as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all = rt.list(&ListFilter::default()).await.unwrap();
    assert_eq!(all[0].status, VmStatus::Failed);
    let note = all[0].note.clone().unwrap_or_default();
    assert!(note.contains("link proxy"), "{note}");
    // The unusable VMM was ended too; an exec fails at once with the state.
    assert!(
        wait_no_processes(rec.dir.to_str().unwrap())
            .await
            .is_empty(),
        "qemu left running"
    );
    let t0 = std::time::Instant::now();
    let e = rt
        .get(&rec.id)
        .await
        .unwrap()
        .exec(&ExecSpec::shell("true"))
        .await
        .unwrap_err();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t0.elapsed()
    );
    assert!(e.to_string().contains("is failed"), "{e}");
    rt.remove(&rec.id, false, &p).await.unwrap();
}

/// As root, the VMM runs as the sandbox's own uid under seccomp; the state is
/// private to root.
fn assert_jailed(rt: &hearth_runtime::Runtime, rec: &hearth_runtime::VmRecord) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert!(
        nix::unistd::geteuid().is_root(),
        "the runtime tier runs as root (the VMM jail needs it)"
    );
    let uid = rec
        .vmm_uid
        .expect("a root runtime gives each vm its own uid");
    assert_ne!(uid, 0);
    for (role, pid) in rt.backend().processes(rec.backend.as_ref().unwrap()) {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let uids = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
        assert!(
            uids.split_whitespace()
                .skip(1)
                .all(|u| u == uid.to_string()),
            "{role}: {uids}"
        );
        if role == "qemu" {
            assert!(
                status.lines().any(|l| l == "Seccomp:\t2"),
                "{role} is not under seccomp"
            );
        }
    }
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&rt.config().state_dir), 0o700);
    assert_eq!(mode(&rt.config().db_path()), 0o600);
    assert_eq!(mode(&rec.dir), 0o700);
    assert_eq!(std::fs::metadata(&rec.dir).unwrap().uid(), uid);
    for e in std::fs::read_dir(&rec.dir).unwrap().flatten() {
        assert_eq!(mode(&e.path()), 0o600, "{}", e.path().display());
    }
}

/// Cancels the create when the boot step begins.
struct CancelAtBoot(tokio_util::sync::CancellationToken, Mutex<Vec<String>>);

impl Progress for CancelAtBoot {
    fn step(&self, step: Step) {
        if matches!(step, Step::Boot { .. }) {
            self.0.cancel();
        }
        self.1.lock().unwrap().push(step.to_string());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_create_leaves_nothing_behind() {
    let _g = vm_lock().await;
    let env = Env::new();
    let rt = env.runtime().await;
    let token = tokio_util::sync::CancellationToken::new();
    let obs = Arc::new(CancelAtBoot(token.clone(), Mutex::new(Vec::new())));
    let p: hearth_runtime::SharedProgress = obs.clone();
    let e = rt
        .create_cancellable(&CreateSpec::default(), &p, &token)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Cancelled(_)), "{e}");
    assert!(obs
        .1
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.starts_with("booting")));
    assert!(
        rt.list(&ListFilter::default()).await.unwrap().is_empty(),
        "record left"
    );
    let vms = rt.config().vms_dir();
    let left: Vec<_> = std::fs::read_dir(&vms)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "vm dirs left: {left:?}");
    assert!(
        wait_no_processes(vms.to_str().unwrap()).await.is_empty(),
        "processes left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refuses_what_the_host_cannot_hold_before_anything_is_made() {
    let env = Env::new();
    let rt = env.runtime().await;
    let host = rt.host();
    let spec = CreateSpec {
        mem_mib: u32::try_from(host.mem_mib * 4).unwrap(),
        ..Default::default()
    };
    let e = rt.create(&spec, &quiet()).await.unwrap_err();
    assert!(matches!(e, Error::Admission(_)), "{e}");
    assert!(
        e.to_string().contains(&format!("{} MiB", host.mem_mib)),
        "{e}"
    );
    let spec = CreateSpec {
        cpus: host.cpus + 1,
        ..Default::default()
    };
    let e = rt.create(&spec, &quiet()).await.unwrap_err();
    assert!(
        e.to_string().contains(&format!("{} CPUs", host.cpus)),
        "{e}"
    );
    assert!(rt.list(&ListFilter::default()).await.unwrap().is_empty());
    assert!(
        !rt.config().vms_dir().exists()
            || std::fs::read_dir(rt.config().vms_dir())
                .unwrap()
                .next()
                .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_db_written_by_the_previous_release_opens_and_its_vm_still_works() {
    let _g = vm_lock().await;
    let env = Env::new();
    let p = quiet();
    let (id, v1_json, db_path) = {
        let rt = env.runtime().await;
        let sb = rt.create(&CreateSpec::default(), &p).await.unwrap();
        let rec = sb.record().clone();
        let vm = hearth_vmm::QemuBackend::vm(rec.backend.as_ref().unwrap()).unwrap();
        // The record exactly as schema 1 stored it for this running VM.
        let mut v: serde_json::Value =
            serde_json::from_str(hearth_runtime::state::V1_RUNNING_FIXTURE).unwrap();
        for (k, val) in [
            ("id", serde_json::json!(rec.id)),
            ("name", serde_json::Value::Null),
            ("image", serde_json::json!(rec.initrd)),
            ("kernel", serde_json::json!(rec.kernel)),
            ("dir", serde_json::json!(rec.dir)),
            ("language", "none".into()),
            ("persist", false.into()),
            ("rootfs", serde_json::Value::Null),
            ("lowerfs", serde_json::Value::Null),
            ("image_hash", serde_json::Value::Null),
            ("disk_mib", 0.into()),
            ("network", "none".into()),
            ("persist_volume", serde_json::Value::Null),
            ("env", serde_json::json!([])),
            ("hello", serde_json::json!([])),
            ("qemu", serde_json::to_value(vm.qemu).unwrap()),
            // v1 records named the second process `vhost`.
            ("vhost", serde_json::to_value(vm.proxy).unwrap()),
        ] {
            v[k] = val;
        }
        (rec.id, v.to_string(), rt.config().db_path())
    };
    std::fs::remove_file(&db_path).unwrap();
    hearth_runtime::state::write_v1_db(&db_path, &[(id.clone(), v1_json)]).unwrap();

    let rt = env.runtime().await;
    let sb = rt.get(&id).await.expect("the migrated record");
    assert_eq!(sb.status(), VmStatus::Running);
    let out = sb.exec(&ExecSpec::shell("echo migrated")).await.unwrap();
    assert_eq!(out.stdout, "migrated\n");
    drop(sb);
    // Booted again, the migrated VM gets its own uid and the jail.
    assert_eq!(rt.get(&id).await.unwrap().record().vmm_uid, None);
    rt.stop(&id, &p).await.unwrap();
    let sb = rt.start(&id, &p).await.unwrap();
    assert_jailed(&rt, sb.record());
    drop(sb);
    rt.remove(&id, false, &p).await.unwrap();
    let db = hearth_runtime::state::StateDb::new(&db_path, Duration::from_secs(5));
    assert_eq!(
        db.open().await.unwrap(),
        Some(hearth_runtime::state::SCHEMA_VERSION)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_gives_the_workload_sigterm_before_the_guest_powers_off() {
    let _g = vm_lock().await;
    let env = Env::new();
    let rt = env.runtime().await;
    let p = quiet();
    let spec = CreateSpec {
        language: Some("python".into()),
        ..Default::default()
    };
    let sb = rt.create(&spec, &p).await.expect("create a python vm");
    let id = sb.id().to_string();
    let workload = "trap 'echo got-term > /root/marker; sync; exit 0' TERM; echo ready; while :; do sleep 0.1; done";
    let mut s = sb.exec_stream(&ExecSpec::shell(workload)).await.unwrap();
    // Wait until the trap is installed.
    loop {
        match s.next().await.unwrap() {
            Some(hearth_runtime::StreamEvent::Stdout(b)) if b.starts_with(b"ready") => break,
            Some(hearth_runtime::StreamEvent::Exit(x)) => panic!("workload ended: {}", x.outcome),
            None => panic!("stream ended"),
            _ => {}
        }
    }
    rt.stop(&id, &p).await.unwrap();
    drop(s);
    drop(sb);
    let sb = rt.start(&id, &p).await.unwrap();
    let marker = sb
        .read_file("/root/marker")
        .await
        .expect("the workload's TERM marker");
    assert_eq!(&marker[..], b"got-term\n");
    drop(sb);
    rt.remove(&id, false, &p).await.unwrap();
}
