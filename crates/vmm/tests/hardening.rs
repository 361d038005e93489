//! The hardened VMM launch, checked on real processes and a real VM.
//!
//! Needs root, `qemu-system-x86_64`, a kernel in `/boot`, the
//! static guest binary (`HEARTH_GUEST_BIN`, else
//! `target/x86_64-unknown-linux-gnu/release/hearth-guest`), `mksquashfs`,
//! `mkfs.ext4` and a static busybox (`HEARTH_BUSYBOX`, else `/bin/busybox`) —
//! `scripts/setup.sh` installs them all. A missing one fails the test with its name.
//!
//! Run: `cargo test -p hearth-vmm --test hardening`.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hearth_proto::pb;
use hearth_vmm::qemu::jail::{JailSpec, VmDir, JAIL_UMASK};
use hearth_vmm::qemu::launch::spawn_jailed;
use hearth_vmm::{
    Accel, LowerFs, Network, ProcessId, QemuFactory, RootDisks, SandboxConfig, VmHandle,
};

/// Uids from a range with no `/etc/passwd` entry, as the runtime allocates them
/// (one per test, since the tests run at the same time).
const VMM_UID: u32 = 2_100_000_123;
const SHELL_UID: u32 = 2_100_000_124;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the hardening tests need root (jailing the VMM takes mount namespaces, \
         mknod and setuid); run them as root"
    );
}

/// Test state that survives runs: the KVM probe verdict and the initramfs cache.
fn cache_dir() -> PathBuf {
    let d = std::env::temp_dir().join("hearth-vmm-hardening-cache");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn guest_binary() -> PathBuf {
    let p = match std::env::var_os("HEARTH_GUEST_BIN").filter(|v| !v.is_empty()) {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/x86_64-unknown-linux-gnu/release/hearth-guest"),
    };
    assert!(
        p.is_file(),
        "the static guest binary is missing at {} (build it with `bash scripts/setup.sh` \
         or point HEARTH_GUEST_BIN at it)",
        p.display()
    );
    p
}

fn tool(name: &str, package: &str) -> PathBuf {
    hearth_vmm::qemu::launch::find_program(
        name,
        &[PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")],
    )
    .unwrap_or_else(|| panic!("{name} is missing (Debian: apt-get install {package})"))
}

fn busybox() -> PathBuf {
    let p = std::env::var_os("HEARTH_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/bin/busybox".into());
    assert!(
        p.is_file(),
        "a static busybox is missing at {} (Debian: apt-get install busybox-static)",
        p.display()
    );
    p
}

/// `/proc/PID/status` as (key, value) pairs.
fn status(pid: u32) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn field(st: &[(String, String)], key: &str) -> String {
    st.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no {key} in status"))
}

fn assert_runs_as(pid: u32, uid: u32, what: &str) {
    let st = status(pid);
    let ids: Vec<String> = (0..4).map(|_| uid.to_string()).collect();
    let want = ids.join("\t");
    assert_eq!(field(&st, "Uid"), want, "{what}: uid");
    assert_eq!(field(&st, "Gid"), want, "{what}: gid");
    assert_eq!(field(&st, "Groups"), "", "{what}: supplementary groups");
    assert_eq!(
        field(&st, "CapEff"),
        "0000000000000000",
        "{what}: capabilities"
    );
    assert_eq!(
        field(&st, "CapPrm"),
        "0000000000000000",
        "{what}: capabilities"
    );
    assert_eq!(field(&st, "NoNewPrivs"), "1", "{what}: no_new_privs");
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid as i32))).unwrap();
    assert_eq!(sid.as_raw() as u32, pid, "{what} must lead its own session");
}

/// True when `pid` is in a namespace of kind `ns` other than this process's.
fn own_namespace(pid: u32, ns: &str) -> bool {
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}")).unwrap();
    let ours = std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap();
    theirs != ours
}

/// Every path under `root`, relative to it, not descending into `/usr` or `/proc`.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(root.join(&rel)) else {
            continue;
        };
        for e in rd.flatten() {
            let r = rel.join(e.file_name());
            let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir && r != Path::new("usr") && r != Path::new("proc") {
                todo.push(r.clone());
            }
            out.push(r);
        }
    }
    out
}

fn names(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Live (not zombie) processes, host-wide, running as `uid`. The VMMs are this
/// test's children, so once dead they stay zombies until the test exits.
fn processes_of(uid: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/status"))
                .map(|t| {
                    let zombie = t
                        .lines()
                        .any(|l| l.starts_with("State:") && l.contains('Z'));
                    let ours = t.lines().any(|l| {
                        l.starts_with("Uid:")
                            && l.split_whitespace().nth(1) == Some(uid.to_string().as_str())
                    });
                    ours && !zombie
                })
                .unwrap_or(false)
        })
        .collect()
}

async fn wait_for_file(p: &Path, secs: u64) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !p.exists() {
        assert!(Instant::now() < deadline, "{} did not appear", p.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The jail alone, with a shell instead of a VMM: uid, root contents, read-only
/// root, the modes of what it creates.
#[tokio::test]
async fn jailed_process_runs_as_its_uid_and_sees_only_its_jail() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let vm = tmp.path().join("vms").join("shell");
    std::fs::create_dir_all(&vm).unwrap();
    std::fs::write(tmp.path().join("state-marker"), b"host only").unwrap();
    let dir = VmDir::own(&vm, SHELL_UID).unwrap();
    let mut spec = JailSpec::new(SHELL_UID);
    spec.bind_rw(dir.source(), "/vm").without_network();
    // Checked where the host has it: the node is made for the uid, whose groups
    // (kvm) are gone.
    let kvm = Path::new("/dev/kvm").exists();
    if kvm {
        spec.kvm();
    } else {
        eprintln!("no /dev/kvm on this host: the jailed /dev/kvm node is not checked");
    }
    spec.program(Path::new("/bin/sh")).unwrap();
    let mountpoint = tmp.path().join("mnt");
    std::fs::create_dir(&mountpoint).unwrap();
    let prepared = spec.prepare(&mountpoint).unwrap();
    let log_path = vm.join("sh.log");
    let log = dir.open_log(&log_path, SHELL_UID).unwrap();
    let script = "ls -a / > /vm/root.txt; ls /dev > /vm/dev.txt; \
                  echo x > /vm/made.txt; \
                  if touch /new 2>/dev/null; then echo root-writable; fi; \
                  if touch /usr/new 2>/dev/null; then echo usr-writable; fi; \
                  if [ -e /proc/self ]; then echo has-proc; fi; \
                  if [ -e /dev/kvm ] && ! (exec 3<>/dev/kvm) 2>/dev/null; then echo kvm-denied; fi; \
                  echo done > /vm/done.txt; exec sleep 30";
    let (mut child, id) = spawn_jailed(
        prepared,
        &["-c".into(), script.into()],
        log,
        &log_path,
        None,
    )
    .unwrap_or_else(|e| panic!("cannot start the jailed shell: {e:#?}"));
    wait_for_file(&vm.join("done.txt"), 10).await;
    assert_runs_as(id.pid, SHELL_UID, "jailed shell");
    for ns in ["mnt", "ipc", "net"] {
        assert!(
            own_namespace(id.pid, ns),
            "the jailed shell shares the {ns} namespace"
        );
    }

    let root_list = std::fs::read_to_string(vm.join("root.txt")).unwrap();
    let root: BTreeSet<&str> = root_list
        .lines()
        .filter(|l| *l != "." && *l != "..")
        .collect();
    let allowed: BTreeSet<&str> = [
        "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "sbin", "usr", "vm",
    ]
    .into_iter()
    .collect();
    assert!(root.is_subset(&allowed), "jail root holds more: {root:?}");
    assert!(root.contains("usr") && root.contains("vm"), "{root:?}");
    let devs = std::fs::read_to_string(vm.join("dev.txt")).unwrap();
    let want: &[&str] = if kvm {
        &["kvm", "null", "urandom", "zero"]
    } else {
        &["null", "urandom", "zero"]
    };
    assert_eq!(devs.split_whitespace().collect::<Vec<_>>(), want);
    let log_text = std::fs::read_to_string(&log_path).unwrap();
    for bad in ["root-writable", "usr-writable", "has-proc", "kvm-denied"] {
        assert!(!log_text.contains(bad), "{bad}; log: {log_text}");
    }
    let made = std::fs::metadata(vm.join("made.txt")).unwrap();
    assert_eq!(made.uid(), SHELL_UID);
    assert_eq!(made.mode() & 0o777, 0o666 & !JAIL_UMASK);
    // Seen from the host side too: nothing of the host's state.
    let proc_root = PathBuf::from(format!("/proc/{}/root", id.pid));
    assert!(walk(&proc_root)
        .iter()
        .all(|p| !p.ends_with("state-marker")));
    assert!(!proc_root
        .join(tmp.path().strip_prefix("/").unwrap())
        .exists());

    assert!(id.terminate(Duration::from_secs(2)).await);
    let _ = child.wait();
}

/// A step that fails in the child is named in the error, from the log.
#[tokio::test]
async fn jail_setup_failure_names_the_failed_step() {
    require_root();
    let tmp = tempfile::tempdir().unwrap();
    let vm = tmp.path().join("vms").join("broken");
    std::fs::create_dir_all(&vm).unwrap();
    let dir = VmDir::own(&vm, SHELL_UID).unwrap();
    let mut spec = JailSpec::new(SHELL_UID);
    spec.bind_rw(dir.source(), "/vm");
    spec.program(Path::new("/bin/sh")).unwrap();
    // The mount point is gone by the time the child mounts its root there.
    let prepared = spec
        .prepare(&tmp.path().join("no-such-mountpoint"))
        .unwrap();
    let log_path = vm.join("sh.log");
    let log = dir.open_log(&log_path, SHELL_UID).unwrap();
    match spawn_jailed(
        prepared,
        &["-c".into(), "true".into()],
        log,
        &log_path,
        None,
    ) {
        Err(hearth_vmm::VmmError::JailSetup { step, .. }) => {
            assert_eq!(step, "mount the tmpfs root")
        }
        Err(e) => panic!("wrong error: {e:#?}"),
        Ok((mut child, _)) => {
            let _ = child.kill();
            panic!("the jail was entered without its root");
        }
    }
}

struct Disks {
    root: RootDisks,
    persist: PathBuf,
}

/// A squashfs lower with busybox and a marker, an ext4 upper in the VM directory,
/// an ext4 persist volume elsewhere; the lower is 0600 like hearth's own cache files.
fn make_disks(state: &Path, vm_dir: &Path) -> Disks {
    let mksquashfs = tool("mksquashfs", "squashfs-tools");
    tool("mkfs.ext4", "e2fsprogs");
    let tree = state.join("lower-tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::copy(busybox(), tree.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "ls", "id", "wget"] {
        std::os::unix::fs::symlink("busybox", tree.join("bin").join(applet)).unwrap();
    }
    std::fs::write(tree.join("marker"), b"from the lower disk\n").unwrap();
    let image = state.join("images/lower.squashfs");
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    let out = std::process::Command::new(mksquashfs)
        .arg(&tree)
        .arg(&image)
        .args(["-noappend", "-quiet", "-all-root"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "mksquashfs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o600)).unwrap();
    let upper = vm_dir.join("upper.ext4");
    hearth_image::rootfs::create_ext4(&upper, 64, "hearth-upper").unwrap();
    let persist = state.join("persist/p.ext4");
    std::fs::create_dir_all(persist.parent().unwrap()).unwrap();
    hearth_image::rootfs::create_ext4(&persist, 16, "hearth-persist").unwrap();
    Disks {
        root: RootDisks {
            image,
            fs: LowerFs::Squashfs,
            upper,
        },
        persist,
    }
}

struct Host {
    factory: QemuFactory,
    kernel: PathBuf,
    initrd: PathBuf,
}

async fn host() -> Host {
    require_root();
    let kernel = hearth_image::find_kernel(None).unwrap_or_else(|e| {
        panic!("no guest kernel (Debian: apt-get install linux-image-cloud-amd64): {e}")
    });
    let spec = hearth_image::InitramfsSpec::with_default_modules(guest_binary(), &kernel);
    let initrd = hearth_image::build_cached(&spec, &cache_dir().join("images"))
        .unwrap_or_else(|e| panic!("cannot build the initramfs: {e}"))
        .path;
    let factory = QemuFactory::detect(&kernel.path, &cache_dir())
        .await
        .unwrap_or_else(|e| panic!("cannot set up QEMU: {e}"));
    Host {
        factory,
        kernel: kernel.path,
        initrd,
    }
}

fn config(id: &str, dir: &Path, kernel: &Path, initrd: &Path, uid: Option<u32>) -> SandboxConfig {
    SandboxConfig {
        id: id.into(),
        cpus: 1,
        mem_mib: 256,
        kernel: kernel.into(),
        initrd: initrd.into(),
        cmdline_extra: String::new(),
        network: Network::None,
        root: None,
        persist: None,
        dir: dir.into(),
        boot_timeout: Duration::from_secs(120),
        vmm_uid: uid,
        console: Default::default(),
        vm_proxy: guest_binary(),
        acpi: true,
    }
}

async fn exec(client: &hearth_client::Client, script: &str) -> (i32, String, String) {
    let r = client
        .exec(pb::Exec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            timeout_ms: 20_000,
            ..Default::default()
        })
        .await
        .expect("exec through the agent");
    let code = match r.outcome.and_then(|o| o.kind) {
        Some(pb::exec_outcome::Kind::Exited(e)) => e.code,
        other => panic!("exec did not exit normally: {other:?}"),
    };
    (
        code,
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    )
}

/// Kills a booted VM's processes (by pid, start time checked) if the test
/// fails before it stopped them, so a failure leaves nothing running.
struct KillOnDrop(ProcessId, ProcessId);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for p in [self.0, self.1] {
            if p.is_alive() {
                p.signal(libc::SIGKILL);
            }
        }
    }
}

async fn stop_and_check_gone(handle: &VmHandle) {
    handle.stop(Duration::from_secs(10)).await.expect("stop");
    assert!(!handle.qemu.is_alive(), "qemu still runs after stop");
    assert!(
        !handle.proxy.is_alive(),
        "the link proxy still runs after stop"
    );
}

fn assert_alive(p: ProcessId, what: &str) {
    assert!(p.is_alive(), "{what} is not running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jailed_vm_runs_unprivileged_under_seccomp_and_sees_only_its_files() {
    let host = host().await;
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path();
    std::fs::write(state.join("state-marker"), b"host only").unwrap();
    let other = state.join("vms/other-vm");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("other-secret"), b"another vm").unwrap();
    let dir = state.join("vms/jailed-vm");
    std::fs::create_dir_all(&dir).unwrap();
    // Like Debian's /boot/vmlinuz-*: readable by root only.
    let kernel = state.join("boot/vmlinuz-test");
    std::fs::create_dir_all(kernel.parent().unwrap()).unwrap();
    std::fs::copy(&host.kernel, &kernel).unwrap();
    std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o600)).unwrap();
    let disks = make_disks(state, &dir);
    let mut cfg = config("jailed-vm", &dir, &kernel, &host.initrd, Some(VMM_UID));
    cfg.root = Some(disks.root.clone());
    cfg.persist = Some(disks.persist.clone());

    let started = Instant::now();
    let (handle, client) = host
        .factory
        .boot(&cfg)
        .await
        .unwrap_or_else(|e| panic!("jailed boot failed: {e}"));
    let _cleanup = KillOnDrop(handle.qemu, handle.proxy);
    eprintln!(
        "jailed boot ({}): {:?}",
        host.factory.accel,
        started.elapsed()
    );
    assert_alive(handle.qemu, "qemu");
    assert_alive(handle.proxy, "the link proxy");

    // Unprivileged, own session, seccomp on QEMU.
    assert_runs_as(handle.qemu.pid, VMM_UID, "qemu");
    assert_runs_as(handle.proxy.pid, VMM_UID, "the link proxy");
    // No network for either (this VM has none): only Unix sockets by path.
    for (pid, what) in [
        (handle.qemu.pid, "qemu"),
        (handle.proxy.pid, "the link proxy"),
    ] {
        for ns in ["mnt", "ipc", "net"] {
            assert!(own_namespace(pid, ns), "{what} shares the {ns} namespace");
        }
    }
    assert_eq!(
        field(&status(handle.qemu.pid), "Seccomp"),
        "2",
        "qemu runs without its seccomp filter"
    );

    // Each VMM's root holds only its jail.
    let mut top = set(&[
        "bin", "dev", "etc", "lib", "lib32", "lib64", "libx32", "sbin", "usr", "vm", "vmm",
    ]);
    let proxy_root = PathBuf::from(format!("/proc/{}/root", handle.proxy.pid));
    let proxy_top = names(&proxy_root);
    assert!(
        proxy_top.is_subset(&top),
        "the proxy's root holds {proxy_top:?}"
    );
    top.extend(set(&["boot", "disks"]));
    let qemu_root = PathBuf::from(format!("/proc/{}/root", handle.qemu.pid));
    let qemu_top = names(&qemu_root);
    assert!(qemu_top.is_subset(&top), "qemu's root holds {qemu_top:?}");
    assert_eq!(
        names(&qemu_root.join("disks")),
        set(&["lower", "persist", "upper"])
    );
    assert_eq!(names(&qemu_root.join("boot")), set(&["initrd", "kernel"]));
    let devs = if host.factory.accel == Accel::Kvm {
        set(&["kvm", "null", "urandom", "zero"])
    } else {
        set(&["null", "urandom", "zero"])
    };
    assert_eq!(names(&qemu_root.join("dev")), devs);
    for root in [&qemu_root, &proxy_root] {
        assert!(names(&root.join("vm")).contains("vsock.sock"));
        assert!(!root.join(state.strip_prefix("/").unwrap()).exists());
        assert!(
            !root.join("proc/self").exists(),
            "{} has /proc",
            root.display()
        );
        for p in walk(root) {
            let name = p.file_name().unwrap().to_string_lossy();
            assert!(
                name != "state-marker" && name != "other-secret" && name != "other-vm",
                "{} sees {}",
                root.display(),
                p.display()
            );
        }
    }

    // The VM directory belongs to the uid; everything in it is 0600.
    let m = std::fs::metadata(&dir).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777),
        (VMM_UID, VMM_UID, 0o700)
    );
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let m = e.metadata().unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        assert_eq!(
            m.mode() & 0o7777,
            0o600,
            "{name} has mode {:o}",
            m.mode() & 0o7777
        );
        // Pid files and the console log are written by the host (the
        // console logger runs as the caller), everything else by the VMM.
        if name.ends_with(".pid") || name.starts_with("console.log") {
            assert_eq!(
                m.uid(),
                nix::unistd::geteuid().as_raw(),
                "{name} is owned by {}",
                m.uid()
            );
        } else {
            assert_eq!(m.uid(), VMM_UID, "{name} is owned by {}", m.uid());
        }
    }
    for disk in [&disks.root.upper, &disks.persist] {
        let m = std::fs::metadata(disk).unwrap();
        assert_eq!(
            (m.uid(), m.mode() & 0o7777),
            (VMM_UID, 0o600),
            "{}",
            disk.display()
        );
    }

    // The guest works: lower disk, persist volume, agent exec.
    let (code, out, err) = exec(
        &client,
        "cat /marker; echo kept > /persist/f; cat /persist/f; id -u",
    )
    .await;
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(out, "from the lower disk\nkept\n0\n");
    drop(client);

    stop_and_check_gone(&handle).await;
    assert_eq!(
        processes_of(VMM_UID),
        Vec::<u32>::new(),
        "processes of uid {VMM_UID} remain"
    );
}

/// With user networking QEMU keeps the host's network (slirp runs inside it),
/// the link proxy still has none, and the guest reaches the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jailed_vm_with_user_network_keeps_the_host_network_for_qemu_only() {
    const UID: u32 = VMM_UID + 10;
    let host = host().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vms/net-vm");
    std::fs::create_dir_all(&dir).unwrap();
    let disks = make_disks(tmp.path(), &dir);
    let mut cfg = config("net-vm", &dir, &host.kernel, &host.initrd, Some(UID));
    cfg.root = Some(disks.root);
    cfg.network = Network::AllowAll;
    // The guest's gateway 10.0.2.2 is the host's loopback.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 1024];
        let _ = conn.read(&mut buf).await;
        conn.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 9\r\n\r\nfrom host")
            .await
            .unwrap();
    });
    let (handle, client) = host
        .factory
        .boot(&cfg)
        .await
        .unwrap_or_else(|e| panic!("jailed boot with user networking failed: {e}"));
    let _cleanup = KillOnDrop(handle.qemu, handle.proxy);
    assert_runs_as(handle.qemu.pid, UID, "qemu");
    assert!(
        !own_namespace(handle.qemu.pid, "net"),
        "qemu lost the host network"
    );
    assert!(
        own_namespace(handle.proxy.pid, "net"),
        "the link proxy has the host network"
    );
    let (code, out, err) = exec(&client, &format!("wget -q -O - http://10.0.2.2:{port}/")).await;
    assert_eq!((code, out.as_str()), (0, "from host"), "stderr: {err}");
    server.await.unwrap();
    drop(client);
    stop_and_check_gone(&handle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unjailed_vm_keeps_the_callers_uid_and_still_gets_seccomp() {
    let host = host().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("vms/plain-vm");
    std::fs::create_dir_all(&dir).unwrap();
    let disks = make_disks(tmp.path(), &dir);
    let mut cfg = config("plain-vm", &dir, &host.kernel, &host.initrd, None);
    cfg.root = Some(disks.root);
    cfg.persist = Some(disks.persist);
    let started = Instant::now();
    let (handle, client) = host
        .factory
        .boot(&cfg)
        .await
        .unwrap_or_else(|e| panic!("boot failed: {e}"));
    let _cleanup = KillOnDrop(handle.qemu, handle.proxy);
    eprintln!(
        "unjailed boot ({}): {:?}",
        host.factory.accel,
        started.elapsed()
    );
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() }.to_string();
    let st = status(handle.qemu.pid);
    assert_eq!(
        field(&st, "Uid").split_whitespace().next(),
        Some(me.as_str())
    );
    assert_eq!(
        field(&st, "Seccomp"),
        "2",
        "qemu runs without its seccomp filter"
    );
    let (code, out, _) = exec(&client, "cat /marker").await;
    assert_eq!((code, out.as_str()), (0, "from the lower disk\n"));
    drop(client);
    stop_and_check_gone(&handle).await;
}

#[tokio::test]
async fn reserved_vmm_uid_is_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let k = tmp.path().join("k");
    std::fs::write(&k, b"k").unwrap();
    let factory = QemuFactory {
        qemu: "/nonexistent/qemu".into(),
        accel: Accel::Tcg,
    };
    let cfg = config("uid0", &tmp.path().join("vms/uid0"), &k, &k, Some(0));
    match factory.boot(&cfg).await {
        Err(hearth_vmm::VmmError::JailBadUid(0)) => {}
        Err(e) => panic!("uid 0 refused with the wrong error: {e}"),
        Ok(_) => panic!("uid 0 was accepted"),
    }
    assert!(
        !tmp.path().join("vmm-jail").exists(),
        "nothing is prepared for a refused uid"
    );
}
