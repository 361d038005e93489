//! The modes of `vm exec` beyond a plain run: `-i` (forward stdin), `-t` (a
//! pseudo-terminal, our terminal in raw mode) and `--detach` (a background
//! process: prints its pid). Also the pty runner `vm shell` shares.

use anyhow::bail;
use hearth_runtime::{DetachSpec, ExecSpec, PtySize, Runtime, Sandbox, VmStatus};

use super::exec::Args;
use super::select::select;
use crate::interactive::{self, End, Opts, Remote};
use crate::{edge, exec_io, tty};

/// Parses a size: `4096`, `64K`, `64KiB`, `1M`, `1MiB` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u32, String> {
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4096, 64K, 1M)"))?;
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K or M)")),
    };
    u32::try_from(n * mult).map_err(|_| format!("{s:?} is too large"))
}

/// One running VM named by `--vm`.
pub async fn one_vm(rt: &Runtime, vm: &[String]) -> anyhow::Result<Sandbox> {
    let recs = select(rt, vm, false, |r| r.status == VmStatus::Running).await?;
    match <[_; 1]>::try_from(recs) {
        Ok([r]) => Ok(rt.sandbox(r)),
        Err(v) => bail!("this needs exactly one vm (--vm ID), got {}", v.len()),
    }
}

pub async fn run(rt: &Runtime, a: &Args) -> anyhow::Result<i32> {
    let Some(cmd) = &a.cmd else {
        bail!("-i, -t and --detach need --cmd");
    };
    if a.all || a.vm.len() != 1 {
        bail!("-i, -t and --detach run in one vm: give exactly one --vm");
    }
    let sb = one_vm(rt, &a.vm).await?;
    let mut spec = ExecSpec::shell(cmd);
    spec.timeout = a.timeout;
    if a.detach {
        // -i keeps a stdin that attachers write to; without it the process
        // reads end of file (a pty process always takes input).
        spec.stdin_open = a.interactive;
        if a.tty {
            spec.pty = Some(pty_size());
        }
        let d = DetachSpec {
            exec: spec,
            tag: a.tag.clone(),
            buffer_bytes: a.buffer.unwrap_or(0),
        };
        let pid = sb.exec_detached(&d).await?;
        if a.json {
            println!(
                "{}",
                serde_json::json!({ "id": sb.id(), "pid": pid, "tag": a.tag })
            );
        } else {
            println!("{pid}");
        }
        return Ok(0);
    }
    if a.json {
        bail!("--json cannot be combined with -i or -t");
    }
    spec.stdin_open = a.interactive;
    if a.tty {
        if !tty::stdin_is_tty() {
            bail!("-t needs a terminal on stdin, and stdin is not a terminal (drop -t, or run from a terminal)");
        }
        spec.pty = Some(pty_size());
        return run_on_pty(&sb, &spec, "/bin/sh").await;
    }
    let mut signals = exec_io::Signals::install()?;
    let s = sb.exec_stream(&spec).await?;
    let opts = exec_io::StreamOpts {
        forward_stdin: true,
        collect: false,
    };
    match exec_io::stream(s, &mut signals, opts).await {
        Ok(r) => Ok(exec_io::report("/bin/sh", &r.exit.outcome)),
        Err(e) => Err(sb.explain(e).await.into()),
    }
}

/// The local terminal's size and TERM.
pub fn pty_size() -> PtySize {
    let (rows, cols) = tty::size().unwrap_or((24, 80));
    PtySize {
        rows,
        cols,
        term: edge::local_term(),
    }
}

/// Runs `spec` (which has a pty) with our terminal in raw mode; returns the
/// remote exit code (128+N when a signal N ended hearth).
pub async fn run_on_pty(sb: &Sandbox, spec: &ExecSpec, program: &str) -> anyhow::Result<i32> {
    let s = sb.exec_stream(spec).await?;
    let end = {
        let _raw = tty::RawGuard::enable()?;
        let opts = Opts {
            stdin: true,
            tty: true,
            detach_key: false,
        };
        interactive::run(Remote::Exec(s), opts).await
    };
    match end {
        Ok(End::Exit(x)) => Ok(exec_io::report(program, &x.outcome)),
        Ok(End::Signal(sig)) => Ok(128 + sig),
        Ok(End::Detached) => Ok(0),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert!(parse_size("1G").is_err());
        assert!(parse_size("x").is_err());
    }
}
