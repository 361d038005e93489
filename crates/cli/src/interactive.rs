//! The interactive loop of `vm shell`, `vm exec -i/-t` and `vm attach`: our
//! stdin to the remote process (raw bytes when it has a pty: Ctrl-C is 0x03
//! for the remote line discipline, not a signal here), its output to our
//! stdout/stderr, SIGWINCH to `PTY_RESIZE`, SIGTERM/SIGHUP/SIGINT end the
//! loop (the terminal is restored before we exit). An attach shows
//! overwritten output as a `[hearth: N bytes dropped]` line on stderr, and
//! Ctrl-] detaches from a pty process, leaving it running.

use std::io::Write;

use bytes::Bytes;
use hearth_runtime::{AttachEvent, AttachStream, ExecControl, ExecExit, ExecStream, StreamEvent};
use tokio::io::AsyncReadExt;
use tokio::signal::unix::{signal, SignalKind};

use crate::tty;

/// The detach key of an attach to a pty process (Ctrl-]).
pub const DETACH_KEY: u8 = 0x1d;

pub enum Remote {
    Exec(ExecStream),
    Attach(AttachStream),
}

enum Ev {
    Out(Bytes),
    Err(Bytes),
    Dropped(u64),
    Exit(ExecExit),
    Other,
}

impl Remote {
    fn control(&self) -> ExecControl {
        match self {
            Remote::Exec(s) => s.control(),
            Remote::Attach(s) => s.control(),
        }
    }

    async fn resize(&self, rows: u16, cols: u16) -> hearth_runtime::Result<()> {
        match self {
            Remote::Exec(s) => s.resize(rows, cols).await,
            Remote::Attach(s) => s.resize(rows, cols).await,
        }
    }

    async fn next(&mut self) -> hearth_runtime::Result<Option<Ev>> {
        Ok(Some(match self {
            Remote::Exec(s) => match s.next().await? {
                None => return Ok(None),
                Some(StreamEvent::Stdout(b)) => Ev::Out(b),
                Some(StreamEvent::Stderr(b)) => Ev::Err(b),
                Some(StreamEvent::Exit(x)) => Ev::Exit(x),
                Some(StreamEvent::Started { .. }) => Ev::Other,
            },
            Remote::Attach(s) => match s.next().await? {
                None => return Ok(None),
                Some(AttachEvent::Stdout(b)) => Ev::Out(b),
                Some(AttachEvent::Stderr(b)) => Ev::Err(b),
                Some(AttachEvent::Dropped(n)) => Ev::Dropped(n),
                Some(AttachEvent::Exit(x)) => Ev::Exit(x),
            },
        }))
    }
}

/// How the loop ended.
pub enum End {
    Exit(ExecExit),
    /// A signal to hearth (the remote exec ends with our connection; an
    /// attached process goes on).
    Signal(i32),
    /// Ctrl-] on an attach.
    Detached,
}

pub struct Opts {
    /// Forward our stdin.
    pub stdin: bool,
    /// The remote side has a pty and our terminal is in raw mode.
    pub tty: bool,
    /// Ctrl-] detaches (attach to a pty process).
    pub detach_key: bool,
}

pub fn dropped_marker(n: u64) -> String {
    format!("[hearth: {n} bytes dropped]")
}

pub async fn run(mut remote: Remote, opts: Opts) -> anyhow::Result<End> {
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut winch = signal(SignalKind::window_change())?;
    let (detach_tx, mut detach_rx) = tokio::sync::mpsc::channel::<()>(1);
    let stdin_task = opts.stdin.then(|| {
        let ctl = remote.control();
        let (tty, key) = (opts.tty, opts.detach_key);
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let mut data = &buf[..n];
                if key {
                    if let Some(i) = data.iter().position(|&b| b == DETACH_KEY) {
                        data = &data[..i];
                        if !data.is_empty() {
                            let _ = ctl.write_stdin(Bytes::copy_from_slice(data)).await;
                        }
                        let _ = detach_tx.send(()).await;
                        return;
                    }
                }
                if ctl.write_stdin(Bytes::copy_from_slice(data)).await.is_err() {
                    return;
                }
            }
            if !tty {
                ctl.close_stdin().await;
            }
        })
    });
    if opts.tty {
        if let Some((rows, cols)) = tty::size() {
            let _ = remote.resize(rows, cols).await;
        }
    }
    let end = loop {
        let ev = tokio::select! {
            ev = remote.next() => ev?,
            _ = term.recv() => break End::Signal(libc::SIGTERM),
            _ = hup.recv() => break End::Signal(libc::SIGHUP),
            _ = int.recv() => break End::Signal(libc::SIGINT),
            Some(()) = detach_rx.recv() => break End::Detached,
            _ = winch.recv() => {
                if opts.tty {
                    if let Some((rows, cols)) = tty::size() {
                        if let Err(e) = remote.resize(rows, cols).await {
                            tracing::debug!(error = %e, "resize not sent");
                        }
                    }
                }
                continue;
            }
        };
        match ev {
            None => anyhow::bail!("the remote session ended without an exit status"),
            Some(Ev::Out(d)) => {
                let mut o = std::io::stdout().lock();
                if o.write_all(&d).and_then(|_| o.flush()).is_err() {
                    // Our reader went away (e.g. `| head`): end as a pipe writer would.
                    break End::Signal(libc::SIGPIPE);
                }
            }
            Some(Ev::Err(d)) => {
                let mut e = std::io::stderr().lock();
                let _ = e.write_all(&d).and_then(|_| e.flush());
            }
            Some(Ev::Dropped(n)) => {
                let nl = if opts.tty { "\r\n" } else { "\n" };
                let mut e = std::io::stderr().lock();
                let _ = write!(e, "{}{nl}", dropped_marker(n)).and_then(|_| e.flush());
            }
            Some(Ev::Exit(x)) => break End::Exit(x),
            Some(Ev::Other) => {}
        }
    };
    if let Some(t) = stdin_task {
        t.abort();
    }
    Ok(end)
}
