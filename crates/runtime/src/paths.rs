//! Pure helpers for choosing the state dir and checking the guest binary. The
//! edge (CLI, server) feeds them the environment it read.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How to build the static guest binary, for error messages.
pub const GUEST_BUILD_HINT: &str =
    "build it with: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p hearth-guest --target x86_64-unknown-linux-gnu";

/// The state dir: `explicit` (non-empty), else `<var_lib>/hearth` when
/// writable, else `$XDG_STATE_HOME/hearth`, else `~/.local/state/hearth`.
pub fn resolve_state_dir(
    explicit: Option<PathBuf>,
    var_lib: &Path,
    xdg_state: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf> {
    if let Some(p) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return Ok(p);
    }
    let system = var_lib.join("hearth");
    if dir_writable(&system) || (!system.exists() && dir_writable(var_lib)) {
        return Ok(system);
    }
    if let Some(x) = xdg_state.filter(|p| p.is_absolute()) {
        return Ok(x.join("hearth"));
    }
    match home {
        Some(h) => Ok(h.join(".local/state/hearth")),
        None => Err(Error::InvalidSpec(
            "cannot choose a state dir: set HEARTH_STATE_DIR (HOME is not set)".into(),
        )),
    }
}

/// The image cache: `explicit` (non-empty), else `<state>/images`.
pub fn resolve_image_cache(explicit: Option<PathBuf>, state_dir: &Path) -> PathBuf {
    explicit
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| state_dir.join("images"))
}

fn dir_writable(p: &Path) -> bool {
    p.is_dir()
        && nix::unistd::access(
            p,
            nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
        )
        .is_ok()
}

/// Where to look for the guest binary relative to the `hearth` executable:
/// `target/x86_64-unknown-linux-gnu/<profile>/hearth-guest`, the other
/// profile, then beside the executable.
pub fn guest_candidates(exe: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Some(dir) = exe.parent() else { return out };
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    if let (Some(profile), Some(target)) = (profile_dir.file_name(), profile_dir.parent()) {
        let triple = target.join("x86_64-unknown-linux-gnu");
        out.push(triple.join(profile).join("hearth-guest"));
        for p in ["release", "debug"] {
            let c = triple.join(p).join("hearth-guest");
            if !out.contains(&c) {
                out.push(c);
            }
        }
    }
    out.push(dir.join("hearth-guest"));
    out
}

/// Fails unless `path` is a static 64-bit ELF (no `PT_INTERP`).
pub fn check_static(path: &Path) -> Result<()> {
    let data = std::fs::read(path).map_err(|e| Error::io("cannot read", path, e))?;
    match elf_is_static(&data) {
        Some(true) => Ok(()),
        Some(false) => Err(Error::InvalidSpec(format!(
            "{} is dynamically linked (it has an ELF interpreter) and cannot run in the initramfs; {GUEST_BUILD_HINT}",
            path.display()
        ))),
        None => Err(Error::InvalidSpec(format!(
            "{} is not a 64-bit ELF executable; {GUEST_BUILD_HINT}",
            path.display()
        ))),
    }
}

/// `Some(true)` for a 64-bit little-endian ELF with no `PT_INTERP`,
/// `Some(false)` with one, `None` when it is not such an ELF.
pub fn elf_is_static(d: &[u8]) -> Option<bool> {
    if d.get(0..4)? != b"\x7fELF" || *d.get(4)? != 2 || *d.get(5)? != 1 {
        return None;
    }
    let u16_at =
        |o: usize| -> Option<u16> { Some(u16::from_le_bytes(d.get(o..o + 2)?.try_into().ok()?)) };
    let u32_at =
        |o: usize| -> Option<u32> { Some(u32::from_le_bytes(d.get(o..o + 4)?.try_into().ok()?)) };
    let u64_at =
        |o: usize| -> Option<u64> { Some(u64::from_le_bytes(d.get(o..o + 8)?.try_into().ok()?)) };
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    if phentsize < 4 {
        return None;
    }
    for i in 0..phnum {
        let off = phoff.checked_add(i.checked_mul(phentsize)?)?;
        const PT_INTERP: u32 = 3;
        if u32_at(off)? == PT_INTERP {
            return Some(false);
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_state_dir_wins_then_xdg_then_home() {
        let ro = Path::new("/nonexistent-var-lib");
        assert_eq!(
            resolve_state_dir(Some("/s".into()), ro, Some("/x".into()), Some("/h".into())).unwrap(),
            PathBuf::from("/s")
        );
        assert_eq!(
            resolve_state_dir(None, ro, Some("/x".into()), Some("/h".into())).unwrap(),
            PathBuf::from("/x/hearth")
        );
        assert_eq!(
            resolve_state_dir(None, ro, Some("relative".into()), Some("/h".into())).unwrap(),
            PathBuf::from("/h/.local/state/hearth")
        );
        assert!(resolve_state_dir(None, ro, None, None).is_err());
        let d = tempfile::tempdir().unwrap();
        let got = resolve_state_dir(None, d.path(), Some("/x".into()), None).unwrap();
        assert_eq!(got, d.path().join("hearth"));
    }

    #[test]
    fn image_cache_env_wins_over_state_dir() {
        assert_eq!(
            resolve_image_cache(Some("/ci/cache".into()), Path::new("/s")),
            PathBuf::from("/ci/cache")
        );
        assert_eq!(
            resolve_image_cache(Some("".into()), Path::new("/s")),
            PathBuf::from("/s/images")
        );
    }

    #[test]
    fn guest_candidates_follow_the_target_layout() {
        let c = guest_candidates(Path::new("/w/target/debug/hearth"));
        assert_eq!(
            c[0],
            PathBuf::from("/w/target/x86_64-unknown-linux-gnu/debug/hearth-guest")
        );
        assert!(c.contains(&PathBuf::from(
            "/w/target/x86_64-unknown-linux-gnu/release/hearth-guest"
        )));
        assert_eq!(
            c.last().unwrap(),
            &PathBuf::from("/w/target/debug/hearth-guest")
        );
        let t = guest_candidates(Path::new("/w/target/release/deps/vm_x-123"));
        assert_eq!(
            t[0],
            PathBuf::from("/w/target/x86_64-unknown-linux-gnu/release/hearth-guest")
        );
    }

    #[test]
    fn elf_static_check_reads_program_headers() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_is_static(&me), Some(false));
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        assert_eq!(elf_is_static(b"\x7fELF"), None);
        let mut h = vec![0u8; 64];
        h[0..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[0x36] = 56;
        assert_eq!(elf_is_static(&h), Some(true));
        h[0x20] = 64;
        h[0x38] = 1;
        let mut ph = vec![0u8; 56];
        ph[0] = 3;
        h.extend(ph);
        assert_eq!(elf_is_static(&h), Some(false));
    }
}
