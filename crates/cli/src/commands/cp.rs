//! `hearth cp SRC DST`: copies files and whole directories between the host and
//! a sandbox, preserving mode bits. The sandbox side is written `VM_ID:PATH`
//! (a VM from the state DB, by id or name), or `:PATH` with `--connect
//! ENDPOINT` for an agent reached directly; like `cp`, copying onto an
//! existing directory puts the source inside it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use hearth_runtime::Endpoint;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Agent endpoint: unix:PATH, hybrid:PATH:PORT or vsock:CID:PORT (then the
    /// guest side is written `:PATH`). Without it, name a VM: `VM_ID:PATH`.
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Option<Endpoint>,
    /// Seconds to wait for the agent to answer.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = crate::exec_io::parse_timeout)]
    pub connect_timeout: Duration,
    /// Source: a local path, `VM_ID:PATH`, or `:PATH` with --connect.
    pub src: String,
    /// Destination: a local path, `VM_ID:PATH`, or `:PATH` with --connect.
    pub dst: String,
}

/// One side of a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CpSide {
    Local(PathBuf),
    /// `target` is the part before the colon (`None` for `:PATH`).
    Remote {
        target: Option<String>,
        path: String,
    },
}

/// Parses a copy operand. `:PATH` is remote with no target; `NAME:PATH` is
/// remote when NAME is non-empty and has no `/` (write `./NAME:PATH` for a
/// local file with a colon); anything else is local.
pub fn parse_side(spec: &str) -> CpSide {
    match spec.split_once(':') {
        Some(("", path)) => CpSide::Remote {
            target: None,
            path: path.to_string(),
        },
        Some((name, path)) if !name.contains('/') => CpSide::Remote {
            target: Some(name.to_string()),
            path: path.to_string(),
        },
        _ => CpSide::Local(PathBuf::from(spec)),
    }
}

/// The VM a copy talks to: the target of its remote side.
pub fn vm_target<'a>(src: &'a CpSide, dst: &'a CpSide) -> anyhow::Result<&'a str> {
    let remote = [src, dst].into_iter().find_map(|s| match s {
        CpSide::Remote { target, .. } => Some(target),
        CpSide::Local(_) => None,
    });
    match remote {
        Some(Some(t)) => Ok(t.as_str()),
        Some(None) => bail!("name the vm as VM_ID:PATH (or give --connect ENDPOINT for :PATH)"),
        None => bail!("both sides are local; write the vm side as VM_ID:PATH"),
    }
}

pub async fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let (src, dst) = (parse_side(&args.src), parse_side(&args.dst));
    if matches!((&src, &dst), (CpSide::Remote { .. }, CpSide::Remote { .. })) {
        bail!("copying between two guest paths is not supported; use exec cp");
    }
    let (n, skipped) = match &args.connect {
        Some(ep) => {
            for side in [&src, &dst] {
                if let CpSide::Remote {
                    target: Some(t), ..
                } = side
                {
                    bail!("with --connect the guest side is written :PATH, not {t}:PATH");
                }
            }
            let agent = super::exec::connect(ep, args.connect_timeout).await?;
            match (&src, &dst) {
                (CpSide::Local(l), CpSide::Remote { path, .. }) => agent.copy_in(l, path).await?,
                (CpSide::Remote { path, .. }, CpSide::Local(l)) => agent.copy_out(path, l).await?,
                _ => bail!("both sides are local; write the guest side as :PATH"),
            }
        }
        None => {
            let target = vm_target(&src, &dst)?;
            let rt = crate::edge::runtime(state_dir).await?;
            let sb = rt.get(target).await?;
            match (&src, &dst) {
                (CpSide::Local(l), CpSide::Remote { path, .. }) => sb.copy_in(l, path).await?,
                (CpSide::Remote { path, .. }, CpSide::Local(l)) => sb.copy_out(path, l).await?,
                _ => bail!("both sides are local; write the vm side as VM_ID:PATH"),
            }
        }
    };
    for s in skipped {
        eprintln!("hearth: skipped {s} (not a regular file or directory)");
    }
    tracing::info!(bytes = n, "copy finished");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sides() {
        let r = |t: Option<&str>, p: &str| CpSide::Remote {
            target: t.map(str::to_string),
            path: p.to_string(),
        };
        assert_eq!(parse_side(":/tmp/x"), r(None, "/tmp/x"));
        assert_eq!(parse_side("vm1:/tmp/x"), r(Some("vm1"), "/tmp/x"));
        assert_eq!(parse_side(":"), r(None, ""));
        assert_eq!(parse_side("./x"), CpSide::Local("./x".into()));
        assert_eq!(parse_side("./a:b"), CpSide::Local("./a:b".into()));
        assert_eq!(parse_side("/abs/a:b"), CpSide::Local("/abs/a:b".into()));
        assert_eq!(parse_side("x"), CpSide::Local("x".into()));
    }

    #[test]
    fn vm_target_comes_from_the_remote_side() {
        let local = parse_side("./x");
        assert_eq!(
            vm_target(&parse_side("ab12:/out/x"), &local).unwrap(),
            "ab12"
        );
        assert_eq!(vm_target(&local, &parse_side("ab12:/in")).unwrap(), "ab12");
        let e = vm_target(&parse_side(":/out/x"), &local)
            .unwrap_err()
            .to_string();
        assert!(e.contains("VM_ID:PATH"), "{e}");
        assert!(vm_target(&local, &parse_side("/tmp/y")).is_err());
    }
}
