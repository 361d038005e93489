//! VM tier: several VMs at once, and `hearth run`. Run alone with
//! `cargo test -p hearth-cli --test vm_multi -- --test-threads=1`.

mod vm_common;

use vm_common::{pid_alive, stderr, stdout, Env};

#[test]
fn three_vms_created_concurrently_each_answer_and_clean_all_leaves_nothing() {
    let env = Env::new();
    // Prime the image and the accel probe once, so the three creates race on the DB.
    env.ok(&["image", "build"]);
    let children: Vec<_> = (0..3)
        .map(|_| {
            env.cmd(&["vm", "create"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "concurrent create failed: {}",
            stderr(&o)
        );
        ids.push(stdout(&o).trim().to_string());
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);
    let mut args = vec![
        "vm",
        "exec",
        "--json",
        "--cmd",
        "cat /proc/sys/kernel/random/boot_id",
    ];
    for id in &ids {
        args.extend(["--vm", id.as_str()]);
    }
    let v: serde_json::Value = serde_json::from_str(&env.ok(&args)).unwrap();
    let arr = v.as_array().unwrap();
    assert_eq!(arr.len(), 3);
    let mut boots: Vec<&str> = arr
        .iter()
        .map(|r| r["stdout"].as_str().unwrap().trim())
        .collect();
    assert!(arr.iter().all(|r| r["exit_code"] == 0), "{v}");
    boots.sort();
    boots.dedup();
    assert_eq!(boots.len(), 3, "each VM must answer for itself: {v}");
    let out = env.ok(&["vm", "exec", "--all", "--hello"]);
    for id in &ids {
        assert!(out.contains(&format!("hello from vm {id}")), "{out}");
    }
    let recs = env.list();
    let pids: Vec<u64> = recs
        .iter()
        .flat_map(|r| {
            [
                r["qemu_pid"].as_u64().unwrap(),
                r["proxy_pid"].as_u64().unwrap(),
            ]
        })
        .collect();
    let dirs: Vec<String> = recs
        .iter()
        .map(|r| r["dir"].as_str().unwrap().to_string())
        .collect();
    env.ok(&["vm", "clean", "--all"]);
    assert!(env.list().is_empty());
    for p in pids {
        assert!(!pid_alive(p), "pid {p} left running");
    }
    for d in dirs {
        assert!(!std::path::Path::new(&d).exists(), "{d} left behind");
    }
}

#[test]
fn hearth_run_passes_the_exit_code_and_removes_its_vm() {
    let env = Env::new();
    let o = env.run(&[
        "run",
        "--",
        "/bin/sh",
        "-c",
        "echo hello from the guest; exit 5",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from the guest\n");
    assert!(env.list().is_empty(), "hearth run left a record");
    let o = env.run(&["run", "--", "/no/such/program"]);
    assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
}
