//! Shared helpers for the agent-tier tests: start the real `hearth-guest agent`
//! on a Unix socket in a temp dir, connect the real client, inspect /proc.
//!
//! An agent counts as started once it answers (a connection gets `READY`),
//! never because its socket file exists.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use hearth_client::{Client, ConnectOptions, Endpoint};
use hearth_proto::{Frame, FrameDecoder, Message};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// A running agent process; killed (by pid) and reaped on drop.
pub struct Agent {
    child: Child,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
}

impl Agent {
    pub fn start() -> Agent {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Agent {
        let dir = tempfile::tempdir().expect("temp dir");
        let sock = dir.path().join("a.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_hearth-guest"))
            .arg("agent")
            .arg("--unix-socket")
            .arg(&sock)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("cannot start hearth-guest");
        let mut a = Agent { child, dir, sock };
        a.wait_ready(Duration::from_secs(10));
        a
    }

    /// Waits until a connection to the agent gets `READY`, under `limit`.
    pub fn wait_ready(&mut self, limit: Duration) {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                panic!("hearth-guest agent exited before answering: {st}");
            }
            let last = match read_ready(&self.sock) {
                Ok(()) => return,
                Err(e) => e.to_string(),
            };
            assert!(
                t0.elapsed() < limit,
                "agent on {} did not answer within {limit:?}: {last}",
                self.sock.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint::Unix(self.sock.clone())
    }

    pub fn path(&self, name: &str) -> String {
        self.dir
            .path()
            .join(name)
            .to_str()
            .expect("utf-8 temp path")
            .to_string()
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.endpoint(), &opts())
            .await
            .expect("connect to the agent")
    }

    /// Panics unless the agent process is alive and a NEW connection answers a ping.
    pub async fn assert_serves_new_connection(&mut self) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("the agent died: {st}");
        }
        let c = self.client().await;
        c.ping().await.expect("ping on a new connection");
    }

    /// The agent's resident set size in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits (bounded) for the agent process to exit; its status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends `sig` to the agent process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on the pid of our own child, which is not reaped
        // yet (the Child is still ours), so the pid cannot be reused.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.child.id());
    }
}

/// Whether `pid` names a live (non-zombie) process.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

/// Waits up to `limit` for `pid` to be gone; whether it went.
pub async fn gone_within(pid: u32, limit: Duration) -> bool {
    let t0 = Instant::now();
    while alive(pid) {
        if t0.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    true
}

/// Waits up to `limit` for `path` to hold a number (a pid a workload wrote).
pub async fn read_pid_file(path: &Path, limit: Duration) -> u32 {
    let t0 = Instant::now();
    loop {
        if let Some(pid) = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return pid;
        }
        assert!(
            t0.elapsed() < limit,
            "{} got no pid within {limit:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to `sock` and reads one frame, which must be `READY`.
pub fn read_ready(sock: &Path) -> std::io::Result<()> {
    let mut s = std::os::unix::net::UnixStream::connect(sock)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = [0u8; 9];
    s.read_exact(&mut head)?;
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if head[4] != 0x00 || !(5..=64 * 1024).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "first frame is type {:#04x}, length {len}, not READY",
                head[4]
            ),
        ));
    }
    let mut payload = vec![0u8; len - 5];
    s.read_exact(&mut payload)?;
    Ok(())
}

pub fn opts() -> ConnectOptions {
    ConnectOptions {
        timeout: Duration::from_secs(10),
        ..Default::default()
    }
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc status")
}

/// Live (non-zombie) processes whose process group is `pgid`.
pub fn live_processes_in_group(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for ent in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = ent.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised comm: state ppid pgrp ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.len() > 2 && f[0] != "Z" && f[2] == pgid.to_string() {
            out.push(pid);
        }
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift), so both sides can be checked.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn write_host_file(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write host file");
}

/// A raw connection that speaks frames by hand (for malformed input).
pub struct Raw {
    pub s: UnixStream,
    buf: BytesMut,
    /// The agent's READY.
    pub ready: hearth_proto::pb::Ready,
}

impl Raw {
    /// Connects and reads READY.
    pub async fn connect(agent: &Agent) -> Raw {
        let s = UnixStream::connect(&agent.sock).await.expect("raw connect");
        let mut r = Raw {
            s,
            buf: BytesMut::new(),
            ready: Default::default(),
        };
        let f = r.frame().await.expect("READY frame");
        assert_eq!(
            (f.kind, f.seq),
            (0x00, 0),
            "first frame must be READY seq 0"
        );
        match Message::from_frame(&f) {
            Ok(Message::Ready(ready)) => r.ready = ready,
            other => panic!("READY does not decode: {other:?}"),
        }
        r
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.s.write_all(bytes).await.expect("raw write");
    }

    pub async fn send_msg(&mut self, m: Message, seq: u32) {
        let b = m.into_frame(seq).to_bytes(u32::MAX).expect("encode");
        self.send(&b).await;
    }

    /// The next frame, or `None` at EOF. Panics after 10 s.
    pub async fn frame(&mut self) -> Option<Frame> {
        self.frame_within(Duration::from_secs(10))
            .await
            .expect("no frame or EOF from the agent within 10 s")
    }

    /// The next frame as a decoded message with its seq. Panics after 10 s.
    pub async fn msg(&mut self) -> (u32, Message) {
        let f = self.frame().await.expect("a frame, not EOF");
        (f.seq, Message::from_frame(&f).expect("agent frame decodes"))
    }

    /// The next frame (`Some(None)` at EOF), or `None` if nothing came
    /// within `wait`.
    pub async fn frame_within(&mut self, wait: Duration) -> Option<Option<Frame>> {
        let dec = FrameDecoder::new(u32::MAX);
        tokio::time::timeout(wait, async {
            loop {
                if let Some(f) = dec.decode(&mut self.buf).expect("agent sent a bad frame") {
                    return Some(f);
                }
                match self.s.read_buf(&mut self.buf).await {
                    Ok(0) => return None,
                    Ok(_) => {}
                    // A reset after the agent closed on us counts as EOF.
                    Err(_) => return None,
                }
            }
        })
        .await
        .ok()
    }

    /// Decodes the next frame as an ERROR and returns (seq, code, errno).
    pub async fn expect_error(&mut self) -> (u32, hearth_proto::pb::ErrorCode, i32) {
        let f = self
            .frame()
            .await
            .expect("expected an ERROR frame, got EOF");
        match Message::from_frame(&f) {
            Ok(Message::Error(e)) => (
                f.seq,
                hearth_proto::pb::ErrorCode::try_from(e.code).expect("known error code"),
                e.errno,
            ),
            other => panic!("expected ERROR, got {other:?}"),
        }
    }

    /// Asserts the agent closes the connection (after any frames it still sends).
    pub async fn expect_eof(&mut self) {
        for _ in 0..16 {
            if self.frame().await.is_none() {
                return;
            }
        }
        panic!("the agent kept the connection open");
    }
}
