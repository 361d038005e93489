//! The image cache: `<cache>/rootfs/<language>-<hash16>.squashfs` with a JSON
//! sidecar `<language>-<hash16>.json` and the last build's log `….log`.
//!
//! A build works in `.tmp-<language>-<hash16>-<pid>/` in the same directory,
//! under an exclusive lock on `.lock`. The squashfs is fsynced and renamed into
//! place, then the sidecar, which is the commit marker: a squashfs without a
//! valid sidecar is never used, and the next `ensure` removes it together with
//! any `.tmp-*` left by a build that was killed.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use super::build::{build_squashfs, BuildPhase, BuildProgress};
use super::language::{UnknownLanguage, VALID_NAMES};
use super::{Compression, Language, Recipe, RootfsError, RECIPE_VERSION};

/// Version of the sidecar layout; entries with another version are ignored.
pub const SIDECAR_FORMAT_VERSION: u32 = 1;

const TMP_PREFIX: &str = ".tmp-";
const LOCK_FILE: &str = ".lock";

/// A cached, ready-to-boot language image (also the sidecar's content).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageInfo {
    pub format_version: u32,
    pub language: Language,
    /// Full sha256 of the recipe; the file name carries its first 16 digits.
    pub recipe_hash: String,
    pub recipe_version: u32,
    /// The squashfs file (recomputed when read, so the cache can move).
    #[serde(default)]
    pub path: PathBuf,
    /// Size of the squashfs in bytes.
    pub size: u64,
    /// Size of the plain tar of the same root, for comparison.
    pub tar_size: u64,
    pub compression: Compression,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub bootstrap_ms: u64,
    pub pack_ms: u64,
    /// Environment for processes in the sandbox (also in the image's `/etc/environment`).
    pub env: Vec<(String, String)>,
    /// Command printing `hello world` through the language's runtime.
    pub hello: Vec<String>,
    /// The user commands run as by default (`None`: root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Whether this entry matches the current recipe for its language.
    #[serde(default)]
    pub current: bool,
}

/// `<cache>/rootfs`.
pub fn rootfs_dir(cache: &Path) -> PathBuf {
    cache.join("rootfs")
}

fn entry_name(language: Language, hash: &str) -> String {
    format!("{language}-{}", &hash[..16.min(hash.len())])
}

/// Builds the image for `language` unless a valid one is cached.
pub fn ensure(
    cache: &Path,
    language: Language,
    progress: &mut dyn BuildProgress,
) -> Result<ImageInfo, RootfsError> {
    ensure_recipe(cache, &Recipe::for_language(language), progress)
}

/// Builds `recipe` unless a valid image for it is cached.
pub fn ensure_recipe(
    cache: &Path,
    recipe: &Recipe,
    progress: &mut dyn BuildProgress,
) -> Result<ImageInfo, RootfsError> {
    let dir = rootfs_dir(cache);
    std::fs::create_dir_all(&dir).map_err(|e| RootfsError::io("create image cache", &dir, e))?;
    let _lock = lock(&dir)?;
    clean_stale(&dir);

    let hash = recipe.hash();
    let name = entry_name(recipe.language, &hash);
    if let Some(info) = read_entry(&dir, &name) {
        if info.recipe_hash == hash {
            tracing::debug!(path = %info.path.display(), "rootfs image cached");
            return Ok(info);
        }
    }

    let work = WorkDir::create(dir.join(format!("{TMP_PREFIX}{name}-{}", std::process::id())))?;
    let image_tmp = work.0.join("image.squashfs");
    let log = dir.join(format!("{name}.log"));
    tracing::info!(language = %recipe.language, hash = %hash, "building rootfs image");
    let stats = build_squashfs(recipe, &work.0, &image_tmp, &log, progress)?;

    progress.phase(BuildPhase::Finishing);
    let final_image = dir.join(format!("{name}.squashfs"));
    let size = fsync_file(&image_tmp)?;
    let info = ImageInfo {
        format_version: SIDECAR_FORMAT_VERSION,
        language: recipe.language,
        recipe_hash: hash.clone(),
        recipe_version: RECIPE_VERSION,
        path: final_image.clone(),
        size,
        tar_size: stats.tar_size,
        compression: recipe.compression,
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        bootstrap_ms: stats.bootstrap.as_millis() as u64,
        pack_ms: stats.pack.as_millis() as u64,
        env: recipe.env.clone(),
        hello: recipe.hello.clone(),
        user: recipe.user.clone(),
        current: *recipe == Recipe::for_language(recipe.language),
    };
    let sidecar_tmp = work.0.join("sidecar.json");
    write_synced(
        &sidecar_tmp,
        &serde_json::to_vec_pretty(&info).unwrap_or_default(),
    )?;
    std::fs::rename(&image_tmp, &final_image)
        .map_err(|e| RootfsError::io("move image into the cache", &final_image, e))?;
    let sidecar = dir.join(format!("{name}.json"));
    std::fs::rename(&sidecar_tmp, &sidecar)
        .map_err(|e| RootfsError::io("move sidecar into the cache", &sidecar, e))?;
    fsync_dir(&dir)?;
    drop(work);
    Ok(info)
}

/// Every valid cached image, sorted by language then creation time.
pub fn list(cache: &Path) -> Result<Vec<ImageInfo>, RootfsError> {
    let dir = rootfs_dir(cache);
    let rd = match std::fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(RootfsError::io("read image cache", &dir, e)),
    };
    let mut out = Vec::new();
    for entry in rd.flatten() {
        let file = entry.file_name();
        let Some(name) = file.to_str().and_then(|n| n.strip_suffix(".json")) else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        if let Some(info) = read_entry(&dir, name) {
            out.push(info);
        }
    }
    out.sort_by_key(|i| (i.language, i.created));
    Ok(out)
}

/// Which cached images `remove` deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSelector {
    /// Every image of a language, current or stale.
    Language(Language),
    /// The images whose recipe hash starts with these hex digits (at least 4).
    Hash(String),
}

impl FromStr for ImageSelector {
    type Err = UnknownLanguage;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<Language>() {
            Ok(l) => Ok(ImageSelector::Language(l)),
            Err(_) if s.len() >= 4 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
                Ok(ImageSelector::Hash(s.to_ascii_lowercase()))
            }
            Err(e) => Err(e),
        }
    }
}

impl std::fmt::Display for ImageSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageSelector::Language(l) => write!(f, "language {l}"),
            ImageSelector::Hash(h) => write!(f, "hash {h}"),
        }
    }
}

/// Removes the matching images (sidecar first, so a half-done removal leaves
/// no usable entry); errors when nothing matched.
pub fn remove(cache: &Path, selector: &ImageSelector) -> Result<Vec<ImageInfo>, RootfsError> {
    let dir = rootfs_dir(cache);
    let matched: Vec<ImageInfo> = list(cache)?
        .into_iter()
        .filter(|i| match selector {
            ImageSelector::Language(l) => i.language == *l,
            ImageSelector::Hash(h) => h.len() >= 4 && i.recipe_hash.starts_with(h.as_str()),
        })
        .collect();
    if matched.is_empty() {
        return Err(RootfsError::NoMatch(format!(
            "{selector} (languages: {VALID_NAMES}; or 4+ hex digits of a hash)"
        )));
    }
    let _lock = lock(&dir)?;
    for info in &matched {
        let name = entry_name(info.language, &info.recipe_hash);
        for ext in ["json", "squashfs", "log"] {
            let p = dir.join(format!("{name}.{ext}"));
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RootfsError::io("remove cached image", &p, e)),
            }
        }
    }
    fsync_dir(&dir)?;
    Ok(matched)
}

/// Reads and checks one entry; `None` for anything not fully valid.
fn read_entry(dir: &Path, name: &str) -> Option<ImageInfo> {
    let sidecar = dir.join(format!("{name}.json"));
    let image = dir.join(format!("{name}.squashfs"));
    let bytes = std::fs::read(&sidecar).ok()?;
    let mut info: ImageInfo = match serde_json::from_slice(&bytes) {
        Ok(i) => i,
        Err(e) => {
            tracing::warn!(path = %sidecar.display(), error = %e, "ignoring unreadable image sidecar");
            return None;
        }
    };
    let size = std::fs::metadata(&image).ok()?.len();
    if info.format_version != SIDECAR_FORMAT_VERSION
        || entry_name(info.language, &info.recipe_hash) != name
        || info.size != size
    {
        return None;
    }
    info.path = image;
    info.current = Recipe::for_language(info.language).hash() == info.recipe_hash;
    Some(info)
}

fn lock(dir: &Path) -> Result<Flock<File>, RootfsError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| RootfsError::io("open cache lock", &path, e))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, source)| RootfsError::Lock { path, source })
}

/// Removes what killed builds left: `.tmp-*` work dirs and squashfs files
/// without a valid sidecar. Called with the lock held.
fn clean_stale(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.starts_with(TMP_PREFIX) {
            tracing::info!(path = %path.display(), "removing leftover from an interrupted build");
            remove_tree_one_fs(&path);
        } else if let Some(stem) = name.strip_suffix(".squashfs") {
            if read_entry(dir, stem).is_none() {
                tracing::info!(path = %path.display(), "removing image without a valid sidecar");
                let _ = std::fs::remove_file(&path);
                let _ = std::fs::remove_file(dir.join(format!("{stem}.json")));
            }
        }
    }
}

/// A build's work directory, removed on drop (success, error or panic).
struct WorkDir(PathBuf);

impl WorkDir {
    fn create(path: PathBuf) -> Result<Self, RootfsError> {
        if path.exists() {
            remove_tree_one_fs(&path);
        }
        std::fs::create_dir(&path).map_err(|e| RootfsError::io("create build dir", &path, e))?;
        Ok(WorkDir(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        remove_tree_one_fs(&self.0);
    }
}

/// Removes `top` without ever crossing into another filesystem: a killed
/// mmdebstrap may leave /proc, /sys or device nodes mounted inside its chroot.
/// Such mounts are detached first when we may; anything still mounted is kept.
fn remove_tree_one_fs(top: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(top) else {
        return;
    };
    if !meta.is_dir() {
        let _ = std::fs::remove_file(top);
        return;
    }
    detach_mounts_under(top);
    fn walk(p: &Path, dev: u64) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            let Ok(m) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if m.dev() != dev {
                tracing::warn!(path = %path.display(), "not removing a mount point left by a build");
                continue;
            }
            if m.is_dir() {
                walk(&path, dev);
                let _ = std::fs::remove_dir(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    walk(top, meta.dev());
    if let Err(e) = std::fs::remove_dir(top) {
        tracing::warn!(path = %top.display(), error = %e, "could not remove build leftovers");
    }
}

/// Lazily unmounts every mount at or below `top` (deepest first); root only.
fn detach_mounts_under(top: &Path) {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let Ok(top) = top.canonicalize() else { return };
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .filter(|p| p.starts_with(&top))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Err(e) = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(path = %p.display(), error = %e, "could not unmount build leftover");
        }
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn fsync_file(path: &Path) -> Result<u64, RootfsError> {
    let f = File::open(path).map_err(|e| RootfsError::io("open built image", path, e))?;
    f.sync_all()
        .map_err(|e| RootfsError::io("fsync built image", path, e))?;
    Ok(f.metadata()
        .map_err(|e| RootfsError::io("stat built image", path, e))?
        .len())
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), RootfsError> {
    let mut f = File::create(path).map_err(|e| RootfsError::io("write sidecar", path, e))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| RootfsError::io("write sidecar", path, e))
}

fn fsync_dir(dir: &Path) -> Result<(), RootfsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| RootfsError::io("fsync image cache", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/plain"), "/plain");
        assert_eq!(unescape_mountinfo(r"/x\04"), r"/x\04");
    }

    #[test]
    fn selector_parses_languages_and_hashes() {
        assert_eq!(
            "node".parse(),
            Ok(ImageSelector::Language(Language::Javascript))
        );
        assert_eq!("AbCd12".parse(), Ok(ImageSelector::Hash("abcd12".into())));
        assert!("abc".parse::<ImageSelector>().is_err());
        assert!("perl".parse::<ImageSelector>().is_err());
    }
}
