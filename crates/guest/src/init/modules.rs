//! Loading the kernel modules shipped in the initramfs, in the order the image
//! builder wrote to `/lib/modules/hearth.order` (dependencies first).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use super::InitError;

/// The manifest written by `hearth_image::initramfs`; paths are relative to
/// `/lib/modules`.
pub const ORDER_FILE: &str = "/lib/modules/hearth.order";

/// What loading took.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub loaded: usize,
    /// Already present (EEXIST), e.g. after a kexec or a duplicate line.
    pub already: usize,
    pub total: Duration,
    /// (path, time) per module, in load order.
    pub each: Vec<(String, Duration)>,
}

/// Loads every module in the manifest. A missing manifest means a kernel with
/// everything built in: nothing to do.
pub fn load_all() -> Result<LoadReport, InitError> {
    let start = Instant::now();
    let mut report = LoadReport::default();
    let list = match std::fs::read_to_string(ORDER_FILE) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(report),
        Err(e) => return Err(InitError::io(format!("read {ORDER_FILE}"), e)),
    };
    for rel in list.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = Path::new("/lib/modules").join(rel);
        let t = Instant::now();
        if load_one(&path)? {
            report.loaded += 1;
        } else {
            report.already += 1;
        }
        report.each.push((rel.to_owned(), t.elapsed()));
    }
    report.total = start.elapsed();
    Ok(report)
}

/// Returns Ok(false) when the module was already loaded.
fn load_one(path: &Path) -> Result<bool, InitError> {
    let what = || format!("load module {}", path.display());
    let file = std::fs::File::open(path).map_err(|e| InitError::io(what(), e))?;
    let params = c"";
    // SAFETY: finit_module reads a module image from a valid open fd and a
    // NUL-terminated parameter string that outlives the call; flags are 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            params.as_ptr(),
            0 as libc::c_int,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::EEXIST) {
        return Ok(false);
    }
    Err(InitError::io(what(), err))
}
