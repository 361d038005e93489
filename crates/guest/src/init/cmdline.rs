//! Pure parser for the hearth options on the kernel command line (`/proc/cmdline`).
//!
//! Recognised (all others are ignored; the last occurrence wins, as in the kernel):
//! - `hearth.hostname=NAME` — RFC 1123 host name, at most 64 bytes
//! - `hearth.root=initramfs` (default) or `hearth.root=overlay:LOWER:UPPER`
//!   (LOWER: read-only squashfs device, UPPER: ext4 device for the writable layer)
//! - `hearth.debug=1` — more console output from init

use std::path::PathBuf;

/// Where the root filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RootSpec {
    /// Stay on the initramfs (the kernel's rootfs).
    #[default]
    Initramfs,
    /// squashfs `lower` + ext4 `upper` combined with overlayfs, then switched into.
    Overlay { lower: PathBuf, upper: PathBuf },
}

/// The hearth options found on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Cmdline {
    pub hostname: Option<String>,
    pub root: RootSpec,
    pub debug: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("invalid hearth.hostname {0:?} (letters, digits, '-' and '.', 1-64 bytes)")]
    Hostname(String),
    #[error("invalid hearth.root {0:?} (want initramfs or overlay:/dev/LOWER:/dev/UPPER)")]
    Root(String),
    #[error("unterminated quote in kernel command line")]
    Quote,
}

/// Splits like the kernel does: whitespace separates, double quotes group.
fn tokens(text: &str) -> Result<Vec<String>, CmdlineError> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_quote = false;
    let mut has_token = false;
    for c in text.chars() {
        match c {
            '"' => {
                in_quote = !in_quote;
                has_token = true;
            }
            c if c.is_whitespace() && !in_quote => {
                if has_token {
                    out.push(std::mem::take(&mut cur));
                    has_token = false;
                }
            }
            c => {
                cur.push(c);
                has_token = true;
            }
        }
    }
    if in_quote {
        return Err(CmdlineError::Quote);
    }
    if has_token {
        out.push(cur);
    }
    Ok(out)
}

fn valid_hostname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.'])
}

fn parse_root(value: &str) -> Result<RootSpec, CmdlineError> {
    if value == "initramfs" {
        return Ok(RootSpec::Initramfs);
    }
    let bad = || CmdlineError::Root(value.to_owned());
    let rest = value.strip_prefix("overlay:").ok_or_else(bad)?;
    let (lower, upper) = rest.split_once(':').ok_or_else(bad)?;
    let ok = |p: &str| p.starts_with('/') && !p.contains(':') && p.len() > 1;
    if !ok(lower) || !ok(upper) || lower == upper {
        return Err(bad());
    }
    Ok(RootSpec::Overlay {
        lower: lower.into(),
        upper: upper.into(),
    })
}

/// Parses the full `/proc/cmdline` text.
pub fn parse(text: &str) -> Result<Cmdline, CmdlineError> {
    let mut out = Cmdline::default();
    for tok in tokens(text)? {
        let (key, value) = tok.split_once('=').unwrap_or((tok.as_str(), ""));
        match key {
            "hearth.hostname" => {
                if !valid_hostname(value) {
                    return Err(CmdlineError::Hostname(value.to_owned()));
                }
                out.hostname = Some(value.to_owned());
            }
            "hearth.root" => out.root = parse_root(value)?,
            "hearth.debug" => out.debug = !matches!(value, "0" | "false" | "no"),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_no_hearth_options() {
        let c = parse("console=ttyS0 panic=-1 quiet\n").unwrap();
        assert_eq!(c, Cmdline::default());
        assert_eq!(c.root, RootSpec::Initramfs);
    }

    #[test]
    fn reads_hostname_root_and_debug() {
        let c = parse(
            "console=ttyS0 hearth.hostname=sbx-1.local hearth.root=overlay:/dev/vda:/dev/vdb hearth.debug",
        )
        .unwrap();
        assert_eq!(c.hostname.as_deref(), Some("sbx-1.local"));
        assert_eq!(
            c.root,
            RootSpec::Overlay {
                lower: "/dev/vda".into(),
                upper: "/dev/vdb".into()
            }
        );
        assert!(c.debug);
        assert!(!parse("hearth.debug=0").unwrap().debug);
    }

    #[test]
    fn last_occurrence_wins_and_quotes_group() {
        let c = parse(r#"hearth.hostname=a hearth.hostname="b" x="1 2" hearth.root=initramfs"#)
            .unwrap();
        assert_eq!(c.hostname.as_deref(), Some("b"));
        assert_eq!(tokens(r#"a "b c" d"#).unwrap(), ["a", "b c", "d"]);
        assert_eq!(parse(r#"x="open"#), Err(CmdlineError::Quote));
    }

    #[test]
    fn rejects_bad_values() {
        for bad in [
            "hearth.hostname=",
            "hearth.hostname=a/b",
            "hearth.hostname=-x",
            "hearth.hostname=\"a b\"",
        ] {
            assert!(
                matches!(parse(bad), Err(CmdlineError::Hostname(_))),
                "{bad} accepted"
            );
        }
        let long = format!("hearth.hostname={}", "a".repeat(65));
        assert!(parse(&long).is_err());
        for bad in [
            "hearth.root=",
            "hearth.root=tmpfs",
            "hearth.root=overlay:/dev/vda",
            "hearth.root=overlay:vda:/dev/vdb",
            "hearth.root=overlay:/dev/vda:/dev/vda",
            "hearth.root=overlay:/dev/vda:/dev/vdb:/dev/vdc",
        ] {
            assert!(
                matches!(parse(bad), Err(CmdlineError::Root(_))),
                "{bad} accepted"
            );
        }
    }
}
