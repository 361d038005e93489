//! A small async client of QEMU's machine protocol (QMP) over the VM's Unix
//! socket (`<dir>/qmp.sock`, QEMU started with
//! `-qmp unix:PATH,server=on,wait=off`).
//!
//! Hand-written rather than built on the `qapi` crates: hearth needs a dozen
//! commands, one of which passes a file descriptor (SCM_RIGHTS) — QEMU runs
//! under `-sandbox …,spawn=deny`, so `exec:` migration URIs are impossible and
//! migration streams go through `getfd` + `fd:NAME`.
//!
//! One request at a time per connection (`&mut self`); every command has a
//! timeout, after which the connection is marked unusable (a late answer
//! would be read as the next command's). Asynchronous events are kept in a
//! bounded buffer (oldest dropped) and otherwise skipped. Lines longer than
//! [`MAX_LINE`] are refused.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Interest};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// How long one command may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest QMP line accepted (QEMU's answers here are a few KiB).
pub const MAX_LINE: usize = 1 << 20;
/// Events kept for [`Qmp::take_events`]; older ones are dropped.
pub const MAX_EVENTS: usize = 64;
/// How often [`Qmp::wait_migration`] polls `query-migrate`.
const MIGRATION_POLL: Duration = Duration::from_millis(20);

/// Failures of the QMP client.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to {}", .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("qmp i/o failed during {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("qmp {what} got no answer within {:.1} s", .timeout.as_secs_f64())]
    Timeout { what: String, timeout: Duration },
    #[error("qemu refused {command}: {desc} ({class})")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("qmp protocol error: {0}")]
    Protocol(String),
    #[error("qemu closed the monitor connection")]
    Closed,
    #[error("the qmp connection is unusable after an earlier failure")]
    Poisoned,
    #[error("migration failed: {0}")]
    MigrationFailed(String),
    #[error("migration did not finish within {:.1} s (status {status})", .timeout.as_secs_f64())]
    MigrationTimeout { timeout: Duration, status: String },
}

impl QmpError {
    /// Whether QEMU went away (closed or reset the connection).
    pub fn is_closed(&self) -> bool {
        use std::io::ErrorKind as K;
        match self {
            QmpError::Closed => true,
            QmpError::Io { source, .. } => matches!(
                source.kind(),
                K::ConnectionReset | K::BrokenPipe | K::UnexpectedEof | K::ConnectionAborted
            ),
            _ => false,
        }
    }

    /// QEMU's error class (`GenericError`, `CommandNotFound`, …) when QEMU refused.
    pub fn class(&self) -> Option<&str> {
        match self {
            QmpError::Command { class, .. } => Some(class),
            _ => None,
        }
    }
}

/// What `query-status` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRunState {
    pub running: bool,
    /// QEMU's run state: `running`, `paused`, `inmigrate`, `postmigrate`, …
    pub status: String,
}

/// A QMP connection, past the greeting and `qmp_capabilities`.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    timeout: Duration,
    next_id: u64,
    events: VecDeque<Value>,
    dropped_events: u64,
    poisoned: bool,
    /// `{"qemu": {"major", "minor", "micro"}, "package"}` from the greeting.
    version: Value,
}

impl Qmp {
    /// Connects to `path`, reads the greeting and enters command mode, all
    /// within `timeout` (which also becomes the per-command timeout).
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Self, QmpError> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| QmpError::Timeout {
                what: format!("connect to {}", path.display()),
                timeout,
            })?
            .map_err(|source| QmpError::Connect {
                path: path.into(),
                source,
            })?;
        Self::handshake(stream, timeout).await
    }

    /// Greeting and `qmp_capabilities` on an already connected stream.
    pub async fn handshake(stream: UnixStream, timeout: Duration) -> Result<Self, QmpError> {
        let (r, w) = stream.into_split();
        let mut q = Self {
            reader: BufReader::new(r),
            writer: w,
            timeout,
            next_id: 1,
            events: VecDeque::new(),
            dropped_events: 0,
            poisoned: false,
            version: Value::Null,
        };
        let greeting = q
            .bounded("greeting", async |q: &mut Self| q.read_message().await)
            .await?;
        q.version = greeting
            .get("QMP")
            .and_then(|g| g.get("version"))
            .cloned()
            .ok_or_else(|| QmpError::Protocol(format!("unexpected greeting {greeting}")))?;
        q.execute("qmp_capabilities", None).await?;
        Ok(q)
    }

    /// The version QEMU announced in its greeting.
    pub fn version(&self) -> &Value {
        &self.version
    }

    /// Sets the per-command timeout.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Events received so far (at most [`MAX_EVENTS`], oldest first) and how
    /// many older ones were dropped.
    pub fn take_events(&mut self) -> (Vec<Value>, u64) {
        let dropped = std::mem::take(&mut self.dropped_events);
        (self.events.drain(..).collect(), dropped)
    }

    /// Runs `command` with `arguments`; returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        self.execute_with_fd(command, arguments, None).await
    }

    /// Like [`Qmp::execute`], passing `fd` along with the command bytes
    /// (SCM_RIGHTS), as `getfd` and `add-fd` need.
    async fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Option<Value>,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value, QmpError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut req = json!({ "execute": command, "id": id });
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        let mut line = req.to_string().into_bytes();
        line.push(b'\n');
        let what = command.to_string();
        self.bounded(&what, async |q: &mut Self| {
            q.send(&line, fd, command).await?;
            q.read_answer(id, command).await
        })
        .await
    }

    /// Runs `f` under the timeout; a timeout or an i/o failure poisons the
    /// connection (the stream position is unknown afterwards).
    async fn bounded<T>(
        &mut self,
        what: &str,
        f: impl AsyncFnOnce(&mut Self) -> Result<T, QmpError>,
    ) -> Result<T, QmpError> {
        if self.poisoned {
            return Err(QmpError::Poisoned);
        }
        let timeout = self.timeout;
        match tokio::time::timeout(timeout, f(self)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if !matches!(e, QmpError::Command { .. }) {
                    self.poisoned = true;
                }
                Err(e)
            }
            Err(_) => {
                self.poisoned = true;
                Err(QmpError::Timeout {
                    what: what.to_string(),
                    timeout,
                })
            }
        }
    }

    async fn send(
        &mut self,
        bytes: &[u8],
        fd: Option<BorrowedFd<'_>>,
        command: &str,
    ) -> Result<(), QmpError> {
        let io_err = |source| QmpError::Io {
            what: format!("sending {command}"),
            source,
        };
        let mut sent = 0;
        if let Some(fd) = fd {
            let sock: &UnixStream = self.writer.as_ref();
            let raw = [fd.as_raw_fd()];
            sent = loop {
                sock.writable().await.map_err(io_err)?;
                let r = sock.try_io(Interest::WRITABLE, || {
                    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
                    let iov = [IoSlice::new(bytes)];
                    let cmsg = [ControlMessage::ScmRights(&raw)];
                    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
                        .map_err(std::io::Error::from)
                });
                match r {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(io_err(e)),
                }
            };
        }
        self.writer
            .write_all(&bytes[sent..])
            .await
            .map_err(io_err)?;
        Ok(())
    }

    /// Reads until the answer to request `id`, keeping events on the side and
    /// skipping answers to earlier requests.
    async fn read_answer(&mut self, id: u64, command: &str) -> Result<Value, QmpError> {
        loop {
            let mut msg = self.read_message().await?;
            if msg.get("event").is_some() {
                if self.events.len() == MAX_EVENTS {
                    self.events.pop_front();
                    self.dropped_events += 1;
                }
                self.events.push_back(msg);
                continue;
            }
            if msg.get("id").and_then(Value::as_u64) != Some(id) {
                tracing::debug!(message = %msg, "qmp: skipping an answer to another request");
                continue;
            }
            if let Some(v) = msg.get_mut("return") {
                return Ok(v.take());
            }
            if let Some(e) = msg.get("error") {
                let field = |k: &str| {
                    e.get(k)
                        .and_then(Value::as_str)
                        .unwrap_or("(none)")
                        .to_string()
                };
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(QmpError::Protocol(format!(
                "answer to {command} has neither return nor error: {msg}"
            )));
        }
    }

    /// One JSON message (one line, at most [`MAX_LINE`] bytes).
    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = Vec::new();
        loop {
            let buf = self
                .reader
                .fill_buf()
                .await
                .map_err(|source| QmpError::Io {
                    what: "reading".into(),
                    source,
                })?;
            if buf.is_empty() {
                return Err(QmpError::Closed);
            }
            let (take, done) = match buf.iter().position(|&b| b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len(), false),
            };
            if line.len() + take > MAX_LINE {
                return Err(QmpError::Protocol(format!(
                    "a qmp line is longer than {MAX_LINE} bytes"
                )));
            }
            line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if done {
                break;
            }
        }
        serde_json::from_slice(&line).map_err(|e| {
            QmpError::Protocol(format!(
                "bad json {:?}: {e}",
                String::from_utf8_lossy(&line[..line.len().min(200)])
            ))
        })
    }

    /// Pauses the guest's vCPUs (idempotent: a paused VM stays paused).
    pub async fn stop(&mut self) -> Result<(), QmpError> {
        self.execute("stop", None).await.map(drop)
    }

    /// Resumes the vCPUs (idempotent).
    pub async fn cont(&mut self) -> Result<(), QmpError> {
        self.execute("cont", None).await.map(drop)
    }

    pub async fn query_status(&mut self) -> Result<VmRunState, QmpError> {
        let v = self.execute("query-status", None).await?;
        Ok(VmRunState {
            running: v
                .get("running")
                .and_then(Value::as_bool)
                .ok_or_else(|| QmpError::Protocol(format!("query-status without running: {v}")))?,
            status: v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
        })
    }

    /// Hands `fd` to QEMU under `name` (then usable as `fd:NAME`).
    pub async fn getfd(&mut self, name: &str, fd: BorrowedFd<'_>) -> Result<(), QmpError> {
        self.execute_with_fd("getfd", Some(json!({ "fdname": name })), Some(fd))
            .await
            .map(drop)
    }

    /// Closes a descriptor given with [`Qmp::getfd`] that no command used.
    pub async fn closefd(&mut self, name: &str) -> Result<(), QmpError> {
        self.execute("closefd", Some(json!({ "fdname": name })))
            .await
            .map(drop)
    }

    pub async fn migrate_set_capabilities(
        &mut self,
        caps: &[(&str, bool)],
    ) -> Result<(), QmpError> {
        let list: Vec<Value> = caps
            .iter()
            .map(|(c, on)| json!({ "capability": c, "state": on }))
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": list })),
        )
        .await
        .map(drop)
    }

    /// Starts an outgoing migration to `uri` (`fd:NAME`); see [`Qmp::wait_migration`].
    pub async fn migrate(&mut self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// Starts loading an incoming migration (QEMU started with `-incoming defer`).
    pub async fn migrate_incoming(&mut self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate-incoming", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// Polls `query-migrate` until the migration completed or failed (then
    /// the error carries QEMU's `error-desc`), within `timeout`. On the
    /// destination, a stream that fails to load ends the QEMU process with
    /// the reason in its log, so a closed connection is reported as that.
    pub async fn wait_migration(&mut self, timeout: Duration) -> Result<(), QmpError> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = match self.execute("query-migrate", None).await {
                Ok(v) => v,
                Err(e) if e.is_closed() => {
                    return Err(QmpError::MigrationFailed(
                        "qemu exited during the migration (a destination that cannot load \
                         the stream exits; its log says why)"
                            .into(),
                    ))
                }
                Err(e) => return Err(e),
            };
            let status = v
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("none")
                .to_string();
            match status.as_str() {
                "completed" => return Ok(()),
                "failed" | "cancelled" => {
                    let desc = v
                        .get("error-desc")
                        .and_then(Value::as_str)
                        .unwrap_or("qemu gave no reason");
                    return Err(QmpError::MigrationFailed(format!("{status}: {desc}")));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(QmpError::MigrationTimeout { timeout, status });
            }
            tokio::time::sleep(MIGRATION_POLL).await;
        }
    }

    /// Asks QEMU to exit at once (no guest shutdown). QEMU may close the
    /// connection before answering; that counts as done.
    pub async fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_closed() => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    /// A scripted peer: sends the greeting, then answers each request line
    /// with `answer(request)` (a list of lines to send).
    fn peer(
        answer: impl Fn(&Value) -> Vec<String> + Send + 'static,
    ) -> (UnixStream, tokio::task::JoinHandle<Vec<Value>>) {
        let (a, b) = UnixStream::pair().unwrap();
        let task = tokio::spawn(async move {
            let (r, mut w) = b.into_split();
            w.write_all(
                b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n",
            )
            .await
            .unwrap();
            let mut lines = BufReader::new(r).lines();
            let mut seen = Vec::new();
            while let Ok(Some(l)) = lines.next_line().await {
                let req: Value = serde_json::from_str(&l).unwrap();
                for out in answer(&req) {
                    if w.write_all(out.as_bytes()).await.is_err() {
                        return seen;
                    }
                }
                seen.push(req);
            }
            seen
        });
        (a, task)
    }

    fn ret(req: &Value, v: &str) -> String {
        format!("{{\"return\": {v}, \"id\": {}}}\r\n", req["id"])
    }

    #[tokio::test]
    async fn events_are_kept_aside_and_errors_carry_class_and_desc() {
        let (s, task) = peer(|req| {
            match req["execute"].as_str().unwrap() {
            "qmp_capabilities" => vec![ret(req, "{}")],
            "stop" => vec![
                "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n"
                    .into(),
                ret(req, "{}"),
            ],
            "query-status" => vec![ret(
                req,
                "{\"status\": \"paused\", \"singlestep\": false, \"running\": false}",
            )],
            _ => vec![format!(
                "{{\"error\": {{\"class\": \"CommandNotFound\", \"desc\": \"The command nope has not been found\"}}, \"id\": {}}}\r\n",
                req["id"]
            )],
        }
        });
        let mut q = Qmp::handshake(s, Duration::from_secs(5)).await.unwrap();
        assert_eq!(q.version()["qemu"]["major"], 7);
        q.stop().await.unwrap();
        let st = q.query_status().await.unwrap();
        assert_eq!(
            st,
            VmRunState {
                running: false,
                status: "paused".into()
            }
        );
        let e = q.execute("nope", None).await.unwrap_err();
        assert_eq!(e.class(), Some("CommandNotFound"));
        assert!(e.to_string().contains("has not been found"), "{e}");
        // A refused command leaves the connection usable.
        q.query_status().await.unwrap();
        let (events, dropped) = q.take_events();
        assert_eq!((events.len(), dropped), (1, 0));
        assert_eq!(events[0]["event"], "STOP");
        drop(q);
        let seen = task.await.unwrap();
        assert_eq!(seen[0]["execute"], "qmp_capabilities");
    }

    #[tokio::test]
    async fn a_silent_peer_times_out_and_poisons_the_connection() {
        let (s, _task) = peer(|req| match req["execute"].as_str().unwrap() {
            "qmp_capabilities" => vec![ret(req, "{}")],
            _ => Vec::new(),
        });
        let mut q = Qmp::handshake(s, Duration::from_millis(200)).await.unwrap();
        let e = q.stop().await.unwrap_err();
        assert!(matches!(e, QmpError::Timeout { .. }), "{e}");
        assert!(e.to_string().contains("stop"), "{e}");
        assert!(matches!(q.cont().await.unwrap_err(), QmpError::Poisoned));
    }

    #[tokio::test]
    async fn event_floods_are_bounded_and_overlong_lines_refused() {
        let (s, _task) = peer(|req| match req["execute"].as_str().unwrap() {
            "qmp_capabilities" => vec![ret(req, "{}")],
            "stop" => {
                let mut v: Vec<String> = (0..200)
                    .map(|i| format!("{{\"event\": \"E{i}\"}}\r\n"))
                    .collect();
                v.push(ret(req, "{}"));
                v
            }
            _ => vec![format!("{{\"return\": \"{}\"", "x".repeat(MAX_LINE + 10))],
        });
        let mut q = Qmp::handshake(s, Duration::from_secs(5)).await.unwrap();
        q.stop().await.unwrap();
        let (events, dropped) = q.take_events();
        assert_eq!(
            (events.len(), dropped),
            (MAX_EVENTS, 200 - MAX_EVENTS as u64)
        );
        assert_eq!(events.last().unwrap()["event"], "E199");
        let e = q.execute("big", None).await.unwrap_err();
        assert!(e.to_string().contains("longer than"), "{e}");
    }

    #[tokio::test]
    async fn a_bad_greeting_is_a_protocol_error() {
        let (a, mut b) = UnixStream::pair().unwrap();
        b.write_all(b"{\"hello\": 1}\n").await.unwrap();
        let e = Qmp::handshake(a, Duration::from_secs(2)).await.unwrap_err();
        assert!(e.to_string().contains("unexpected greeting"), "{e}");
    }
}
