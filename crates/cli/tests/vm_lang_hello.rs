//! VM tier, language images: each language prints hello world through its own
//! runtime inside a real VM booted from its squashfs image (overlay root), and
//! `vm exec --hello --all` fans out over every running VM.
//!
//! Images come from the shared cache (`HEARTH_IMAGE_CACHE`, else
//! /var/tmp/hearth-test-images) and are built there on first use (the golang
//! image takes about 3 minutes). Run alone:
//! `cargo test -p hearth-cli --test vm_lang_hello`.

mod vm_common;

use vm_common::{vm_lock, Env};

fn hello_json(env: &Env, args: &[&str]) -> Vec<serde_json::Value> {
    let out = env.ok(args);
    serde_json::from_str::<serde_json::Value>(&out)
        .expect("vm exec --hello --json is JSON")
        .as_array()
        .expect("an array")
        .clone()
}

#[test]
fn python_node_ruby_say_hello_through_their_runtimes_with_all_fan_out() {
    let env = Env::new();
    let _vms = vm_lock();
    let mut ids = Vec::new();
    for lang in ["python", "javascript", "ruby"] {
        let img = env.image(lang);
        assert_eq!(img["language"], lang, "{img}");
        let id = env.create(&["--language", lang]);
        let rec = env.record(&id);
        assert_eq!(rec["language"], lang, "{rec}");
        assert_eq!(rec["image_hash"], img["hash"], "{rec}");
        assert_eq!(rec["network"], "none", "{rec}");
        assert_eq!(rec["lowerfs"], "squashfs", "{rec}");
        ids.push((lang, id));
    }

    // --all: every running VM at once, one result each.
    let results = hello_json(&env, &["vm", "exec", "--hello", "--all", "--json"]);
    assert_eq!(results.len(), ids.len(), "{results:?}");
    for (lang, id) in &ids {
        let r = results
            .iter()
            .find(|r| r["id"] == id.as_str())
            .unwrap_or_else(|| panic!("no result for vm {id}: {results:?}"));
        assert_eq!(r["language"], *lang, "{r}");
        assert_eq!(r["exit_code"], 0, "{r}");
        assert_eq!(r["hello"], "hello world", "{lang}: {r}");
    }

    // The runtime really is the image's, at the Debian path, in a Debian root.
    let (_, py) = &ids[0];
    let out = env.sh(
        py,
        "command -v python3; python3 -c 'import sys; print(sys.version_info[0])'; \
         . /etc/os-release; echo $ID; echo $HOME $LANG; test -d /in && test -d /out && echo dirs",
    );
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["/usr/bin/python3", "3", "debian", "/root C.UTF-8", "dirs"],
        "{out}"
    );
    // The human form names the language.
    let (_, rb) = &ids[2];
    let human = env.ok(&["vm", "exec", "--hello", "--vm", rb]);
    assert_eq!(human.trim(), format!("== {rb} (ruby): hello world"));
}

#[test]
fn golang_says_hello_through_go_run() {
    let env = Env::new();
    env.image("golang");
    let _vms = vm_lock();
    let id = env.create(&["--language", "golang", "--mem", "768"]);
    let results = hello_json(
        &env,
        &[
            "vm",
            "exec",
            "--hello",
            "--vm",
            &id,
            "--json",
            "--timeout",
            "600",
        ],
    );
    assert_eq!(results[0]["exit_code"], 0, "{results:?}");
    assert_eq!(results[0]["hello"], "hello world", "{results:?}");
    assert_eq!(results[0]["language"], "golang");
}
