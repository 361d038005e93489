//! hearth's own guest kernel, built by `scripts/kernel.sh` from Debian's
//! `linux-source-6.1` with the fragment `crates/image/kernel/hearth.config`
//! (everything built in, no modules) and cached in
//! `<root>/hearth-kernel-<hash16>/` (root `/var/tmp` by default).
//!
//! An entry is complete when it holds `vmlinux`, `release` and `key`; the
//! script writes `key` last and renames the directory into place, so a killed
//! build is never found. `key` lists the digests the hash was made of; an
//! entry is used only when its fragment and script digests match the copies
//! compiled into this binary, so a stale kernel built from another fragment is
//! never booted (whatever linux-source version it came from).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::kernel::{KernelInfo, KernelKind};

/// The kconfig fragment the own kernel is built with.
pub const FRAGMENT: &str = include_str!("../kernel/hearth.config");
/// The build script (its digest is part of the cache key).
pub const BUILD_SCRIPT: &str = include_str!("../../../scripts/kernel.sh");
/// Where the build script caches by default.
pub const DEFAULT_CACHE_ROOT: &str = "/var/tmp";
/// Cache directory name prefix.
pub const DIR_PREFIX: &str = "hearth-kernel-";

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The `fragment …` and `script …` lines an entry's `key` must contain.
pub fn expected_key_lines() -> [String; 2] {
    [
        format!("fragment {}", sha256_hex(FRAGMENT.as_bytes())),
        format!("script {}", sha256_hex(BUILD_SCRIPT.as_bytes())),
    ]
}

/// Whether `dir` is a complete cache entry built from this binary's fragment
/// and script.
pub fn entry_matches(dir: &Path) -> bool {
    let Ok(key) = std::fs::read_to_string(dir.join("key")) else {
        return false;
    };
    let lines: Vec<&str> = key.lines().map(str::trim).collect();
    expected_key_lines()
        .iter()
        .all(|want| lines.contains(&want.as_str()))
        && dir.join("vmlinux").is_file()
}

/// The release recorded next to a cached `vmlinux` (`<dir>/release`).
pub fn recorded_release(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("release")).ok()?;
    let rel = text.trim();
    (!rel.is_empty() && !rel.contains(char::is_whitespace)).then(|| rel.to_owned())
}

/// The newest matching entry under `root`, or None when the own kernel was
/// not built (or only from another fragment or script).
pub fn find_own_kernel(root: &Path) -> Option<KernelInfo> {
    let rd = std::fs::read_dir(root).ok()?;
    let mut best: Option<(std::time::SystemTime, PathBuf, String)> = None;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        if rest.len() != 16 || !rest.bytes().all(|b| b.is_ascii_hexdigit()) {
            continue; // hearth-kernel-tmp.*, the lock file
        }
        let dir = e.path();
        if !entry_matches(&dir) {
            continue;
        }
        let Some(release) = recorded_release(&dir) else {
            continue;
        };
        let mtime = std::fs::metadata(dir.join("key"))
            .and_then(|m| m.modified())
            .unwrap_or(std::time::UNIX_EPOCH);
        if best.as_ref().is_none_or(|(t, _, _)| mtime > *t) {
            best = Some((mtime, dir, release));
        }
    }
    let (_, dir, release) = best?;
    Some(KernelInfo {
        path: dir.join("vmlinux"),
        release,
        kind: KernelKind::Own,
    })
}

/// Every option line of the fragment (`CONFIG_X=…` or `# CONFIG_X is not
/// set`) that `config` (a final `.config`) does not contain as written.
pub fn dropped_options(config: &str) -> Vec<String> {
    let have: std::collections::HashSet<&str> = config.lines().map(str::trim).collect();
    let set_names: std::collections::HashSet<&str> = config
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let mut out = Vec::new();
    for line in FRAGMENT.lines().map(str::trim) {
        if line.starts_with("CONFIG_") {
            if !have.contains(line) {
                out.push(line.to_owned());
            }
        } else if let Some(name) = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"))
        {
            if set_names.contains(name) {
                out.push(line.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(root: &Path, name: &str, key: &str, release: &str) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("vmlinux"), b"\x7fELF").unwrap();
        std::fs::write(dir.join("release"), format!("{release}\n")).unwrap();
        std::fs::write(dir.join("key"), key).unwrap();
        dir
    }

    #[test]
    fn finds_only_complete_entries_of_this_fragment_and_script() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(find_own_kernel(root.path()), None);
        let [f, s] = expected_key_lines();
        // Another fragment: ignored.
        entry(
            root.path(),
            "hearth-kernel-00000000000000aa",
            &format!(
                "fragment {}\n{s}\nsource linux-source-6.1 1\n",
                "0".repeat(64)
            ),
            "6.1.1-hearth",
        );
        // A leftover build dir and an entry without key: ignored.
        entry(
            root.path(),
            "hearth-kernel-tmp.Ab12Cd",
            &format!("{f}\n{s}\n"),
            "x",
        );
        let incomplete = entry(
            root.path(),
            "hearth-kernel-00000000000000bb",
            "",
            "6.1.2-hearth",
        );
        std::fs::remove_file(incomplete.join("key")).unwrap();
        assert_eq!(find_own_kernel(root.path()), None);
        let good = entry(
            root.path(),
            "hearth-kernel-00000000000000cc",
            &format!("{f}\n{s}\nsource linux-source-6.1 6.1.192-3\n"),
            "6.1.192-hearth",
        );
        let k = find_own_kernel(root.path()).expect("the matching entry");
        assert_eq!(k.path, good.join("vmlinux"));
        assert_eq!(k.release, "6.1.192-hearth");
        assert_eq!(k.kind, KernelKind::Own);
    }

    #[test]
    fn fragment_options_are_all_checked() {
        let config: String = FRAGMENT
            .lines()
            .filter(|l| l.starts_with("CONFIG_"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(dropped_options(&config), Vec::<String>::new());
        let missing = config.replace(
            "CONFIG_VIRTIO_CONSOLE=y\n",
            "# CONFIG_VIRTIO_CONSOLE is not set\n",
        );
        assert_eq!(dropped_options(&missing), vec!["CONFIG_VIRTIO_CONSOLE=y"]);
        let modules_on = format!("{config}CONFIG_MODULES=y\n");
        assert_eq!(
            dropped_options(&modules_on),
            vec!["# CONFIG_MODULES is not set"]
        );
    }

    /// The cached build (when scripts/kernel.sh has run) really has every
    /// fragment option: kconfig drops options with unmet dependencies silently.
    #[test]
    fn cached_own_kernel_config_has_every_fragment_option() {
        let k = find_own_kernel(Path::new(DEFAULT_CACHE_ROOT))
            .expect("hearth's own kernel in /var/tmp/hearth-kernel-* (run scripts/kernel.sh)");
        let dir = k.path.parent().unwrap();
        let config = std::fs::read_to_string(dir.join("config")).expect("config next to vmlinux");
        assert_eq!(
            dropped_options(&config),
            Vec::<String>::new(),
            "{}",
            dir.display()
        );
    }
}
