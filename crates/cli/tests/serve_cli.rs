//! `hearth serve` without VMs: the real binary on a loopback port, driven with
//! curl. Tokens, refusals, health, metrics, JSON errors, shutdown.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn hearth(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hearth"));
    c.env("HEARTH_STATE_DIR", state);
    c
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(state: &Path, args: &[&str]) -> (Server, Vec<String>) {
    let mut child = hearth(state)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start hearth serve");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .trim()
        .to_string();
    let mut rest = Vec::new();
    if args.iter().all(|a| *a != "--token-file") {
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        rest.push(l.trim().to_string());
    }
    (Server { child, url }, rest)
}

/// (status, body) of a curl request.
fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl is installed (scripts/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap(), body.to_string())
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s:?}"))
}

#[test]
fn non_loopback_listen_without_tokens_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = hearth(d.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without API tokens"),
        "{err}"
    );
}

#[test]
fn tokens_are_stored_hashed_and_checked() {
    let d = tempfile::tempdir().unwrap();
    let tf = d.path().join("tokens");
    let out = hearth(d.path())
        .args(["serve", "token", "create", "--token-file"])
        .arg(&tf)
        .output()
        .unwrap();
    assert!(out.status.success());
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(token.starts_with("hearth_") && token.len() > 40, "{token}");
    let stored = std::fs::read_to_string(&tf).unwrap();
    assert!(
        !stored.contains(&token) && stored.starts_with("sha256:"),
        "{stored}"
    );
    assert_eq!(
        std::fs::metadata(&tf).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (srv, _) = start(d.path(), &["--token-file", tf.to_str().unwrap()]);
    let m = format!("{}/metrics", srv.url);
    let (code, body) = curl(&[&m]);
    assert_eq!(code, 401);
    let b = json(&body);
    assert_eq!(b["code"], 401);
    assert!(
        b["message"].as_str().unwrap().contains("missing API token"),
        "{b}"
    );
    let (code, _) = curl(&["-H", "Authorization: Bearer wrong", &m]);
    assert_eq!(code, 401);
    let bearer = format!("Authorization: Bearer {token}");
    let (code, body) = curl(&["-H", &bearer, &m]);
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("hearth_sandboxes{state=\"running\"} 0"),
        "{body}"
    );
    assert!(body.contains("hearth_http_requests_total"), "{body}");
    let key = format!("X-API-Key: {token}");
    let (code, _) = curl(&["-H", &key, &m]);
    assert_eq!(code, 200);

    // Health needs no token; unknown routes are JSON 404s like every error.
    let (code, body) = curl(&[&format!("{}/healthz", srv.url)]);
    assert_eq!((code, json(&body)["status"].as_str()), (200, Some("ok")));
    let (code, body) = curl(&["-H", &bearer, &format!("{}/no/such/route", srv.url)]);
    assert_eq!(code, 404);
    assert!(json(&body)["message"]
        .as_str()
        .unwrap()
        .contains("/no/such/route"));

    // Sandbox traffic needs the sandbox's access token, not the API token.
    let (code, body) = curl(&[
        "-H",
        "E2b-Sandbox-Id: nosuch1",
        "-H",
        &format!("X-Access-Token: {token}"),
        &format!("{}/health", srv.url),
    ]);
    assert_eq!(code, 401, "{body}");
    assert!(json(&body)["message"].as_str().unwrap().contains("nosuch1"));

    // The token file must be private.
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = hearth(d.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--token-file"])
        .arg(&tf)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod 600"));
}

#[test]
fn without_a_token_file_a_run_token_is_made_and_sigterm_exits_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let (mut srv, rest) = start(d.path(), &[]);
    let token = rest[0]
        .strip_prefix("api token (this run only): ")
        .unwrap_or_else(|| panic!("{rest:?}"))
        .to_string();
    let (code, _) = curl(&[
        "-H",
        &format!("Authorization: Bearer {token}"),
        &format!("{}/metrics", srv.url),
    ]);
    assert_eq!(code, 200);
    // The access-token secret is private to the state dir.
    let secret = d.path().join("server/secret");
    assert_eq!(
        std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let pid = srv.child.id() as i32;
    // SAFETY: kill(2) on the pid of the child this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let t = Instant::now();
    loop {
        if let Some(st) = srv.child.try_wait().unwrap() {
            assert_eq!(st.code(), Some(0), "hearth serve exits 0 on SIGTERM");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "hearth serve did not exit on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
