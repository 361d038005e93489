//! Finding the guest kernel on the host and its release string.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use crate::ImageError;

/// Where a kernel came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelKind {
    /// Named by the user (`--kernel`, `HEARTH_KERNEL`).
    Explicit,
    /// hearth's own minimal kernel from the `scripts/kernel.sh` cache
    /// (everything built in: no modules).
    Own,
    /// The Debian cloud kernel in `/boot` (the fallback; needs modules).
    Cloud,
}

impl KernelKind {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelKind::Explicit => "explicit",
            KernelKind::Own => "own",
            KernelKind::Cloud => "cloud",
        }
    }
}

/// A kernel image and the release it reports (`uname -r` inside the guest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    pub path: PathBuf,
    pub release: String,
    pub kind: KernelKind,
}

impl KernelInfo {
    /// `/lib/modules/<release>` on the host.
    pub fn modules_dir(&self) -> PathBuf {
        Path::new("/lib/modules").join(&self.release)
    }

    /// Whether the initramfs carries modules for this kernel: not for hearth's
    /// own (all built in), nor for an explicit kernel without a host
    /// `/lib/modules/<release>/modules.dep`.
    pub fn wants_modules(&self) -> bool {
        match self.kind {
            KernelKind::Own => false,
            KernelKind::Cloud => true,
            KernelKind::Explicit => self.modules_dir().join("modules.dep").is_file(),
        }
    }
}

/// Chooses the kernel to boot: `explicit` if given, else hearth's own kernel
/// from the cache under `own_cache` (when one is given and a build matching
/// this binary's fragment is there), else the Debian cloud kernel in `/boot`.
pub fn select_kernel(
    explicit: Option<&Path>,
    own_cache: Option<&Path>,
) -> Result<KernelInfo, ImageError> {
    if explicit.is_none() {
        if let Some(k) = own_cache.and_then(crate::own_kernel::find_own_kernel) {
            return Ok(k);
        }
    }
    find_kernel(explicit)
}

/// Finds the kernel: `explicit` if given, else the newest
/// `/boot/vmlinuz-*-cloud-amd64`, else the newest `/boot/vmlinuz-*`.
pub fn find_kernel(explicit: Option<&Path>) -> Result<KernelInfo, ImageError> {
    find_kernel_in(Path::new("/boot"), explicit)
}

/// [`find_kernel`] with the boot directory as a parameter (for tests).
pub fn find_kernel_in(boot_dir: &Path, explicit: Option<&Path>) -> Result<KernelInfo, ImageError> {
    if let Some(path) = explicit {
        let header = read_header(path)?;
        // An own-kernel cache entry named explicitly (a stopped VM's record
        // keeps the path it booted) is still the own kernel.
        let dir = path.parent().unwrap_or(Path::new("."));
        if path.file_name() == Some("vmlinux".as_ref()) && dir.join("key").is_file() {
            if let Some(release) = crate::own_kernel::recorded_release(dir) {
                return Ok(KernelInfo {
                    path: path.to_owned(),
                    release,
                    kind: KernelKind::Own,
                });
            }
        }
        let release = release_from_file_name(path)
            .or_else(|| release_from_bzimage(&header))
            .or_else(|| release_from_elf(path, &header))
            .ok_or_else(|| ImageError::KernelRelease {
                path: path.to_owned(),
            })?;
        return Ok(KernelInfo {
            path: path.to_owned(),
            release,
            kind: KernelKind::Explicit,
        });
    }
    let entries = std::fs::read_dir(boot_dir).map_err(|source| ImageError::KernelNotFound {
        dir: boot_dir.to_owned(),
        detail: source.to_string(),
    })?;
    let mut found: Vec<(String, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter_map(|p| release_from_file_name(&p).map(|r| (r, p)))
        .collect();
    found.sort_by(|a, b| {
        let cloud = |r: &str| r.ends_with("-cloud-amd64");
        cloud(&a.0)
            .cmp(&cloud(&b.0))
            .then_with(|| version_cmp(&a.0, &b.0))
    });
    let (release, path) = found.pop().ok_or_else(|| ImageError::KernelNotFound {
        dir: boot_dir.to_owned(),
        detail: "no vmlinuz-* file".into(),
    })?;
    Ok(KernelInfo {
        path,
        release,
        kind: KernelKind::Cloud,
    })
}

/// The release of an uncompressed ELF kernel (`vmlinux`): the word after the
/// `Linux version ` banner in its data.
fn release_from_elf(path: &Path, header: &[u8]) -> Option<String> {
    if !header.starts_with(b"\x7fELF") {
        return None;
    }
    let data = std::fs::read(path).ok()?;
    release_from_banner(&data)
}

/// The word after the first `Linux version ` followed by a digit.
pub fn release_from_banner(data: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let mut at = 0;
    while let Some(i) = data[at..].windows(BANNER.len()).position(|w| w == BANNER) {
        let start = at + i + BANNER.len();
        let rest = &data[start..];
        if rest.first().is_some_and(u8::is_ascii_digit) {
            let end = rest
                .iter()
                .position(|&b| b == 0 || b == b' ' || b == b'\n')?;
            return std::str::from_utf8(&rest[..end]).ok().map(str::to_owned);
        }
        at = start;
    }
    None
}

fn read_header(path: &Path) -> Result<Vec<u8>, ImageError> {
    use std::io::Read;
    let mut buf = vec![0u8; 64 * 1024];
    let mut f = std::fs::File::open(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut len = 0;
    loop {
        let n = f.read(&mut buf[len..]).map_err(|source| ImageError::Io {
            path: path.to_owned(),
            source,
        })?;
        if n == 0 || len + n == buf.len() {
            len += n;
            break;
        }
        len += n;
    }
    buf.truncate(len);
    Ok(buf)
}

fn release_from_file_name(path: &Path) -> Option<String> {
    let name = path.file_name()?.to_str()?;
    let rel = name.strip_prefix("vmlinuz-")?;
    (!rel.is_empty()).then(|| rel.to_owned())
}

/// Reads the release from a bzImage setup header (`kernel_version` field at
/// 0x20E points to a NUL-terminated string, offset by 0x200).
pub fn release_from_bzimage(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*image.get(0x20E)?, *image.get(0x20F)?]) as usize;
    if ptr == 0 {
        return None;
    }
    let start = ptr + 0x200;
    let rest = image.get(start..)?;
    let end = rest.iter().position(|&b| b == 0 || b == b' ')?;
    let rel = std::str::from_utf8(&rest[..end]).ok()?;
    (!rel.is_empty()).then(|| rel.to_owned())
}

/// Compares release strings, numbers numerically: `6.1.0-10` < `6.1.0-9` is false.
fn version_cmp(a: &str, b: &str) -> Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let ord = match (x, y) {
            ((true, xs), (true, ys)) => xs
                .trim_start_matches('0')
                .len()
                .cmp(&ys.trim_start_matches('0').len())
                .then_with(|| xs.trim_start_matches('0').cmp(ys.trim_start_matches('0'))),
            ((_, xs), (_, ys)) => xs.cmp(ys),
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_parts_compare_as_numbers() {
        assert_eq!(
            version_cmp("6.1.0-10-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(version_cmp("5.19.0", "6.1.0"), Ordering::Less);
        assert_eq!(version_cmp("6.1.0", "6.1.0"), Ordering::Equal);
    }

    #[test]
    fn prefers_newest_cloud_kernel() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "vmlinuz-6.1.0-9-cloud-amd64",
            "vmlinuz-6.1.0-10-cloud-amd64",
            "vmlinuz-6.5.0-1-amd64",
            "config-6.1.0-10-cloud-amd64",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let k = find_kernel_in(dir.path(), None).unwrap();
        assert_eq!(k.release, "6.1.0-10-cloud-amd64");
        assert_eq!(k.path, dir.path().join("vmlinuz-6.1.0-10-cloud-amd64"));
        assert_eq!(
            k.modules_dir(),
            Path::new("/lib/modules/6.1.0-10-cloud-amd64")
        );
    }

    #[test]
    fn falls_back_to_any_vmlinuz_and_errors_clearly_when_none() {
        let dir = tempfile::tempdir().unwrap();
        let err = find_kernel_in(dir.path(), None).unwrap_err().to_string();
        assert!(err.contains("no kernel found"), "{err}");
        assert!(err.contains("--kernel"), "{err}");
        std::fs::write(dir.path().join("vmlinuz-6.5.0-1-amd64"), b"x").unwrap();
        assert_eq!(
            find_kernel_in(dir.path(), None).unwrap().release,
            "6.5.0-1-amd64"
        );
    }

    #[test]
    fn explicit_kernel_release_comes_from_the_bzimage_header() {
        let mut image = vec![0u8; 0x1000];
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x20E..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        image[0x500..0x500 + 30].copy_from_slice(b"6.1.0-56-cloud-amd64 (debian-k");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bzImage");
        std::fs::write(&path, &image).unwrap();
        let k = find_kernel_in(dir.path(), Some(&path)).unwrap();
        assert_eq!(k.release, "6.1.0-56-cloud-amd64");
        let missing = dir.path().join("missing");
        assert!(find_kernel_in(dir.path(), Some(&missing)).is_err());
    }

    #[test]
    fn elf_kernel_release_comes_from_the_banner() {
        let mut data =
            b"\x7fELF....Linux version %s (x) Linux version 6.1.192-hearth (root@h) #1".to_vec();
        data.push(0);
        assert_eq!(
            release_from_banner(&data).as_deref(),
            Some("6.1.192-hearth")
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinux");
        std::fs::write(&path, &data).unwrap();
        let k = find_kernel_in(dir.path(), Some(&path)).unwrap();
        assert_eq!(
            (k.release.as_str(), k.kind),
            ("6.1.192-hearth", KernelKind::Explicit)
        );
        assert!(
            !k.wants_modules(),
            "no /lib/modules/6.1.192-hearth on the host"
        );
        // The same file inside an own-kernel cache entry is the own kernel.
        std::fs::write(dir.path().join("release"), "6.1.192-hearth\n").unwrap();
        std::fs::write(dir.path().join("key"), "fragment x\n").unwrap();
        let k = find_kernel_in(dir.path(), Some(&path)).unwrap();
        assert_eq!(k.kind, KernelKind::Own);
    }

    #[test]
    fn selection_order_is_explicit_then_own_then_cloud() {
        let boot = tempfile::tempdir().unwrap();
        std::fs::write(boot.path().join("vmlinuz-6.1.0-9-cloud-amd64"), b"x").unwrap();
        let empty = tempfile::tempdir().unwrap();
        // No own kernel in the cache: the cloud kernel.
        let own = crate::own_kernel::find_own_kernel(empty.path());
        assert!(own.is_none());
        let cloud = find_kernel_in(boot.path(), None).unwrap();
        assert_eq!(cloud.kind, KernelKind::Cloud);
        assert!(cloud.wants_modules());
        // An explicit kernel wins over the own kernel.
        let explicit = boot.path().join("vmlinuz-6.1.0-9-cloud-amd64");
        let k = select_kernel(Some(&explicit), Some(empty.path())).unwrap();
        assert_eq!(k.kind, KernelKind::Explicit);
    }

    #[test]
    fn host_kernel_header_matches_its_file_name() {
        // Only meaningful when the Debian cloud kernel is installed; the
        // VM tier needs it anyway.
        let k = find_kernel(None).expect("a kernel in /boot (install linux-image-cloud-amd64)");
        let data = std::fs::read(&k.path).expect("kernel image readable (run as root?)");
        assert_eq!(
            release_from_bzimage(&data).as_deref(),
            Some(k.release.as_str())
        );
    }
}
