//! The pure half of the Process service: envd requests to hearth specs,
//! hearth outcomes to envd end events (worded as envd words them: Go's
//! `os.ProcessState`), and [`Registry`], what the gateway remembers of the
//! processes it started (their envd config, an input handle each).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hearth_runtime::{DetachSpec, ExecControl, ExecSpec, Outcome, ProcessRef, PtySize};

use super::connect::ConnectError;
use super::pb::process as pb;
use super::user::User;

/// The output ring of a process the gateway starts: larger than the agent's
/// default so a fast writer (1 MiB at once) is not overwritten before the
/// Start stream's attach reads it.
pub const RING_BYTES: u32 = 8 << 20;
/// At most this many processes are remembered per server (the agent runs at
/// most 1024 at once); past it the exited ones are forgotten.
const REGISTRY_MAX: usize = 4096;

/// The hearth background process for an envd `StartRequest`.
pub fn detach_spec(
    req: &pb::StartRequest,
    user: &User,
    timeout: Option<Duration>,
) -> Result<DetachSpec, ConnectError> {
    let p = req
        .process
        .as_ref()
        .ok_or_else(|| ConnectError::invalid_argument("StartRequest.process is missing"))?;
    if p.cmd.is_empty() {
        return Err(ConnectError::invalid_argument(
            "StartRequest.process.cmd is empty",
        ));
    }
    let mut argv = Vec::with_capacity(1 + p.args.len());
    argv.push(p.cmd.clone());
    argv.extend(p.args.iter().cloned());
    let mut env: Vec<(String, String)> =
        p.envs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    env.sort();
    let cwd = match p.cwd.as_deref() {
        None | Some("") => user.home.clone(),
        Some(c) => user.resolve_path(c),
    };
    let pty = match &req.pty {
        None => None,
        Some(t) => {
            let size = t.size.unwrap_or_default();
            let dim = |v: u32, what: &str| {
                u16::try_from(v).ok().filter(|v| *v > 0).ok_or_else(|| {
                    ConnectError::invalid_argument(format!("pty {what} {v} is not in 1..=65535"))
                })
            };
            let term = p.envs.get("TERM").cloned().unwrap_or_default();
            Some(PtySize {
                rows: dim(size.rows, "rows")?,
                cols: dim(size.cols, "cols")?,
                term,
            })
        }
    };
    // envd: a process takes stdin unless the request says `stdin: false`.
    let stdin_open = pty.is_none() && req.stdin.unwrap_or(true);
    Ok(DetachSpec {
        exec: ExecSpec {
            argv,
            env,
            cwd: Some(cwd),
            stdin_open,
            timeout,
            pty,
            user: Some(user.name.clone()),
            ..Default::default()
        },
        tag: req.tag.clone().filter(|t| !t.is_empty()),
        buffer_bytes: RING_BYTES,
    })
}

/// The process an envd selector names.
pub fn target(sel: Option<&pb::ProcessSelector>) -> Result<ProcessRef, ConnectError> {
    use pb::process_selector::Selector;
    match sel.and_then(|s| s.selector.as_ref()) {
        Some(Selector::Pid(0)) => Err(ConnectError::invalid_argument(
            "process pid 0 is not a process",
        )),
        Some(Selector::Pid(p)) => Ok(ProcessRef::Pid(*p)),
        Some(Selector::Tag(t)) if !t.is_empty() => Ok(ProcessRef::Tag(t.clone())),
        Some(Selector::Tag(_)) => Err(ConnectError::invalid_argument("process tag is empty")),
        None => Err(ConnectError::invalid_argument(
            "the process selector is missing (send {\"pid\": N} or {\"tag\": \"t\"})",
        )),
    }
}

/// Go's `syscall.Signal.String()` for the signals a workload meets.
pub fn signal_name(sig: i32) -> String {
    let s = match sig {
        1 => "hangup",
        2 => "interrupt",
        3 => "quit",
        4 => "illegal instruction",
        5 => "trace/breakpoint trap",
        6 => "aborted",
        7 => "bus error",
        8 => "floating point exception",
        9 => "killed",
        10 => "user defined signal 1",
        11 => "segmentation fault",
        12 => "user defined signal 2",
        13 => "broken pipe",
        14 => "alarm clock",
        15 => "terminated",
        _ => return format!("signal {sig}"),
    };
    s.to_string()
}

/// envd's end event for a hearth outcome: `exit status N` with the code, or
/// `signal: killed` with exit code -1 and `exited: false` (Go's
/// `ProcessState`).
pub fn end_event(o: &Outcome) -> pb::process_event::EndEvent {
    let signaled = |signal: i32, core: bool, error: Option<String>| pb::process_event::EndEvent {
        exit_code: -1,
        exited: false,
        status: format!(
            "signal: {}{}",
            signal_name(signal),
            if core { " (core dumped)" } else { "" }
        ),
        error,
    };
    match o {
        Outcome::Exited(c) => pb::process_event::EndEvent {
            exit_code: *c,
            exited: true,
            status: format!("exit status {c}"),
            error: None,
        },
        Outcome::Killed {
            signal,
            core_dumped,
        } => signaled(*signal, *core_dumped, None),
        Outcome::TimedOut { signal } => signaled(*signal, false, Some(o.to_string())),
        Outcome::OomKilled { .. } => signaled(9, false, Some(o.to_string())),
        Outcome::NeverStarted { .. } | Outcome::Unknown => pb::process_event::EndEvent {
            exit_code: -1,
            exited: false,
            status: o.kind().to_string(),
            error: Some(o.to_string()),
        },
    }
}

pub fn event(e: pb::process_event::Event) -> pb::ProcessEvent {
    pb::ProcessEvent { event: Some(e) }
}

pub fn keepalive() -> pb::ProcessEvent {
    event(pb::process_event::Event::Keepalive(Default::default()))
}

/// What the gateway knows of one process it started.
#[derive(Clone)]
pub struct Known {
    pub config: pb::ProcessConfig,
    pub tag: Option<String>,
    /// The input side of an attach kept for `SendInput`, `StreamInput` and
    /// `Update` (one per process, made on first use).
    pub input: Option<Input>,
}

/// An input handle: the control of an attach that is never read (the agent
/// stops sending it output for want of credit, and ends it at the exit).
#[derive(Clone)]
pub struct Input {
    pub control: ExecControl,
    pub stdin_open: bool,
    pub pty: bool,
    /// Holds the attach open.
    pub _attach: Arc<tokio::sync::Mutex<hearth_runtime::AttachStream>>,
}

/// Processes the gateway started, per sandbox. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    inner: Arc<Mutex<HashMap<(String, u32), Known>>>,
}

impl Registry {
    pub fn insert(&self, sandbox: &str, pid: u32, known: Known) {
        let mut m = self.lock();
        if m.len() >= REGISTRY_MAX {
            // The oldest pids first is as good a guess as any: the sandbox's
            // own list (running processes) is what List reports anyway.
            m.retain(|(s, _), _| s == sandbox);
            if m.len() >= REGISTRY_MAX {
                m.clear();
            }
        }
        m.insert((sandbox.to_string(), pid), known);
    }

    pub fn get(&self, sandbox: &str, pid: u32) -> Option<Known> {
        self.lock().get(&(sandbox.to_string(), pid)).cloned()
    }

    pub fn set_input(&self, sandbox: &str, pid: u32, input: Input) {
        if let Some(k) = self.lock().get_mut(&(sandbox.to_string(), pid)) {
            k.input = Some(input);
        }
    }

    /// Forgets the processes of `sandbox` that are not in `running`.
    pub fn retain_running(&self, sandbox: &str, running: &[u32]) {
        self.lock()
            .retain(|(s, pid), _| s != sandbox || running.contains(pid));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u32), Known>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The envd config of a process the gateway did not start (or forgot):
/// what its argv says.
pub fn config_from_argv(argv: &[String]) -> pb::ProcessConfig {
    pb::ProcessConfig {
        cmd: argv.first().cloned().unwrap_or_default(),
        args: argv.iter().skip(1).cloned().collect(),
        envs: Default::default(),
        cwd: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            name: "user".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/user".into(),
        }
    }

    fn start(json: &str) -> pb::StartRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn run_request_becomes_a_background_process() {
        let r = start(
            r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","echo hi"],"envs":{"B":"2","A":"1"}},"stdin":false}"#,
        );
        let s = detach_spec(&r, &user(), Some(Duration::from_secs(60))).unwrap();
        assert_eq!(s.exec.argv, ["/bin/bash", "-l", "-c", "echo hi"]);
        assert_eq!(
            s.exec.env,
            [("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        assert_eq!(s.exec.cwd.as_deref(), Some("/home/user"));
        assert_eq!(s.exec.user.as_deref(), Some("user"));
        assert_eq!(s.exec.timeout, Some(Duration::from_secs(60)));
        assert!(!s.exec.stdin_open);
        assert_eq!(s.buffer_bytes, RING_BYTES);
        let r = start(r#"{"process":{"cmd":"cat","cwd":"work"},"tag":"t"}"#);
        let s = detach_spec(&r, &user(), None).unwrap();
        assert!(s.exec.stdin_open, "stdin defaults to open");
        assert_eq!(s.exec.cwd.as_deref(), Some("/home/user/work"));
        assert_eq!(s.tag.as_deref(), Some("t"));
    }

    #[test]
    fn pty_request() {
        let r = start(
            r#"{"process":{"cmd":"/bin/bash","args":["-i","-l"],"envs":{"TERM":"xterm-256color"}},"pty":{"size":{"cols":80,"rows":24}}}"#,
        );
        let s = detach_spec(&r, &user(), None).unwrap();
        let pty = s.exec.pty.unwrap();
        assert_eq!(
            (pty.rows, pty.cols, pty.term.as_str()),
            (24, 80, "xterm-256color")
        );
        let bad = start(r#"{"process":{"cmd":"sh"},"pty":{"size":{"cols":0,"rows":24}}}"#);
        assert!(detach_spec(&bad, &user(), None)
            .unwrap_err()
            .message
            .contains("cols 0"));
    }

    #[test]
    fn bad_requests() {
        assert!(detach_spec(&start("{}"), &user(), None).is_err());
        assert!(detach_spec(&start(r#"{"process":{}}"#), &user(), None).is_err());
        assert!(target(None).is_err());
        let sel: pb::ProcessSelector = serde_json::from_str(r#"{"pid":0}"#).unwrap();
        assert!(target(Some(&sel)).is_err());
        let sel: pb::ProcessSelector = serde_json::from_str(r#"{"tag":"web"}"#).unwrap();
        assert_eq!(target(Some(&sel)).unwrap(), ProcessRef::Tag("web".into()));
    }

    #[test]
    fn end_events_word_it_as_envd() {
        let e = end_event(&Outcome::Exited(3));
        assert_eq!(
            (e.exit_code, e.exited, e.status.as_str()),
            (3, true, "exit status 3")
        );
        let k = end_event(&Outcome::Killed {
            signal: 9,
            core_dumped: false,
        });
        assert_eq!(
            (k.exit_code, k.exited, k.status.as_str()),
            (-1, false, "signal: killed")
        );
        let t = end_event(&Outcome::Killed {
            signal: 15,
            core_dumped: true,
        });
        assert_eq!(t.status, "signal: terminated (core dumped)");
        assert_eq!(signal_name(40), "signal 40");
    }
}
