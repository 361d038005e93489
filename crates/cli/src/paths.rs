//! Where hearth keeps its state and finds the guest binary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

const BUILD_HINT: &str =
    "build it with: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p hearth-guest --target x86_64-unknown-linux-gnu";

/// The state dir: `HEARTH_STATE_DIR`, else `/var/lib/hearth` when writable, else
/// `$XDG_STATE_HOME/hearth` or `~/.local/state/hearth`.
pub fn state_dir() -> anyhow::Result<PathBuf> {
    resolve_state_dir(
        std::env::var_os("HEARTH_STATE_DIR").map(PathBuf::from),
        Path::new("/var/lib"),
        std::env::var_os("XDG_STATE_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(PathBuf::from),
    )
}

/// Pure-ish part of [`state_dir`] (it probes writability of `var_lib`).
pub fn resolve_state_dir(
    explicit: Option<PathBuf>,
    var_lib: &Path,
    xdg_state: Option<PathBuf>,
    home: Option<PathBuf>,
) -> anyhow::Result<PathBuf> {
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
        None => bail!("cannot choose a state dir: set HEARTH_STATE_DIR (HOME is not set)"),
    }
}

/// The image cache: an explicit (non-empty) `HEARTH_IMAGE_CACHE`, else
/// `<state>/images`. Language images live in its `rootfs/` subdirectory.
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

/// The static guest binary: `HEARTH_GUEST_BIN`, else next to the `hearth` binary's
/// target dir (`../x86_64-unknown-linux-gnu/<profile>/hearth-guest`), else beside it.
pub fn guest_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("HEARTH_GUEST_BIN").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!(
                "HEARTH_GUEST_BIN={} does not exist; {BUILD_HINT}",
                p.display()
            );
        }
        check_static(&p)?;
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find the hearth executable")?;
    let candidates = guest_candidates(&exe);
    for c in &candidates {
        if c.is_file() {
            check_static(c)?;
            return Ok(c.clone());
        }
    }
    let looked: Vec<String> = candidates.iter().map(|c| c.display().to_string()).collect();
    bail!("the static guest binary hearth-guest was not found (looked in {}; or set HEARTH_GUEST_BIN); {BUILD_HINT}", looked.join(", "))
}

/// Where to look for the guest binary relative to the `hearth` executable.
pub fn guest_candidates(exe: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Some(dir) = exe.parent() else { return out };
    // target/<profile>/hearth (or target/<profile>/deps/... for tests).
    let profile_dir = if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().unwrap_or(dir)
    } else {
        dir
    };
    if let (Some(profile), Some(target)) = (profile_dir.file_name(), profile_dir.parent()) {
        let triple = target.join("x86_64-unknown-linux-gnu");
        out.push(triple.join(profile).join("hearth-guest"));
        // The other profile, release first.
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

/// Fails unless `path` is an x86_64 ELF without a `PT_INTERP` program header (static).
pub fn check_static(path: &Path) -> anyhow::Result<()> {
    let data = std::fs::read(path)
        .with_context(|| format!("cannot read the guest binary {}", path.display()))?;
    match elf_is_static(&data) {
        Some(true) => Ok(()),
        Some(false) => bail!(
            "the guest binary {} is dynamically linked (it has an ELF interpreter) and cannot run in the initramfs; {BUILD_HINT}",
            path.display()
        ),
        None => bail!("the guest binary {} is not a 64-bit ELF executable; {BUILD_HINT}", path.display()),
    }
}

/// `Some(true)` for a 64-bit little-endian ELF with no `PT_INTERP`, `Some(false)` with
/// one, `None` when it is not such an ELF.
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
        assert_eq!(
            resolve_image_cache(None, Path::new("/s")),
            PathBuf::from("/s/images")
        );
    }

    #[test]
    fn writable_var_lib_is_used() {
        let d = tempfile::tempdir().unwrap();
        let got = resolve_state_dir(None, d.path(), Some("/x".into()), None).unwrap();
        assert_eq!(got, d.path().join("hearth"));
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
        // This test binary is dynamically linked (normal cargo test build).
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(elf_is_static(&me), Some(false));
        assert_eq!(elf_is_static(b"#!/bin/sh\n"), None);
        assert_eq!(elf_is_static(b"\x7fELF"), None);
        // A minimal header with no program headers counts as static.
        let mut h = vec![0u8; 64];
        h[0..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[0x36] = 56;
        assert_eq!(elf_is_static(&h), Some(true));
        // One PT_INTERP header.
        h[0x20] = 64;
        h[0x38] = 1;
        let mut ph = vec![0u8; 56];
        ph[0] = 3;
        h.extend(ph);
        assert_eq!(elf_is_static(&h), Some(false));
    }
}
