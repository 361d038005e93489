//! Root images: language images (`hearth_image::rootfs`, Debian bookworm as
//! squashfs, cached by recipe hash) and users' own squashfs/ext4 images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use hearth_image::rootfs::{self, BuildPhase, BuildProgress, ImageInfo, ImageSelector, Language};
use hearth_vmm::LowerFs;

use crate::error::{Error, Result};
use crate::progress::{Progress, Step};
use crate::state::VmRecord;

/// A root image chosen for a sandbox.
#[derive(Debug, Clone)]
pub struct RootImage {
    pub language: String,
    pub path: PathBuf,
    pub fs: LowerFs,
    pub hash: Option<String>,
    pub env: Vec<(String, String)>,
    pub hello: Vec<String>,
    /// The user commands run as by default (`None`: root).
    pub user: Option<String>,
}

/// Parses a language name, listing the valid ones in the error.
pub fn parse_language(name: &str) -> Result<Language> {
    name.parse::<Language>()
        .map_err(|e| Error::InvalidSpec(e.to_string()))
}

/// Forwards the builder's phases to a [`Progress`].
struct Forward<'a> {
    language: Language,
    progress: &'a dyn Progress,
    built: bool,
}

impl BuildProgress for Forward<'_> {
    fn phase(&mut self, phase: BuildPhase) {
        self.built = true;
        self.progress.step(Step::BuildImage {
            language: self.language.to_string(),
            phase: phase.to_string(),
        });
    }

    fn output(&mut self, line: &str) {
        self.progress.step(Step::BuildOutput {
            language: self.language.to_string(),
            line: line.trim().to_string(),
        });
    }
}

/// Builds (or finds cached) the image for `language`; blocking. Returns the
/// image and whether it was built now.
pub fn ensure_blocking(
    cache: &Path,
    language: Language,
    progress: &dyn Progress,
) -> Result<(ImageInfo, bool)> {
    let t0 = Instant::now();
    let mut fwd = Forward {
        language,
        progress,
        built: false,
    };
    let info = rootfs::ensure(cache, language, &mut fwd)
        .map_err(|e| Error::image(format!("cannot build the {language} image"), e))?;
    if fwd.built {
        progress.step(Step::ImageBuilt {
            language: language.to_string(),
            secs: t0.elapsed().as_secs_f64(),
            size: info.size,
        });
    }
    Ok((info, fwd.built))
}

/// Checks a user's image (squashfs or ext4) and makes its path absolute.
pub fn user_image(path: &Path) -> Result<RootImage> {
    let kind = rootfs::validate_user_image(path)
        .map_err(|e| Error::InvalidSpec(format!("cannot use the image {}: {e}", path.display())))?;
    let fs = LowerFs::parse(kind.fstype()).ok_or_else(|| {
        Error::InvalidSpec(format!("unsupported image filesystem {}", kind.fstype()))
    })?;
    let abs = std::fs::canonicalize(path).map_err(|e| Error::io("cannot resolve", path, e))?;
    Ok(RootImage {
        language: "custom".into(),
        path: abs,
        fs,
        hash: None,
        env: Vec::new(),
        hello: Vec::new(),
        user: None,
    })
}

/// The root image of a language, from an [`ImageInfo`].
pub fn language_image(language: Language, info: ImageInfo) -> RootImage {
    RootImage {
        language: language.as_str().into(),
        path: info.path,
        fs: LowerFs::Squashfs,
        hash: Some(info.recipe_hash),
        env: info.env,
        hello: info.hello,
        user: info.user,
    }
}

/// Cached language images.
pub fn list(cache: &Path) -> Result<Vec<ImageInfo>> {
    rootfs::list(cache).map_err(|e| Error::image("cannot list the image cache", e))
}

/// Removes the images `selector` names, refusing (unless `force`) those that
/// records still use.
pub fn remove(
    cache: &Path,
    selector: &ImageSelector,
    records: &[VmRecord],
    force: bool,
) -> Result<Vec<ImageInfo>> {
    if !force {
        for i in list(cache)?.iter().filter(|i| selects(selector, i)) {
            if let Some(r) = records
                .iter()
                .find(|r| r.rootfs.as_deref() == Some(i.path.as_path()))
            {
                return Err(Error::ImageInUse {
                    language: i.language.to_string(),
                    hash: i.recipe_hash[..16.min(i.recipe_hash.len())].to_string(),
                    id: r.id.clone(),
                    status: r.status,
                });
            }
        }
    }
    rootfs::remove(cache, selector).map_err(|e| Error::image("cannot remove images", e))
}

fn selects(sel: &ImageSelector, i: &ImageInfo) -> bool {
    match sel {
        ImageSelector::Language(l) => i.language == *l,
        ImageSelector::Hash(h) => i.recipe_hash.starts_with(h.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_language_lists_the_valid_ones() {
        let e = parse_language("cobol").unwrap_err().to_string();
        assert!(e.contains("cobol") && e.contains("python, javascript, node, ruby, golang"));
        assert_eq!(parse_language("node").unwrap(), Language::Javascript);
    }

    #[test]
    fn missing_and_corrupt_user_images_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = user_image(&d.path().join("nope.img"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.img") && e.contains("not found"), "{e}");
        let junk = d.path().join("junk.img");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        let e = user_image(&junk).unwrap_err().to_string();
        assert!(e.contains("not a squashfs or ext4 image"), "{e}");
    }
}
