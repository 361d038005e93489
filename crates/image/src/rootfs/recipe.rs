//! What goes into a language image, and the content hash that names it in the cache.

use sha2::{Digest, Sha256};

use super::Language;

/// Bumped whenever the build procedure changes in a way the recipe fields do
/// not show, so old cache entries are never reused.
pub const RECIPE_VERSION: u32 = 1;

/// Packages every image gets on top of the language's own.
pub const BASE_PACKAGES: &[&str] = &["ca-certificates"];

/// PATH inside every image.
pub const GUEST_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The `--customize-hook` run by mmdebstrap with the root directory as `$1`.
/// `@ENV@` is replaced by the recipe's environment as `KEY=VALUE` lines.
const CUSTOMIZE_HOOK: &str = r#"#!/bin/sh
set -eu
R="$1"
mkdir -p "$R/in" "$R/out" "$R/persist" "$R/root" "$R/tmp" "$R/etc/profile.d"
chmod 1777 "$R/out" "$R/tmp"
chmod 0700 "$R/root"
echo hearth > "$R/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 hearth\n::1 localhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
rm -f "$R/etc/resolv.conf"
printf '# placeholder: the hearth guest network setup replaces this file\n' > "$R/etc/resolv.conf"
cat > "$R/etc/environment" <<'HEARTH_ENV'
@ENV@
HEARTH_ENV
{
  echo '# hearth sandbox environment'
  sed -e 's/^/export /' "$R/etc/environment"
} > "$R/etc/profile.d/hearth.sh"
rm -rf "$R"/var/cache/apt/* "$R"/var/lib/apt/lists/* "$R"/usr/share/doc/* \
  "$R"/usr/share/man/* "$R"/usr/share/info/* "$R"/usr/share/locale/* \
  "$R"/usr/share/lintian "$R"/var/cache/debconf/*-old "$R"/var/log/*.log
"#;

/// dpkg filters that keep documentation out of the image in the first place.
const DPKG_EXCLUDES: &[&str] = &[
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-exclude=/usr/share/lintian/*",
];

/// squashfs compression. lz4 (high-compression mode) is the default: it
/// decompresses about twice as fast as zstd, which matters most under
/// software emulation, for images about a third larger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Lz4hc,
    Zstd,
    Xz,
}

impl Compression {
    /// The `sqfstar`/`mksquashfs` options selecting this compression.
    pub fn squashfs_args(self) -> &'static [&'static str] {
        match self {
            Compression::Lz4hc => &["-comp", "lz4", "-Xhc"],
            // zstd's default level (15); sqfstar 4.5.1 misparses -Xcompression-level
            Compression::Zstd => &["-comp", "zstd"],
            Compression::Xz => &["-comp", "xz"],
        }
    }
}

/// How to build one language image. Every field goes into [`Recipe::hash`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recipe {
    pub language: Language,
    /// Debian suite, e.g. `bookworm`.
    pub suite: String,
    /// mmdebstrap variant, e.g. `essential` (no apt, smallest).
    pub variant: String,
    /// Packages installed on top of the variant (without Recommends).
    pub packages: Vec<String>,
    /// Environment of every process in the sandbox, in order.
    pub env: Vec<(String, String)>,
    /// The command that prints `hello world` through the language's runtime.
    pub hello: Vec<String>,
    pub compression: Compression,
    /// The user commands run as by default (`None`: root). Left out of the
    /// hash input when unset, so older recipes hash as before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Shell lines appended to the shared customize hook for this recipe
    /// only (`$R` is the root). Left out of the hash input when empty.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hook_extra: Vec<String>,
}

/// The default user of the `base` image (E2B's): uid/gid 1000, home
/// `/home/user`, bash, passwordless sudo.
pub const BASE_USER: &str = "user";

/// The `base` image's extra customize-hook lines: the user, its home, sudo.
const BASE_HOOK: &[&str] = &[
    "grep -q '^user:' \"$R/etc/group\" || echo 'user:x:1000:' >> \"$R/etc/group\"",
    "grep -q '^user:' \"$R/etc/passwd\" || echo 'user:x:1000:1000::/home/user:/bin/bash' >> \"$R/etc/passwd\"",
    // pam_unix (sudo's account check) needs a shadow entry for every user.
    "[ -f \"$R/etc/shadow\" ] || : > \"$R/etc/shadow\"",
    "cut -d: -f1 \"$R/etc/passwd\" | while read -r u; do grep -q \"^$u:\" \"$R/etc/shadow\" || echo \"$u:*:20000:0:99999:7:::\" >> \"$R/etc/shadow\"; done",
    "chmod 0640 \"$R/etc/shadow\"",
    "if grep -q '^shadow:' \"$R/etc/group\"; then chgrp 42 \"$R/etc/shadow\"; fi",
    "sed -i -e 's/^\\(sudo:[^:]*:27:\\)$/\\1user/' \"$R/etc/group\"",
    "mkdir -p \"$R/home/user\" \"$R/etc/sudoers.d\"",
    "if [ -d \"$R/etc/skel\" ]; then cp -a \"$R/etc/skel/.\" \"$R/home/user/\"; fi",
    "chown -R 1000:1000 \"$R/home/user\"",
    "chmod 0750 \"$R/home/user\"",
    "echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > \"$R/etc/sudoers.d/user\"",
    "chmod 0440 \"$R/etc/sudoers.d/user\"",
];

/// What is hashed: the recipe, the version and the build scripts.
#[derive(serde::Serialize)]
struct Canonical<'a> {
    recipe_version: u32,
    recipe: &'a Recipe,
    hook: &'a str,
    dpkg_excludes: &'a [&'a str],
}

const GO_HELLO: &str = "mkdir -p /tmp/hello && cd /tmp/hello && \
printf 'package main\\n\\nimport \"fmt\"\\n\\nfunc main() { fmt.Println(\"hello world\") }\\n' > hello.go && \
go run hello.go";

impl Recipe {
    /// The recipe hearth uses for `language`.
    pub fn for_language(language: Language) -> Recipe {
        if language == Language::Base {
            return Self::base();
        }
        let (packages, hello, extra_env): (&[&str], Vec<&str>, &[(&str, &str)]) = match language {
            Language::Base => unreachable!("handled above"),
            Language::Python => (
                &["python3"],
                vec!["python3", "-c", "print(\"hello world\")"],
                &[("PYTHONUNBUFFERED", "1")],
            ),
            Language::Javascript => (
                &["nodejs"],
                vec!["node", "-e", "console.log(\"hello world\")"],
                &[],
            ),
            Language::Ruby => (&["ruby"], vec!["ruby", "-e", "puts \"hello world\""], &[]),
            Language::Golang => (
                &["golang-go"],
                vec!["sh", "-c", GO_HELLO],
                &[
                    ("GOCACHE", "/tmp/gocache"),
                    ("GOPATH", "/tmp/go"),
                    ("CGO_ENABLED", "0"),
                    ("GOTOOLCHAIN", "local"),
                ],
            ),
        };
        let mut env = vec![
            ("PATH".to_string(), GUEST_PATH.to_string()),
            ("HOME".to_string(), "/root".to_string()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
            ("LC_ALL".to_string(), "C.UTF-8".to_string()),
        ];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        Recipe {
            language,
            suite: "bookworm".into(),
            variant: "essential".into(),
            packages: packages
                .iter()
                .chain(BASE_PACKAGES)
                .map(|s| s.to_string())
                .collect(),
            env,
            hello: hello.into_iter().map(String::from).collect(),
            compression: Compression::Lz4hc,
            user: None,
            hook_extra: Vec::new(),
        }
    }

    /// E2B's `base` template. No HOME in its environment: the agent sets
    /// HOME to the home of the user a command runs as (`/home/user` for the
    /// default user, `/root` for root).
    fn base() -> Recipe {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let env = [
            ("PATH", GUEST_PATH),
            ("LANG", "C.UTF-8"),
            ("LC_ALL", "C.UTF-8"),
            ("PYTHONUNBUFFERED", "1"),
        ];
        Recipe {
            language: Language::Base,
            suite: "bookworm".into(),
            variant: "essential".into(),
            packages: s(&["bash", "coreutils", "git", "python3", "sudo", "passwd"])
                .into_iter()
                .chain(BASE_PACKAGES.iter().map(|p| p.to_string()))
                .collect(),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            hello: s(&["python3", "-c", "print(\"hello world\")"]),
            compression: Compression::Lz4hc,
            user: Some(BASE_USER.into()),
            hook_extra: s(BASE_HOOK),
        }
    }

    /// The canonical serialization that [`Recipe::hash`] digests.
    pub fn canonical(&self) -> Vec<u8> {
        let c = Canonical {
            recipe_version: RECIPE_VERSION,
            recipe: self,
            hook: CUSTOMIZE_HOOK,
            dpkg_excludes: DPKG_EXCLUDES,
        };
        // Serializing plain strings, numbers and unit enums cannot fail.
        serde_json::to_vec(&c).unwrap_or_default()
    }

    /// sha256 of [`Recipe::canonical`], lower-case hex: the cache key.
    pub fn hash(&self) -> String {
        hex::encode(Sha256::digest(self.canonical()))
    }

    /// The customize hook script with this recipe's environment filled in.
    pub fn customize_hook(&self) -> String {
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut hook = CUSTOMIZE_HOOK.replace("@ENV@", &env.join("\n"));
        for line in &self.hook_extra {
            hook.push_str(line);
            hook.push('\n');
        }
        hook
    }

    /// The mmdebstrap arguments before the output path (hook path supplied by the caller).
    pub fn mmdebstrap_args(&self, mode: &str, hook: &std::path::Path) -> Vec<String> {
        let mut args = vec![
            format!("--variant={}", self.variant),
            format!("--mode={mode}"),
            "--aptopt=APT::Install-Recommends \"false\"".to_string(),
        ];
        if !self.packages.is_empty() {
            args.push(format!("--include={}", self.packages.join(",")));
        }
        args.extend(DPKG_EXCLUDES.iter().map(|o| format!("--dpkgopt={o}")));
        args.push(format!("--customize-hook={}", hook.display()));
        args.push(self.suite.clone());
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values_have_no_newlines_or_quotes() {
        for l in Language::ALL {
            for (k, v) in Recipe::for_language(l).env {
                assert!(!k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
                assert!(!v.contains(['\n', '\'', '"', ' ']), "{k}={v}");
            }
        }
    }

    #[test]
    fn hook_gets_the_environment() {
        let hook = Recipe::for_language(Language::Golang).customize_hook();
        assert!(hook.contains("\nGOCACHE=/tmp/gocache\n"), "{hook}");
        assert!(!hook.contains("@ENV@"));
        assert!(
            !hook.contains("sudoers"),
            "language images get no extra lines"
        );
    }

    /// The cached images are keyed by this hash: a change here rebuilds every
    /// python image in every cache (and CI's). New recipe fields must stay
    /// out of the serialization when unset.
    #[test]
    fn python_recipe_hash_is_pinned() {
        assert_eq!(
            Recipe::for_language(Language::Python).hash(),
            "bedcf16bd3aac5bc4c477a69840585efaa3a258a70d7c1fd605612fd38c8a71e"
        );
        let canon = String::from_utf8(Recipe::for_language(Language::Python).canonical()).unwrap();
        assert!(
            !canon.contains("hook_extra") && !canon.contains("\"user\""),
            "{canon}"
        );
    }

    #[test]
    fn base_recipe_has_the_default_user_and_no_home() {
        let r = Recipe::for_language(Language::Base);
        assert_eq!(r.user.as_deref(), Some("user"));
        for p in [
            "bash",
            "coreutils",
            "git",
            "python3",
            "sudo",
            "ca-certificates",
        ] {
            assert!(r.packages.iter().any(|x| x == p), "{p}");
        }
        assert!(!r.env.iter().any(|(k, _)| k == "HOME"));
        let hook = r.customize_hook();
        assert!(
            hook.contains("user:x:1000:1000::/home/user:/bin/bash"),
            "{hook}"
        );
        assert!(hook.contains("NOPASSWD"), "{hook}");
        assert!(hook.ends_with("\n"));
        assert_ne!(r.hash(), Recipe::for_language(Language::Python).hash());
    }
}
