//! VM tier: snapshots, restores and forks through the real `hearth` binary and
//! real QEMU microVMs (the VM link, QMP migration to a file, restore hooks).

mod vm_common;

use std::time::{SystemTime, UNIX_EPOCH};

use vm_common::{stderr, vm_lock, Env};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

fn host_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The counter a background process in the VM writes every 0.1 s, read twice
/// a second apart.
fn counter_moves(env: &Env, id: &str) -> (u64, u64) {
    let out = env.sh(
        id,
        "a=$(cat /tmp/count); sleep 1; b=$(cat /tmp/count); echo $a $b",
    );
    let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

#[test]
fn a_restored_vm_goes_on_counting_with_its_files_and_a_new_identity() {
    let env = Env::new();
    let _vm = vm_lock();
    let src = env.create(&["--language", "python", "--mem", "512"]);
    env.sh(
        &src,
        "echo kept > /root/disk-file; echo tmp > /tmp/tmp-file",
    );
    env.ok(&[
        "vm",
        "exec",
        "--detach",
        "--tag",
        "counter",
        "--vm",
        &src,
        "--cmd",
        "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 0.1; done",
    ]);
    let (a, b) = counter_moves(&env, &src);
    assert!(b > a, "the counter runs in the source: {a} {b}");
    // Written just before the snapshot: the freeze+sync must put it on disk.
    env.sh(&src, "echo last > /root/last-word");

    let snap = json(&env.ok(&["vm", "snapshot", "--vm", &src, "--name", "s1", "--json"]));
    assert_eq!(snap["name"], "s1");
    assert_eq!(snap["source_id"], src.as_str());
    assert!(snap["bytes"].as_u64().unwrap() > 1 << 20, "{snap}");
    let listed = json(&env.ok(&["snapshot", "list", "--json"]));
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    // The source runs on.
    let (a, b) = counter_moves(&env, &src);
    assert!(b > a, "the source counts on after its snapshot: {a} {b}");

    let r = json(&env.ok(&["vm", "restore", "s1", "--name", "copy", "--json"]));
    let id = r["id"].as_str().unwrap().to_string();
    assert_ne!(id, src);
    assert_eq!(env.status(&id), "running");
    assert_eq!(
        env.sh(&id, "cat /root/disk-file /tmp/tmp-file /root/last-word"),
        "kept\ntmp\nlast\n"
    );
    let (a, b) = counter_moves(&env, &id);
    assert!(b > a, "the counter goes on in the restored vm: {a} {b}");
    let ps = env.ok(&["vm", "ps", "--vm", &id]);
    assert!(ps.contains("counter"), "{ps}");
    assert_eq!(env.sh(&id, "hostname").trim(), id);
    let mid = env.sh(&id, "cat /etc/machine-id");
    assert_eq!(mid.trim().len(), 32, "{mid:?}");
    // The restored VM's disk is its own.
    env.sh(&id, "echo mine > /root/only-copy");
    assert_eq!(
        env.sh(&src, "test -e /root/only-copy && echo yes || echo no"),
        "no\n"
    );
    // A name is a name: restore under it again is refused, the snapshot stays usable.
    let e = env.fails(&["vm", "restore", "s1", "--name", "copy"]);
    assert!(e.contains("the name copy is taken"), "{e}");
    env.ok(&["snapshot", "rm", "s1"]);
    let e = env.fails(&["vm", "restore", "s1"]);
    assert!(e.contains("no snapshot named s1"), "{e}");
}

#[test]
fn four_forks_have_their_own_disks_entropy_clocks_and_hostnames() {
    let env = Env::new();
    let _vm = vm_lock();
    let src = env.create(&["--language", "python", "--mem", "512"]);
    // The source's clock is set wrong: each clone must take the host's.
    env.sh(&src, "date -s @1000000000 >/dev/null");
    let f = json(&env.ok(&["vm", "fork", "--vm", &src, "--count", "4", "--json"]));
    let clones: Vec<String> = f["clones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(clones.len(), 4, "{f}");
    let mut hostnames = Vec::new();
    let mut randoms = Vec::new();
    for (k, c) in clones.iter().enumerate() {
        env.sh(c, &format!("echo {k} > /root/clone-{k}"));
        let before = host_now();
        let out = env.sh(
            c,
            "date +%s.%N; hostname; head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'",
        );
        let after = host_now();
        let mut l = out.lines();
        let guest: f64 = l.next().unwrap().parse().unwrap();
        assert!(
            guest > before - 1.0 && guest < after + 1.0,
            "clone {c}: guest clock {guest} vs host {before}..{after}"
        );
        hostnames.push(l.next().unwrap().to_string());
        randoms.push(l.next().unwrap().to_string());
    }
    for (k, c) in clones.iter().enumerate() {
        let seen = env.sh(c, "ls /root | grep clone- | tr '\\n' ' '");
        assert_eq!(seen.trim(), format!("clone-{k}"), "clone {c} sees {seen:?}");
        assert_eq!(hostnames[k], *c);
    }
    for i in 0..4 {
        for j in i + 1..4 {
            assert_ne!(hostnames[i], hostnames[j]);
            assert_ne!(
                randoms[i], randoms[j],
                "clones {i} and {j} read the same /dev/urandom"
            );
        }
    }
    assert_eq!(
        env.sh(&src, "ls /root | grep -c clone- || true").trim(),
        "0"
    );
    // The fork's own snapshot is gone; nothing is listed.
    let listed = json(&env.ok(&["snapshot", "list", "--json"]));
    assert!(listed.as_array().unwrap().is_empty(), "{listed}");
}

#[test]
fn bad_snapshots_and_a_full_disk_are_clear_errors_that_leave_nothing() {
    let env = Env::new();
    let _vm = vm_lock();
    let src = env.create(&["--mem", "256"]);
    env.ok(&["vm", "snapshot", "--vm", &src, "--name", "good"]);
    let snaps = env.state().join("snapshots");
    let copy = |name: &str| {
        let d = snaps.join(name);
        std::fs::create_dir(&d).unwrap();
        for f in std::fs::read_dir(snaps.join("good")).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), d.join(f.file_name())).unwrap();
        }
        d
    };
    let vms_before = env.list().len();
    let dirs = || std::fs::read_dir(env.state().join("vms")).unwrap().count();
    let dirs_before = dirs();
    let assert_nothing_left = |what: &str| {
        assert_eq!(env.list().len(), vms_before, "{what}: a record was left");
        assert_eq!(dirs(), dirs_before, "{what}: a vm directory was left");
    };

    // Truncated: refused before anything starts.
    let d = copy("trunc");
    let st = d.join("vmstate");
    let len = std::fs::metadata(&st).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let e = env.fails(&["vm", "restore", "trunc"]);
    assert!(e.contains("truncated or replaced"), "{e}");
    assert_nothing_left("truncated");

    // Corrupt with the right length: QEMU refuses to load it.
    let d = copy("corrupt");
    let mut bytes = std::fs::read(d.join("vmstate")).unwrap();
    let n = bytes.len();
    for b in &mut bytes[n / 4..n / 4 + 4096] {
        *b ^= 0xA5;
    }
    for b in &mut bytes[..64] {
        *b = 0;
    }
    std::fs::write(d.join("vmstate"), &bytes).unwrap();
    let e = env.fails(&["vm", "restore", "corrupt"]);
    assert!(e.contains("cannot restore vm"), "{e}");
    assert_nothing_left("corrupt");

    // Made by another hearth version.
    let d = copy("other-version");
    let mut meta = json(&std::fs::read_to_string(d.join("meta.json")).unwrap());
    meta["hearth_version"] = "0.0.1".into();
    std::fs::write(d.join("meta.json"), meta.to_string()).unwrap();
    let e = env.fails(&["vm", "restore", "other-version"]);
    assert!(e.contains("made by hearth 0.0.1"), "{e}");
    assert_nothing_left("other version");

    // Another VM shape (more memory than the stream has): QEMU's load fails.
    let d = copy("other-shape");
    let mut meta = json(&std::fs::read_to_string(d.join("meta.json")).unwrap());
    meta["source"]["mem_mib"] = 384.into();
    std::fs::write(d.join("meta.json"), meta.to_string()).unwrap();
    let e = env.fails(&["vm", "restore", "other-shape"]);
    assert!(e.contains("cannot restore vm"), "{e}");
    assert_nothing_left("other shape");

    // A full disk during the snapshot: a 16 MiB tmpfs as the snapshot dir.
    std::fs::remove_dir_all(&snaps).unwrap();
    std::fs::create_dir(&snaps).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"])
        .arg(&snaps)
        .status()
        .unwrap();
    assert!(
        mounted.success(),
        "cannot mount a small tmpfs (the test needs root)"
    );
    let o = env.run(&["vm", "snapshot", "--vm", &src, "--name", "full"]);
    let listed = std::fs::read_dir(&snaps).unwrap().count();
    let _ = std::process::Command::new("umount").arg(&snaps).status();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("No space left") || e.contains("no space"), "{e}");
    assert_eq!(listed, 0, "a half-made snapshot was left on the full disk");
    // The source is unharmed, its filesystems thawed.
    assert_eq!(env.sh(&src, "echo alive > /tmp/x; cat /tmp/x"), "alive\n");

    // A persist volume would be shared: refused.
    let p = env.create(&["--mem", "256", "--language", "python", "--persist"]);
    let e = env.fails(&["vm", "snapshot", "--vm", &p]);
    assert!(e.contains("/persist"), "{e}");
    let e = env.fails(&["vm", "fork", "--vm", &p, "--count", "2"]);
    assert!(e.contains("/persist"), "{e}");
    let e = env.fails(&["vm", "fork", "--vm", &src, "--count", "0"]);
    assert!(e.contains("outside 1..=64"), "{e}");
}
