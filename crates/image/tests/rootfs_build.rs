//! Real image builds with mmdebstrap + sqfstar (needs network to Debian's
//! mirror, root, squashfs-tools, mmdebstrap).
//!
//! `HEARTH_IMAGE_CACHE=DIR` keeps built images across runs (CI builds each
//! language once); without it each test uses a fresh temporary cache.
//! `cargo test -p hearth-image --test rootfs_build -- --ignored all_language` builds
//! and checks all four languages.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use hearth_image::rootfs::{
    ensure, ensure_recipe, list, remove, validate_user_image, BuildPhase, BuildProgress, ImageInfo,
    ImageSelector, Language, Recipe, RootfsError, UserImageKind, SIDECAR_FORMAT_VERSION,
};

/// Records what a build reports.
#[derive(Default)]
struct Recorder {
    phases: Vec<BuildPhase>,
    lines: usize,
}

impl BuildProgress for Recorder {
    fn phase(&mut self, phase: BuildPhase) {
        eprintln!("[phase] {phase}");
        self.phases.push(phase);
    }
    fn output(&mut self, _line: &str) {
        self.lines += 1;
    }
}

/// The shared cache from `HEARTH_IMAGE_CACHE`, or a temporary one.
fn cache_dir() -> (PathBuf, Option<tempfile::TempDir>) {
    match std::env::var_os("HEARTH_IMAGE_CACHE") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            std::fs::create_dir_all(&d).expect("create HEARTH_IMAGE_CACHE");
            (d, None)
        }
        _ => {
            let t = tempfile::tempdir().expect("tempdir");
            (t.path().to_path_buf(), Some(t))
        }
    }
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "image build tests extract device nodes and chroot: run them as root"
    );
}

fn dir_names(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn failed_build_leaves_no_cache_entry_and_cleans_leftovers() {
    require_root();
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path();
    let rootfs = cache.join("rootfs");
    // what a killed earlier build leaves behind
    std::fs::create_dir_all(rootfs.join(".tmp-python-0123456789abcdef-1/tmp")).expect("mkdir");
    std::fs::write(
        rootfs.join(".tmp-python-0123456789abcdef-1/image.squashfs"),
        b"hsqs half",
    )
    .expect("write");
    std::fs::write(
        rootfs.join("python-0123456789abcdef.squashfs"),
        b"hsqs no sidecar",
    )
    .expect("write");

    let mut recipe = Recipe::for_language(Language::Python);
    recipe.packages.push("hearth-no-such-package-zzz".into());
    let mut rec = Recorder::default();
    let err = ensure_recipe(cache, &recipe, &mut rec).expect_err("a bogus package must fail");
    match &err {
        RootfsError::ToolFailed {
            tool, phase, log, ..
        } => {
            assert_eq!(*tool, "mmdebstrap");
            assert_eq!(*phase, BuildPhase::Bootstrapping);
            let text = std::fs::read_to_string(log).expect("the build log is kept");
            assert!(text.contains("hearth-no-such-package-zzz"), "log: {text}");
        }
        other => panic!("expected ToolFailed, got {other:?}"),
    }
    assert!(err.to_string().contains("full log:"), "{err}");
    assert_eq!(rec.phases, vec![BuildPhase::Bootstrapping]);
    assert!(rec.lines > 0, "no stderr lines were reported");

    let names = dir_names(&rootfs);
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with(".tmp-") || n.ends_with(".squashfs") || n.ends_with(".json")),
        "leftovers after a failed build: {names:?}"
    );
    assert!(list(cache).expect("list").is_empty());
    // nothing under the cache is still mounted
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let canon = cache.canonicalize().expect("canonicalize");
    assert!(
        !mounts.contains(canon.to_str().expect("utf-8 path")),
        "a mount under the cache survived the failed build"
    );
}

/// Extracts `info`'s image and runs its hello command in a chroot.
fn extract_and_hello(info: &ImageInfo) -> (tempfile::TempDir, String) {
    let out = tempfile::tempdir().expect("tempdir");
    let root = out.path().join("root");
    let st = Command::new("unsquashfs")
        .args(["-q", "-n", "-d"])
        .arg(&root)
        .arg(&info.path)
        .status()
        .expect("unsquashfs must be installed");
    assert!(
        st.success(),
        "unsquashfs -d failed on {}",
        info.path.display()
    );
    let mut cmd = Command::new("/usr/sbin/chroot");
    cmd.arg(&root)
        .args(&info.hello)
        .env_clear()
        .current_dir("/");
    for (k, v) in &info.env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("chroot must be installed");
    assert!(
        o.status.success(),
        "{}: hello failed ({}): {}",
        info.language,
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    (out, String::from_utf8_lossy(&o.stdout).into_owned())
}

fn check_layout(root: &Path) {
    for d in ["in", "out", "persist", "root", "tmp"] {
        assert!(root.join(d).is_dir(), "/{d} missing");
    }
    let mode = |p: &str| {
        std::fs::metadata(root.join(p))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("out"), 0o1777);
    assert_eq!(mode("tmp"), 0o1777);
    let hostname = std::fs::read_to_string(root.join("etc/hostname")).expect("hostname");
    assert_eq!(hostname.trim(), "hearth");
    let profile = std::fs::read_to_string(root.join("etc/profile.d/hearth.sh")).expect("profile");
    assert!(profile.contains("export LANG=C.UTF-8"), "{profile}");
    assert!(profile.contains("export PATH=/usr/local/sbin"), "{profile}");
    assert!(root.join("etc/resolv.conf").is_file());
    assert!(
        root.join("etc/ssl/certs/ca-certificates.crt").is_file(),
        "no CA roots"
    );
    let docs = dir_names(&root.join("usr/share/doc"));
    assert!(docs.is_empty(), "docs were not removed: {docs:?}");
    assert!(
        dir_names(&root.join("var/lib/apt/lists"))
            .iter()
            .all(|n| n == "lock" || n == "partial"),
        "apt lists kept"
    );
}

fn build_and_check(language: Language, cache: &Path) -> ImageInfo {
    let mut rec = Recorder::default();
    let info = ensure(cache, language, &mut rec).expect("image build");
    eprintln!(
        "{language}: squashfs {} B, tar {} B, bootstrap {} ms, pack {} ms (built now: {})",
        info.size,
        info.tar_size,
        info.bootstrap_ms,
        info.pack_ms,
        !rec.phases.is_empty()
    );
    assert!(
        rec.phases.is_empty()
            || rec.phases
                == [
                    BuildPhase::Bootstrapping,
                    BuildPhase::Packing,
                    BuildPhase::Finishing
                ]
    );
    assert!(info.current);
    assert_eq!(info.language, language);
    assert_eq!(info.recipe_hash, Recipe::for_language(language).hash());
    assert_eq!(
        info.size,
        std::fs::metadata(&info.path).expect("stat").len()
    );
    assert!(
        info.size < info.tar_size,
        "squashfs not smaller than the tar"
    );
    assert_eq!(
        validate_user_image(&info.path).expect("valid"),
        UserImageKind::Squashfs
    );

    // a second ensure is a cache hit
    let mut again = Recorder::default();
    let hit = ensure(cache, language, &mut again).expect("cached image");
    assert!(again.phases.is_empty(), "rebuilt a cached image");
    assert_eq!(hit, info);
    assert!(list(cache).expect("list").contains(&info));
    info
}

#[test]
fn python_image_builds_lists_and_says_hello() {
    require_root();
    let (cache, _keep) = cache_dir();
    let info = build_and_check(Language::Python, &cache);

    let o = Command::new("unsquashfs")
        .args(["-l", "-d", ""])
        .arg(&info.path)
        .output()
        .expect("unsquashfs must be installed");
    assert!(o.status.success(), "unsquashfs -l failed");
    let listing = String::from_utf8_lossy(&o.stdout);
    for want in [
        "/usr/bin/python3",
        "/in",
        "/out",
        "/etc/profile.d/hearth.sh",
    ] {
        assert!(
            listing.lines().any(|l| l.trim() == want),
            "{want} not in the image listing"
        );
    }

    let (dir, stdout) = extract_and_hello(&info);
    assert_eq!(stdout, "hello world\n");
    check_layout(&dir.path().join("root"));
    // a usable python: stdlib modules beyond python3-minimal, TLS roots
    let root = dir.path().join("root");
    let o = Command::new("/usr/sbin/chroot")
        .arg(&root)
        .args(["python3", "-c", "import json, ssl, sqlite3, urllib.request; print(ssl.create_default_context().cert_store_stats()['x509_ca'] > 0)"])
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("chroot");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "True",
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Writes a cache entry by hand (a tiny real squashfs plus its sidecar), so
/// list/remove can be tested without a full build.
fn fake_entry(cache: &Path, language: Language) -> ImageInfo {
    let rootfs = cache.join("rootfs");
    std::fs::create_dir_all(rootfs.join("src")).expect("mkdir");
    std::fs::write(rootfs.join("src/marker"), language.as_str()).expect("write");
    let recipe = Recipe::for_language(language);
    let hash = recipe.hash();
    let name = format!("{language}-{}", &hash[..16]);
    let img = rootfs.join(format!("{name}.squashfs"));
    let st = Command::new("mksquashfs")
        .arg(rootfs.join("src"))
        .arg(&img)
        .args(["-quiet", "-no-progress", "-noappend"])
        .status()
        .expect("mksquashfs must be installed");
    assert!(st.success());
    std::fs::remove_dir_all(rootfs.join("src")).expect("rm src");
    let info = ImageInfo {
        format_version: SIDECAR_FORMAT_VERSION,
        language,
        recipe_hash: hash,
        recipe_version: hearth_image::rootfs::RECIPE_VERSION,
        path: img.clone(),
        size: std::fs::metadata(&img).expect("stat").len(),
        tar_size: 1 << 20,
        compression: recipe.compression,
        created: 1,
        bootstrap_ms: 0,
        pack_ms: 0,
        env: recipe.env.clone(),
        hello: recipe.hello.clone(),
        user: recipe.user.clone(),
        current: true,
    };
    std::fs::write(
        rootfs.join(format!("{name}.json")),
        serde_json::to_vec(&info).expect("json"),
    )
    .expect("write sidecar");
    info
}

#[test]
fn list_and_remove_by_language_and_hash() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path();
    assert!(list(cache).expect("list of a missing cache").is_empty());
    let err = remove(cache, &"python".parse().expect("selector")).expect_err("empty cache");
    assert!(matches!(err, RootfsError::NoMatch(_)), "{err:?}");

    let py = fake_entry(cache, Language::Python);
    let rb = fake_entry(cache, Language::Ruby);
    // a sidecar whose size disagrees with its squashfs is not an entry
    let go = fake_entry(cache, Language::Golang);
    std::fs::write(&go.path, b"hsqs changed").expect("write");
    assert_eq!(list(cache).expect("list"), vec![py.clone(), rb.clone()]);

    let sel: ImageSelector = py.recipe_hash[..8].parse().expect("hash selector");
    assert_eq!(
        remove(cache, &sel).expect("remove by hash"),
        vec![py.clone()]
    );
    assert!(!py.path.exists());
    assert_eq!(list(cache).expect("list"), vec![rb.clone()]);

    let removed = remove(cache, &"ruby".parse().expect("selector")).expect("remove ruby");
    assert_eq!(removed, vec![rb.clone()]);
    assert!(list(cache).expect("list").is_empty());
    assert!(matches!(
        remove(cache, &"ruby".parse().expect("selector")),
        Err(RootfsError::NoMatch(_))
    ));
    assert!("cobol".parse::<ImageSelector>().is_err());
}

#[test]
#[ignore = "builds all four language images (about 6 minutes); run with --ignored"]
fn all_language_images_say_hello() {
    all_languages();
}

fn all_languages() {
    require_root();
    let (cache, _keep) = cache_dir();
    for l in Language::ALL {
        let info = build_and_check(l, &cache);
        let (_dir, stdout) = extract_and_hello(&info);
        assert_eq!(stdout, "hello world\n", "{l}");
    }
    let all = list(&cache).expect("list");
    for l in Language::ALL {
        assert!(
            all.iter().any(|i| i.language == l && i.current),
            "{l} not listed"
        );
    }
}
