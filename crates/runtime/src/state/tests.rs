use super::*;
use std::os::unix::fs::PermissionsExt;

pub(crate) fn rec(id: &str, status: VmStatus) -> VmRecord {
    VmRecord {
        id: id.into(),
        name: None,
        created_at: 1,
        status,
        cpus: 1,
        mem_mib: 256,
        language: "none".into(),
        initrd: "/i".into(),
        custom_initrd: false,
        kernel: "/k".into(),
        kernel_kind: None,
        kernel_release: None,
        accel: Some("tcg".into()),
        backend: None,
        creator: None,
        dir: "/nonexistent".into(),
        note: None,
        rootfs: None,
        lowerfs: None,
        image_hash: None,
        disk_mib: 0,
        network: hearth_vmm::Network::None,
        persist_volume: None,
        env: Vec::new(),
        hello: Vec::new(),
        vmm_uid: None,
        user: None,
        metadata: Default::default(),
        deadline_ms: None,
        warm_template: None,
    }
}

fn db(dir: &Path) -> StateDb {
    StateDb::new(dir.join(DB_FILE), Duration::from_millis(300))
}

#[tokio::test]
async fn reading_a_missing_db_creates_nothing() {
    let d = tempfile::tempdir().unwrap();
    let st = db(d.path());
    assert!(st.read_all().await.unwrap().is_empty());
    assert!(!st.path().exists(), "a read created the DB");
    assert_eq!(st.open().await.unwrap(), None);
    assert!(st.path().exists());
    let mode = std::fs::metadata(st.path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn records_round_trip_through_transactions() {
    let d = tempfile::tempdir().unwrap();
    let st = db(d.path());
    st.open().await.unwrap();
    st.insert(rec("aa", VmStatus::Running), |_, _| Ok(()))
        .await
        .unwrap();
    let e = st
        .insert(rec("aa", VmStatus::Running), |_, _| Ok(()))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("already exists"), "{e}");
    // Admission sees the others and may refuse: nothing is written then.
    let e = st
        .insert(rec("bb", VmStatus::Creating), |others, _| {
            assert_eq!(others.len(), 1);
            Err(Error::Admission("no room".into()))
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Admission(_)));
    assert_eq!(st.read_all().await.unwrap().len(), 1);
    let u = st
        .update("aa", |_, r| {
            r.note = Some("x".into());
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(u.note.as_deref(), Some("x"));
    assert!(matches!(
        st.update("zz", |_, _| Ok(())).await,
        Err(Error::NotFound(_))
    ));
    // A judged record that changed meanwhile is left alone.
    let stale = rec("aa", VmStatus::Running);
    let n = st
        .replace_unchanged(vec![(stale, rec("aa", VmStatus::Stopped))])
        .await
        .unwrap();
    assert_eq!(n, 0);
    let n = st
        .replace_unchanged(vec![(u.clone(), rec("aa", VmStatus::Stopped))])
        .await
        .unwrap();
    assert_eq!(n, 1);
    st.remove("aa").await.unwrap();
    assert!(st.read_all().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_locked_db_is_retried_then_named() {
    let d = tempfile::tempdir().unwrap();
    let st = db(d.path());
    st.open().await.unwrap();
    let held = Database::create(st.path()).unwrap();
    let t0 = Instant::now();
    let e = st.read_all().await.unwrap_err();
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(e.to_string().contains("locked by another process"), "{e}");
    // Released within the timeout: the waiter gets it.
    let st2 = StateDb::new(st.path(), Duration::from_secs(5));
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(held);
    });
    st2.read_all().await.unwrap();
    release.await.unwrap();
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let st = db(d.path());
    {
        let db = Database::create(st.path()).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 99)
            .unwrap();
        txn.commit().unwrap();
    }
    let e = st.open().await.unwrap_err().to_string();
    assert!(e.contains("schema version 99"), "{e}");
    let e = st.read_all().await.unwrap_err().to_string();
    assert!(e.contains("schema version 99"), "{e}");
}

#[tokio::test]
async fn a_v1_db_is_migrated_once_in_place() {
    let d = tempfile::tempdir().unwrap();
    let st = db(d.path());
    let v1 = super::migrate::V1_RUNNING_FIXTURE;
    write_v1_db(st.path(), &[("ab12cd34".into(), v1.into())]).unwrap();
    // The first open of this process migrates, so the first read sees v2.
    let all = st.read_all().await.unwrap();
    assert_eq!(all.len(), 1);
    assert!(all[0].backend.is_some());
    assert_eq!(db(d.path()).open().await.unwrap(), Some(SCHEMA_VERSION));
    // Explicitly, in another process's view.
    let d2 = tempfile::tempdir().unwrap();
    let st2 = db(d2.path());
    write_v1_db(st2.path(), &[("ab12cd34".into(), v1.into())]).unwrap();
    assert_eq!(st2.open().await.unwrap(), Some(1));
    assert_eq!(st2.read_all().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_db_that_cannot_be_created_leaves_no_broken_file() {
    let d = tempfile::tempdir().unwrap();
    // A directory where the temporary DB would go: its creation fails half-way.
    let st = db(d.path());
    let blocker = d
        .path()
        .join(format!(".{DB_FILE}.new-{}", std::process::id()));
    std::fs::create_dir(&blocker).unwrap();
    assert!(st
        .insert(rec("aa", VmStatus::Running), |_, _| Ok(()))
        .await
        .is_err());
    assert!(!st.path().exists(), "a failed creation left a DB file");
    assert!(st.read_all().await.unwrap().is_empty());
    std::fs::remove_dir(&blocker).unwrap();
    st.insert(rec("aa", VmStatus::Running), |_, _| Ok(()))
        .await
        .unwrap();
    assert_eq!(st.read_all().await.unwrap().len(), 1);
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from(DB_FILE)],
        "temporary files left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_inserts_in_one_process_all_land() {
    // A server's parallel creates on a fresh state dir: the DB file is made
    // once, and no insert fails because another made it at the same time.
    let d = tempfile::tempdir().unwrap();
    // A lock timeout far below what 32 queued writers take in total: within
    // one process they wait their turn, not on redb's file lock.
    let st = StateDb::new(d.path().join(DB_FILE), Duration::from_millis(50));
    let tasks: Vec<_> = (0..32)
        .map(|i| {
            let st = st.clone();
            tokio::spawn(async move {
                st.insert(rec(&format!("c{i:02}"), VmStatus::Creating), |_, _| Ok(()))
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(st.read_all().await.unwrap().len(), 32);
}
