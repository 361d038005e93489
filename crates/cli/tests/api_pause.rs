//! REST tier: `POST /v1/sandboxes/{id}/pause` and `/resume` through the real
//! `hearth serve` and a real microVM, driven with curl. Run alone with
//! `cargo test -p hearth-cli --test api_pause`.

mod api_common;
mod vm_common;

use api_common::Server;
use serde_json::{json, Value};
use vm_common::{vm_lock, Env};

fn exec_echo(srv: &Server, id: &str, want: u16) -> Value {
    srv.json(
        "POST",
        &format!("/v1/sandboxes/{id}/exec"),
        Some(&json!({"cmd": "echo up"})),
        want,
    )
}

#[test]
fn pause_resume_and_paused_sandboxes_answer_409_paused() {
    let env = Env::new();
    let _vm = vm_lock();
    let srv = Server::start(&env);
    let doc = srv.json("GET", "/v1/openapi.json", None, 200);
    for p in ["/v1/sandboxes/{id}/pause", "/v1/sandboxes/{id}/resume"] {
        assert!(
            doc["paths"][p]["post"].is_object(),
            "openapi.json lacks {p}"
        );
    }
    srv.error("POST", "/v1/sandboxes/nope/pause", None, 404);
    srv.error("POST", "/v1/sandboxes/nope/resume", None, 404);

    let v = srv.json(
        "POST",
        "/v1/sandboxes",
        Some(&json!({"mem_mib": 256, "name": "p1"})),
        201,
    );
    let id = v["id"].as_str().unwrap().to_string();
    let v = srv.error("POST", "/v1/sandboxes/p1/resume", None, 409);
    assert!(v["message"].as_str().unwrap().contains("not paused"), "{v}");
    assert_eq!(exec_echo(&srv, &id, 200)["stdout"], "up\n");

    let v = srv.json("POST", "/v1/sandboxes/p1/pause", None, 200);
    assert_eq!(v["status"], "paused", "{v}");
    assert_eq!(
        srv.json("GET", &format!("/v1/sandboxes/{id}"), None, 200)["status"],
        "paused"
    );
    let listed = srv.json("GET", "/v1/sandboxes?status=paused", None, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["id"], id.as_str());

    // Everything that needs the agent: 409 kind paused, at once.
    let want = format!("sandbox {id} is paused; resume it with `hearth vm resume --vm {id}`");
    let v = exec_echo(&srv, &id, 409);
    assert_eq!(v["kind"], "paused", "{v}");
    assert!(v["message"].as_str().unwrap().contains(&want), "{v}");
    let v = srv.error(
        "GET",
        &format!("/v1/sandboxes/{id}/files/list?path=/tmp"),
        None,
        409,
    );
    assert_eq!(v["kind"], "paused", "{v}");
    let v = srv.error("GET", &format!("/v1/sandboxes/{id}/stats"), None, 409);
    assert_eq!(v["kind"], "paused", "{v}");
    let v = srv.error("POST", &format!("/v1/sandboxes/{id}/pause"), None, 409);
    assert!(
        v["message"].as_str().unwrap().contains("paused already"),
        "{v}"
    );

    let v = srv.json("POST", &format!("/v1/sandboxes/{id}/resume"), None, 200);
    assert_eq!(v["status"], "running", "{v}");
    assert_eq!(exec_echo(&srv, &id, 200)["stdout"], "up\n");

    // Delete of a paused sandbox.
    srv.json("POST", &format!("/v1/sandboxes/{id}/pause"), None, 200);
    let (st, b) = srv.call("DELETE", &format!("/v1/sandboxes/{id}"), None);
    assert_eq!(st, 204, "{}", String::from_utf8_lossy(&b));
    srv.error("GET", &format!("/v1/sandboxes/{id}"), None, 404);
    srv.stop();
}
