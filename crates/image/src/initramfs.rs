//! The boot initramfs: the static guest binary as `/init`, the kernel modules it
//! loads, and a load-order manifest, cached by content hash.
//!
//! Layout inside the archive:
//! - `/init` — the guest binary (PID 1 runs its `init` role, which re-execs it as the agent)
//! - `/dev/console` (c 5 1) so the kernel gives init a console before devtmpfs
//! - `/lib/modules/<release>/kernel/...ko` — the resolved modules
//! - `/lib/modules/hearth.order` — one path per line, relative to `/lib/modules`,
//!   in load order (dependencies first)
//! - empty directories: `proc sys dev run tmp mnt newroot etc root`

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cpio::CpioWriter;
use crate::modules::{parse_builtin, parse_modules_dep};
use crate::ImageError;

/// Bumped whenever the archive layout changes, so old cache entries are never
/// reused for a new layout.
pub const FORMAT_VERSION: u32 = 1;

/// How the archive is compressed.
///
/// Measured under TCG (guest time of the kernel's synchronous unpack,
/// `initramfs_async=0 initcall_debug`, 4 MB archive): none 62-71 ms, lz4 103-111 ms,
/// gzip 138 ms, zstd 155 ms. Decompression runs on the emulated CPU, while QEMU
/// loads the file with a host memcpy, so no compression boots fastest; that is
/// the default. Gzip stays available for shipping images over a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
}

impl Compression {
    fn extension(self) -> &'static str {
        match self {
            Compression::None => "cpio",
            Compression::Gzip => "cpio.gz",
        }
    }
}

/// Path of the load-order manifest inside the initramfs.
pub const MODULE_ORDER_PATH: &str = "lib/modules/hearth.order";

/// The modules a hearth guest needs on the Debian cloud kernel (built-in ones
/// are skipped at resolution time).
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_console",
    "vmw_vsock_virtio_transport",
    "virtio_blk",
    "overlay",
    "squashfs",
    "virtio_net",
];

/// What goes into an initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitramfsSpec {
    /// The static `hearth-guest` binary.
    pub guest_binary: PathBuf,
    pub kernel_release: String,
    /// Usually `/lib/modules/<kernel_release>`.
    pub modules_dir: PathBuf,
    /// Module names to include, closed over their dependencies.
    pub modules: Vec<String>,
}

impl InitramfsSpec {
    /// A spec with [`DEFAULT_MODULES`] from the host's `/lib/modules/<release>`
    /// (none for a kernel with everything built in, see [`crate::KernelInfo::wants_modules`]).
    pub fn with_default_modules(guest_binary: PathBuf, kernel: &crate::KernelInfo) -> Self {
        Self {
            guest_binary,
            kernel_release: kernel.release.clone(),
            modules_dir: kernel.modules_dir(),
            modules: if kernel.wants_modules() {
                DEFAULT_MODULES.iter().map(|s| s.to_string()).collect()
            } else {
                Vec::new()
            },
        }
    }
}

/// A built (or cached) initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltImage {
    pub path: PathBuf,
    /// Hex sha256 of the inputs (see [`build_cached`]).
    pub hash: String,
    /// Size of the compressed file in bytes.
    pub size: u64,
}

/// All inputs read into memory, plus their hash.
struct Inputs {
    guest: Vec<u8>,
    /// (path relative to modules_dir, bytes), in load order.
    modules: Vec<(String, Vec<u8>)>,
    hash: String,
}

fn read(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_text(path: &Path) -> Result<String, ImageError> {
    std::fs::read_to_string(path).map_err(|source| ImageError::Io {
        path: path.to_owned(),
        source,
    })
}

fn gather(spec: &InitramfsSpec, compression: Compression) -> Result<Inputs, ImageError> {
    let guest = read(&spec.guest_binary)?;
    let mut order = Vec::new();
    if !spec.modules.is_empty() {
        let dep_path = spec.modules_dir.join("modules.dep");
        let deps =
            parse_modules_dep(&read_text(&dep_path)?).map_err(|source| ImageError::Modules {
                dir: spec.modules_dir.clone(),
                source,
            })?;
        let builtin_path = spec.modules_dir.join("modules.builtin");
        let builtin = match std::fs::read_to_string(&builtin_path) {
            Ok(text) => parse_builtin(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(source) => {
                return Err(ImageError::Io {
                    path: builtin_path,
                    source,
                })
            }
        };
        order = deps
            .resolve(&builtin, &spec.modules)
            .map_err(|source| ImageError::Modules {
                dir: spec.modules_dir.clone(),
                source,
            })?;
    }
    let mut modules = Vec::with_capacity(order.len());
    for rel in order {
        let bytes = read(&spec.modules_dir.join(&rel))?;
        modules.push((rel, bytes));
    }

    let mut h = Sha256::new();
    h.update(b"hearth-initramfs\0");
    h.update(FORMAT_VERSION.to_le_bytes());
    h.update(compression.extension().as_bytes());
    let mut field = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    };
    field(spec.kernel_release.as_bytes());
    for m in &spec.modules {
        field(m.as_bytes());
    }
    field(&guest);
    for (rel, bytes) in &modules {
        field(rel.as_bytes());
        field(bytes);
    }
    let hash = hex::encode(h.finalize());
    Ok(Inputs {
        guest,
        modules,
        hash,
    })
}

/// Writes the uncompressed cpio archive for `spec`.
fn write_archive<W: Write>(
    out: W,
    release: &str,
    inputs: &Inputs,
) -> Result<W, crate::cpio::CpioError> {
    let mut w = CpioWriter::new(out);
    for dir in ["proc", "sys", "dev", "run", "mnt", "newroot", "etc", "root"] {
        w.dir(dir, 0o755)?;
    }
    w.dir("tmp", 0o1777)?;
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.char_device("dev/null", 0o666, 1, 3)?;
    w.file("init", 0o755, &inputs.guest)?;
    let mut manifest = String::new();
    for (rel, bytes) in &inputs.modules {
        let path = format!("lib/modules/{release}/{rel}");
        w.file(&path, 0o644, bytes)?;
        manifest.push_str(&format!("{release}/{rel}\n"));
    }
    w.file(MODULE_ORDER_PATH, 0o644, manifest.as_bytes())?;
    w.finish()
}

/// Writes the archive for `spec` into `out`; returns the input hash.
pub fn write_to<W: Write>(
    spec: &InitramfsSpec,
    compression: Compression,
    out: W,
) -> Result<String, ImageError> {
    let inputs = gather(spec, compression)?;
    encode(out, compression, &spec.kernel_release, &inputs)?;
    Ok(inputs.hash)
}

fn encode<W: Write>(
    out: W,
    compression: Compression,
    release: &str,
    inputs: &Inputs,
) -> Result<(), ImageError> {
    let io_err = |e: std::io::Error| ImageError::Cpio(e.into());
    match compression {
        Compression::None => {
            let mut out = write_archive(out, release, inputs).map_err(ImageError::Cpio)?;
            out.flush().map_err(io_err)
        }
        Compression::Gzip => {
            let enc = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
            let enc = write_archive(enc, release, inputs).map_err(ImageError::Cpio)?;
            enc.finish().map_err(io_err)?.flush().map_err(io_err)
        }
    }
}

/// The cache file name for an input hash.
pub fn cache_file_name(hash: &str, compression: Compression) -> String {
    format!(
        "initramfs-{}.{}",
        &hash[..16.min(hash.len())],
        compression.extension()
    )
}

/// [`build_cached_with`] with the default (fastest-booting) compression.
pub fn build_cached(spec: &InitramfsSpec, cache_dir: &Path) -> Result<BuiltImage, ImageError> {
    build_cached_with(spec, cache_dir, Compression::default())
}

/// Builds the initramfs for `spec` into `cache_dir` as
/// `initramfs-<hash16>.cpio[.gz]`, or returns the existing entry when the
/// inputs (guest binary, module bytes, spec, compression, format version) hash
/// the same. The file is written to a temporary name, fsynced and renamed, so
/// a cache entry is never half-written.
pub fn build_cached_with(
    spec: &InitramfsSpec,
    cache_dir: &Path,
    compression: Compression,
) -> Result<BuiltImage, ImageError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ImageError::Io { path, source }
    };
    std::fs::create_dir_all(cache_dir).map_err(io(cache_dir))?;
    let inputs = gather(spec, compression)?;
    let path = cache_dir.join(cache_file_name(&inputs.hash, compression));
    if let Ok(meta) = std::fs::metadata(&path) {
        if meta.is_file() {
            tracing::debug!(path = %path.display(), "initramfs cache hit");
            return Ok(BuiltImage {
                path,
                hash: inputs.hash,
                size: meta.len(),
            });
        }
    }
    let tmp = tempfile::Builder::new()
        .prefix(".initramfs-")
        .suffix(".tmp")
        .tempfile_in(cache_dir)
        .map_err(io(cache_dir))?;
    encode(
        std::io::BufWriter::new(tmp.as_file()),
        compression,
        &spec.kernel_release,
        &inputs,
    )?;
    // World-readable like the language images: a jailed VMM (another uid) reads
    // it through a bind mount, and the cache directory keeps others out.
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .map_err(io(tmp.path()))?;
    }
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    let size = tmp.as_file().metadata().map_err(io(tmp.path()))?.len();
    tmp.persist(&path).map_err(|e| ImageError::Io {
        path: path.clone(),
        source: e.error,
    })?;
    tracing::info!(path = %path.display(), size, "built initramfs");
    Ok(BuiltImage {
        path,
        hash: inputs.hash,
        size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpio::{read_entries, EntryKind};
    use std::io::Read;

    /// A fake modules dir with a tiny dependency chain.
    fn fixture(dir: &Path) -> InitramfsSpec {
        let mods = dir.join("modules");
        std::fs::create_dir_all(mods.join("kernel/a")).unwrap();
        std::fs::write(
            mods.join("modules.dep"),
            "kernel/a/top.ko: kernel/a/mid.ko kernel/a/base.ko\nkernel/a/mid.ko: kernel/a/base.ko\nkernel/a/base.ko:\n",
        )
        .unwrap();
        std::fs::write(mods.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").unwrap();
        for m in ["top", "mid", "base"] {
            std::fs::write(mods.join(format!("kernel/a/{m}.ko")), format!("{m}-bytes")).unwrap();
        }
        let guest = dir.join("hearth-guest");
        std::fs::write(&guest, b"guest-v1").unwrap();
        InitramfsSpec {
            guest_binary: guest,
            kernel_release: "6.1.0-test".into(),
            modules_dir: mods,
            modules: vec!["top".into(), "ext4".into()],
        }
    }

    fn unpack(path: &Path) -> Vec<crate::cpio::Entry> {
        let bytes = std::fs::read(path).unwrap();
        let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
            let mut raw = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut raw)
                .unwrap();
            raw
        } else {
            bytes
        };
        read_entries(&raw).unwrap()
    }

    #[test]
    fn archive_holds_init_console_modules_and_ordered_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let spec = fixture(dir.path());
        let img = build_cached(&spec, &dir.path().join("cache")).unwrap();
        let entries = unpack(&img.path);
        let get = |p: &str| {
            entries
                .iter()
                .find(|e| e.path == p)
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        assert_eq!(get("init").kind, EntryKind::File(b"guest-v1".to_vec()));
        assert_eq!(get("init").perm, 0o755);
        assert_eq!(
            get("dev/console").kind,
            EntryKind::CharDevice { major: 5, minor: 1 }
        );
        assert_eq!(
            get("lib/modules/6.1.0-test/kernel/a/mid.ko").kind,
            EntryKind::File(b"mid-bytes".to_vec())
        );
        assert_eq!(
            get(MODULE_ORDER_PATH).kind,
            EntryKind::File(
                b"6.1.0-test/kernel/a/base.ko\n6.1.0-test/kernel/a/mid.ko\n6.1.0-test/kernel/a/top.ko\n"
                    .to_vec()
            )
        );
        assert_eq!(img.size, std::fs::metadata(&img.path).unwrap().len());
        assert_eq!(
            img.path.file_name().unwrap().to_str().unwrap(),
            format!("initramfs-{}.cpio", &img.hash[..16])
        );
    }

    #[test]
    fn gzip_variant_has_same_content_but_its_own_name_and_hash() {
        let dir = tempfile::tempdir().unwrap();
        let spec = fixture(dir.path());
        let cache = dir.path().join("cache");
        let raw = build_cached(&spec, &cache).unwrap();
        let gz = build_cached_with(&spec, &cache, Compression::Gzip).unwrap();
        assert_ne!(raw.hash, gz.hash);
        assert!(gz.path.to_str().unwrap().ends_with(".cpio.gz"), "{gz:?}");
        assert_eq!(&std::fs::read(&gz.path).unwrap()[..2], &[0x1f, 0x8b]);
        assert_eq!(unpack(&raw.path), unpack(&gz.path));
    }

    #[test]
    fn cache_hits_on_same_inputs_and_rebuilds_when_the_guest_changes() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let spec = fixture(dir.path());
        let first = build_cached(&spec, &cache).unwrap();
        let mtime = std::fs::metadata(&first.path).unwrap().modified().unwrap();
        let again = build_cached(&spec, &cache).unwrap();
        assert_eq!(first, again);
        assert_eq!(
            std::fs::metadata(&again.path).unwrap().modified().unwrap(),
            mtime,
            "a cache hit must not rewrite the file"
        );

        std::fs::write(&spec.guest_binary, b"guest-v2").unwrap();
        let rebuilt = build_cached(&spec, &cache).unwrap();
        assert_ne!(rebuilt.hash, first.hash);
        assert_ne!(rebuilt.path, first.path);
        assert_eq!(
            unpack(&rebuilt.path)
                .iter()
                .find(|e| e.path == "init")
                .unwrap()
                .kind,
            EntryKind::File(b"guest-v2".to_vec())
        );

        let mut other = spec.clone();
        other.modules = vec!["mid".into()];
        assert_ne!(build_cached(&other, &cache).unwrap().hash, rebuilt.hash);

        let leftovers: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    }

    #[test]
    fn missing_guest_binary_and_unknown_module_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = fixture(dir.path());
        spec.modules.push("nosuch".into());
        let err = build_cached(&spec, &dir.path().join("c")).unwrap_err();
        assert!(err.to_string().contains("nosuch") || format!("{err:?}").contains("nosuch"));
        spec.guest_binary = dir.path().join("absent");
        let err = build_cached(&spec, &dir.path().join("c")).unwrap_err();
        assert!(err.to_string().contains("absent"), "{err}");
    }
}
