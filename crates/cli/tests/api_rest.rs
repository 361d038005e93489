//! REST tier: hearth's own `/v1` API, through the real `hearth serve` binary
//! booting real microVMs, driven with `curl` (and a small WebSocket client).

mod api_common;
mod vm_common;

use std::time::Duration;

use api_common::{b64d, curl, wait_for, Server};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use vm_common::{vm_lock, Env};

const BOOT: Duration = Duration::from_secs(180);
const T: Duration = Duration::from_secs(60);

fn create(srv: &Server, body: Value) -> Value {
    let v = srv.json("POST", "/v1/sandboxes", Some(&body), 201);
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(v["id"].as_str().unwrap().len(), 8, "{v}");
    v
}

fn exec(srv: &Server, id: &str, body: Value) -> Value {
    srv.json(
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        Some(&body),
        200,
    )
}

#[test]
fn auth_and_openapi() {
    let env = Env::new();
    let srv = Server::start(&env);
    let u = srv.url("/v1/sandboxes");
    let (st, b) = curl(&[], &u);
    assert_eq!(st, 401, "{}", String::from_utf8_lossy(&b));
    let v: Value = serde_json::from_slice(&b).unwrap();
    assert_eq!(v["kind"], "unauthenticated");
    let (st, _) = curl(
        &["-H".into(), "Authorization: Bearer hearth_wrong".into()],
        &u,
    );
    assert_eq!(st, 401);
    let (st, b) = curl(&["-H".into(), format!("X-API-Key: {}", srv.token)], &u);
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&b));
    assert_eq!(serde_json::from_slice::<Value>(&b).unwrap(), json!([]));
    // The document needs no token and describes every route.
    let (st, b) = curl(&[], &srv.url("/v1/openapi.json"));
    assert_eq!(st, 200);
    let doc: Value = serde_json::from_slice(&b).unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3."),
        "{}",
        doc["openapi"]
    );
    for p in [
        "/v1/sandboxes",
        "/v1/sandboxes/{id}",
        "/v1/sandboxes/{id}/exec",
        "/v1/sandboxes/{id}/exec/stream",
        "/v1/sandboxes/{id}/exec/ws",
        "/v1/sandboxes/{id}/execs/{exec_id}/stdin",
        "/v1/sandboxes/{id}/files",
        "/v1/sandboxes/{id}/processes/{pid_or_tag}/attach",
        "/v1/sandboxes/{id}/logs",
    ] {
        assert!(doc["paths"][p].is_object(), "openapi.json lacks {p}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // Bad input never needs a VM to be answered as JSON.
    srv.error("GET", "/v1/sandboxes/nope", None, 404);
    srv.error("POST", "/v1/sandboxes", Some(&json!({"cpus": "two"})), 400);
    let v = srv.error("POST", "/v1/sandboxes", Some(&json!({"bogus": 1})), 400);
    assert!(v["message"].as_str().unwrap().contains("bogus"), "{v}");
    let v = srv.error("POST", "/v1/sandboxes", Some(&json!({"mem_mib": 1})), 400);
    assert!(v["message"].as_str().unwrap().contains("memory"), "{v}");
    srv.error("GET", "/v1/sandboxes?status=bogus", None, 400);
    assert_eq!(
        srv.json("GET", "/v1/sandboxes?metadata=nocolon", None, 200),
        json!([])
    );
    srv.error(
        "POST",
        "/v1/sandboxes/nope/exec",
        Some(&json!({"cmd": "true"})),
        404,
    );
    let (st, b) = curl(
        &[
            "-H".into(),
            srv.auth(),
            "--data-binary".into(),
            "{\"cmd\":\"x\"}".into(),
        ],
        &srv.url("/v1/sandboxes/nope/exec"),
    );
    assert_eq!(st, 415, "{}", String::from_utf8_lossy(&b));
    let (st, b) = curl(
        &[
            "-H".into(),
            srv.auth(),
            "-H".into(),
            "content-type: application/json".into(),
            "--data-binary".into(),
            "{\"cmd\":".into(),
        ],
        &srv.url("/v1/sandboxes/nope/exec"),
    );
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["kind"],
        "invalid_argument"
    );
    srv.error("GET", "/v1/nothing-here", None, 404);
    srv.stop();
}

#[test]
fn sandbox_exec_files_processes_logs() {
    let _g = vm_lock();
    let env = Env::new();
    let srv = Server::start(&env);
    let sb = create(
        &srv,
        json!({"name": "rest-a", "mem_mib": 256, "env": {"GREETING": "hello"}, "metadata": {"team": "a"}}),
    );
    let id = sb["id"].as_str().unwrap().to_string();
    assert_eq!(sb["name"], "rest-a");
    assert_eq!(sb["metadata"], json!({"team": "a"}));
    assert_eq!(sb["access_token"].as_str().unwrap().len(), 64);
    assert!(sb["deadline"].as_str().unwrap().ends_with('Z'), "{sb}");
    let p = |s: &str| format!("/v1/sandboxes/{id}{s}");

    // Create with SSE progress.
    let sse = srv.sse(
        "POST",
        "/v1/sandboxes",
        Some(&json!({"mem_mib": 256, "metadata": {"team": "b"}})),
        &["-H", "Accept: text/event-stream"],
    );
    let evs = sse.until("created", BOOT);
    assert!(
        evs.iter()
            .any(|(n, v)| n == "progress" && v["step"] == "boot"),
        "{evs:?}"
    );
    let b = evs.last().unwrap().1.clone();
    let id_b = b["id"].as_str().unwrap().to_string();
    assert_eq!(b["status"], "running");
    sse.kill();

    // List and get, with filters.
    let ids = |q: &str| -> Vec<String> {
        let v = srv.json("GET", &format!("/v1/sandboxes{q}"), None, 200);
        let mut v: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let mut both = vec![id.clone(), id_b.clone()];
    both.sort();
    assert_eq!(ids(""), both);
    assert_eq!(ids("?status=running"), both);
    assert_eq!(ids("?status=stopped"), Vec::<String>::new());
    assert_eq!(ids("?metadata=team:a"), vec![id.clone()]);
    assert_eq!(ids("?metadata=team:b&status=running"), vec![id_b.clone()]);
    assert_eq!(ids("?name=rest-a"), vec![id.clone()]);
    assert_eq!(ids("?metadata=team"), both);
    assert_eq!(ids("?metadata=other"), Vec::<String>::new());
    assert_eq!(srv.json("GET", "/v1/sandboxes/rest-a", None, 200)["id"], id);

    // Collected exec: output, exit code, env, cwd, user, stdin, timeout, never started.
    let v = exec(&srv, &id, json!({"cmd": "echo out; echo err >&2; exit 3"}));
    assert_eq!(
        (v["exit_code"].clone(), v["kind"].clone()),
        (json!(3), json!("exited")),
        "{v}"
    );
    assert_eq!(
        (v["stdout"].clone(), v["stderr"].clone()),
        (json!("out\n"), json!("err\n"))
    );
    let v = exec(
        &srv,
        &id,
        json!({"argv": ["/bin/sh", "-c", "echo $GREETING $EXTRA; pwd; id -u"], "env": {"EXTRA": "there"}, "cwd": "/tmp"}),
    );
    assert_eq!(v["stdout"], "hello there\n/tmp\n0\n", "{v}");
    let v = exec(&srv, &id, json!({"cmd": "cat", "stdin": "piped in"}));
    assert_eq!(v["stdout"], "piped in");
    let v = exec(&srv, &id, json!({"cmd": "cat", "stdin_base64": "/wA="}));
    assert_eq!(b64d(&v["stdout_base64"]), vec![0xff, 0x00], "{v}");
    let v = exec(&srv, &id, json!({"cmd": "sleep 30", "timeout_secs": 1}));
    assert_eq!(
        (v["kind"].clone(), v["exit_code"].clone()),
        (json!("timed_out"), json!(124)),
        "{v}"
    );
    let v = exec(&srv, &id, json!({"argv": ["/no/such/program"]}));
    assert_eq!(
        (v["kind"].clone(), v["exit_code"].clone()),
        (json!("never_started"), json!(127)),
        "{v}"
    );
    assert_eq!(
        exec(
            &srv,
            &id,
            json!({"cmd": "echo $0 $1", "argv": ["zero", "one"]})
        )["stdout"],
        "zero one\n"
    );
    srv.error("POST", &p("/exec"), Some(&json!({"argv": [""]})), 400);
    srv.error("POST", &p("/exec"), Some(&json!({"env": {}})), 400);
    srv.error(
        "POST",
        &p("/exec"),
        Some(&json!({"cmd": "true", "cwd": "tmp"})),
        400,
    );
    srv.error(
        "POST",
        &p("/exec"),
        Some(&json!({"cmd": "true", "timeout_secs": 0})),
        400,
    );

    // Streaming exec over SSE, stdin through the stdin endpoint.
    let sse = srv.sse(
        "POST",
        &p("/exec/stream"),
        Some(&json!({"cmd": "read a; echo got $a; cat; echo done >&2", "stdin_open": true})),
        &[],
    );
    let (name, started) = sse.next(T);
    assert_eq!(name, "started", "{started}");
    let exec_id = started["exec_id"].as_str().unwrap().to_string();
    assert!(started["pid"].as_u64().unwrap() > 0);
    let stdin = |data: &str, eof: bool| {
        let q = if eof { "?eof=true" } else { "" };
        curl(
            &[
                "-X".into(),
                "POST".into(),
                "-H".into(),
                srv.auth(),
                "--data-binary".into(),
                data.into(),
            ],
            &srv.url(&p(&format!("/execs/{exec_id}/stdin{q}"))),
        )
        .0
    };
    assert_eq!(stdin("line1\n", false), 204);
    assert_eq!(stdin("tail", true), 204);
    let evs = sse.until("exit", T);
    let (mut out, mut err) = (Vec::new(), Vec::new());
    for (n, v) in &evs {
        match n.as_str() {
            "stdout" => out.extend(b64d(&v["data"])),
            "stderr" => err.extend(b64d(&v["data"])),
            _ => {}
        }
    }
    assert_eq!(String::from_utf8_lossy(&out), "got line1\ntail");
    assert_eq!(String::from_utf8_lossy(&err), "done\n");
    assert_eq!(evs.last().unwrap().1["exit_code"], 0);
    // The exec ended: its registry entry is gone.
    wait_for("the exec's stdin endpoint to go", T, || {
        stdin("late", false) == 404
    });
    srv.error("POST", &p("/execs/0123456789abcdef/stdin"), None, 404);

    // The same over a WebSocket.
    ws_exec(&srv, &id);

    // Files: a 5 MiB streamed round trip, then list/stat/mkdir/rename/remove.
    let dir = tempfile::tempdir().unwrap();
    let up = dir.path().join("up.bin");
    let mut data = vec![0u8; 5 << 20];
    let mut x: u32 = 12345;
    for b in data.iter_mut() {
        x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
        *b = (x >> 16) as u8;
    }
    std::fs::write(&up, &data).unwrap();
    let (st, b) = curl(
        &[
            "-X".into(),
            "PUT".into(),
            "-H".into(),
            srv.auth(),
            "-T".into(),
            up.display().to_string(),
        ],
        &srv.url(&p("/files?path=/tmp/big.bin&mode=600")),
    );
    assert_eq!(st, 201, "{}", String::from_utf8_lossy(&b));
    assert_eq!(
        serde_json::from_slice::<Value>(&b).unwrap()["bytes"],
        5 << 20
    );
    let (st, down) = curl(
        &["-H".into(), srv.auth()],
        &srv.url(&p("/files?path=/tmp/big.bin")),
    );
    assert_eq!(st, 200);
    assert_eq!(
        hex::encode(Sha256::digest(&down)),
        hex::encode(Sha256::digest(&data))
    );
    let f = srv.json("GET", &p("/files/stat?path=/tmp/big.bin"), None, 200);
    assert_eq!(
        (f["kind"].clone(), f["size"].clone(), f["mode"].clone()),
        (json!("file"), json!(5 << 20), json!("0600")),
        "{f}"
    );
    srv.json(
        "POST",
        &p("/files/mkdir"),
        Some(&json!({"path": "/tmp/d/e", "parents": true})),
        201,
    );
    srv.json(
        "POST",
        &p("/files/rename"),
        Some(&json!({"from": "/tmp/big.bin", "to": "/tmp/d/e/moved.bin"})),
        204,
    );
    let l = srv.json("GET", &p("/files/list?path=/tmp/d/e"), None, 200);
    assert_eq!(
        l.as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].clone())
            .collect::<Vec<_>>(),
        vec![json!("moved.bin")]
    );
    srv.error("DELETE", &p("/files?path=/tmp/d"), None, 409);
    srv.json("DELETE", &p("/files?path=/tmp/d&recursive=true"), None, 204);
    srv.error("GET", &p("/files/stat?path=/tmp/d"), None, 404);
    srv.error("GET", &p("/files?path=/tmp/nothing"), None, 404);
    srv.error("GET", &p("/files?path=relative"), None, 400);
    srv.error("GET", &p("/files?path=/tmp"), None, 409);
    srv.error("DELETE", &p("/files?path=/&recursive=true"), None, 400);
    srv.error(
        "DELETE",
        &p("/files?path=/tmp/..&recursive=true"),
        None,
        400,
    );
    srv.error("GET", &p("/files/list"), None, 400);

    // Background processes.
    let v = srv.json("POST", &p("/processes"), Some(&json!({"cmd": "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.2; done", "tag": "ticker"})), 201);
    let pid = v["pid"].as_u64().unwrap();
    let l = srv.json("GET", &p("/processes"), None, 200);
    let me = l
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["tag"] == "ticker")
        .cloned()
        .unwrap_or_else(|| panic!("{l}"));
    assert_eq!(
        (me["pid"].as_u64().unwrap(), me["state"].clone()),
        (pid, json!("running"))
    );
    let att = srv.sse(
        "GET",
        &p("/processes/ticker/attach?from_offset=0"),
        None,
        &[],
    );
    let (n, a) = att.next(T);
    assert_eq!(
        (n.as_str(), a["pid"].as_u64().unwrap()),
        ("attached", pid),
        "{a}"
    );
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("tick2") {
        let (n, v) = att.next(T);
        assert_eq!(n, "stdout", "{v}");
        seen.extend(b64d(&v["data"]));
    }
    assert!(String::from_utf8_lossy(&seen).starts_with("tick0\n"));
    srv.json(
        "POST",
        &p(&format!("/processes/{pid}/kill")),
        Some(&json!({"signal": "KILL"})),
        204,
    );
    let evs = att.until("exit", T);
    assert_eq!(evs.last().unwrap().1["kind"], "killed", "{evs:?}");
    srv.error("POST", &p("/processes/nope/kill"), Some(&json!({})), 404);
    srv.error(
        "POST",
        &p("/processes/ticker/kill"),
        Some(&json!({"signal": "BOGUS"})),
        400,
    );
    srv.error(
        "POST",
        &p("/processes/0/kill"),
        Some(&json!({"signal": 9.0})),
        404,
    );
    srv.error(
        "POST",
        &p("/processes"),
        Some(&json!({"cmd": "true", "tag": "has space"})),
        400,
    );
    let e = srv.error(
        "POST",
        &p("/processes"),
        Some(&json!({"argv": ["/no/such/program"], "tag": "x"})),
        409,
    );
    assert_eq!(e["kind"], "never_started", "{e}");

    // Stats and logs.
    let s = srv.json("GET", &p("/stats"), None, 200);
    assert!(
        s["memory"]["total_bytes"].as_u64().unwrap() > 100 << 20,
        "{s}"
    );
    assert_eq!(s["cpu"]["cpu_count"], 1);
    let l = srv.json("GET", &p("/logs?tail=5"), None, 200);
    let lines = l["lines"].as_array().unwrap();
    assert!(!lines.is_empty() && lines.len() <= 5, "{l}");
    assert!(lines.iter().any(|x| x["at"].is_string()));
    let l = srv.json(
        "GET",
        &p("/logs?source=agent&tail=50&timestamps=false"),
        None,
        200,
    );
    assert!(
        l["lines"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["at"].is_null() && x["level"].is_string()),
        "{l}"
    );
    srv.error("GET", &p("/logs?since=yesterday"), None, 400);
    srv.error("GET", &p("/logs?source=nope"), None, 400);
    let follow = srv.sse("GET", &p("/logs?follow=true"), None, &[]);
    // The follow starts at the end: a line written now arrives.
    std::thread::sleep(Duration::from_millis(500));
    exec(
        &srv,
        &id,
        json!({"cmd": "echo rest-follow-marker > /dev/console"}),
    );
    let t0 = std::time::Instant::now();
    loop {
        let (n, v) = follow.next(T);
        assert_eq!(n, "lines", "{v}");
        if v["lines"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["text"].as_str().unwrap().contains("rest-follow-marker"))
        {
            break;
        }
        assert!(t0.elapsed() < T, "the marker did not arrive");
    }
    follow.kill();

    // Timeout, stop, start, delete.
    let before = srv.json("GET", &p(""), None, 200)["deadline"]
        .as_str()
        .unwrap()
        .to_string();
    let v = srv.json(
        "POST",
        &p("/timeout"),
        Some(&json!({"timeout_secs": 3600})),
        200,
    );
    assert!(
        v["deadline"].as_str().unwrap() > before.as_str(),
        "{v} vs {before}"
    );
    srv.error(
        "POST",
        &p("/timeout"),
        Some(&json!({"timeout_secs": 0})),
        400,
    );
    let pb = |s: &str| format!("/v1/sandboxes/{id_b}{s}");
    assert_eq!(
        srv.json("POST", &pb("/stop"), None, 200)["status"],
        "stopped"
    );
    let e = srv.error("POST", &pb("/exec"), Some(&json!({"cmd": "true"})), 409);
    assert_eq!(e["kind"], "wrong_state");
    assert_eq!(
        srv.json("POST", &pb("/start"), None, 200)["status"],
        "running"
    );
    assert_eq!(
        exec(&srv, &id_b, json!({"cmd": "echo back"}))["stdout"],
        "back\n"
    );
    srv.error("POST", &pb("/start"), None, 409);
    srv.json("DELETE", &pb(""), None, 204);
    srv.error("GET", &pb(""), None, 404);
    srv.error("DELETE", &pb(""), None, 404);

    // A restart: the sandbox is still there and answers.
    srv.stop();
    let srv = Server::start(&env);
    assert_eq!(srv.json("GET", &p(""), None, 200)["status"], "running");
    assert_eq!(
        exec(&srv, &id, json!({"cmd": "echo after restart"}))["stdout"],
        "after restart\n"
    );
    srv.json("DELETE", &p(""), None, 204);
    srv.stop();
}

fn ws_exec(srv: &Server, id: &str) {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let url = srv
        .url(&format!("/v1/sandboxes/{id}/exec/ws"))
        .replacen("http://", "ws://", 1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", srv.token).parse().unwrap(),
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .expect("WebSocket connect");
        let spec = json!({"cmd": "tr a-z A-Z; exit 5", "stdin_open": true});
        ws.send(Message::Text(spec.to_string().into()))
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut exit = Value::Null;
        let mut sent = false;
        while let Some(m) = tokio::time::timeout(T, ws.next())
            .await
            .expect("a WebSocket message in time")
        {
            let Message::Text(t) = m.unwrap() else {
                continue;
            };
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            match v["event"].as_str().unwrap() {
                "started" => {
                    assert!(v["exec_id"].is_string());
                    ws.send(Message::Binary(b"over a websocket".to_vec().into()))
                        .await
                        .unwrap();
                    ws.send(Message::Text(r#"{"eof":true}"#.into()))
                        .await
                        .unwrap();
                    sent = true;
                }
                "stdout" => out.extend(b64d(&v["data"])),
                "exit" => {
                    exit = v;
                    break;
                }
                other => panic!("unexpected WebSocket event {other}: {v}"),
            }
        }
        assert!(sent);
        assert_eq!(String::from_utf8_lossy(&out), "OVER A WEBSOCKET");
        assert_eq!(exit["exit_code"], 5, "{exit}");
        // A bad first message gets an error event.
        let mut req = srv
            .url(&format!("/v1/sandboxes/{id}/exec/ws"))
            .replacen("http://", "ws://", 1)
            .into_client_request()
            .unwrap();
        req.headers_mut()
            .insert("x-api-key", srv.token.parse().unwrap());
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        ws.send(Message::Text("{\"cmd\": 5}".into())).await.unwrap();
        let m = tokio::time::timeout(T, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
        assert_eq!(
            (v["event"].clone(), v["code"].clone()),
            (json!("error"), json!(400)),
            "{v}"
        );
    });
    // Without an upgrade it is a JSON 400.
    srv.error("GET", &format!("/v1/sandboxes/{id}/exec/ws"), None, 400);
}

#[test]
fn timeouts_remove_sandboxes_also_across_a_restart() {
    let _g = vm_lock();
    let env = Env::new();
    let srv = Server::start(&env);
    let a = create(&srv, json!({"mem_mib": 256, "timeout_secs": 3}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for("the 3 s sandbox to be removed", T, || {
        srv.call("GET", &format!("/v1/sandboxes/{a}"), None).0 == 404
    });
    let b = create(&srv, json!({"mem_mib": 256, "timeout_secs": 3}))["id"]
        .as_str()
        .unwrap()
        .to_string();
    srv.stop();
    // The deadline passes while no server runs; the next one enforces it.
    std::thread::sleep(Duration::from_secs(4));
    let srv = Server::start(&env);
    wait_for(
        "the expired sandbox to be removed after the restart",
        T,
        || srv.call("GET", &format!("/v1/sandboxes/{b}"), None).0 == 404,
    );
    assert!(env.list().is_empty(), "{:?}", env.list());
    srv.stop();
}

#[test]
fn a_client_that_leaves_mid_create_cancels_it() {
    let _g = vm_lock();
    let env = Env::new();
    let srv = Server::start(&env);
    let sse = srv.sse(
        "POST",
        "/v1/sandboxes",
        Some(&json!({"mem_mib": 256})),
        &["-H", "Accept: text/event-stream"],
    );
    let evs = sse.until("progress", BOOT);
    assert_eq!(evs.len(), 1, "{evs:?}");
    sse.kill();
    wait_for("the cancelled create to leave nothing behind", T, || {
        srv.json("GET", "/v1/sandboxes", None, 200)
            .as_array()
            .unwrap()
            .is_empty()
    });
    srv.stop();
}
