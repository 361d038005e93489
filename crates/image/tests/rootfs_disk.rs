//! `create_ext4`: sparse ext4 disks checked with the real e2fsprogs.

use std::os::unix::fs::MetadataExt;
use std::process::Command;

use hearth_image::rootfs::{create_ext4, RootfsError};

fn dumpe2fs(path: &std::path::Path) -> String {
    let out = Command::new("dumpe2fs")
        .arg("-h")
        .arg(path)
        .output()
        .expect("dumpe2fs (e2fsprogs) must be installed");
    assert!(
        out.status.success(),
        "dumpe2fs -h rejected {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn create_ext4_makes_a_sparse_labelled_filesystem() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("upper.ext4");
    create_ext4(&p, 1024, "hearth-upper").expect("create_ext4");
    let meta = std::fs::metadata(&p).expect("stat");
    assert_eq!(meta.len(), 1024 * 1024 * 1024);
    assert!(
        meta.blocks() * 512 < meta.len() / 4,
        "disk is not sparse: {} of {} bytes allocated",
        meta.blocks() * 512,
        meta.len()
    );
    let info = dumpe2fs(&p);
    assert!(
        info.contains("Filesystem volume name:   hearth-upper"),
        "{info}"
    );
    assert!(info.contains("Filesystem magic number:  0xEF53"), "{info}");
    assert!(info.contains("Filesystem state:         clean"), "{info}");
}

#[test]
fn create_ext4_refuses_to_overwrite_and_bad_arguments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("persist.ext4");
    create_ext4(&p, 16, "persist").expect("create_ext4");
    let before = std::fs::read(&p).expect("read");
    let err = create_ext4(&p, 16, "persist").expect_err("second create must fail");
    assert!(matches!(err, RootfsError::AlreadyExists { .. }), "{err:?}");
    assert_eq!(
        std::fs::read(&p).expect("read"),
        before,
        "existing volume was modified"
    );

    let q = dir.path().join("q.ext4");
    let err = create_ext4(&q, 16, "a-label-longer-than-16").expect_err("long label");
    assert!(matches!(err, RootfsError::Label(_)), "{err:?}");
    let err = create_ext4(&q, 1, "tiny").expect_err("too small");
    assert!(matches!(err, RootfsError::DiskSize(1)), "{err:?}");
    assert!(!q.exists(), "a failed create left a file behind");
}

#[test]
fn create_ext4_on_a_full_disk_says_so_and_leaves_nothing() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a tiny tmpfs and must run as root"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    nix::mount::mount(
        Some("tmpfs"),
        &mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=256k"),
    )
    .expect("mount a 256 KiB tmpfs");
    let p = mnt.join("big.ext4");
    let res = create_ext4(&p, 512, "full");
    let leftover = p.exists();
    nix::mount::umount(&mnt).expect("umount tmpfs");
    let err = res.expect_err("a 512 MiB ext4 cannot be formatted in 256 KiB");
    assert!(
        matches!(err, RootfsError::DiskFull { .. }),
        "{err:?}: {err}"
    );
    assert!(err.to_string().contains("no space left"), "{err}");
    assert!(!leftover, "a failed create left a file behind");
}
