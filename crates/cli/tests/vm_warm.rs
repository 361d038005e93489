//! VM tier: warm start. `vm create` restores a cached post-boot snapshot (a
//! template) of its shape, built by the first create of that shape; the VM
//! must look like a cold-booted one: its own hostname and machine-id, its own
//! disk, the host's clock, a working language runtime, and a stop + start
//! (a cold boot of its copied disk) works. `--cold` boots; a corrupt
//! template falls back to a cold boot with a warning and is removed.
//!
//! The test uses an upper disk size of its own (from its pid) so its shape's
//! template is new even though the image cache is shared, and removes the
//! template at the end.

mod vm_common;

use std::time::{SystemTime, UNIX_EPOCH};

use vm_common::{image_cache, stderr, stdout, vm_lock, Env};

/// Removes this test's templates (by their disk size) however the test ends.
struct TemplateGuard(u64);

impl Drop for TemplateGuard {
    fn drop(&mut self) {
        let root = image_cache().join("templates");
        for e in std::fs::read_dir(&root).into_iter().flatten().flatten() {
            let meta = std::fs::read(e.path().join("meta.json")).unwrap_or_default();
            let v: serde_json::Value = serde_json::from_slice(&meta).unwrap_or_default();
            if v["source"]["disk_mib"] == self.0 {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn host_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn create_json(env: &Env, extra: &[&str]) -> (serde_json::Value, String) {
    let mut args = vec!["vm", "create", "--json"];
    args.extend_from_slice(extra);
    let o = env.run(&args);
    assert!(
        o.status.success(),
        "hearth {args:?} failed\nstdout: {}\nstderr: {}",
        stdout(&o),
        stderr(&o)
    );
    let v: serde_json::Value =
        serde_json::from_str(stdout(&o).trim()).expect("create --json is JSON");
    (v, stderr(&o))
}

fn templates(env: &Env) -> Vec<serde_json::Value> {
    let out = env.ok(&["image", "templates", "--json"]);
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("image templates --json is JSON")
        .as_array()
        .expect("an array")
        .clone()
}

#[test]
fn warm_start_is_a_restored_template_that_looks_cold_booted() {
    let _g = vm_lock();
    let env = Env::new();
    let disk = (3000 + std::process::id() % 4000).to_string();
    let disk_mib: u64 = disk.parse().unwrap();
    let _cleanup = TemplateGuard(disk_mib);
    let shape = ["--language", "python", "--disk", disk.as_str()];
    let mine = |env: &Env| {
        templates(env)
            .into_iter()
            .find(|t| t["disk_mib"] == disk_mib && t["language"] == "python")
    };
    assert!(
        mine(&env).is_none(),
        "a template of disk {disk} exists before the test"
    );

    // First create of the shape: builds the template, then restores it.
    let (a, _) = create_json(&env, &shape);
    let t = mine(&env).expect("the first create built a template");
    assert_eq!(a["start"], "warm", "{a}");
    assert_eq!(a["template"], t["key"], "{a} vs {t}");
    let a_id = a["id"].as_str().unwrap().to_string();
    let (b, _) = create_json(&env, &shape);
    assert_eq!(b["start"], "warm", "{b}");
    let b_id = b["id"].as_str().unwrap().to_string();
    // Same keys as a cold create (checked below), the shape asked for.
    assert_eq!(a["language"], "python");
    // The template's source sandbox is gone: only a and b are listed.
    let ids: Vec<String> = env
        .list()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 2, "{ids:?}");

    for id in [&a_id, &b_id] {
        assert_eq!(env.sh(id, "hostname").trim(), id.as_str());
        assert_eq!(env.sh(id, "cat /etc/hostname").trim(), id.as_str());
        let before = host_secs();
        let guest: i64 = env.sh(id, "date +%s").trim().parse().unwrap();
        let after = host_secs();
        assert!(
            guest >= before - 2 && guest <= after + 2,
            "vm {id}: guest clock {guest}, host {before}..{after}"
        );
    }
    let mid_a = env.sh(&a_id, "cat /etc/machine-id");
    let mid_b = env.sh(&b_id, "cat /etc/machine-id");
    assert_eq!(mid_a.trim().len(), 32, "{mid_a:?}");
    assert_ne!(mid_a, mid_b, "two warm vms share a machine-id");
    env.sh(&a_id, "echo only-a > /root/warm-file && sync");
    assert_eq!(
        env.sh(
            &b_id,
            "test -e /root/warm-file && echo present || echo absent"
        )
        .trim(),
        "absent"
    );
    assert_eq!(env.sh(&b_id, "python3 -c 'print(1)'").trim(), "1");

    // Stop + start: a cold boot of the warm vm's own (copied) disk.
    env.ok(&["vm", "stop", "--vm", &a_id]);
    let started: serde_json::Value =
        serde_json::from_str(env.ok(&["vm", "start", "--vm", &a_id, "--json"]).trim()).unwrap();
    assert_eq!(started["start"], "cold", "{started}");
    assert_eq!(env.sh(&a_id, "cat /root/warm-file").trim(), "only-a");
    assert_eq!(env.sh(&a_id, "hostname").trim(), a_id.as_str());
    assert_eq!(env.sh(&a_id, "python3 -c 'print(2)'").trim(), "2");

    // --cold boots, with the same JSON keys.
    let (c, _) = create_json(&env, &[&shape[..], &["--cold"]].concat());
    assert_eq!(c["start"], "cold", "{c}");
    assert!(c["template"].is_null(), "{c}");
    let keys = |v: &serde_json::Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&a), keys(&c));
    let c_id = c["id"].as_str().unwrap().to_string();
    assert_eq!(env.sh(&c_id, "hostname").trim(), c_id.as_str());
    for id in [&a_id, &b_id, &c_id] {
        env.ok(&["vm", "clean", "--vm", id]);
    }

    // A truncated template: the create still succeeds, cold, and says why.
    let dir = std::path::PathBuf::from(t["dir"].as_str().unwrap());
    let state = dir.join("vmstate");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&state)
        .unwrap();
    f.set_len(4096).unwrap();
    drop(f);
    let (d, log) = create_json(&env, &shape);
    assert_eq!(d["start"], "cold", "{d}\n{log}");
    assert!(
        log.contains("no warm start") && log.contains("truncated"),
        "the fallback is not logged: {log}"
    );
    assert!(!dir.exists(), "the corrupt template was not removed");
    let d_id = d["id"].as_str().unwrap().to_string();
    assert_eq!(env.sh(&d_id, "hostname").trim(), d_id.as_str());
    env.ok(&["vm", "clean", "--vm", &d_id]);

    // The next create rebuilds it and is warm again.
    let (e, _) = create_json(&env, &shape);
    assert_eq!(e["start"], "warm", "{e}");
    let e_id = e["id"].as_str().unwrap().to_string();
    assert_eq!(env.sh(&e_id, "python3 -c 'print(3)'").trim(), "3");
    env.ok(&["vm", "clean", "--vm", &e_id]);
}
