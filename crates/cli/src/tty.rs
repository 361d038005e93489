//! The local terminal for interactive commands (`vm shell`, `vm exec -t`,
//! `vm attach` of a pty process): raw mode while they run, restored on every
//! way out — the guard's drop (normal end, error, remote death), the
//! SIGTERM/SIGHUP path of the caller (which drops the guard before exiting)
//! and a panic (the hook restores first).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Mutex;

use nix::sys::termios::{self, SetArg, Termios};

/// The settings to put back, while raw mode is on.
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: fd 0 stays open for the whole life of the process.
    unsafe { BorrowedFd::borrow_raw(0) }
}

/// Whether our stdin is a terminal.
pub fn stdin_is_tty() -> bool {
    nix::unistd::isatty(0).unwrap_or(false)
}

/// The local terminal's size (rows, cols), if stdin or stdout is one.
pub fn size() -> Option<(u16, u16)> {
    for fd in [0, 1] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one winsize into the struct we pass.
        if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) } == 0 && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// Puts the saved settings back (idempotent; safe from the panic hook).
pub fn restore() {
    let saved = SAVED.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(t) = saved {
        let _ = termios::tcsetattr(stdin_fd(), SetArg::TCSANOW, &t);
    }
}

/// Raw mode on stdin until dropped.
pub struct RawGuard(());

impl RawGuard {
    /// Switches stdin to raw mode (no echo, no line editing, no signals from
    /// keys: Ctrl-C is a byte for the remote side).
    pub fn enable() -> anyhow::Result<RawGuard> {
        let fd = stdin_fd();
        let orig = termios::tcgetattr(fd.as_fd())
            .map_err(|e| anyhow::anyhow!("reading the terminal settings of stdin: {e}"))?;
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        *SAVED.lock().unwrap_or_else(|p| p.into_inner()) = Some(orig);
        install_panic_hook();
        if let Err(e) = termios::tcsetattr(fd, SetArg::TCSANOW, &raw) {
            restore();
            anyhow::bail!("switching the terminal to raw mode: {e}");
        }
        Ok(RawGuard(()))
    }
}

impl Drop for RawGuard {
    fn drop(&mut self) {
        restore();
    }
}

fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            prev(info);
        }));
    });
}
