//! Connection-level tests: the real agent connection code over a socket pair,
//! spoken to with the real codec.

use std::time::Duration;

use bytes::BytesMut;
use hearth_proto::{pb, Frame, FrameDecoder, Message, DEFAULT_MAX_FRAME_LEN};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::UnixStream;

use super::{all_capabilities, conn, Shared};

const WAIT: Duration = Duration::from_secs(20);

struct Host {
    rd: ReadHalf<UnixStream>,
    wr: WriteHalf<UnixStream>,
    buf: BytesMut,
    dec: FrameDecoder,
}

impl Host {
    async fn connect() -> Host {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let shared = Shared::new(pb::Ready {
            protocol_version: 1,
            agent_version: "test".into(),
            capabilities: all_capabilities(),
            boot: None,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            role: "agent".into(),
            input_window: 0,
        });
        tokio::spawn(conn::serve(b, shared));
        let (rd, wr) = tokio::io::split(a);
        let mut h = Host {
            rd,
            wr,
            buf: BytesMut::new(),
            dec: FrameDecoder::default(),
        };
        let (seq, m) = h.recv().await;
        assert!(
            matches!(m, Message::Ready(ref r) if r.protocol_version == 1),
            "{m:?}"
        );
        assert_eq!(seq, 0);
        h
    }

    async fn send(&mut self, seq: u32, m: Message) {
        self.send_frame(m.into_frame(seq)).await;
    }

    async fn send_frame(&mut self, f: Frame) {
        let b = f.to_bytes(DEFAULT_MAX_FRAME_LEN).expect("encode");
        self.wr.write_all(&b).await.expect("write to agent");
    }

    async fn try_recv(&mut self, wait: Duration) -> Option<(u32, Message)> {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(f) = self.dec.decode(&mut self.buf).expect("agent framing") {
                    return Some((f.seq, Message::from_frame(&f).expect("agent message")));
                }
                if self
                    .rd
                    .read_buf(&mut self.buf)
                    .await
                    .expect("read from agent")
                    == 0
                {
                    return None;
                }
            }
        })
        .await
        .ok()
        .flatten()
    }

    async fn recv(&mut self) -> (u32, Message) {
        self.try_recv(WAIT).await.expect("agent answered in time")
    }

    /// Collects a session's output until its EXEC_EXIT, granting credit as it goes.
    async fn collect(&mut self, seq: u32, grant: bool) -> (Vec<u8>, Vec<u8>, pb::ExecExit) {
        self.collect_from(seq, grant, 0).await
    }

    /// As `collect`, when `first` stdout chunks were already received.
    async fn collect_from(
        &mut self,
        seq: u32,
        grant: bool,
        first: u64,
    ) -> (Vec<u8>, Vec<u8>, pb::ExecExit) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (mut io, mut ie) = (first, 0);
        loop {
            let (s, m) = self.recv().await;
            assert_eq!(s, seq, "{m:?}");
            match m {
                Message::ExecStarted(_) => {}
                Message::ExecStdout(c) => {
                    assert_eq!(c.index, io, "stdout chunk indexes have no gaps");
                    io += 1;
                    out.extend_from_slice(&c.data);
                    if grant {
                        self.send(
                            seq,
                            Message::WindowUpdate(pb::WindowUpdate {
                                bytes: c.data.len() as u32,
                            }),
                        )
                        .await;
                    }
                }
                Message::ExecStderr(c) => {
                    assert_eq!(c.index, ie);
                    ie += 1;
                    err.extend_from_slice(&c.data);
                    if grant {
                        self.send(
                            seq,
                            Message::WindowUpdate(pb::WindowUpdate {
                                bytes: c.data.len() as u32,
                            }),
                        )
                        .await;
                    }
                }
                Message::ExecExit(x) => return (out, err, x),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
}

fn start(argv: &[&str]) -> pb::ExecStart {
    pb::ExecStart {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn kind(x: &pb::ExecExit) -> pb::exec_outcome::Kind {
    x.outcome.clone().and_then(|o| o.kind).expect("outcome set")
}

#[tokio::test]
async fn ping_is_answered_with_nonce() {
    let mut h = Host::connect().await;
    h.send(5, Message::Ping(pb::Ping { nonce: 77 })).await;
    let (seq, m) = h.recv().await;
    assert_eq!(seq, 5);
    assert!(matches!(m, Message::Pong(p) if p.nonce == 77));
}

#[tokio::test]
async fn exec_streams_both_outputs_and_exit_code() {
    let mut h = Host::connect().await;
    h.send(
        1,
        Message::ExecStart(start(&["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])),
    )
    .await;
    let (out, err, x) = h.collect(1, true).await;
    assert_eq!((&out[..], &err[..]), (&b"out\n"[..], &b"err\n"[..]));
    assert_eq!(
        kind(&x),
        pb::exec_outcome::Kind::Exited(pb::Exited { code: 3 })
    );
    assert_eq!((x.stdout_bytes, x.stderr_bytes), (4, 4));
}

#[tokio::test]
async fn missing_program_sends_only_never_started() {
    let mut h = Host::connect().await;
    h.send(2, Message::ExecStart(start(&["/nonexistent/program"])))
        .await;
    let (seq, m) = h.recv().await;
    assert_eq!(seq, 2);
    let Message::ExecExit(x) = m else {
        panic!("expected EXEC_EXIT first, got {m:?}")
    };
    let pb::exec_outcome::Kind::NeverStarted(ns) = kind(&x) else {
        panic!("{x:?}")
    };
    assert_eq!(
        (ns.kind, ns.errno),
        (pb::SpawnErrorKind::NotFound as i32, libc::ENOENT)
    );
    let mut bad_cwd = start(&["/bin/true"]);
    bad_cwd.cwd = "/nonexistent/dir".into();
    h.send(3, Message::ExecStart(bad_cwd)).await;
    let (_, Message::ExecExit(x)) = h.recv().await else {
        panic!("expected EXEC_EXIT")
    };
    let pb::exec_outcome::Kind::NeverStarted(ns) = kind(&x) else {
        panic!("{x:?}")
    };
    assert_eq!(ns.kind, pb::SpawnErrorKind::BadCwd as i32);
}

#[tokio::test]
async fn output_stops_at_the_window_until_credit_returns() {
    let mut h = Host::connect().await;
    let mut req = start(&["/bin/sh", "-c", "head -c 1000000 /dev/zero"]);
    req.window = 65536;
    h.send(4, Message::ExecStart(req)).await;
    let (mut got, mut chunks) = (0usize, 0u64);
    while got < 65536 {
        match h.recv().await.1 {
            Message::ExecStarted(_) => {}
            Message::ExecStdout(c) => {
                got += c.data.len();
                chunks += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, 65536, "never more than the window");
    let extra = h.try_recv(Duration::from_millis(300)).await;
    assert!(extra.is_none(), "nothing beyond the window: {extra:?}");
    h.send(
        4,
        Message::WindowUpdate(pb::WindowUpdate { bytes: 2_000_000 }),
    )
    .await;
    let (out, _, x) = h.collect_from(4, false, chunks).await;
    assert_eq!(got + out.len(), 1_000_000);
    assert_eq!(x.stdout_bytes, 1_000_000);
}

#[tokio::test]
async fn timeout_kills_grandchildren() {
    let mut h = Host::connect().await;
    let mut req = start(&["/bin/sh", "-c", "sleep 1000 & echo $!; sleep 1000"]);
    req.timeout_ms = 300;
    h.send(6, Message::ExecStart(req)).await;
    let t = std::time::Instant::now();
    let (out, _, x) = h.collect(6, true).await;
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        matches!(kind(&x), pb::exec_outcome::Kind::TimedOut(_)),
        "{x:?}"
    );
    let pid: i32 = String::from_utf8_lossy(&out)
        .trim()
        .parse()
        .expect("grandchild pid");
    std::thread::sleep(Duration::from_millis(200));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or("gone");
    assert!(
        state == "gone" || state == "Z",
        "grandchild {pid} still running: {state}"
    );
}

#[tokio::test]
async fn stdin_signal_and_sigpipe_default() {
    let mut h = Host::connect().await;
    let mut req = start(&["/bin/cat"]);
    req.stdin = b"first ".to_vec().into();
    req.stdin_open = true;
    h.send(7, Message::ExecStart(req)).await;
    h.send(
        7,
        Message::ExecStdin(pb::StdinData {
            data: b"second".to_vec().into(),
            eof: true,
        }),
    )
    .await;
    let (out, _, x) = h.collect(7, true).await;
    assert_eq!(out, b"first second");
    assert_eq!(
        kind(&x),
        pb::exec_outcome::Kind::Exited(pb::Exited { code: 0 })
    );

    h.send(8, Message::ExecStart(start(&["/bin/sleep", "1000"])))
        .await;
    let (_, m) = h.recv().await;
    assert!(matches!(m, Message::ExecStarted(_)), "{m:?}");
    h.send(
        8,
        Message::ExecSignal(pb::ExecSignal {
            signal: libc::SIGKILL,
        }),
    )
    .await;
    let (_, _, x) = h.collect(8, true).await;
    assert_eq!(
        kind(&x),
        pb::exec_outcome::Kind::Killed(pb::Killed {
            signal: 9,
            core_dumped: false
        })
    );

    let mut req = start(&["/bin/sh", "-c", "yes | head -n 1"]);
    req.timeout_ms = 10_000;
    h.send(9, Message::ExecStart(req)).await;
    let (out, _, x) = h.collect(9, true).await;
    assert_eq!(out, b"y\n");
    assert_eq!(
        kind(&x),
        pb::exec_outcome::Kind::Exited(pb::Exited { code: 0 })
    );
}

#[tokio::test]
async fn oneshot_exec_collects_and_truncates() {
    let mut h = Host::connect().await;
    let req = pb::Exec {
        argv: vec![
            "/bin/sh".into(),
            "-c".into(),
            "head -c 5000 /dev/zero; env".into(),
        ],
        env: vec![pb::EnvVar {
            key: "FOO".into(),
            value: "bar".into(),
        }],
        max_stdout_bytes: 1000,
        ..Default::default()
    };
    h.send(10, Message::Exec(req)).await;
    let (seq, Message::ExecResult(r)) = h.recv().await else {
        panic!("expected EXEC_RESULT")
    };
    assert_eq!(seq, 10);
    assert_eq!((r.stdout.len(), r.stdout_truncated), (1000, true));
    let req = pb::Exec {
        argv: vec!["/usr/bin/env".into()],
        env: vec![pb::EnvVar {
            key: "FOO".into(),
            value: "bar".into(),
        }],
        ..Default::default()
    };
    h.send(11, Message::Exec(req)).await;
    let (_, Message::ExecResult(r)) = h.recv().await else {
        panic!("expected EXEC_RESULT")
    };
    let mut lines: Vec<_> = String::from_utf8_lossy(&r.stdout)
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "FOO=bar",
            "HOME=/root",
            "LANG=C.UTF-8",
            &format!("PATH={}", super::user::DEFAULT_PATH)
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|l| if l.starts_with("HOME=") {
            format!(
                "HOME={}",
                std::env::var("HOME").unwrap_or_else(|_| "/root".into())
            )
        } else {
            l
        })
        .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn bad_requests_keep_the_connection_and_bad_frames_close_it() {
    let mut h = Host::connect().await;
    h.send_frame(Frame::new(0x7e, 12, bytes::Bytes::new()))
        .await;
    let (seq, Message::Error(e)) = h.recv().await else {
        panic!("expected ERROR")
    };
    assert_eq!((seq, e.code), (12, pb::ErrorCode::UnknownType as i32));
    h.send_frame(Frame::new(
        0x03,
        13,
        bytes::Bytes::from_static(&[0xff, 0xff]),
    ))
    .await;
    let (seq, Message::Error(e)) = h.recv().await else {
        panic!("expected ERROR")
    };
    assert_eq!((seq, e.code), (13, pb::ErrorCode::Decode as i32));
    h.send(14, Message::Ping(pb::Ping { nonce: 1 })).await;
    assert!(matches!(h.recv().await, (14, Message::Pong(_))));
    h.wr.write_all(&[0xff, 0xff, 0xff, 0xff, 1]).await.unwrap();
    let (seq, Message::Error(e)) = h.recv().await else {
        panic!("expected ERROR")
    };
    assert_eq!((seq, e.code), (0, pb::ErrorCode::BadFrame as i32));
    assert!(
        h.try_recv(WAIT).await.is_none(),
        "connection closed after a framing error"
    );
}

#[tokio::test]
async fn chunked_write_then_windowed_read_back() {
    let dir = std::env::temp_dir().join(format!("hearth-conn-{}", std::process::id()));
    let path = dir.join("deep/file.bin");
    let p = path.to_str().unwrap().to_string();
    let mut h = Host::connect().await;
    h.send(
        20,
        Message::FileWrite(pb::FileWrite {
            path: p.clone(),
            create_parents: true,
            ..Default::default()
        }),
    )
    .await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    for (i, c) in data.chunks(100_000).enumerate() {
        h.send(
            20,
            Message::FileData(pb::FileData {
                data: c.to_vec().into(),
                eof: i == 2,
            }),
        )
        .await;
    }
    let (_, m) = h.recv().await;
    assert!(
        matches!(m, Message::WriteFileResult(ref r) if r.bytes_written == 300_000),
        "{m:?}"
    );
    h.send(
        21,
        Message::FileRead(pb::FileRead {
            path: p.clone(),
            window: 50_000,
            ..Default::default()
        }),
    )
    .await;
    let mut back = Vec::new();
    loop {
        let (seq, m) = h.recv().await;
        assert_eq!(seq, 21);
        let Message::FileData(d) = m else {
            panic!("{m:?}")
        };
        back.extend_from_slice(&d.data);
        if d.eof {
            break;
        }
        h.send(
            21,
            Message::WindowUpdate(pb::WindowUpdate {
                bytes: d.data.len() as u32,
            }),
        )
        .await;
    }
    assert_eq!(back, data);
    h.send(
        22,
        Message::Stat(pb::Stat {
            path: p.clone(),
            follow_symlinks: false,
        }),
    )
    .await;
    let (_, Message::StatResult(s)) = h.recv().await else {
        panic!("expected STAT_RESULT")
    };
    assert_eq!(s.info.map(|i| (i.size, i.mode)), Some((300_000, 0o644)));
    h.send(
        23,
        Message::FileRead(pb::FileRead {
            path: format!("{p}.missing"),
            ..Default::default()
        }),
    )
    .await;
    let (_, Message::Error(e)) = h.recv().await else {
        panic!("expected ERROR")
    };
    assert_eq!(e.code, pb::ErrorCode::NotFound as i32);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn ping_is_not_starved_by_an_output_flood() {
    let mut h = Host::connect().await;
    let mut req = start(&["/bin/cat", "/dev/zero"]);
    req.window = u32::MAX;
    h.send(30, Message::ExecStart(req)).await;
    let mut flood = 0usize;
    while flood < 4 << 20 {
        if let (30, Message::ExecStdout(c)) = h.recv().await {
            flood += c.data.len();
        }
    }
    h.send(31, Message::Ping(pb::Ping { nonce: 9 })).await;
    let mut behind = 0usize;
    loop {
        match h.recv().await {
            (31, Message::Pong(p)) => {
                assert_eq!(p.nonce, 9);
                break;
            }
            (30, Message::ExecStdout(c)) => behind += c.data.len(),
            other => panic!("unexpected {other:?}"),
        }
    }
    // Pongs jump the output queue: at most what was already in flight precedes it.
    assert!(
        behind <= 16 << 20,
        "{behind} bytes of output came before the pong"
    );
    h.send(
        30,
        Message::ExecSignal(pb::ExecSignal {
            signal: libc::SIGKILL,
        }),
    )
    .await;
}

/// Whether `pid` is a live (non-zombie) process.
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().to_string()))
        .is_some_and(|r| !r.starts_with('Z'))
}

#[tokio::test]
async fn sessions_blocked_on_credit_end_when_the_host_disconnects() {
    let mut h = Host::connect().await;
    let mut req = start(&["/bin/sh", "-c", "head -c 5000000 /dev/zero; sleep 1000"]);
    req.window = 1;
    h.send(40, Message::ExecStart(req)).await;
    let (_, m) = h.recv().await;
    let Message::ExecStarted(s) = m else {
        panic!("expected EXEC_STARTED, got {m:?}")
    };
    drop(h);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(s.pid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived its connection"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn oneshot(h: &mut Host, seq: u32, req: pb::Exec) -> pb::ExecResult {
    h.send(seq, Message::Exec(req)).await;
    match h.recv().await {
        (s, Message::ExecResult(r)) if s == seq => r,
        other => panic!("expected EXEC_RESULT for {seq}, got {other:?}"),
    }
}

fn sh(script: &str) -> pb::Exec {
    pb::Exec {
        argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn child_gets_own_session_default_signals_and_oom_score() {
    // Raise our own score (always allowed) so that inheriting it would show.
    std::fs::write("/proc/self/oom_score_adj", "100").expect("raising oom_score_adj");
    let mut h = Host::connect().await;
    let r = oneshot(
        &mut h,
        50,
        sh("cat /proc/self/oom_score_adj; grep -E '^Sig(Blk|Ign)' /proc/self/status; echo $$; cut -d' ' -f6 /proc/$$/stat"),
    )
    .await;
    let out = String::from_utf8_lossy(&r.stdout).into_owned();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}");
    assert_eq!(lines[0], "0", "oom_score_adj reset");
    assert_eq!(
        lines[1].split_whitespace().nth(1),
        Some("0000000000000000"),
        "{out}"
    );
    assert_eq!(
        lines[2].split_whitespace().nth(1),
        Some("0000000000000000"),
        "{out}"
    );
    assert_eq!(lines[3], lines[4], "the child leads its own session");
}

#[tokio::test]
async fn user_by_name_or_refused() {
    let mut h = Host::connect().await;
    let mut req = sh("id -u; id -g");
    req.user = Some(pb::User {
        uid: None,
        gid: None,
        name: "nobody".into(),
    });
    let r = oneshot(&mut h, 60, req).await;
    let kind = r.outcome.and_then(|o| o.kind).expect("outcome");
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert_eq!(kind, pb::exec_outcome::Kind::Exited(pb::Exited { code: 0 }));
        let nobody = super::user::parse_passwd(&std::fs::read_to_string("/etc/passwd").unwrap())
            .into_iter()
            .find(|e| e.name == "nobody")
            .expect("nobody in /etc/passwd");
        assert_eq!(
            String::from_utf8_lossy(&r.stdout),
            format!("{}\n{}\n", nobody.uid, nobody.gid)
        );
    } else {
        let pb::exec_outcome::Kind::NeverStarted(ns) = kind else {
            panic!("{kind:?}")
        };
        assert_eq!(ns.kind, pb::SpawnErrorKind::PermissionDenied as i32);
    }
    let mut req = sh("true");
    req.user = Some(pb::User {
        uid: None,
        gid: None,
        name: "no-such-user-hearth".into(),
    });
    let r = oneshot(&mut h, 61, req).await;
    let Some(pb::exec_outcome::Kind::NeverStarted(ns)) = r.outcome.and_then(|o| o.kind) else {
        panic!("unknown user must never start")
    };
    assert_eq!(ns.kind, pb::SpawnErrorKind::BadUser as i32);
}

#[tokio::test]
async fn oneshot_timeout_reports_timed_out_with_term() {
    let mut h = Host::connect().await;
    let mut req = sh("echo before; sleep 100");
    req.timeout_ms = 200;
    let r = oneshot(&mut h, 70, req).await;
    assert_eq!(&r.stdout[..], b"before\n");
    assert_eq!(
        r.outcome.and_then(|o| o.kind),
        Some(pb::exec_outcome::Kind::TimedOut(pb::TimedOut {
            signal: libc::SIGTERM
        }))
    );
}
