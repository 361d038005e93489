//! `hearth-guest`: the one static binary that runs inside a hearth microVM.
//!
//! Module map:
//! - [`init`]: the PID-1 role (mounts, modules, root pivot, reaping, power off).
//! - [`agent`]: the agent role — serves the wire protocol (docs/protocol.md) on
//!   vsock or a Unix socket: exec sessions, files, system info, shutdown.
//! - [`vmlink`]: the QEMU backend's agent transport (a stream multiplexer on
//!   a virtio-serial port): the guest end, in the agent, and the host end,
//!   the `vm-proxy` role run next to QEMU.
//! - [`bench_roles`]: benchmark baselines (`poweroff` as PID 1, `vsock-echo`).
//!
//! Role selection: PID 1 named `poweroff` → power off at once (benchmark
//! baseline); `hearth-guest init` or running as PID 1 → init;
//! `hearth-guest agent [...]` → agent; `hearth-guest vsock-echo --port N` → echo.

mod agent;
mod bench_roles;
mod init;
mod vmlink;

fn main() {
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let role = args.next();
    let is_pid1 = std::process::id() == 1;
    if is_pid1 && bench_roles::is_poweroff_name(&argv0) {
        bench_roles::poweroff();
    }
    match role.as_deref().and_then(|r| r.to_str()) {
        Some("init") => init::run(),
        _ if is_pid1 => init::run(),
        Some("agent") => {
            let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
            if let Err(e) = agent::main(&rest) {
                eprintln!("hearth-guest agent: {e:#}");
                std::process::exit(1);
            }
        }
        Some("vm-proxy") => {
            let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
            if let Err(e) = vmlink::proxy::main(&rest) {
                eprintln!("hearth-guest vm-proxy: {e:#}");
                std::process::exit(1);
            }
        }
        Some("vsock-echo") => {
            let rest: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
            if let Err(e) = bench_roles::vsock_echo(&rest) {
                eprintln!("hearth-guest vsock-echo: {e:#}");
                std::process::exit(1);
            }
        }
        _ => {
            eprintln!("usage: hearth-guest init | hearth-guest agent [--unix-socket PATH | --vsock-port N | --link PORT-DEVICE] [--max-frame-len N] | hearth-guest vm-proxy --qemu-socket P --listen P --control P | hearth-guest vsock-echo --port N");
            std::process::exit(2);
        }
    }
}
