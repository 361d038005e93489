//! REST tier: snapshots, restore and fork through the real `hearth serve`
//! and real microVMs, driven with curl. Run alone with
//! `cargo test -p hearth-cli --test api_snapshots`.

mod api_common;
mod vm_common;

use std::time::Duration;

use api_common::{wait_for, Server};
use serde_json::{json, Value};
use vm_common::{vm_lock, Env};

fn sh(srv: &Server, id: &str, cmd: &str) -> String {
    let v = srv.json(
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        Some(&json!({ "cmd": cmd })),
        200,
    );
    assert_eq!(v["exit_code"], 0, "{cmd}: {v}");
    v["stdout"].as_str().unwrap_or_default().to_string()
}

fn counter(srv: &Server, id: &str) -> u64 {
    let s = sh(srv, id, "cat /tmp/count");
    s.trim()
        .parse()
        .unwrap_or_else(|_| panic!("/tmp/count of {id} holds {s:?}"))
}

/// Waits until the background counter of `id` passes `above`.
fn counts_past(srv: &Server, id: &str, above: u64) -> u64 {
    let mut now = 0;
    wait_for(
        &format!("the counter of {id} to pass {above}"),
        Duration::from_secs(30),
        || {
            now = counter(srv, id);
            now > above
        },
    );
    now
}

/// A raw request with a body that is not JSON.
fn raw(srv: &Server, path: &str, body: &str) -> (u16, Value) {
    let args = vec![
        "-X".to_string(),
        "POST".into(),
        "-H".into(),
        srv.auth(),
        "-H".into(),
        "content-type: application/json".into(),
        "--data-binary".into(),
        body.into(),
    ];
    let (st, b) = api_common::curl(&args, &srv.url(path));
    (st, serde_json::from_slice(&b).unwrap_or(Value::Null))
}

#[test]
fn snapshot_restore_fork_and_delete_over_rest() {
    let env = Env::new();
    let _vm = vm_lock();
    let srv = Server::start(&env);
    let doc = srv.json("GET", "/v1/openapi.json", None, 200);
    for (p, m) in [
        ("/v1/sandboxes/{id}/snapshots", "post"),
        ("/v1/sandboxes/{id}/fork", "post"),
        ("/v1/snapshots", "get"),
        ("/v1/snapshots/{name}", "get"),
        ("/v1/snapshots/{name}", "delete"),
        ("/v1/snapshots/{name}/restore", "post"),
    ] {
        assert!(doc["paths"][p][m].is_object(), "openapi.json lacks {m} {p}");
    }

    // Bad input before any VM exists.
    let v = srv.error(
        "POST",
        "/v1/sandboxes/nope/snapshots",
        Some(&json!({})),
        404,
    );
    assert!(v["message"].as_str().unwrap().contains("nope"), "{v}");
    srv.error(
        "POST",
        "/v1/sandboxes/nope/fork",
        Some(&json!({"count": 1})),
        404,
    );
    for path in ["/v1/snapshots/nope", "/v1/snapshots/nope"] {
        let v = srv.error("GET", path, None, 404);
        assert!(v["message"].as_str().unwrap().contains("nope"), "{v}");
    }
    srv.error("DELETE", "/v1/snapshots/nope", None, 404);
    srv.error("POST", "/v1/snapshots/nope/restore", Some(&json!({})), 404);
    srv.error("GET", "/v1/snapshots/..bad", None, 400);
    assert_eq!(srv.json("GET", "/v1/snapshots", None, 200), json!([]));

    let v = srv.json(
        "POST",
        "/v1/sandboxes",
        Some(&json!({"mem_mib": 256, "name": "src"})),
        201,
    );
    let src = v["id"].as_str().unwrap().to_string();
    sh(&srv, &src, "echo kept > /srv-file; echo tmp > /tmp/t");
    srv.json(
        "POST",
        &format!("/v1/sandboxes/{src}/processes"),
        Some(&json!({
            "cmd": "i=0; while :; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 0.2; done",
            "tag": "counter",
        })),
        201,
    );
    counts_past(&srv, &src, 2);

    // Bad snapshot and fork requests against a real sandbox.
    let (st, v) = raw(
        &srv,
        &format!("/v1/sandboxes/{src}/snapshots"),
        "{\"name\": ",
    );
    assert_eq!(st, 400, "{v}");
    assert_eq!(v["kind"], "invalid_argument", "{v}");
    let (st, v) = raw(&srv, &format!("/v1/sandboxes/{src}/fork"), "not json");
    assert_eq!(st, 400, "{v}");
    for count in [0, 17] {
        let v = srv.error(
            "POST",
            &format!("/v1/sandboxes/{src}/fork"),
            Some(&json!({ "count": count })),
            400,
        );
        assert!(v["message"].as_str().unwrap().contains("count"), "{v}");
    }
    srv.error(
        "POST",
        &format!("/v1/sandboxes/{src}/snapshots"),
        Some(&json!({"name": "bad/name"})),
        400,
    );

    // Snapshot.
    let snap = srv.json(
        "POST",
        "/v1/sandboxes/src/snapshots",
        Some(&json!({"name": "s1"})),
        201,
    );
    assert_eq!(snap["name"], "s1", "{snap}");
    assert_eq!(snap["source_id"], src.as_str(), "{snap}");
    assert_eq!(snap["mem_mib"], 256, "{snap}");
    assert!(snap["bytes"].as_u64().unwrap() > 0, "{snap}");
    assert!(
        snap["created_at"].as_str().unwrap().ends_with('Z'),
        "{snap}"
    );
    let at_snapshot = counter(&srv, &src);
    let v = srv.error(
        "POST",
        &format!("/v1/sandboxes/{src}/snapshots"),
        Some(&json!({"name": "s1"})),
        409,
    );
    assert!(v["message"].as_str().unwrap().contains("s1"), "{v}");
    let list = srv.json("GET", "/v1/snapshots", None, 200);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["name"], "s1", "{list}");
    assert_eq!(
        srv.json("GET", "/v1/snapshots/s1", None, 200)["source_id"],
        src.as_str()
    );
    // The source runs on.
    counts_past(&srv, &src, at_snapshot);

    // Restore: the file, /tmp and the counter are there and it counts on.
    let r = srv.json(
        "POST",
        "/v1/snapshots/s1/restore",
        Some(&json!({"name": "restored", "timeout_secs": 600})),
        201,
    );
    let rid = r["id"].as_str().unwrap().to_string();
    assert_ne!(rid, src);
    assert_eq!(r["status"], "running", "{r}");
    assert_eq!(r["name"], "restored", "{r}");
    assert!(
        r["deadline"].is_string(),
        "restored without a deadline: {r}"
    );
    assert!(!r["access_token"].as_str().unwrap().is_empty(), "{r}");
    assert_eq!(sh(&srv, &rid, "cat /srv-file /tmp/t"), "kept\ntmp\n");
    let first = counter(&srv, &rid);
    assert!(first >= 2, "the restored counter is at {first}");
    counts_past(&srv, &rid, first);
    let got = srv.json("GET", "/v1/sandboxes/restored", None, 200);
    assert_eq!(got["id"], rid.as_str(), "{got}");
    // Its name is taken now.
    srv.error(
        "POST",
        "/v1/snapshots/s1/restore",
        Some(&json!({"name": "restored"})),
        409,
    );
    srv.error(
        "POST",
        "/v1/snapshots/s1/restore",
        Some(&json!({"timeout_secs": 0})),
        400,
    );

    // Fork 2: both answer, each with its own hostname.
    let f = srv.json(
        "POST",
        &format!("/v1/sandboxes/{src}/fork"),
        Some(&json!({"count": 2})),
        201,
    );
    let clones: Vec<String> = f["sandboxes"]
        .as_array()
        .unwrap_or_else(|| panic!("{f}"))
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(clones.len(), 2, "{f}");
    for s in f["sandboxes"].as_array().unwrap() {
        assert_eq!(s["status"], "running", "{s}");
        assert!(s["deadline"].is_string(), "{s}");
    }
    let mut hosts: Vec<String> = clones
        .iter()
        .map(|c| {
            sh(&srv, c, "cat /srv-file >/dev/null && hostname")
                .trim()
                .to_string()
        })
        .collect();
    hosts.push(sh(&srv, &src, "hostname").trim().to_string());
    let mut uniq = hosts.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), 3, "hostnames {hosts:?}");
    let listed = srv.json("GET", "/v1/sandboxes?status=running", None, 200);
    assert_eq!(listed.as_array().unwrap().len(), 4, "{listed}");

    // Delete the snapshot: 404 after; the restored sandbox runs on.
    let (st, b) = srv.call("DELETE", "/v1/snapshots/s1", None);
    assert_eq!(st, 204, "{}", String::from_utf8_lossy(&b));
    srv.error("GET", "/v1/snapshots/s1", None, 404);
    srv.error("DELETE", "/v1/snapshots/s1", None, 404);
    srv.error("POST", "/v1/snapshots/s1/restore", Some(&json!({})), 404);
    assert_eq!(srv.json("GET", "/v1/snapshots", None, 200), json!([]));
    assert_eq!(sh(&srv, &rid, "echo alive"), "alive\n");

    // A stopped sandbox cannot be snapshotted.
    let c0 = &clones[0];
    srv.json("POST", &format!("/v1/sandboxes/{c0}/stop"), None, 200);
    let v = srv.error(
        "POST",
        &format!("/v1/sandboxes/{c0}/snapshots"),
        Some(&json!({})),
        409,
    );
    assert_eq!(v["kind"], "wrong_state", "{v}");

    for id in clones.iter().chain([&rid, &src]) {
        let (st, b) = srv.call("DELETE", &format!("/v1/sandboxes/{id}"), None);
        assert_eq!(st, 204, "{id}: {}", String::from_utf8_lossy(&b));
    }
    srv.stop();
}
