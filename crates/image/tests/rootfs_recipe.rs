//! Recipe hashing and language names (no tools needed).

use hearth_image::rootfs::{Language, Recipe, RECIPE_VERSION};

#[test]
fn recipe_hash_is_stable_across_constructions() {
    for l in Language::ALL {
        let a = Recipe::for_language(l);
        let b = Recipe::for_language(l);
        assert_eq!(a.canonical(), b.canonical());
        assert_eq!(a.hash(), b.hash());
        assert_eq!(a.hash().len(), 64);
        assert!(a
            .hash()
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    }
}

#[test]
fn recipe_hash_covers_version_packages_env_and_compression() {
    let base = Recipe::for_language(Language::Python);
    let canon = String::from_utf8(base.canonical()).expect("canonical form is utf-8 json");
    assert!(
        canon.contains(&format!("\"recipe_version\":{RECIPE_VERSION}")),
        "{canon}"
    );

    let mut more = base.clone();
    more.packages.push("python3-pip".into());
    assert_ne!(
        base.hash(),
        more.hash(),
        "adding a package must change the hash"
    );

    let mut reordered = base.clone();
    reordered.packages.reverse();
    assert_ne!(
        base.hash(),
        reordered.hash(),
        "the package list is hashed as given"
    );

    let mut env = base.clone();
    env.env.push(("FOO".into(), "bar".into()));
    assert_ne!(base.hash(), env.hash());

    let mut comp = base.clone();
    comp.compression = hearth_image::rootfs::Compression::Zstd;
    assert_ne!(base.hash(), comp.hash());
}

#[test]
fn every_language_has_a_distinct_image() {
    let hashes: std::collections::HashSet<String> = Language::ALL
        .iter()
        .map(|l| Recipe::for_language(*l).hash())
        .collect();
    assert_eq!(hashes.len(), Language::ALL.len());
    let node: Language = "node".parse().expect("node is a language");
    let js: Language = "javascript".parse().expect("javascript is a language");
    assert_eq!(
        Recipe::for_language(node).hash(),
        Recipe::for_language(js).hash()
    );
}

#[test]
fn recipes_install_the_runtime_and_ca_certificates() {
    let cases = [
        (Language::Python, "python3", "python3"),
        (Language::Javascript, "nodejs", "node"),
        (Language::Ruby, "ruby", "ruby"),
        (Language::Golang, "golang-go", "sh"),
    ];
    for (l, pkg, hello0) in cases {
        let r = Recipe::for_language(l);
        assert!(r.packages.iter().any(|p| p == pkg), "{l}: {:?}", r.packages);
        assert!(r.packages.iter().any(|p| p == "ca-certificates"), "{l}");
        assert_eq!(r.suite, "bookworm");
        assert_eq!(r.hello.first().map(String::as_str), Some(hello0), "{l}");
        assert!(r.env.iter().any(|(k, v)| k == "LANG" && v == "C.UTF-8"));
        assert!(r
            .env
            .iter()
            .any(|(k, v)| k == "PATH" && v.contains("/usr/bin")));
    }
    let go = Recipe::for_language(Language::Golang);
    assert!(go.env.iter().any(|(k, _)| k == "GOCACHE"));
    assert!(go.hello.join(" ").contains("go run"));
}

#[test]
fn unknown_language_errors_with_the_valid_names() {
    let err = "fortran"
        .parse::<Language>()
        .expect_err("fortran is not supported");
    let msg = err.to_string();
    assert!(msg.contains("unknown language \"fortran\""), "{msg}");
    for name in ["python", "javascript", "node", "ruby", "golang"] {
        assert!(msg.contains(name), "{msg} lacks {name}");
    }
}
