//! VM tier, persistence: the writable upper layer and the `/persist` volume
//! survive `vm stop` + `vm start`; `vm clean --keep-persist` keeps the volume
//! and a new VM created with the same `--persist-name` sees its files; plain
//! `vm clean` removes it; a volume deleted by hand gives a clear error on start.
//! Run alone: `cargo test -p hearth-cli --test vm_lang_persist`.

mod vm_common;

use vm_common::{vm_lock, Env};

#[test]
fn upper_layer_and_persist_volume_survive_stop_start_and_keep_persist_clean() {
    let env = Env::new();
    env.image("python");
    let _vms = vm_lock();
    let name = "pdata";
    let vol = env.state().join("persist").join(format!("{name}.ext4"));

    let a = env.create(&["--language", "python", "--persist-name", name]);
    let rec = env.record(&a);
    assert_eq!(rec["persist"], true, "{rec}");
    assert_eq!(rec["persist_volume"], vol.to_str().unwrap(), "{rec}");
    assert!(
        vol.is_file(),
        "persist volume {} not created",
        vol.display()
    );
    assert_eq!(
        env.sh(
            &a,
            "grep ' /persist ' /proc/mounts | cut -d' ' -f3; \
             echo upper-data > /root/upper.txt && echo persist-data > /persist/p.txt && sync && echo ok"
        ),
        "ext4\nok\n"
    );

    env.ok(&["vm", "stop", "--vm", &a]);
    assert_eq!(env.status(&a), "stopped");
    env.ok(&["vm", "start", "--vm", &a]);
    assert_eq!(env.status(&a), "running");
    assert_eq!(
        env.sh(&a, "cat /root/upper.txt /persist/p.txt"),
        "upper-data\npersist-data\n",
        "stop + start lost data"
    );

    // clean --keep-persist: the VM goes, its volume stays.
    env.ok(&["vm", "clean", "--vm", &a, "--keep-persist"]);
    assert!(env.list().iter().all(|r| r["id"] != a.as_str()));
    assert!(vol.is_file(), "--keep-persist removed the volume");

    // A new VM attaches the same volume: /persist survives, the upper layer is new.
    let b = env.create(&["--language", "python", "--persist-name", name]);
    assert_eq!(
        env.sh(
            &b,
            "cat /persist/p.txt; test -e /root/upper.txt && echo leaked || echo fresh"
        ),
        "persist-data\nfresh\n"
    );
    // The volume belongs to b now: a third VM cannot take it.
    let err = env.fails(&[
        "vm",
        "create",
        "--language",
        "python",
        "--persist-name",
        name,
    ]);
    assert!(err.contains(&format!("belongs to vm {b}")), "{err}");

    // Plain clean removes the volume.
    env.ok(&["vm", "clean", "--vm", &b]);
    assert!(!vol.exists(), "plain clean kept {}", vol.display());
}

#[test]
fn persist_volume_deleted_by_hand_gives_a_clear_error_on_start() {
    let env = Env::new();
    env.image("python");
    let _vms = vm_lock();
    let id = env.create(&["--language", "python", "--persist"]);
    let vol = env.state().join("persist").join(format!("{id}.ext4"));
    assert!(vol.is_file(), "default volume name is the vm id");
    env.ok(&["vm", "stop", "--vm", &id]);
    std::fs::remove_file(&vol).expect("delete the volume by hand");
    let err = env.fails(&["vm", "start", "--vm", &id]);
    assert!(
        err.contains("persist volume") && err.contains(vol.to_str().unwrap()),
        "unclear error: {err}"
    );
    // Nothing was booted and the record is still a stopped VM that clean removes.
    assert_eq!(env.status(&id), "stopped");
    env.ok(&["vm", "clean", "--vm", &id]);
}
