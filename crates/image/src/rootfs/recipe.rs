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
}

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
        let (packages, hello, extra_env): (&[&str], Vec<&str>, &[(&str, &str)]) = match language {
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
        CUSTOMIZE_HOOK.replace("@ENV@", &env.join("\n"))
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
    }
}
