//! `hearth vm attach --vm ID PID|TAG [--from-offset N]`: a background
//! process's retained output, then live, until it exits (exit code: its
//! own). Our stdin goes to it when it takes input; a pty process gets our
//! terminal in raw mode (Ctrl-] detaches). Overwritten output is marked with
//! `[hearth: N bytes dropped]` on stderr.

use hearth_runtime::{Outcome, ProcessRef, Runtime};

use super::exec_modes::one_vm;
use crate::interactive::{self, dropped_marker, End, Opts, Remote};
use crate::tty;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VM id or name.
    #[arg(long)]
    pub vm: String,
    /// The process: its pid or its tag.
    pub target: String,
    /// Output offset to start from (default: the oldest byte retained).
    #[arg(long, value_name = "N")]
    pub from_offset: Option<u64>,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let sb = one_vm(rt, std::slice::from_ref(&a.vm)).await?;
    let target = ProcessRef::parse(&a.target);
    let s = sb.attach(&target, a.from_offset).await?;
    let at = s.attached().clone();
    let raw = at.pty && tty::stdin_is_tty();
    if at.dropped > 0 {
        eprintln!("{}", dropped_marker(at.dropped));
    }
    let end = {
        let _guard = if raw {
            Some(tty::RawGuard::enable()?)
        } else {
            None
        };
        let opts = Opts {
            stdin: at.stdin_open,
            tty: raw,
            detach_key: raw,
        };
        interactive::run(Remote::Attach(s), opts).await?
    };
    Ok(match end {
        End::Exit(x) => {
            if !matches!(x.outcome, Outcome::Exited(_)) {
                eprintln!("hearth: process {} {}", at.pid, x.outcome);
            }
            x.outcome.exit_code()
        }
        End::Signal(sig) => 128 + sig,
        End::Detached => {
            eprintln!(
                "[hearth: detached from process {}; it keeps running]",
                at.pid
            );
            0
        }
    })
}
