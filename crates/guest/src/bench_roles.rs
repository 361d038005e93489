//! Roles that exist only to give the benchmarks (crates/cli/examples/bench_vm.rs)
//! same-run baselines through the very paths hearth itself uses.
//!
//! - `poweroff`: started as PID 1 under the name `poweroff` (kernel cmdline
//!   `rdinit=/poweroff`, `/poweroff -> /init` in a baseline initramfs), it syncs and
//!   powers the VM off at once: "the same kernel booting a trivial init".
//! - `vsock-echo --port N`: echoes every byte of every connection on AF_VSOCK port
//!   N, the raw round trip through the vsock path the agent also uses.

use std::path::Path;

use anyhow::Context;
use nix::sys::reboot::{reboot, RebootMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The argv[0] basename that selects [`poweroff`] when running as PID 1.
pub const POWEROFF_NAME: &str = "poweroff";

/// True when argv[0] names the power-off baseline (`/poweroff`, `poweroff`).
pub fn is_poweroff_name(argv0: &std::ffi::OsStr) -> bool {
    Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == POWEROFF_NAME)
}

/// Syncs and powers off. Returning is impossible: if the syscall fails, PID 1
/// exits, the kernel panics and `panic=-1` with `-no-reboot` still ends QEMU (the
/// console line tells the benchmark that the baseline was not clean).
pub fn poweroff() -> ! {
    nix::unistd::sync();
    match reboot(RebootMode::RB_POWER_OFF) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("hearth-guest poweroff: reboot(RB_POWER_OFF) failed: {e}");
            std::process::exit(1)
        }
    }
}

/// Parses `--port N` (the only argument).
fn parse_port(args: &[String]) -> anyhow::Result<u32> {
    match args {
        [flag, v] if flag == "--port" => v
            .parse::<u32>()
            .with_context(|| format!("bad --port {v:?}")),
        _ => anyhow::bail!("usage: hearth-guest vsock-echo --port N"),
    }
}

/// Serves the echo until killed. Prints one `listening on vsock port N` line on
/// stdout once bound, so a host that started it through an exec session knows
/// when to connect.
pub fn vsock_echo(args: &[String]) -> anyhow::Result<()> {
    let port = parse_port(args)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    rt.block_on(async move {
        let addr = tokio_vsock::VsockAddr::new(tokio_vsock::VMADDR_CID_ANY, port);
        let mut listener = tokio_vsock::VsockListener::bind(addr)
            .with_context(|| format!("binding vsock port {port}"))?;
        {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            writeln!(out, "listening on vsock port {port}")
                .and_then(|_| out.flush())
                .context("writing to stdout")?;
        }
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(echo(stream));
                }
                Err(e) => {
                    eprintln!("vsock-echo: accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// Writes back every byte read until EOF or an error.
async fn echo(mut s: tokio_vsock::VsockStream) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if s.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poweroff_name_matches_basename_only() {
        assert!(is_poweroff_name("/poweroff".as_ref()));
        assert!(is_poweroff_name("poweroff".as_ref()));
        assert!(!is_poweroff_name("/init".as_ref()));
        assert!(!is_poweroff_name("/poweroff/x".as_ref()));
        assert!(!is_poweroff_name("poweroffx".as_ref()));
    }

    #[test]
    fn port_argument_is_required_and_numeric() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_port(&s(&["--port", "1001"])).unwrap(), 1001);
        assert!(parse_port(&s(&[])).is_err());
        assert!(parse_port(&s(&["--port"])).is_err());
        assert!(parse_port(&s(&["--port", "x"])).is_err());
        assert!(parse_port(&s(&["--port", "1", "extra"])).is_err());
    }
}
