//! VM tier: the guest side of snapshots in real microVMs — what the agent
//! tier cannot do on the host: `GUEST_RESTORED` sets the guest's clock,
//! hostname and machine-id and feeds its entropy pool; `FS_FREEZE` really
//! freezes the root's upper ext4 (writes block until the thaw or the
//! auto-thaw), and a VM whose root lives in memory has nothing to freeze.
//! VMs are created with the CLI and driven through hearth-runtime's
//! `Sandbox` methods, which the snapshot code calls.
//!
//! What is not observable from inside the guest: how many bits the kernel
//! credited and whether the CRNG really reseeded. The test checks that both
//! ioctls succeeded (the OK: a failure is an ERROR naming the ioctl) and that
//! /dev/urandom gives different bytes on two reads.

mod vm_common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hearth_runtime::background::DetachSpec;
use hearth_runtime::{pb, ExecSpec, RestoreInfo, Runtime, RuntimeConfig, Sandbox};
use vm_common::{guest_bin, image_cache, vm_lock, Env};

const MACHINE_ID: &str = "5f1e0c2d3b4a69788796a5b4c3d2e1f0";

async fn runtime(env: &Env) -> Runtime {
    let mut c = RuntimeConfig::new(env.state());
    c.guest_binary = Some(guest_bin());
    c.image_cache = image_cache();
    Runtime::open(c).await.expect("open the runtime")
}

async fn sh(sb: &Sandbox, cmd: &str) -> String {
    let mut spec = ExecSpec::shell(cmd);
    spec.timeout = Some(Duration::from_secs(120));
    spec.user = Some("root".into());
    let out = sb.exec(&spec).await.expect("exec");
    assert_eq!(
        out.exit.outcome.exit_code(),
        0,
        "{cmd}: {}\n{}",
        out.exit.outcome,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn host_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Polls `f` until it is true; panics after `limit` naming `what`.
async fn wait_for(what: &str, limit: Duration, mut f: impl AsyncFnMut() -> bool) {
    let t0 = Instant::now();
    while !f().await {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts `echo x > PATH` in the background; returns its pid.
async fn background_write(sb: &Sandbox, path: &str) -> u32 {
    let mut exec = ExecSpec::shell(format!("echo x > {path}"));
    exec.user = Some("root".into());
    let spec = DetachSpec {
        exec,
        tag: None,
        buffer_bytes: 0,
    };
    sb.exec_detached(&spec).await.expect("start the writer")
}

/// The process state letter of `pid` ("" once it is gone).
async fn proc_state(sb: &Sandbox, pid: u32) -> String {
    sh(
        sb,
        &format!("read a b c rest < /proc/{pid}/stat 2>/dev/null && echo $c || true"),
    )
    .await
}

#[test]
fn restore_hooks_set_clock_names_and_freeze_really_blocks_writes() {
    let _g = vm_lock();
    let env = Env::new();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(restore_hooks(&env));
}

async fn restore_hooks(env: &Env) {
    let id = env.create(&["--language", "python", "--mem", "512", "--network", "none"]);
    let rt = runtime(env).await;
    let sb = rt.get(&id).await.expect("get the sandbox");

    // A clock far in the past, as a restored snapshot's would be.
    sh(&sb, "date -s @1000000000 >/dev/null").await;
    let wrong: u64 = sh(&sb, "date +%s").await.parse().unwrap();
    assert!(wrong < 1_000_000_000 + 600, "date -s did not take: {wrong}");
    let old_host = sh(&sb, "hostname").await;

    let info = RestoreInfo {
        generation: 5,
        hostname: Some("clone-five".into()),
        machine_id: Some(MACHINE_ID.into()),
    };
    sb.notify_restored(&info).await.expect("notify_restored");

    // The clock: within 2 s of the host's, bounded by the host's own readings
    // around the guest's.
    let before = host_secs();
    let guest: u64 = sh(&sb, "date +%s").await.parse().unwrap();
    let after = host_secs();
    assert!(
        guest + 2 >= before && guest <= after + 2,
        "guest clock {guest} not within 2 s of the host's {before}..={after}"
    );
    assert_ne!(old_host, "clone-five");
    assert_eq!(sh(&sb, "hostname").await, "clone-five");
    assert_eq!(sh(&sb, "cat /etc/hostname").await, "clone-five");
    assert_eq!(sh(&sb, "cat /etc/machine-id").await, MACHINE_ID);
    let loopback = sh(&sb, "grep '^127.0.1.1' /etc/hosts || true").await;
    if !loopback.is_empty() {
        assert_eq!(loopback, "127.0.1.1\tclone-five");
    }
    let sys = sb.system_info().await.expect("system info");
    assert_eq!((sys.generation, sys.hostname.as_str()), (5, "clone-five"));
    let rand = "head -c 16 /dev/urandom | od -An -tx1";
    assert_ne!(sh(&sb, rand).await, sh(&sb, rand).await);

    // Malformed requests straight through the client: ERROR naming the field,
    // nothing applied, the agent keeps serving.
    let client = sb.agent().await.unwrap().client().clone();
    let good = pb::GuestRestored {
        generation: 6,
        realtime_ns: 1,
        entropy: vec![9; 32].into(),
        hostname: None,
        machine_id: None,
    };
    let bad = [
        (
            pb::GuestRestored {
                entropy: vec![9; 4096].into(),
                ..good.clone()
            },
            "entropy of 4096 bytes",
        ),
        (
            pb::GuestRestored {
                machine_id: Some("not-hex".into()),
                ..good.clone()
            },
            "machine_id \"not-hex\"",
        ),
        (
            pb::GuestRestored {
                hostname: Some("bad host".into()),
                ..good.clone()
            },
            "hostname \"bad host\"",
        ),
    ];
    for (req, want) in bad {
        let e = client.guest_restored(req).await.unwrap_err();
        assert_eq!(e.remote_code(), Some(pb::ErrorCode::InvalidArgument), "{e}");
        assert!(e.to_string().contains(want), "{e} lacks {want:?}");
    }
    assert_eq!(sb.system_info().await.unwrap().generation, 5);
    assert_eq!(sh(&sb, "hostname").await, "clone-five");

    // Freeze: the root's upper ext4 is frozen, a write blocks in the kernel
    // (state D) and is not on the disk; after the thaw it completes.
    let frozen = sb.freeze_fs(Duration::from_secs(60)).await.expect("freeze");
    assert_eq!(frozen, ["/run/hearth/upper"], "frozen mounts");
    assert_eq!(sb.system_info().await.unwrap().frozen, frozen);
    let err = sb.freeze_fs(Duration::from_secs(60)).await.unwrap_err();
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    assert!(
        chain.contains("already frozen: /run/hearth/upper (THAW first)"),
        "{chain}"
    );
    let writer = background_write(&sb, "/root/frozen-write").await;
    wait_for(
        "the writer blocks on the frozen filesystem",
        Duration::from_secs(60),
        async || proc_state(&sb, writer).await == "D",
    )
    .await;
    assert_eq!(
        sh(&sb, "test -e /root/frozen-write && echo yes || echo no").await,
        "no"
    );
    sb.thaw_fs().await.expect("thaw");
    assert!(sb.system_info().await.unwrap().frozen.is_empty());
    wait_for(
        "the write completes after the thaw",
        Duration::from_secs(60),
        async || proc_state(&sb, writer).await.is_empty(),
    )
    .await;
    assert_eq!(sh(&sb, "cat /root/frozen-write").await, "x");
    sb.thaw_fs().await.expect("a second thaw is fine");

    // Auto-thaw: no THAW comes, the agent thaws by itself.
    let frozen = sb.freeze_fs(Duration::from_secs(3)).await.expect("freeze");
    assert_eq!(frozen, ["/run/hearth/upper"]);
    let writer = background_write(&sb, "/root/auto-thawed").await;
    wait_for(
        "the auto-thaw lets the write through",
        Duration::from_secs(90),
        async || proc_state(&sb, writer).await.is_empty(),
    )
    .await;
    assert_eq!(sh(&sb, "cat /root/auto-thawed").await, "x");
    assert!(sb.system_info().await.unwrap().frozen.is_empty());
    drop(sb);
    env.ok(&["vm", "clean", "--vm", &id]);

    // A VM whose root is the initramfs: nothing to freeze, and OK.
    let id = env.create(&["--mem", "256", "--network", "none"]);
    let sb = rt.get(&id).await.expect("get the sandbox");
    let frozen = sb.freeze_fs(Duration::from_secs(5)).await.expect("freeze");
    assert!(frozen.is_empty(), "froze {frozen:?} on an in-memory root");
    sb.thaw_fs().await.expect("thaw");
    drop(sb);
    env.ok(&["vm", "clean", "--vm", &id]);
}
