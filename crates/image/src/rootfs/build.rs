//! Building one image: `mmdebstrap` into a tar, then `sqfstar` into squashfs.
//!
//! Both tools' stdout and stderr go to a log file; stderr lines are also
//! passed to a [`BuildProgress`], and the last few are kept for the error.

use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Recipe, RootfsError};

/// Lines of tool output kept for an error message.
const TAIL_LINES: usize = 12;

/// The steps of a build, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuildPhase {
    /// mmdebstrap downloads and installs the packages.
    Bootstrapping,
    /// sqfstar turns the tar into squashfs.
    Packing,
    /// fsync, sidecar, rename into the cache.
    Finishing,
}

impl fmt::Display for BuildPhase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BuildPhase::Bootstrapping => "bootstrapping packages",
            BuildPhase::Packing => "packing squashfs",
            BuildPhase::Finishing => "finishing",
        })
    }
}

/// Receives build progress, e.g. to drive a spinner.
pub trait BuildProgress {
    /// A new phase starts.
    fn phase(&mut self, phase: BuildPhase);
    /// One line the running tool wrote to stderr.
    fn output(&mut self, _line: &str) {}
}

/// Ignores progress.
pub struct NoProgress;

impl BuildProgress for NoProgress {
    fn phase(&mut self, _phase: BuildPhase) {}
}

/// Timings and sizes of one build.
#[derive(Debug, Clone, Copy)]
pub struct BuildStats {
    pub bootstrap: Duration,
    pub pack: Duration,
    pub tar_size: u64,
}

/// Finds `tool` in PATH or the sbin directories (which a non-root PATH may lack).
pub(crate) fn find_tool(tool: &'static str, package: &'static str) -> Result<PathBuf, RootfsError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].iter().map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .ok_or(RootfsError::MissingTool { tool, package })
}

/// Builds `recipe` into a squashfs at `out`, using `work` (an empty directory
/// on the same filesystem, removed by the caller) for the tar and temp files.
pub fn build_squashfs(
    recipe: &Recipe,
    work: &Path,
    out: &Path,
    log_path: &Path,
    progress: &mut dyn BuildProgress,
) -> Result<BuildStats, RootfsError> {
    let mmdebstrap = find_tool("mmdebstrap", "mmdebstrap")?;
    let sqfstar = find_tool("sqfstar", "squashfs-tools (4.5 or later)")?;

    let mut log =
        File::create(log_path).map_err(|e| RootfsError::io("create build log", log_path, e))?;
    let _ = writeln!(
        log,
        "# hearth rootfs build: {} {}",
        recipe.language,
        recipe.hash()
    );

    let hook = work.join("customize-hook.sh");
    write_executable(&hook, recipe.customize_hook().as_bytes())?;
    let tmpdir = work.join("tmp");
    std::fs::create_dir(&tmpdir).map_err(|e| RootfsError::io("create build dir", &tmpdir, e))?;
    let tar = work.join("root.tar");

    // root mode when we are root (fast, no subuids needed), else user namespaces
    let mode = if nix::unistd::geteuid().is_root() {
        "root"
    } else {
        "unshare"
    };
    let mut cmd = Command::new(&mmdebstrap);
    cmd.args(recipe.mmdebstrap_args(mode, &hook))
        .arg(&tar)
        .env("TMPDIR", &tmpdir)
        .stdin(Stdio::null());
    progress.phase(BuildPhase::Bootstrapping);
    let start = Instant::now();
    run_logged(
        cmd,
        "mmdebstrap",
        BuildPhase::Bootstrapping,
        &mut log,
        log_path,
        progress,
    )?;
    let bootstrap = start.elapsed();
    let tar_size = std::fs::metadata(&tar)
        .map_err(|e| RootfsError::io("stat bootstrap tar", &tar, e))?
        .len();

    progress.phase(BuildPhase::Packing);
    let start = Instant::now();
    let tar_file = File::open(&tar).map_err(|e| RootfsError::io("open bootstrap tar", &tar, e))?;
    let mut cmd = Command::new(&sqfstar);
    cmd.args(["-no-progress", "-quiet", "-b", "131072"])
        .args(recipe.compression.squashfs_args())
        .arg(out)
        .stdin(tar_file);
    run_logged(
        cmd,
        "sqfstar",
        BuildPhase::Packing,
        &mut log,
        log_path,
        progress,
    )?;
    let pack = start.elapsed();
    let _ = std::fs::remove_file(&tar);
    Ok(BuildStats {
        bootstrap,
        pack,
        tar_size,
    })
}

fn write_executable(path: &Path, content: &[u8]) -> Result<(), RootfsError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o755)
        .open(path)
        .map_err(|e| RootfsError::io("write customize hook", path, e))?;
    f.write_all(content)
        .map_err(|e| RootfsError::io("write customize hook", path, e))
}

/// Runs `cmd` with stdout to the log and stderr line by line to the log and
/// `progress`; fails with the last lines when it does not exit 0.
fn run_logged(
    mut cmd: Command,
    tool: &'static str,
    phase: BuildPhase,
    log: &mut File,
    log_path: &Path,
    progress: &mut dyn BuildProgress,
) -> Result<(), RootfsError> {
    let stdout = log
        .try_clone()
        .map_err(|e| RootfsError::io("open build log", log_path, e))?;
    cmd.stdout(stdout).stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec and only makes
    // one async-signal-safe syscall (prctl); it touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            // if this process dies, the tool gets SIGTERM and cleans up
            // (mmdebstrap unmounts and removes its temp dir on SIGTERM)
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                .map_err(std::io::Error::from)
        });
    }
    let _ = writeln!(log, "$ {cmd:?}");
    let mut child = cmd
        .spawn()
        .map_err(|source| RootfsError::Spawn { tool, source })?;
    let mut tail: VecDeque<String> = VecDeque::with_capacity(TAIL_LINES);
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).split(b'\n') {
            let Ok(line) = line else { break };
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end();
            let _ = writeln!(log, "{line}");
            if line.is_empty() {
                continue;
            }
            progress.output(line);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.to_string());
        }
    }
    let status = child
        .wait()
        .map_err(|source| RootfsError::Spawn { tool, source })?;
    let _ = writeln!(log, "# {tool}: {status}");
    if status.success() {
        return Ok(());
    }
    if tail.iter().any(|l| l.contains("No space left on device")) {
        return Err(RootfsError::DiskFull {
            path: log_path.parent().unwrap_or(log_path).to_path_buf(),
        });
    }
    Err(RootfsError::ToolFailed {
        tool,
        phase,
        status: status.to_string(),
        log: log_path.to_path_buf(),
        tail: tail.into(),
    })
}
