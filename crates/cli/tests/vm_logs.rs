//! VM tier: `hearth vm logs` — the console as the guest writes it (followed,
//! tailed, by time), the agent's own log, and a console flood that stays
//! within its bound on the host disk.

mod vm_common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use vm_common::{stderr, vm_lock, Env};

#[test]
fn follow_shows_a_console_line_written_after_it_started() {
    let _g = vm_lock();
    let env = Env::new();
    let id = env.create(&[]);
    let mut child = env
        .cmd(&["vm", "logs", "--vm", &id, "--follow", "--tail", "0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vm logs --follow");
    let (tx, rx) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // Give the follower a moment to be running, then write from the guest.
    std::thread::sleep(Duration::from_millis(500));
    let mark = format!("hearth-follow-mark-{}", std::process::id());
    env.sh(&id, &format!("echo {mark} > /dev/console"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let found = loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains(&mark) => break l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("{mark} did not show within 30 s; the follow printed {seen:?}"),
        }
    };
    assert_eq!(
        found.trim(),
        mark,
        "the line is printed as written, without the stamp"
    );
    // SAFETY: kill(2) on the child we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let st = child.wait().unwrap();
    assert_eq!(
        st.code(),
        Some(128 + libc::SIGTERM),
        "follow ends on SIGTERM"
    );

    // The same line, stamped, in a snapshot; --since in the future shows nothing.
    let t = env.ok(&["vm", "logs", "--vm", &id, "--timestamps", "--since", "5m"]);
    let line = t
        .lines()
        .find(|l| l.contains(&mark))
        .expect("mark in the snapshot");
    assert!(
        line.starts_with("20") && line.as_bytes()[23] == b'Z',
        "stamped: {line}"
    );
    assert!(!t.contains("hearth-follow-mark-0"), "sanity");
    let later = env.ok(&["vm", "logs", "--vm", &id, "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(later, "", "nothing logged after 2999");
    let tail = env.ok(&["vm", "logs", "--vm", &id, "--tail", "3"]);
    assert_eq!(tail.lines().count(), 3, "--tail 3: {tail:?}");

    // The agent's own log: its listening line, with a level, as JSON too.
    let agent = env.ok(&["vm", "logs", "--vm", &id, "--source", "agent", "--json"]);
    let lines: Vec<serde_json::Value> = agent
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let listening = lines
        .iter()
        .find(|l| l["text"].as_str().unwrap_or("").contains("agent listening"))
        .unwrap_or_else(|| panic!("no listening line in {agent}"));
    assert_eq!(listening["level"], "INFO");
    assert_eq!(listening["source"], "agent");
    assert!(listening["time"].as_str().unwrap().ends_with('Z'));
    // The workload cannot write into the agent's log.
    assert!(
        !agent.contains(&mark),
        "a /dev/console line is not an agent line"
    );

    let bad = env.run(&["vm", "logs", "--vm", &id, "--since", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2), "a bad --since is a usage error");
    assert!(stderr(&bad).contains("\"yesterday\""), "{}", stderr(&bad));
}

#[test]
fn a_console_flood_stays_within_its_bound_and_the_vm_keeps_working() {
    let _g = vm_lock();
    let env = Env::new();
    let limit: u64 = 64 * 1024;
    let o = env
        .cmd(&["vm", "create"])
        .env("HEARTH_CONSOLE_LOG_BYTES", limit.to_string())
        .output()
        .unwrap();
    assert!(o.status.success(), "create: {}", stderr(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    // About 400 KB through the serial console: six times the limit.
    let flood = "i=0; while [ $i -lt 4000 ]; do \
                 echo \"flood line $i ................................................................................\"; \
                 i=$((i+1)); done > /dev/console; echo done";
    let out = env.ok(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--timeout",
        "600",
        "--cmd",
        flood,
    ]);
    assert_eq!(out, "done\n");
    // The logger may still be writing the last lines.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let t = env.ok(&["vm", "logs", "--vm", &id, "--tail", "50"]);
        if t.contains("flood line 3999 ") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the last flood line never reached the log: {t}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let dir = env.state().join("vms").join(&id);
    let slack = 4096 + 64 * 1024;
    for name in ["console.log", "console.log.1"] {
        let len = std::fs::metadata(dir.join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .len();
        assert!(
            len <= limit + slack,
            "{name} is {len} bytes, over {limit} + slack"
        );
    }
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("console"))
        .collect();
    assert_eq!(names.len(), 2, "two console files only: {names:?}");
    // The oldest lines were dropped, the newest are contiguous.
    let all = env.ok(&["vm", "logs", "--vm", &id]);
    assert!(!all.contains("flood line 0 "), "the oldest lines are gone");
    let nums: Vec<u32> = all
        .lines()
        .filter_map(|l| l.strip_prefix("flood line "))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect();
    assert_eq!(nums.last(), Some(&3999));
    assert!(
        nums.windows(2).all(|w| w[1] == w[0] + 1),
        "contiguous newest lines"
    );
    assert_eq!(env.sh(&id, "echo alive"), "alive\n");
}
