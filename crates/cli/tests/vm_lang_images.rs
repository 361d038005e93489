//! VM tier, image input: an unknown language, a missing and a corrupt
//! `--image` fail with a clear error, exit 1 and leave nothing behind; a
//! user's own squashfs image boots (as the lower layer of the overlay root).
//! Run alone: `cargo test -p hearth-cli --test vm_lang_images`.

mod vm_common;

use vm_common::{vm_lock, Env};

fn assert_nothing_left(env: &Env) {
    assert!(env.list().is_empty(), "a record was left: {:?}", env.list());
    let vms = env.state().join("vms");
    let left: Vec<_> = std::fs::read_dir(&vms)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "vm directories left: {left:?}");
}

#[test]
fn unknown_language_missing_and_corrupt_images_are_refused_cleanly() {
    let env = Env::new();
    let o = env.run(&["vm", "create", "--language", "cobol"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cobol") && err.contains("python, javascript, node, ruby, golang"),
        "{err}"
    );

    let missing = env.state().join("no-such.squashfs");
    let o = env.run(&["vm", "create", "--image", missing.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not found") && err.contains("no-such.squashfs"),
        "{err}"
    );

    // Garbage, and a squashfs cut short: both are refused before any boot.
    let junk = env.state().join("junk.img");
    std::fs::write(&junk, vec![0x5au8; 64 * 1024]).unwrap();
    let err = env.fails(&["vm", "create", "--image", junk.to_str().unwrap()]);
    assert!(err.contains("not a squashfs or ext4 image"), "{err}");
    let py = env.image("python");
    let full = std::fs::read(py["path"].as_str().unwrap()).expect("read the python image");
    let cut = env.state().join("cut.squashfs");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let err = env.fails(&["vm", "create", "--image", cut.to_str().unwrap()]);
    assert!(
        err.contains("cut.squashfs") && err.contains("claims"),
        "{err}"
    );

    let err = env.fails(&["vm", "create", "--network", "bridge"]);
    assert!(err.contains("valid: none, allow_all"), "{err}");
    assert_nothing_left(&env);
    let err = env.fails(&["image", "rm", "cobol"]);
    assert!(err.contains("cobol"), "{err}");
}

#[test]
fn a_users_own_squashfs_image_boots() {
    let env = Env::new();
    let py = env.image("python");
    let img = py["path"].as_str().unwrap().to_string();
    let _vms = vm_lock();
    let id = env.create(&["--image", &img]);
    let rec = env.record(&id);
    assert_eq!(rec["language"], "custom", "{rec}");
    assert_eq!(rec["lowerfs"], "squashfs", "{rec}");
    assert_eq!(
        env.sh(
            &id,
            "python3 -c 'print(\"own image\")'; cat /proc/sys/kernel/hostname"
        ),
        format!("own image\n{id}\n")
    );
}

/// A tiny ext4 root made without root-only tools: static busybox as /bin/sh.
fn tiny_ext4_root(dir: &std::path::Path) -> std::path::PathBuf {
    let bb = std::path::Path::new("/bin/busybox");
    assert!(
        bb.is_file(),
        "this test needs a static /bin/busybox (Debian: apt-get install busybox-static)"
    );
    let root = dir.join("root");
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "run", "root"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "cat", "echo", "ls", "stat", "touch"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/marker"), "ext4 lower layer\n").unwrap();
    let img = dir.join("tiny.ext4");
    let st = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&root)
        .arg(&img)
        .arg("32M")
        .status()
        .expect("this test needs mkfs.ext4 (Debian: e2fsprogs)");
    assert!(st.success(), "mkfs.ext4 -d failed");
    img
}

#[test]
fn a_users_own_ext4_image_boots_as_the_lower_layer() {
    let env = Env::new();
    let work = tempfile::tempdir().expect("tempdir");
    let img = tiny_ext4_root(work.path());
    let _vms = vm_lock();
    let id = env.create(&["--image", img.to_str().unwrap()]);
    let rec = env.record(&id);
    assert_eq!(rec["lowerfs"], "ext4", "{rec}");
    assert_eq!(
        env.sh(
            &id,
            "cat /etc/marker; echo new > /root/w && cat /root/w; ls -d /in /out"
        ),
        "ext4 lower layer\nnew\n/in\n/out\n"
    );
    // The image itself is attached read-only: the write went to the upper disk.
    env.ok(&["vm", "clean", "--vm", &id]);
    let o = std::process::Command::new("debugfs")
        .args(["-R", "ls -l /root"])
        .arg(&img)
        .output()
        .expect("debugfs (e2fsprogs)");
    let listing = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && listing.contains(".."),
        "debugfs: {listing}"
    );
    assert!(
        !listing.lines().any(|l| l.trim_end().ends_with(" w")),
        "the lower image was written: {listing}"
    );
}

/// A squashfs whose superblock is fine but whose metadata is garbage passes the
/// host's check; the guest cannot mount it, and the boot fails with its console.
#[test]
fn an_image_corrupt_inside_fails_the_boot_with_console_lines() {
    let env = Env::new();
    let py = env.image("python");
    let mut data = std::fs::read(py["path"].as_str().unwrap()).expect("read the python image");
    let at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap()) as usize;
    let (inodes, dirs) = (at(64), at(72));
    assert!(
        inodes < dirs && dirs < data.len(),
        "unexpected squashfs layout"
    );
    for b in &mut data[inodes..dirs.min(inodes + 64 * 1024)] {
        *b = 0xff;
    }
    let bad = env.state().join("corrupt-inside.squashfs");
    std::fs::write(&bad, &data).unwrap();
    drop(data);
    let _vms = vm_lock();
    let o = env.run(&[
        "vm",
        "create",
        "--image",
        bad.to_str().unwrap(),
        "--boot-timeout",
        "60",
    ]);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("did not become ready") && e.contains("last console lines"),
        "{e}"
    );
    assert!(
        e.contains("SQUASHFS error"),
        "the console tail lacks the cause: {e}"
    );
    let recs = env.list();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0]["status"], "failed");
    env.ok(&["vm", "clean", "--all"]);
    assert_nothing_left(&env);
}
