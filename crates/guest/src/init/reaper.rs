//! Signals, the agent child and the one `waitpid(-1)` loop.
//!
//! Init blocks SIGCHLD/SIGTERM/SIGINT before starting the agent and then takes
//! them synchronously with `sigwait`, so no signal handler ever runs in PID 1
//! and no SIGCHLD is lost between the spawn and the first wait.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{kill, signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::InitError;

/// Signals init ignores for itself (restored to default in the agent).
const IGNORED: [Signal; 4] = [
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGPIPE,
    Signal::SIGHUP,
];

/// Signals init waits for.
fn waited() -> SigSet {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set
}

/// Ignores job-control/hangup/pipe signals and blocks the waited ones.
pub fn setup_signals() -> Result<(), InitError> {
    for sig in IGNORED {
        // SAFETY: SIG_IGN installs no handler code; nothing can run concurrently.
        unsafe { signal(sig, SigHandler::SigIgn) }
            .map_err(|e| InitError::io(format!("ignore {sig}"), e.into()))?;
    }
    sigprocmask(SigmaskHow::SIG_BLOCK, Some(&waited()), None)
        .map_err(|e| InitError::io("block signals", e.into()))
}

/// Starts the agent: this same binary, re-executed with `agent`.
pub fn spawn_agent(env: &[(String, String)]) -> Result<Pid, InitError> {
    let exe = if std::path::Path::new("/proc/self/exe").exists() {
        "/proc/self/exe"
    } else {
        "/init"
    };
    let mut cmd = Command::new(exe);
    cmd.arg0("hearth-guest")
        .arg("agent")
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .current_dir("/");
    // SAFETY: the closure runs between fork and exec and only calls
    // async-signal-safe functions (signal, sigprocmask, setsid).
    unsafe {
        cmd.pre_exec(|| {
            for sig in IGNORED {
                signal(sig, SigHandler::SigDfl)?;
            }
            sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            // Own session and process group: a workload's `kill 0` or a
            // terminal hangup never reaches init.
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| InitError::io(format!("start agent ({exe} agent)"), e))?;
    // The Child handle is dropped without waiting: init reaps through waitpid(-1).
    Ok(Pid::from_raw(child.id() as i32))
}

/// How the agent ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentExit {
    Exited(i32),
    Signaled(Signal),
}

impl std::fmt::Display for AgentExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentExit::Exited(code) => write!(f, "{code}"),
            AgentExit::Signaled(sig) => write!(f, "{sig} (killed by signal)"),
        }
    }
}

/// Reaps every child forever and forwards SIGTERM/SIGINT to the agent;
/// returns when the agent itself has exited.
pub fn supervise(agent: Pid) -> AgentExit {
    let set = waited();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                if let Some(exit) = reap_all(agent) {
                    return exit;
                }
            }
            Ok(sig @ (Signal::SIGTERM | Signal::SIGINT)) => {
                let _ = kill(agent, sig);
            }
            Ok(_) | Err(_) => {}
        }
    }
}

/// Collects every zombie; reports the agent's end if it is among them.
fn reap_all(agent: Pid) -> Option<AgentExit> {
    let mut agent_exit = None;
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => {
                agent_exit = Some(AgentExit::Exited(code));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == agent => {
                agent_exit = Some(AgentExit::Signaled(sig));
            }
            Ok(WaitStatus::StillAlive) => return agent_exit,
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            // ECHILD: no children left at all.
            Err(_) => return agent_exit,
        }
    }
}
