//! Helpers for the REST tier (`api_*.rs`): the real `hearth serve` binary on a
//! private state dir, driven with `curl` subprocesses.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::vm_common::Env;

/// A running `hearth serve`; SIGTERM and wait on drop.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub token: String,
    stderr_log: std::path::PathBuf,
}

impl Server {
    /// Starts the server on `env`'s state dir with a token file in it (made
    /// on first use with `hearth serve token create`).
    pub fn start(env: &Env) -> Server {
        let tok_file = env.state().join("api-tokens");
        let tok_value = env.state().join("api-token.txt");
        let token = match std::fs::read_to_string(&tok_value) {
            Ok(t) => t.trim().to_string(),
            Err(_) => {
                let t = env
                    .ok(&[
                        "serve",
                        "token",
                        "create",
                        "--token-file",
                        tok_file.to_str().unwrap(),
                    ])
                    .trim()
                    .to_string();
                assert!(t.starts_with("hearth_"), "token create printed {t:?}");
                std::fs::write(&tok_value, &t).unwrap();
                t
            }
        };
        let stderr_log = env
            .state()
            .join(format!("serve-{}.log", Instant::now().elapsed().as_nanos()));
        let mut child = env
            .cmd(&[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--token-file",
                tok_file.to_str().unwrap(),
                "--drain",
                "5",
            ])
            .env("HEARTH_LOG_LEVEL", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap())
            .spawn()
            .expect("start hearth serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        out.read_line(&mut first).expect("read the listening line");
        // Keep draining stdout so the server never blocks on it.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = out.read_to_end(&mut sink);
        });
        let base = first
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "hearth serve's first line is {first:?}; stderr: {}",
                    std::fs::read_to_string(&stderr_log).unwrap_or_default()
                )
            })
            .to_string();
        Server {
            child,
            base,
            token,
            stderr_log,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn auth(&self) -> String {
        format!("Authorization: Bearer {}", self.token)
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        let pid = self.child.id() as i32;
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                assert!(
                    st.success(),
                    "hearth serve exited {st:?} after SIGTERM; stderr: {}",
                    self.stderr()
                );
                return;
            }
            if t0.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("hearth serve did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }

    /// `curl` with the API token; returns (status, body).
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Vec<u8>) {
        let mut args = vec![
            "-X".to_string(),
            method.to_string(),
            "-H".into(),
            self.auth(),
        ];
        if let Some(b) = body {
            args.extend(["-H".into(), "content-type: application/json".into()]);
            args.extend(["--data-binary".into(), b.to_string()]);
        }
        curl(&args, &self.url(path))
    }

    /// [`Server::call`] expecting `want` and a JSON body (or none for 204).
    pub fn json(&self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Value {
        let (st, b) = self.call(method, path, body);
        assert_eq!(
            st,
            want,
            "{method} {path}: status {st}, body {}",
            String::from_utf8_lossy(&b)
        );
        if b.is_empty() {
            return Value::Null;
        }
        serde_json::from_slice(&b).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: body is not JSON ({e}): {}",
                String::from_utf8_lossy(&b)
            )
        })
    }

    /// Asserts an error answer: the status and the JSON error body.
    pub fn error(&self, method: &str, path: &str, body: Option<&Value>, want: u16) -> Value {
        let v = self.json(method, path, body, want);
        assert_eq!(v["code"], want, "{v}");
        assert!(v["kind"].is_string() && v["message"].is_string(), "{v}");
        v
    }

    /// Starts a streaming curl (SSE); its events arrive on the receiver.
    pub fn sse(&self, method: &str, path: &str, body: Option<&Value>, extra: &[&str]) -> Sse {
        let mut c = Command::new("curl");
        c.args(["-sN", "-X", method, "-H", &self.auth()]);
        for e in extra {
            c.arg(e);
        }
        if let Some(b) = body {
            c.args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                &b.to_string(),
            ]);
        }
        c.arg(self.url(path));
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("curl is needed for the REST tests (apt-get install curl)");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut name = String::new();
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_string();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    let v: Value = serde_json::from_str(d).unwrap_or(Value::String(d.into()));
                    if tx.send((std::mem::take(&mut name), v)).is_err() {
                        return;
                    }
                }
            }
        });
        Sse { child, rx }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let pid = self.child.id() as i32;
            // SAFETY: kill(2) on the pid of our own unreaped child.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
            let _ = self.child.wait();
        }
    }
}

/// A streaming curl's events: (event name, JSON data).
pub struct Sse {
    pub child: Child,
    pub rx: mpsc::Receiver<(String, Value)>,
}

impl Sse {
    /// The next event, within `timeout`.
    pub fn next(&self, timeout: Duration) -> (String, Value) {
        self.rx
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no SSE event within {timeout:?}: {e}"))
    }

    /// Events until one named `name` (returned with all before it).
    pub fn until(&self, name: &str, timeout: Duration) -> Vec<(String, Value)> {
        let t0 = Instant::now();
        let mut all = Vec::new();
        loop {
            let left = timeout
                .checked_sub(t0.elapsed())
                .unwrap_or_else(|| panic!("no {name:?} event within {timeout:?}; got {all:?}"));
            let ev = self.rx.recv_timeout(left).unwrap_or_else(|e| {
                panic!("no {name:?} event within {timeout:?} ({e}); got {all:?}")
            });
            let done = ev.0 == name;
            all.push(ev);
            if done {
                return all;
            }
        }
    }

    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs curl; returns (status, body). Extra args come before the URL.
pub fn curl(args: &[String], url: &str) -> (u16, Vec<u8>) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl is needed for the REST tests (apt-get install curl)");
    let mut b = out.stdout;
    let pos = b
        .iter()
        .rposition(|&c| c == b'\n')
        .expect("curl printed the status");
    let code: u16 = String::from_utf8_lossy(&b[pos + 1..])
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "curl {args:?} {url}: no status ({})",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    b.truncate(pos);
    (code, b)
}

pub fn b64d(s: &Value) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s.as_str().expect("base64 string"))
        .expect("valid base64")
}

/// Polls `f` until it returns true, or panics after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}
