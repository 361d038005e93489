//! `process.Process`: envd's process service over hearth background
//! processes, so a process outlives its `Start` stream and `List`,
//! `Connect`, `SendInput`, `SendSignal` work on it afterwards.
//!
//! - `Start` starts a background process (ring of [`RING_BYTES`]) and follows
//!   it from its first byte: `start {pid}`, `data` (stdout / stderr / pty),
//!   keepalives, one `end`. Its `Connect-Timeout-Ms` is also the process's
//!   timeout, as in envd: at the deadline the process group is killed and
//!   the stream ends with `deadline_exceeded`.
//! - `Connect` follows a running process from now on (envd sends no replay);
//!   its deadline ends only the stream.
//! - `SendInput` / `StreamInput` / `Update` go through one attach per process
//!   that the gateway keeps for input ([`Registry`]).
//! - `CloseStdin` closes the process's stdin pipe for good (the agent's
//!   `PROCESS_STDIN_CLOSE`), so it reads end of file.
//! - `SendSignal` signals the process group; an unknown or exited process is
//!   `not_found` (the SDK's `kill` → False). After SIGKILL it answers once the
//!   process is gone, so a second kill reports False.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Router};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use hearth_runtime::{AttachEvent, AttachStream, Outcome, ProcessRef, ProcessState, Sandbox};

use super::connect::{self, CallMeta, Code, ConnectError, StreamOptions, Unary};
use super::pb::process as pb;
use super::process_map::{self as map, Input, Known, Registry};
use super::user::Caller;
use crate::app::AppState;

pub use map::RING_BYTES;

/// How long `SendSignal(SIGKILL)` waits for the process to be gone.
const KILL_WAIT: Duration = Duration::from_secs(5);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/process.Process/Start", post(start))
        .route("/process.Process/Connect", post(connect_to))
        .route("/process.Process/List", post(list))
        .route("/process.Process/SendInput", post(send_input))
        .route("/process.Process/StreamInput", post(stream_input))
        .route("/process.Process/SendSignal", post(send_signal))
        .route("/process.Process/CloseStdin", post(close_stdin))
        .route("/process.Process/Update", post(update))
}

/// Converts a runtime failure, dropping the cached handle when the sandbox
/// or its connection is gone.
fn fail(state: &AppState, sandbox: &Sandbox, e: hearth_runtime::Error) -> ConnectError {
    state.forget_if_gone(sandbox.id(), &e);
    e.into()
}

fn not_found(t: &ProcessRef) -> ConnectError {
    ConnectError::not_found(format!("process with {t} not found"))
}

/// The running process `t` names: its pid and bytes written so far.
async fn running(
    state: &AppState,
    sb: &Sandbox,
    t: &ProcessRef,
) -> Result<(u32, u64), ConnectError> {
    let list = sb.processes().await.map_err(|e| fail(state, sb, e))?;
    list.iter()
        .find(|p| {
            p.state == ProcessState::Running
                && match t {
                    ProcessRef::Pid(pid) => p.pid == *pid,
                    ProcessRef::Tag(tag) => p.tag.as_deref() == Some(tag.as_str()),
                }
        })
        .map(|p| (p.pid, p.output_bytes))
        .ok_or_else(|| not_found(t))
}

/// A process's events, from an attach. `deadline` marks a `Start` whose
/// timeout is the process's: its timed-out end is `deadline_exceeded`.
fn follow(
    pid: u32,
    mut attach: AttachStream,
    deadline: Option<Duration>,
) -> impl Stream<Item = Result<pb::ProcessEvent, ConnectError>> + Send {
    use pb::process_event::{data_event::Output, DataEvent, Event, StartEvent};
    async_stream::stream! {
        yield Ok(map::event(Event::Start(StartEvent { pid })));
        let pty = attach.attached().pty;
        loop {
            let out = match attach.next().await {
                Ok(Some(AttachEvent::Stdout(b))) if pty => Output::Pty(b.to_vec()),
                Ok(Some(AttachEvent::Stdout(b))) => Output::Stdout(b.to_vec()),
                Ok(Some(AttachEvent::Stderr(b))) => Output::Stderr(b.to_vec()),
                Ok(Some(AttachEvent::Dropped(n))) => {
                    tracing::warn!(pid, bytes = n, "process output was overwritten in its ring before the stream read it");
                    continue;
                }
                Ok(Some(AttachEvent::Exit(x))) => {
                    if let (Outcome::TimedOut { .. }, Some(t)) = (&x.outcome, deadline) {
                        yield Err(ConnectError::deadline_exceeded(format!(
                            "process {pid} was killed at its {} ms deadline (Connect-Timeout-Ms)",
                            t.as_millis()
                        )));
                    } else {
                        yield Ok(map::event(Event::End(map::end_event(&x.outcome))));
                    }
                    return;
                }
                Ok(None) => {
                    yield Err(ConnectError::new(
                        Code::Unavailable,
                        format!("the stream of process {pid} ended before its exit"),
                    ));
                    return;
                }
                Err(e) => {
                    yield Err(e.into());
                    return;
                }
            };
            yield Ok(map::event(Event::Data(DataEvent { output: Some(out) })));
        }
    }
}

fn stream_opts<M>(state: &AppState, meta: CallMeta, keepalive: M) -> StreamOptions<M> {
    StreamOptions {
        meta,
        shutdown: state.shutdown().clone(),
        keepalive: Some(keepalive),
    }
}

async fn start(
    State(state): State<AppState>,
    Extension(reg): Extension<Registry>,
    caller: Result<Caller, ConnectError>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let meta = CallMeta::from_headers(&headers)?;
        let caller = caller?;
        let req: pb::StartRequest = connect::read_stream_request(&headers, body).await?;
        let spec = map::detach_spec(&req, &caller.user, meta.timeout)?;
        let sb = &caller.sandbox;
        let pid = sb
            .exec_detached(&spec)
            .await
            .map_err(|e| fail(&state, sb, e))?;
        tracing::debug!(pid, argv = ?spec.exec.argv, "envd process started");
        let mut config = req.process.clone().unwrap_or_default();
        config.cwd = spec.exec.cwd.clone();
        reg.insert(
            sb.id(),
            pid,
            Known {
                config,
                tag: spec.tag.clone(),
                input: None,
            },
        );
        let attach = sb
            .attach(&ProcessRef::Pid(pid), Some(0))
            .await
            .map_err(|e| fail(&state, sb, e))?;
        Ok::<_, ConnectError>((meta, pid, attach))
    }
    .await;
    match r {
        Ok((meta, pid, attach)) => {
            let timeout = meta.timeout;
            let events = follow(pid, attach, timeout)
                .map(|r| r.map(|e| pb::StartResponse { event: Some(e) }));
            let ka = pb::StartResponse {
                event: Some(map::keepalive()),
            };
            connect::server_stream(stream_opts(&state, meta, ka), events)
        }
        Err(e) => connect::stream_error(e),
    }
}

async fn connect_to(
    State(state): State<AppState>,
    caller: Result<Caller, ConnectError>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let r = async {
        let meta = CallMeta::from_headers(&headers)?;
        let caller = caller?;
        let req: pb::ConnectRequest = connect::read_stream_request(&headers, body).await?;
        let t = map::target(req.process.as_ref())?;
        let sb = &caller.sandbox;
        let (pid, end) = running(&state, sb, &t).await?;
        let attach = sb
            .attach(&ProcessRef::Pid(pid), Some(end))
            .await
            .map_err(|e| fail(&state, sb, e))?;
        Ok::<_, ConnectError>((meta, pid, attach))
    }
    .await;
    match r {
        Ok((meta, pid, attach)) => {
            let events = follow(pid, attach, None)
                .map(|r| r.map(|e| pb::ConnectResponse { event: Some(e) }));
            let ka = pb::ConnectResponse {
                event: Some(map::keepalive()),
            };
            connect::server_stream(stream_opts(&state, meta, ka), events)
        }
        Err(e) => connect::stream_error(e),
    }
}

async fn list(
    State(state): State<AppState>,
    Extension(reg): Extension<Registry>,
    caller: Result<Caller, ConnectError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Unary<pb::ListResponse>, ConnectError> {
    let meta = CallMeta::from_headers(&headers)?;
    let caller = caller?;
    let _: pb::ListRequest = connect::read_unary(&headers, body).await?;
    connect::with_deadline(&meta, async {
        let sb = &caller.sandbox;
        let procs = sb.processes().await.map_err(|e| fail(&state, sb, e))?;
        let running: Vec<_> = procs
            .into_iter()
            .filter(|p| p.state == ProcessState::Running)
            .collect();
        let pids: Vec<u32> = running.iter().map(|p| p.pid).collect();
        reg.retain_running(sb.id(), &pids);
        let processes = running
            .into_iter()
            .map(|p| {
                let known = reg.get(sb.id(), p.pid);
                pb::ProcessInfo {
                    config: Some(
                        known
                            .as_ref()
                            .map(|k| k.config.clone())
                            .unwrap_or_else(|| map::config_from_argv(&p.argv)),
                    ),
                    pid: p.pid,
                    tag: p.tag.or_else(|| known.and_then(|k| k.tag)),
                }
            })
            .collect();
        Ok(Unary(pb::ListResponse { processes }))
    })
    .await
}

/// The input handle of the running process `t`, made on first use.
async fn input(
    state: &AppState,
    reg: &Registry,
    sb: &Sandbox,
    t: &ProcessRef,
) -> Result<(u32, Input), ConnectError> {
    let (pid, end) = running(state, sb, t).await?;
    if let Some(i) = reg.get(sb.id(), pid).and_then(|k| k.input) {
        return Ok((pid, i));
    }
    let attach = sb
        .attach(&ProcessRef::Pid(pid), Some(end))
        .await
        .map_err(|e| fail(state, sb, e))?;
    let a = attach.attached().clone();
    let input = Input {
        control: attach.control(),
        stdin_open: a.stdin_open,
        pty: a.pty,
        _attach: std::sync::Arc::new(tokio::sync::Mutex::new(attach)),
    };
    if reg.get(sb.id(), pid).is_none() {
        let argv = sb
            .processes()
            .await
            .map_err(|e| fail(state, sb, e))?
            .into_iter()
            .find(|p| p.pid == pid)
            .map(|p| p.argv)
            .unwrap_or_default();
        reg.insert(
            sb.id(),
            pid,
            Known {
                config: map::config_from_argv(&argv),
                tag: a.tag.clone(),
                input: None,
            },
        );
    }
    reg.set_input(sb.id(), pid, input.clone());
    Ok((pid, input))
}

/// Writes one `ProcessInput` to the process.
async fn write_input(
    pid: u32,
    input: &Input,
    data: Option<&pb::ProcessInput>,
) -> Result<(), ConnectError> {
    use pb::process_input::Input as I;
    let bytes = match data.and_then(|d| d.input.as_ref()) {
        Some(I::Stdin(b)) | Some(I::Pty(b)) => Bytes::copy_from_slice(b),
        None => {
            return Err(ConnectError::invalid_argument(
                "the process input is missing",
            ))
        }
    };
    if !input.stdin_open {
        return Err(ConnectError::new(
            Code::FailedPrecondition,
            format!("process {pid} has no open stdin (it was started without stdin=True, or its stdin was closed)"),
        ));
    }
    input
        .control
        .write_stdin(bytes)
        .await
        .map_err(|e| ConnectError::new(Code::Unavailable, format!("writing to process {pid}: {e}")))
}

async fn send_input(
    State(state): State<AppState>,
    Extension(reg): Extension<Registry>,
    caller: Result<Caller, ConnectError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Unary<pb::SendInputResponse>, ConnectError> {
    let meta = CallMeta::from_headers(&headers)?;
    let caller = caller?;
    let req: pb::SendInputRequest = connect::read_unary(&headers, body).await?;
    let t = map::target(req.process.as_ref())?;
    connect::with_deadline(&meta, async {
        let (pid, i) = input(&state, &reg, &caller.sandbox, &t).await?;
        write_input(pid, &i, req.input.as_ref()).await?;
        Ok(Unary(pb::SendInputResponse {}))
    })
    .await
}

async fn stream_input(
    State(state): State<AppState>,
    Extension(reg): Extension<Registry>,
    caller: Result<Caller, ConnectError>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    use pb::stream_input_request::Event;
    let r = async {
        let meta = CallMeta::from_headers(&headers)?;
        let caller = caller?;
        let mut msgs = connect::stream_messages::<pb::StreamInputRequest>(&headers, body)?;
        connect::with_deadline(&meta, async {
            let first = msgs.next().await.transpose()?;
            let Some(Event::Start(s)) = first.and_then(|m| m.event) else {
                return Err(ConnectError::invalid_argument(
                    "StreamInput must begin with a start event naming the process",
                ));
            };
            let t = map::target(s.process.as_ref())?;
            let (pid, i) = input(&state, &reg, &caller.sandbox, &t).await?;
            while let Some(m) = msgs.next().await {
                match m?.event {
                    Some(Event::Data(d)) => write_input(pid, &i, d.input.as_ref()).await?,
                    Some(Event::Keepalive(_)) | None => {}
                    Some(Event::Start(_)) => {
                        return Err(ConnectError::invalid_argument(
                            "StreamInput carries one start event, first",
                        ))
                    }
                }
            }
            Ok(pb::StreamInputResponse {})
        })
        .await
    }
    .await;
    connect::client_stream_answer(r)
}

async fn send_signal(
    State(state): State<AppState>,
    caller: Result<Caller, ConnectError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Unary<pb::SendSignalResponse>, ConnectError> {
    let meta = CallMeta::from_headers(&headers)?;
    let caller = caller?;
    let req: pb::SendSignalRequest = connect::read_unary(&headers, body).await?;
    let t = map::target(req.process.as_ref())?;
    let sig = match pb::Signal::try_from(req.signal) {
        Ok(pb::Signal::Sigterm) => 15,
        Ok(pb::Signal::Sigkill) => 9,
        _ => {
            return Err(ConnectError::invalid_argument(format!(
                "signal {} is not SIGNAL_SIGTERM or SIGNAL_SIGKILL",
                req.signal
            )))
        }
    };
    connect::with_deadline(&meta, async {
        let sb = &caller.sandbox;
        let (pid, _) = running(&state, sb, &t).await?;
        sb.kill_process(&ProcessRef::Pid(pid), sig)
            .await
            .map_err(|e| fail(&state, sb, e))?;
        if sig == 9 {
            let since = Instant::now();
            while since.elapsed() < KILL_WAIT {
                match running(&state, sb, &ProcessRef::Pid(pid)).await {
                    Err(e) if e.code == Code::NotFound => break,
                    Err(e) => return Err(e),
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            }
        }
        Ok(Unary(pb::SendSignalResponse {}))
    })
    .await
}

async fn close_stdin(
    State(state): State<AppState>,
    Extension(reg): Extension<Registry>,
    caller: Result<Caller, ConnectError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Unary<pb::CloseStdinResponse>, ConnectError> {
    let meta = CallMeta::from_headers(&headers)?;
    let caller = caller?;
    let req: pb::CloseStdinRequest = connect::read_unary(&headers, body).await?;
    let t = map::target(req.process.as_ref())?;
    connect::with_deadline(&meta, async {
        let sb = &caller.sandbox;
        let agent = sb.agent().await.map_err(|e| fail(&state, sb, e))?;
        let bit = 1u64 << (hearth_runtime::pb::Capability::ProcessStdinClose as i32 as u32);
        if agent.ready().capabilities & bit == 0 {
            return Err(ConnectError::new(
                Code::Unimplemented,
                format!(
                    "the agent of sandbox {} ({}) cannot close a process's stdin; recreate the sandbox with a newer guest",
                    sb.id(),
                    agent.ready().agent_version
                ),
            ));
        }
        let (pid, _) = running(&state, sb, &t).await?;
        sb.close_process_stdin(&ProcessRef::Pid(pid))
            .await
            .map_err(|e| fail(&state, sb, e))?;
        // Input through the kept attach is refused from now on.
        if let Some(mut i) = reg.get(sb.id(), pid).and_then(|k| k.input) {
            i.stdin_open = false;
            reg.set_input(sb.id(), pid, i);
        }
        Ok(Unary(pb::CloseStdinResponse {}))
    })
    .await
}

async fn update(
    State(state): State<AppState>,
    Extension(reg): Extension<Registry>,
    caller: Result<Caller, ConnectError>,
    headers: HeaderMap,
    body: Body,
) -> Result<Unary<pb::UpdateResponse>, ConnectError> {
    let meta = CallMeta::from_headers(&headers)?;
    let caller = caller?;
    let req: pb::UpdateRequest = connect::read_unary(&headers, body).await?;
    let t = map::target(req.process.as_ref())?;
    let Some(size) = req.pty.and_then(|p| p.size) else {
        return Ok(Unary(pb::UpdateResponse {}));
    };
    let (rows, cols) = match (u16::try_from(size.rows), u16::try_from(size.cols)) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 => (r, c),
        _ => {
            return Err(ConnectError::invalid_argument(format!(
                "pty size {}x{} is not in 1..=65535",
                size.cols, size.rows
            )))
        }
    };
    connect::with_deadline(&meta, async {
        let (pid, i) = input(&state, &reg, &caller.sandbox, &t).await?;
        if !i.pty {
            return Err(ConnectError::invalid_argument(format!(
                "process {pid} has no pty to resize"
            )));
        }
        i.control.resize(rows, cols).await.map_err(|e| {
            ConnectError::new(
                Code::Unavailable,
                format!("resizing the pty of process {pid}: {e}"),
            )
        })?;
        Ok(Unary(pb::UpdateResponse {}))
    })
    .await
}
