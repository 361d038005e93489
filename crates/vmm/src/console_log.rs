//! The console logger: a small host process that takes the guest's serial
//! console from a pipe (QEMU's `-serial stdio`) and writes it to
//! `console.log` in the VM directory, one UTC timestamp per line, rotated so
//! that a guest printing without end cannot fill the host disk: when the file
//! reaches [`ConsoleLimits::file_bytes`] it becomes `console.log.1` (replacing
//! the previous one) and a new `console.log` starts. At most two files, so at
//! most twice the limit per VM.
//!
//! The logger is forked from the process that boots the VM, without exec, so
//! that it needs no binary of its own (a library embedding hearth-runtime has
//! none). The fork happens in a multi-threaded process, so the child makes
//! only async-signal-safe calls on memory prepared before the fork: no
//! allocation, no locks, no Rust I/O. It double-forks so it is never left a
//! zombie of a long-lived caller, closes every inherited descriptor but its
//! own, and exits when its pipe reaches end-of-file, i.e. when QEMU (the only
//! other holder of the write end) has exited.
//!
//! The VM directory belongs to the jailed VMM's uid, so its entries cannot be
//! trusted: the logger works relative to a directory fd it opened, and creates
//! every log file with `O_CREAT | O_EXCL | O_NOFOLLOW`, so it never writes
//! through a symlink or into a file someone else put there.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crate::error::VmmError;

/// File names of the console log inside a VM directory.
pub const CONSOLE_LOG: &str = "console.log";
pub const CONSOLE_LOG_ROTATED: &str = "console.log.1";

/// Default size of one console log file (two are kept).
pub const DEFAULT_CONSOLE_FILE_BYTES: u64 = 1024 * 1024;
/// Smallest accepted file size (keeps a boot's console in one file).
pub const MIN_CONSOLE_FILE_BYTES: u64 = 16 * 1024;

/// Length of the timestamp the logger puts before every line, with its space:
/// `2026-12-01T12:00:00.000Z `.
pub const STAMP_LEN: usize = 25;

/// How big the console log may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleLimits {
    /// Bytes per file; `console.log` is rotated when it reaches this.
    pub file_bytes: u64,
}

impl Default for ConsoleLimits {
    fn default() -> Self {
        Self {
            file_bytes: DEFAULT_CONSOLE_FILE_BYTES,
        }
    }
}

/// How far past the limit a file may grow while waiting for a line to end.
const LINE_SLACK: u64 = 64 * 1024;

/// Bytes read from the pipe at a time.
const READ_CHUNK: usize = 4096;

/// A started logger.
#[derive(Debug)]
pub struct Started {
    /// The write end of its pipe, to become QEMU's stdout. Drop it once QEMU
    /// has it, or the logger never sees end-of-file.
    pub pipe: OwnedFd,
    pub pid: u32,
}

/// Starts a logger for the VM directory `dir`.
pub fn start(dir: &Path, limits: ConsoleLimits) -> Result<Started, VmmError> {
    let io = |what: &'static str, e: std::io::Error| VmmError::io(what, dir, e);
    let dir_fd = open_dir(dir).map_err(|e| io("cannot open the vm directory", e))?;
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io("cannot make the console pipe", e.into()))
    };
    let (rd, wr) = pipe()?;
    // The logger reports its pid through this one.
    let (pid_rd, pid_wr) = pipe()?;
    let names = Names::new();
    let mut state = Logger {
        pipe: rd.as_raw_fd(),
        dir: dir_fd.as_raw_fd(),
        file: -1,
        written: 0,
        at_line_start: true,
        limit: limits.file_bytes.max(MIN_CONSOLE_FILE_BYTES),
        names,
        inbuf: vec![0u8; READ_CHUNK],
        outbuf: vec![0u8; READ_CHUNK * (STAMP_LEN + 1)],
    };
    // The file is opened (appending, it may hold an earlier boot) before the
    // fork, so errors are reported here.
    state
        .open_existing()
        .map_err(|e| io("cannot open console.log", e))?;
    let keep = [state.pipe, state.dir, state.file, pid_wr.as_raw_fd()];
    // SAFETY: the child branch below runs only async-signal-safe syscalls
    // (fork, setsid, close, read, write, openat, renameat, fstat,
    // clock_gettime, _exit) on buffers allocated before the fork, as a child
    // of a multi-threaded process must.
    match unsafe { libc::fork() } {
        -1 => {
            state.close_file();
            Err(io(
                "cannot fork the console logger",
                std::io::Error::last_os_error(),
            ))
        }
        0 => {
            // SAFETY: see above; this is the child and never returns.
            unsafe { child(&mut state, &keep, wr.as_raw_fd(), pid_wr.as_raw_fd()) }
        }
        pid => {
            state.close_file();
            drop((rd, dir_fd, pid_wr));
            // Reap the intermediate child (it exits at once).
            let mut status = 0;
            // SAFETY: waiting for our own child.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let mut buf = [0u8; 4];
            let mut f = std::fs::File::from(pid_rd);
            std::io::Read::read_exact(&mut f, &mut buf)
                .map_err(|e| io("the console logger did not start", e))?;
            Ok(Started {
                pipe: wr,
                pid: u32::from_ne_bytes(buf),
            })
        }
    }
}

fn open_dir(dir: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: `c` is a valid C string; the result is checked.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The child: detach, close what is not ours, log until EOF, exit.
///
/// # Safety
/// Only to be called in a freshly forked child.
unsafe fn child(state: &mut Logger, keep: &[RawFd], write_end: RawFd, pid_wr: RawFd) -> ! {
    libc::close(write_end);
    libc::setsid();
    match libc::fork() {
        0 => {}
        // The intermediate child (or a failed fork) leaves at once.
        _ => libc::_exit(0),
    }
    close_others(keep);
    let pid = (libc::getpid() as u32).to_ne_bytes();
    libc::write(pid_wr, pid.as_ptr().cast(), pid.len());
    libc::close(pid_wr);
    state.run();
    libc::_exit(0)
}

/// Closes every descriptor except `keep` (the DB file, sockets and epoll fds
/// of the parent must not live on in the logger; stdio is not needed either).
///
/// # Safety
/// Only in the forked child.
unsafe fn close_others(keep: &[RawFd]) {
    let mut sorted = [0 as RawFd; 8];
    let n = keep.len().min(sorted.len());
    sorted[..n].copy_from_slice(&keep[..n]);
    let sorted = &mut sorted[..n];
    sorted.sort_unstable();
    let mut from: RawFd = 0;
    for &k in sorted.iter() {
        if k > from {
            close_range(from, k - 1);
        }
        from = from.max(k + 1);
    }
    close_range(from, RawFd::MAX);
}

/// close_range(2), or a bounded loop where the kernel lacks it.
///
/// # Safety
/// Only in the forked child.
unsafe fn close_range(first: RawFd, last: RawFd) {
    if libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) == 0 {
        return;
    }
    let max = match libc::sysconf(libc::_SC_OPEN_MAX) {
        n if n > 0 && n < 65536 => n as RawFd,
        _ => 65536,
    };
    for fd in first..=last.min(max) {
        libc::close(fd);
    }
}

/// The two file names as C strings, made before the fork.
struct Names {
    current: CString,
    rotated: CString,
}

impl Names {
    fn new() -> Self {
        Self {
            current: CString::new(CONSOLE_LOG).expect("no NUL"),
            rotated: CString::new(CONSOLE_LOG_ROTATED).expect("no NUL"),
        }
    }
}

struct Logger {
    pipe: RawFd,
    dir: RawFd,
    /// The open `console.log`, or -1 when it could not be (re)created: then
    /// output is read and dropped so QEMU never blocks.
    file: RawFd,
    /// Bytes in the current file.
    written: u64,
    at_line_start: bool,
    limit: u64,
    names: Names,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
}

impl Logger {
    /// Opens `console.log` for appending when it is a regular file with one
    /// link owned by us, else creates it anew. Before the fork only.
    fn open_existing(&mut self) -> std::io::Result<()> {
        // SAFETY: valid C string and dir fd; result checked.
        let fd = unsafe {
            libc::openat(
                self.dir,
                self.names.current.as_ptr(),
                libc::O_WRONLY | libc::O_APPEND | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            if let Some(size) = own_single_file(fd) {
                self.file = fd;
                self.written = size;
                self.at_line_start = true;
                return Ok(());
            }
            // SAFETY: our fd.
            unsafe { libc::close(fd) };
            // SAFETY: valid C string and dir fd.
            unsafe { libc::unlinkat(self.dir, self.names.current.as_ptr(), 0) };
        }
        if self.create() {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Creates a fresh `console.log`: never follows or reuses what is there
    /// (a leftover is unlinked first, one retry). Async-signal-safe.
    fn create(&mut self) -> bool {
        for _ in 0..2 {
            // SAFETY: valid C string and dir fd; result checked.
            let fd = unsafe {
                libc::openat(
                    self.dir,
                    self.names.current.as_ptr(),
                    libc::O_WRONLY
                        | libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_NOFOLLOW
                        | libc::O_APPEND
                        | libc::O_CLOEXEC,
                    0o600 as libc::c_uint,
                )
            };
            if fd >= 0 {
                self.file = fd;
                self.written = 0;
                return true;
            }
            // SAFETY: valid C string and dir fd.
            unsafe { libc::unlinkat(self.dir, self.names.current.as_ptr(), 0) };
        }
        self.file = -1;
        false
    }

    fn close_file(&mut self) {
        if self.file >= 0 {
            // SAFETY: our fd.
            unsafe { libc::close(self.file) };
            self.file = -1;
        }
    }

    /// `console.log` → `console.log.1`, then a fresh `console.log`.
    fn rotate(&mut self) {
        self.close_file();
        // SAFETY: valid C strings and dir fd. Renaming a name within our
        // directory fd never follows a symlink.
        unsafe {
            libc::renameat(
                self.dir,
                self.names.current.as_ptr(),
                self.dir,
                self.names.rotated.as_ptr(),
            )
        };
        self.create();
    }

    /// Reads the pipe until EOF. Async-signal-safe.
    fn run(&mut self) {
        loop {
            // SAFETY: reading into our own buffer of that length.
            let n =
                unsafe { libc::read(self.pipe, self.inbuf.as_mut_ptr().cast(), self.inbuf.len()) };
            if n == 0 {
                return;
            }
            if n < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                return;
            }
            let now = now_ms();
            let len = stamp_lines(
                &self.inbuf[..n as usize],
                now,
                &mut self.at_line_start,
                &mut self.outbuf,
            );
            self.write_out(len);
        }
    }

    /// Writes `outbuf[..len]`, rotating at the first line end past the limit
    /// (or [`LINE_SLACK`] past it when a line never ends), so every file starts
    /// with a whole, stamped line.
    fn write_out(&mut self, len: usize) {
        let mut from = 0;
        while from < len {
            let chunk = &self.outbuf[from..len];
            let over = self.limit.saturating_sub(self.written) as usize;
            let cut = if self.written + chunk.len() as u64 >= self.limit {
                match chunk[over.min(chunk.len())..]
                    .iter()
                    .position(|&b| b == b'\n')
                {
                    Some(i) => Some(over.min(chunk.len()) + i + 1),
                    None if self.written + chunk.len() as u64 >= self.limit + LINE_SLACK => {
                        Some(chunk.len())
                    }
                    None => None,
                }
            } else {
                None
            };
            let end = from + cut.unwrap_or(chunk.len());
            self.write_range(from, end);
            from = end;
            if cut.is_some() {
                self.rotate();
            }
        }
    }

    fn write_range(&mut self, mut off: usize, end: usize) {
        if self.file < 0 {
            return;
        }
        while off < end {
            // SAFETY: writing from our buffer within its length.
            let w =
                unsafe { libc::write(self.file, self.outbuf[off..end].as_ptr().cast(), end - off) };
            if w < 0 {
                if errno() == libc::EINTR {
                    continue;
                }
                // A full disk or similar: drop this chunk, keep draining.
                return;
            }
            off += w as usize;
            self.written += w as u64;
        }
    }
}

/// The size of `fd` when it is a regular file with one link owned by us.
fn own_single_file(fd: RawFd) -> Option<u64> {
    // SAFETY: fstat writes into the struct we pass.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    let regular = st.st_mode & libc::S_IFMT == libc::S_IFREG;
    (regular && st.st_nlink == 1 && st.st_uid == me).then_some(st.st_size as u64)
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Milliseconds since the Unix epoch (CLOCK_REALTIME).
fn now_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// Copies `input` to `out`, putting the timestamp of `now_ms` before every line
/// that starts in it. `out` must hold `input.len() * (STAMP_LEN + 1)` bytes.
/// Returns the length written. Allocation-free (it runs in the logger child).
pub fn stamp_lines(input: &[u8], now_ms: i64, at_line_start: &mut bool, out: &mut [u8]) -> usize {
    let mut stamp = [0u8; STAMP_LEN];
    format_stamp(now_ms, &mut stamp);
    let mut o = 0;
    for &b in input {
        if *at_line_start {
            out[o..o + STAMP_LEN].copy_from_slice(&stamp);
            o += STAMP_LEN;
            *at_line_start = false;
        }
        out[o] = b;
        o += 1;
        if b == b'\n' {
            *at_line_start = true;
        }
    }
    o
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ ` for `ms` since the epoch, without allocating.
pub fn format_stamp(ms: i64, out: &mut [u8; STAMP_LEN]) {
    let ms = ms.max(0);
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days(secs / 86_400);
    let sod = secs % 86_400;
    let fields: [(i64, usize); 7] = [
        (y, 4),
        (mo, 2),
        (d, 2),
        (sod / 3600, 2),
        (sod / 60 % 60, 2),
        (sod % 60, 2),
        (ms % 1000, 3),
    ];
    let seps = [b'-', b'-', b'T', b':', b':', b'.', b'Z'];
    let mut i = 0;
    for (k, (v, width)) in fields.iter().enumerate() {
        let mut v = *v;
        for j in (0..*width).rev() {
            out[i + j] = b'0' + (v % 10) as u8;
            v /= 10;
        }
        i += width;
        out[i] = seps[k];
        i += 1;
    }
    out[i] = b' ';
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn stamp(ms: i64) -> String {
        let mut b = [0u8; STAMP_LEN];
        format_stamp(ms, &mut b);
        String::from_utf8(b.to_vec()).unwrap()
    }

    /// The logger exits on its own once its pipe reaches EOF.
    fn wait_gone(pid: u32) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while crate::process::read_stat(pid).is_some_and(|s| s.state != 'Z') {
            assert!(
                std::time::Instant::now() < deadline,
                "logger {pid} did not exit at EOF"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn stamps_are_utc_rfc3339_with_millis() {
        assert_eq!(stamp(0), "1970-01-01T00:00:00.000Z ");
        assert_eq!(stamp(951_782_400_123), "2000-02-29T00:00:00.123Z ");
        assert_eq!(stamp(1_796_126_399_999), "2026-12-01T11:59:59.999Z ");
    }

    #[test]
    fn every_line_start_gets_a_stamp_even_across_chunks() {
        let mut at = true;
        let mut out = vec![0u8; 64 * (STAMP_LEN + 1)];
        let n = stamp_lines(b"ab\ncd", 0, &mut at, &mut out);
        let s = String::from_utf8(out[..n].to_vec()).unwrap();
        assert_eq!(
            s,
            "1970-01-01T00:00:00.000Z ab\n1970-01-01T00:00:00.000Z cd"
        );
        assert!(!at);
        let n = stamp_lines(b"e\n\n", 1000, &mut at, &mut out);
        let s = String::from_utf8(out[..n].to_vec()).unwrap();
        assert_eq!(s, "e\n1970-01-01T00:00:01.000Z \n");
        assert!(at);
    }

    #[test]
    fn logger_rotates_keeps_two_files_and_exits_at_eof() {
        let d = tempfile::tempdir().unwrap();
        let limit = MIN_CONSOLE_FILE_BYTES;
        let logger = start(d.path(), ConsoleLimits { file_bytes: limit }).unwrap();
        let pid = logger.pid;
        let mut pipe = std::fs::File::from(logger.pipe);
        // 200 lines of 1 KiB: far more than two files hold.
        for i in 0..200 {
            writeln!(pipe, "line {i:05} {}", "x".repeat(1000)).unwrap();
        }
        drop(pipe);
        let cur = d.path().join(CONSOLE_LOG);
        let old = d.path().join(CONSOLE_LOG_ROTATED);
        wait_gone(pid);
        let cur_t = std::fs::read_to_string(&cur).unwrap();
        let old_t = std::fs::read_to_string(&old).unwrap();
        assert!(
            cur_t.contains("line 00199"),
            "the newest line is in console.log"
        );
        let per_line = STAMP_LEN as u64 + 1012;
        for t in [&cur_t, &old_t] {
            assert!(
                t.len() as u64 <= limit + per_line,
                "file over the limit: {}",
                t.len()
            );
        }
        assert!(old_t.len() as u64 >= limit, "rotated only once full");
        assert!(!old_t.contains("line 00000"), "old lines were dropped");
        // The two files hold the newest lines, contiguous, each stamped.
        let all: Vec<&str> = old_t.lines().chain(cur_t.lines()).collect();
        let nums: Vec<u32> = all
            .iter()
            .map(|l| {
                assert_eq!(l.as_bytes()[STAMP_LEN - 2], b'Z', "stamped: {l:.40}");
                l[STAMP_LEN + 5..STAMP_LEN + 10].parse().unwrap()
            })
            .collect();
        assert_eq!(*nums.last().unwrap(), 199);
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "contiguous");
        let entries = std::fs::read_dir(d.path()).unwrap().count();
        assert_eq!(entries, 2, "only console.log and console.log.1");
    }

    #[test]
    fn a_symlink_in_place_of_console_log_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, d.path().join(CONSOLE_LOG)).unwrap();
        let logger = start(d.path(), ConsoleLimits::default()).unwrap();
        let mut pipe = std::fs::File::from(logger.pipe);
        writeln!(pipe, "hello").unwrap();
        drop(pipe);
        wait_gone(logger.pid);
        let cur = d.path().join(CONSOLE_LOG);
        assert!(std::fs::read_to_string(&cur).unwrap().ends_with(" hello\n"));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert!(!std::fs::symlink_metadata(&cur)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
