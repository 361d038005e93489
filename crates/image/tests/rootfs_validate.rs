//! `validate_user_image` on real and broken files (needs mksquashfs and mkfs.ext4).

use std::path::Path;
use std::process::Command;

use hearth_image::rootfs::{create_ext4, validate_user_image, RootfsError, UserImageKind};

fn expect_not_image(path: &Path, detail: &str) {
    match validate_user_image(path) {
        Err(e @ RootfsError::NotAnImage { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.starts_with(&format!("not a squashfs or ext4 image: {}", path.display())),
                "{msg}"
            );
            assert!(msg.contains(detail), "{msg} lacks {detail:?}");
        }
        other => panic!("{}: expected NotAnImage, got {other:?}", path.display()),
    }
}

#[test]
fn missing_image_is_reported_with_its_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path().join("nope.squashfs");
    let err = validate_user_image(&p).expect_err("missing file");
    assert!(matches!(err, RootfsError::ImageMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("nope.squashfs"));
}

#[test]
fn empty_garbage_and_directory_are_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.img");
    std::fs::write(&empty, b"").expect("write");
    expect_not_image(&empty, "empty file");

    let garbage = dir.path().join("garbage.img");
    let bytes: Vec<u8> = (0..8192u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, bytes).expect("write");
    expect_not_image(&garbage, "no squashfs or ext4 superblock");

    let short_sq = dir.path().join("short.squashfs");
    std::fs::write(&short_sq, b"hsqs\0\0\0\0").expect("write");
    expect_not_image(&short_sq, "truncated squashfs superblock");

    expect_not_image(dir.path(), "a directory");
}

#[test]
fn real_squashfs_is_accepted_and_a_truncated_one_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("usr/bin")).expect("mkdir");
    // incompressible content, so the image is far larger than one padding block
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let noise: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(src.join("usr/bin/hello"), noise).expect("write");
    let img = dir.path().join("ok.squashfs");
    let st = Command::new("mksquashfs")
        .arg(&src)
        .arg(&img)
        .args(["-quiet", "-no-progress", "-comp", "gzip", "-noappend"])
        .status()
        .expect("mksquashfs (squashfs-tools) must be installed");
    assert!(st.success(), "mksquashfs failed");
    assert_eq!(
        validate_user_image(&img).expect("valid squashfs"),
        UserImageKind::Squashfs
    );

    let bytes = std::fs::read(&img).expect("read");
    let cut = dir.path().join("cut.squashfs");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    expect_not_image(&cut, "squashfs claims");
}

#[test]
fn real_ext4_is_accepted_and_a_truncated_one_is_not() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("root.ext4");
    create_ext4(&img, 32, "userroot").expect("create_ext4");
    assert_eq!(
        validate_user_image(&img).expect("valid ext4"),
        UserImageKind::Ext4
    );
    assert_eq!(UserImageKind::Ext4.fstype(), "ext4");

    let cut = dir.path().join("cut.ext4");
    let f = std::fs::File::open(&img).expect("open");
    let mut head = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(f, 1 << 20), &mut head).expect("read");
    std::fs::write(&cut, head).expect("write");
    expect_not_image(&cut, "ext4 filesystem of");
}
