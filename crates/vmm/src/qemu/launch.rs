//! Finding the helper programs and spawning them detached from the CLI.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::jail::PreparedJail;
use crate::error::VmmError;
use crate::process::ProcessId;

/// `name` on `PATH`, then in the extra directories.
pub fn find_program(name: &str, extra_dirs: &[PathBuf]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(extra_dirs.iter().cloned())
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// QEMU: `HEARTH_QEMU` or `qemu-system-x86_64` on `PATH`.
pub fn find_qemu() -> Result<PathBuf, VmmError> {
    if let Some(p) = std::env::var_os("HEARTH_QEMU") {
        let p = PathBuf::from(p);
        return if is_executable(&p) {
            Ok(p)
        } else {
            Err(VmmError::QemuNotFound(p.display().to_string()))
        };
    }
    find_program("qemu-system-x86_64", &[])
        .ok_or_else(|| VmmError::QemuNotFound("qemu-system-x86_64".into()))
}

/// Starts `program` in its own session with stdin from /dev/null and stdout+stderr
/// appended to `log` (stdout to `stdout` instead when given: the console
/// logger's pipe), so it outlives the CLI and never touches its terminal.
pub fn spawn_detached(
    program: &Path,
    argv: &[OsString],
    log: &Path,
    stdout: Option<OwnedFd>,
) -> Result<(std::process::Child, ProcessId), VmmError> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| VmmError::io("cannot open log file", log, e))?;
    let err = out
        .try_clone()
        .map_err(|e| VmmError::io("cannot open log file", log, e))?;
    let mut cmd = Command::new(program);
    let out = match stdout {
        Some(fd) => Stdio::from(fd),
        None => Stdio::from(out),
    };
    cmd.args(argv).stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            Ok(())
        });
    }
    spawn(cmd, &program.display().to_string())
}

/// Starts the program of `jail` inside it (see [`super::jail`]): its own session,
/// mount namespace, root and uid, an empty environment, stdin from /dev/null and
/// stdout+stderr to `log` (opened read-write by the caller with
/// [`super::jail::VmDir::open_log`]; `log_path` is for messages), stdout to
/// `stdout` instead when given. When the jail cannot be entered, the error
/// names the failed step, read back from `log`.
pub fn spawn_jailed(
    jail: PreparedJail,
    argv: &[OsString],
    log: std::fs::File,
    log_path: &Path,
    stdout: Option<OwnedFd>,
) -> Result<(std::process::Child, ProcessId), VmmError> {
    let program = jail.program().display().to_string();
    let dup = |f: &std::fs::File| {
        f.try_clone()
            .map_err(|e| VmmError::io("cannot open log file", log_path, e))
    };
    let err = dup(&log)?;
    let mut reader = dup(&log)?;
    let mut cmd = Command::new(jail.program());
    let out = match stdout {
        Some(fd) => Stdio::from(fd),
        None => Stdio::from(log),
    };
    cmd.args(argv)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: `enter` makes only syscalls on buffers prepared before fork; it is
    // meant for exactly this place, a forked child before exec.
    unsafe {
        cmd.pre_exec(move || jail.enter());
    }
    spawn(cmd, &program).map_err(|e| match e {
        VmmError::Spawn { program, source } => {
            match super::jail::failed_step(&read_tail(&mut reader)) {
                Some(step) => VmmError::JailSetup {
                    program,
                    step,
                    source,
                },
                None => VmmError::Spawn { program, source },
            }
        }
        other => other,
    })
}

/// The last 4 KiB of an open log (lossy).
fn read_tail(f: &mut std::fs::File) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(len.saturating_sub(4096))).is_err()
        || f.read_to_end(&mut buf).is_err()
    {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn spawn(mut cmd: Command, program: &str) -> Result<(std::process::Child, ProcessId), VmmError> {
    let child = cmd.spawn().map_err(|source| VmmError::Spawn {
        program: program.to_string(),
        source,
    })?;
    drop(cmd);
    let id = ProcessId::of_child(child.id()).ok_or_else(|| VmmError::Spawn {
        program: program.to_string(),
        source: std::io::Error::other("exited before its start time could be read"),
    })?;
    Ok((child, id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_on_path_and_not_a_missing_program() {
        assert!(find_program("sh", &[]).is_some());
        assert!(find_program("hearth-no-such-program", &[]).is_none());
    }

    #[tokio::test]
    async fn detached_child_is_in_its_own_session_and_logs_to_file() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("out.log");
        let (_child, id) = spawn_detached(
            Path::new("/bin/sh"),
            &["-c".into(), "echo hi; echo err >&2; sleep 30".into()],
            &log,
            None,
        )
        .unwrap();
        assert!(id.is_alive());
        let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(id.pid as i32))).unwrap();
        assert_eq!(
            sid.as_raw() as u32,
            id.pid,
            "child must lead its own session"
        );
        for _ in 0..100 {
            let t = std::fs::read_to_string(&log).unwrap_or_default();
            if t.contains("hi") && t.contains("err") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let t = std::fs::read_to_string(&log).unwrap();
        assert!(t.contains("hi") && t.contains("err"), "log: {t:?}");
        assert!(id.terminate(std::time::Duration::from_secs(2)).await);
    }
}
