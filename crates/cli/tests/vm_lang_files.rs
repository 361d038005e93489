//! VM tier, files in and out of a python sandbox: `vm run --file` copies a
//! script into /in and runs it there; it writes to /out and `hearth cp
//! VM:/out/x ./x` copies the result back; a directory round trip keeps modes;
//! and a full upper disk gives ENOSPC while the VM and its agent keep working.
//! Run alone: `cargo test -p hearth-cli --test vm_lang_files`.

mod vm_common;

use std::os::unix::fs::PermissionsExt;

use vm_common::{stdout, vm_lock, Env};

fn mode(p: &std::path::Path) -> u32 {
    std::fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

#[test]
fn file_in_out_dir_round_trip_and_full_upper_disk_in_python_vm() {
    let env = Env::new();
    env.image("python");
    let work = tempfile::tempdir().expect("tempdir");
    let _vms = vm_lock();
    // A small upper disk so that filling it is quick.
    let id = env.create(&["--language", "python", "--disk", "64"]);

    // --file: copied into /in, run with cwd /in, writes /out.
    let script = work.path().join("main.py");
    std::fs::write(
        &script,
        "import os, sys\n\
         open('/out/result.txt', 'w').write('cwd=%s sum=%d\\n' % (os.getcwd(), sum(range(10))))\n\
         print('ran', sys.argv[0])\n",
    )
    .expect("write script");
    let o = env.run(&[
        "vm",
        "run",
        "--vm",
        &id,
        "--file",
        script.to_str().unwrap(),
        "--cmd",
        "python3 main.py",
    ]);
    assert!(o.status.success(), "vm run failed: {o:?}");
    assert_eq!(stdout(&o), "ran main.py\n");
    let back = work.path().join("result.txt");
    env.ok(&[
        "cp",
        &format!("{id}:/out/result.txt"),
        back.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read_to_string(&back).expect("copied back"),
        "cwd=/in sum=45\n"
    );
    // A failing script's exit code comes through.
    let o = env.run(&[
        "vm",
        "run",
        "--vm",
        &id,
        "--cmd",
        "python3 -c 'raise SystemExit(7)'",
    ]);
    assert_eq!(o.status.code(), Some(7), "{o:?}");

    // A directory tree in and out, modes kept.
    let src = work.path().join("tree");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(src.join("sub/secret"), vec![42u8; 300_000]).unwrap();
    std::fs::set_permissions(
        src.join("sub/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::write(src.join("sub/deeper/empty"), b"").unwrap();
    std::fs::set_permissions(
        src.join("sub/deeper/empty"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o711)).unwrap();
    env.ok(&["cp", src.to_str().unwrap(), &format!("{id}:/root/tree")]);
    let inside = env.sh(
        &id,
        "cd /root/tree && stat -c '%a %n' run.sh sub sub/secret sub/deeper/empty \
         && wc -c < sub/secret && ./run.sh",
    );
    assert_eq!(
        inside.lines().collect::<Vec<_>>(),
        [
            "750 run.sh",
            "711 sub",
            "600 sub/secret",
            "644 sub/deeper/empty",
            "300000",
            "hi"
        ],
        "{inside}"
    );
    let out = work.path().join("tree-back");
    env.ok(&["cp", &format!("{id}:/root/tree"), out.to_str().unwrap()]);
    assert_eq!(mode(&out.join("run.sh")), 0o750);
    assert_eq!(mode(&out.join("sub")), 0o711);
    assert_eq!(mode(&out.join("sub/secret")), 0o600);
    assert_eq!(
        std::fs::read(out.join("sub/secret")).unwrap(),
        vec![42u8; 300_000]
    );
    assert_eq!(std::fs::read(out.join("sub/deeper/empty")).unwrap(), b"");

    // Fill the upper disk: the write fails with ENOSPC, nothing else breaks.
    let o = env.run(&[
        "vm",
        "exec",
        "--vm",
        &id,
        "--timeout",
        "300",
        "--cmd",
        "dd if=/dev/zero of=/root/fill bs=1M count=200",
    ]);
    assert!(!o.status.success(), "dd filled more than the disk: {o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        env.sh(&id, "echo still; python3 -c 'print(6*7)'"),
        "still\n42\n"
    );
    assert_eq!(env.status(&id), "running");
    // Freeing the space makes the disk writable again.
    assert_eq!(
        env.sh(
            &id,
            "rm /root/fill && echo ok > /root/after && cat /root/after"
        ),
        "ok\n"
    );
}
