//! Console output for init: plain lines on stderr (the kernel opens
//! `/dev/console` as init's fds 0-2). Writes never fail loudly: PID 1 must not
//! panic because the console went away.

use std::io::Write;

/// Writes `hearth-init: <msg>` on its own line.
pub fn line(msg: &str) {
    let text = format!("hearth-init: {msg}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
