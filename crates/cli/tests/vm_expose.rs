//! VM tier: `hearth vm expose` and `hearth vm watch` against a python sandbox
//! with `--network none` (port streams and watches ride the agent connection,
//! no NIC). The test serves a 10 MiB random file with `python3 -m
//! http.server` in the guest and fetches it with 32 concurrent `curl`s from
//! the host's loopback. Run alone: `cargo test -p hearth-cli --test vm_expose`.

mod vm_common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use vm_common::{vm_lock, Env};

/// A hearth child process whose stdout and stderr lines arrive on channels;
/// SIGTERMed (by pid) and reaped on drop.
struct Fg {
    child: Child,
    out: mpsc::Receiver<String>,
    err: mpsc::Receiver<String>,
}

impl Fg {
    fn spawn(env: &Env, args: &[&str]) -> Fg {
        let mut child = env
            .cmd(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn hearth");
        let lines = |r: Box<dyn std::io::Read + Send>| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for l in BufReader::new(r).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            });
            rx
        };
        let out = lines(Box::new(child.stdout.take().unwrap()));
        let err = lines(Box::new(child.stderr.take().unwrap()));
        Fg { child, out, err }
    }

    fn line(rx: &mpsc::Receiver<String>, what: &str) -> String {
        rx.recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("no {what} line from hearth: {e}"))
    }

    fn term(&self) {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
    }

    /// Waits (bounded) for the exit; its status.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let t0 = std::time::Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                return st;
            }
            assert!(t0.elapsed() < limit, "hearth did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn rest(rx: &mpsc::Receiver<String>) -> String {
        rx.try_iter().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Fg {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.term();
            let _ = self.wait(Duration::from_secs(30));
        }
    }
}

/// `forwarding 127.0.0.1:NNNN -> guest port P` → NNNN.
fn forwarded_port(line: &str, guest: u16) -> u16 {
    let rest = line
        .strip_prefix("forwarding 127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    let (port, tail) = rest.split_once(' ').expect("a space after the port");
    assert_eq!(tail, format!("-> guest port {guest}"), "{line}");
    let port: u16 = port.parse().expect("a port number");
    assert_ne!(port, 0, "the real port is printed");
    port
}

#[test]
fn expose_serves_32_concurrent_downloads_intact_without_a_nic() {
    let env = Env::new();
    env.image("python");
    let _vms = vm_lock();
    let id = env.create(&["--language", "python", "--network", "none"]);
    let ifaces = env.sh(&id, "ls /sys/class/net");
    assert_eq!(ifaces.trim(), "lo", "--network none has only lo");
    let sum = env.sh(
        &id,
        "mkdir -p /srv && head -c 10485760 /dev/urandom > /srv/blob && sha256sum /srv/blob",
    );
    let want = sum.split_whitespace().next().expect("a sha256").to_string();
    // A background process (`--detach`): an exec's own cgroup, and whatever
    // it left running, is torn down when the exec ends.
    env.ok(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--detach",
        "--tag",
        "web",
        "--cmd",
        "cd /srv && exec python3 -m http.server 8000 --bind 127.0.0.1",
    ]);
    env.sh(
        &id,
        "for i in $(seq 150); do python3 -c \"import socket; socket.create_connection(('127.0.0.1', 8000), 1)\" 2>/dev/null && exit 0; sleep 0.2; done; echo 'http.server did not come up' >&2; exit 1",
    );

    let mut fwd = Fg::spawn(
        &env,
        &[
            "vm",
            "expose",
            "--vm",
            &id,
            "8000",
            "--listen",
            "127.0.0.1:0",
        ],
    );
    let port = forwarded_port(&Fg::line(&fwd.out, "forwarding"), 8000);
    let dir = tempfile::tempdir().unwrap();
    let curls: Vec<_> = (0..32)
        .map(|i| {
            let out = dir.path().join(format!("blob{i}"));
            let child = Command::new("curl")
                .args(["-sS", "--fail", "--max-time", "900", "-o"])
                .arg(&out)
                .arg(format!("http://127.0.0.1:{port}/blob"))
                .stdin(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("curl is needed for this test (apt-get install curl)");
            (out, child)
        })
        .collect();
    for (i, (out, child)) in curls.into_iter().enumerate() {
        let o = child.wait_with_output().expect("curl");
        assert!(
            o.status.success(),
            "download {i} failed: {}\nexpose stderr: {}",
            String::from_utf8_lossy(&o.stderr),
            Fg::rest(&fwd.err)
        );
        let data = std::fs::read(&out).unwrap();
        assert_eq!(data.len(), 10 * 1024 * 1024, "download {i} size");
        assert_eq!(hex(&Sha256::digest(&data)), want, "download {i} content");
    }
    fwd.term();
    assert!(
        fwd.wait(Duration::from_secs(30)).success(),
        "expose exits 0 on SIGTERM"
    );

    // The same through a Unix socket listener.
    let sock = dir.path().join("fwd.sock");
    let sock_arg = format!("unix:{}", sock.display());
    let fwd = Fg::spawn(
        &env,
        &["vm", "expose", "--vm", &id, "8000", "--listen", &sock_arg],
    );
    assert_eq!(
        Fg::line(&fwd.out, "forwarding"),
        format!("forwarding {sock_arg} -> guest port 8000")
    );
    let out = dir.path().join("via-unix");
    let o = Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "600", "--unix-socket"])
        .arg(&sock)
        .arg("-o")
        .arg(&out)
        .arg("http://guest/blob")
        .output()
        .expect("curl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(hex(&Sha256::digest(std::fs::read(&out).unwrap())), want);
    drop(fwd);
    assert!(!sock.exists(), "the socket is removed when expose ends");

    // Nothing listens on 8001: that connection is closed, the listener stays.
    let mut refused = Fg::spawn(
        &env,
        &[
            "vm",
            "expose",
            "--vm",
            &id,
            "8001",
            "--listen",
            "127.0.0.1:0",
            "--json",
        ],
    );
    let first: serde_json::Value =
        serde_json::from_str(&Fg::line(&refused.out, "forwarding")).expect("JSON");
    assert_eq!(first["event"], "forwarding");
    assert_eq!(first["guest_port"], 8001);
    let listen = first["listen"].as_str().expect("listen").to_string();
    for _ in 0..2 {
        let o = Command::new("curl")
            .args(["-sS", "--max-time", "120"])
            .arg(format!("http://{listen}/"))
            .output()
            .expect("curl");
        assert!(!o.status.success(), "a refused guest port gives no answer");
        let ev: serde_json::Value =
            serde_json::from_str(&Fg::line(&refused.out, "refused")).expect("JSON");
        assert_eq!(ev["event"], "refused", "{ev}");
        assert!(
            ev["reason"].as_str().unwrap_or("").contains("refused"),
            "{ev}"
        );
    }

    // A VM that stops ends the exposure with an error.
    env.ok(&["vm", "stop", "--vm", &id]);
    let st = refused.wait(Duration::from_secs(120));
    assert!(!st.success(), "expose must fail when its vm stops");
    let err = Fg::rest(&refused.err);
    assert!(err.contains(&id) || err.contains("agent"), "{err}");
}

#[test]
fn watch_prints_one_line_per_operation_in_order() {
    let env = Env::new();
    env.image("python");
    let _vms = vm_lock();
    let id = env.create(&["--language", "python", "--network", "none"]);
    env.sh(&id, "mkdir -p /srv/w");
    let mut w = Fg::spawn(&env, &["vm", "watch", "--vm", &id, "/srv/w"]);
    assert_eq!(Fg::line(&w.err, "watching"), "watching /srv/w");
    env.sh(
        &id,
        "echo x > /srv/w/f && mv /srv/w/f /srv/w/g && chmod 600 /srv/w/g && rm /srv/w/g && mkdir /srv/w/d",
    );
    let got: Vec<String> = (0..6).map(|_| Fg::line(&w.out, "event")).collect();
    assert_eq!(
        got,
        [
            "create /srv/w/f",
            "write /srv/w/f",
            "rename /srv/w/f -> /srv/w/g",
            "attrib /srv/w/g",
            "remove /srv/w/g",
            "create /srv/w/d/",
        ]
    );
    w.term();
    assert!(w.wait(Duration::from_secs(30)).success());

    // --json, recursive; removing the root ends it.
    let mut w = Fg::spawn(
        &env,
        &[
            "vm",
            "watch",
            "--vm",
            &id,
            "/srv/w",
            "--recursive",
            "--json",
        ],
    );
    assert_eq!(Fg::line(&w.err, "watching"), "watching /srv/w (recursive)");
    env.sh(&id, "echo y > /srv/w/d/inner && rm -r /srv/w");
    let mut events = Vec::new();
    loop {
        let v: serde_json::Value =
            serde_json::from_str(&Fg::line(&w.out, "event")).expect("JSON line");
        let end = v["kind"] == "end";
        events.push(v);
        if end {
            break;
        }
    }
    let kinds: Vec<_> = events
        .iter()
        .map(|v| {
            format!(
                "{} {}",
                v["kind"].as_str().unwrap(),
                v["path"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "create /srv/w/d/inner",
            "write /srv/w/d/inner",
            "remove /srv/w/d/inner",
            "remove /srv/w/d",
            "remove /srv/w",
            "end ",
        ]
    );
    assert!(w.wait(Duration::from_secs(30)).success());
    let _ = env.sh(&id, "true");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
