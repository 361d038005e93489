//! Language root images (`hearth_image::rootfs`): building one with progress on
//! stderr, and resolving `--language` / `--image` for `vm create`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use hearth_image::rootfs::{self, BuildPhase, BuildProgress, ImageInfo, Language};
use hearth_vmm::LowerFs;

/// Build progress on stderr: a spinner with the phase and the tool's last line
/// on a terminal, one plain line per phase otherwise.
pub struct StderrProgress {
    language: Language,
    bar: Option<indicatif::ProgressBar>,
    phase: Option<BuildPhase>,
    start: Instant,
    /// Whether a build really ran (any phase was reported).
    pub built: bool,
}

impl StderrProgress {
    pub fn new(language: Language) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(format!("{language} image: checking the cache"));
            bar.enable_steady_tick(Duration::from_millis(100));
            bar
        });
        Self {
            language,
            bar,
            phase: None,
            start: Instant::now(),
            built: false,
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl Drop for StderrProgress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Shortens a tool line for the spinner (one terminal line).
fn short(line: &str, max: usize) -> String {
    let line = line.trim();
    if line.chars().count() <= max {
        return line.to_string();
    }
    let mut s: String = line.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

impl BuildProgress for StderrProgress {
    fn phase(&mut self, phase: BuildPhase) {
        self.built = true;
        self.phase = Some(phase);
        let secs = self.start.elapsed().as_secs();
        match &self.bar {
            Some(bar) => bar.set_message(format!("{} image: {phase} ({secs} s)", self.language)),
            None => eprintln!(
                "hearth: building the {} image: {phase} ({secs} s)",
                self.language
            ),
        }
    }

    fn output(&mut self, line: &str) {
        if let (Some(bar), Some(phase)) = (&self.bar, self.phase) {
            bar.set_message(format!(
                "{} image: {phase} ({} s): {}",
                self.language,
                self.start.elapsed().as_secs(),
                short(line, 60)
            ));
        }
    }
}

/// Builds (or finds cached) the image for `language`; blocks, so call it from
/// `spawn_blocking`. Returns the image and whether it was built now.
pub fn ensure_blocking(cache: &Path, language: Language) -> anyhow::Result<(ImageInfo, bool)> {
    let mut progress = StderrProgress::new(language);
    let info = rootfs::ensure(cache, language, &mut progress)
        .with_context(|| format!("cannot build the {language} image"))?;
    progress.finish();
    if progress.built {
        eprintln!(
            "hearth: built the {language} image in {:.1} s: {} ({} MiB)",
            progress.start.elapsed().as_secs_f64(),
            info.path.display(),
            info.size >> 20
        );
    }
    Ok((info, progress.built))
}

/// Async wrapper of [`ensure_blocking`].
pub async fn ensure(cache: PathBuf, language: Language) -> anyhow::Result<(ImageInfo, bool)> {
    tokio::task::spawn_blocking(move || ensure_blocking(&cache, language))
        .await
        .context("the image build task failed")?
}

/// Parses `--language`, with the valid names in the error.
pub fn parse_language(name: &str) -> anyhow::Result<Language> {
    name.parse::<Language>().map_err(anyhow::Error::new)
}

/// A root image chosen for a VM.
#[derive(Debug, Clone)]
pub struct RootImage {
    pub language: String,
    pub path: PathBuf,
    pub fs: LowerFs,
    pub hash: Option<String>,
    pub env: Vec<(String, String)>,
    pub hello: Vec<String>,
}

/// Checks a user's `--image` (squashfs or ext4) and makes its path absolute.
pub fn user_image(path: &Path) -> anyhow::Result<RootImage> {
    let kind = rootfs::validate_user_image(path)
        .with_context(|| format!("cannot use --image {}", path.display()))?;
    let fs = LowerFs::parse(kind.fstype())
        .with_context(|| format!("unsupported image filesystem {}", kind.fstype()))?;
    let abs = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    Ok(RootImage {
        language: "custom".into(),
        path: abs,
        fs,
        hash: None,
        env: Vec::new(),
        hello: Vec::new(),
    })
}

/// The root image of a language (built now if needed).
pub async fn language_image(cache: PathBuf, language: Language) -> anyhow::Result<RootImage> {
    let (info, _) = ensure(cache, language).await?;
    Ok(RootImage {
        language: language.as_str().into(),
        path: info.path,
        fs: LowerFs::Squashfs,
        hash: Some(info.recipe_hash),
        env: info.env,
        hello: info.hello,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_tool_lines_are_shortened() {
        assert_eq!(short("  abc ", 10), "abc");
        let s = short(&"x".repeat(100), 10);
        assert_eq!(s.chars().count(), 10);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn unknown_language_lists_the_valid_ones() {
        let e = parse_language("cobol").unwrap_err().to_string();
        assert!(e.contains("cobol") && e.contains("python, javascript, node, ruby, golang"));
        assert_eq!(parse_language("node").unwrap(), Language::Javascript);
    }

    #[test]
    fn missing_and_corrupt_user_images_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let e = format!("{:#}", user_image(&d.path().join("nope.img")).unwrap_err());
        assert!(e.contains("nope.img") && e.contains("not found"), "{e}");
        let junk = d.path().join("junk.img");
        std::fs::write(&junk, vec![7u8; 8192]).unwrap();
        let e = format!("{:#}", user_image(&junk).unwrap_err());
        assert!(e.contains("not a squashfs or ext4 image"), "{e}");
    }
}
