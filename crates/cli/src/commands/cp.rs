//! `hearth cp SRC DST`: copies files and whole directories between the host and
//! a sandbox, preserving mode bits. The sandbox side is written `VM_ID:PATH`
//! (a VM from the state DB, by id or name), or `:PATH` with `--connect
//! ENDPOINT` for an agent reached directly; like `cp`, copying onto an
//! existing directory puts the source inside it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hearth_client::{pb, Client, Endpoint};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Agent endpoint: unix:PATH, hybrid:PATH:PORT or vsock:CID:PORT (then the
    /// guest side is written `:PATH`). Without it, name a VM: `VM_ID:PATH`.
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Option<Endpoint>,
    /// Seconds to wait for the agent to answer.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub connect_timeout: f64,
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

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let (src, dst) = (parse_side(&args.src), parse_side(&args.dst));
    let n = match &args.connect {
        Some(ep) => {
            for side in [&src, &dst] {
                if let CpSide::Remote {
                    target: Some(t), ..
                } = side
                {
                    bail!("with --connect the guest side is written :PATH, not {t}:PATH");
                }
            }
            let client = super::exec::connect(ep, args.connect_timeout).await?;
            copy(&client, &src, &dst).await?
        }
        None => {
            let target = vm_target(&src, &dst)?;
            let state = crate::state::State::new(crate::paths::state_dir()?);
            let id = resolve_vm(&state, target).await?;
            let (_rec, handle, client) = super::vm::common::connect_running(&state, &id).await?;
            match copy(&client, &src, &dst).await {
                Ok(n) => n,
                Err(e) => return Err(super::vm::common::explain_failure(&state, &handle, e).await),
            }
        }
    };
    tracing::info!(bytes = n, "copy finished");
    Ok(0)
}

/// A VM id, or the id of the one VM with that name.
async fn resolve_vm(state: &crate::state::State, target: &str) -> anyhow::Result<String> {
    let recs = state.list().await?;
    if recs.iter().any(|r| r.id == target) {
        return Ok(target.to_string());
    }
    let named: Vec<_> = recs
        .iter()
        .filter(|r| r.name.as_deref() == Some(target))
        .collect();
    match named.as_slice() {
        [one] => Ok(one.id.clone()),
        [] => bail!("no such vm: {target} (see `hearth vm list --all`)"),
        _ => bail!("several vms are named {target}; use the id"),
    }
}

/// Copies `src` to `dst` (one local, one remote); returns the bytes copied.
pub async fn copy(client: &Client, src: &CpSide, dst: &CpSide) -> anyhow::Result<u64> {
    match (src, dst) {
        (CpSide::Local(s), CpSide::Remote { path, .. }) => {
            check_abs(path)?;
            let meta = tokio::fs::metadata(s)
                .await
                .with_context(|| format!("cannot read {}", s.display()))?;
            let mut dest = path.clone();
            if let Ok(info) = client.stat(path).await {
                if info.kind == pb::FileKind::Dir as i32 {
                    dest = remote_join(path, &base_name(&s.to_string_lossy())?);
                }
            }
            if meta.is_dir() {
                upload_dir(client, s, &dest).await
            } else {
                upload_file(client, s, &dest, meta.permissions().mode() & 0o7777).await
            }
        }
        (CpSide::Remote { path, .. }, CpSide::Local(d)) => {
            check_abs(path)?;
            let info = client
                .stat(path)
                .await
                .with_context(|| format!("cannot copy :{path}"))?;
            let mut dest = d.clone();
            if tokio::fs::metadata(d)
                .await
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                dest = d.join(base_name(path)?);
            }
            if info.kind == pb::FileKind::Dir as i32 {
                download_dir(client, path, &dest, info.mode).await
            } else {
                download_file(client, path, &dest, info.mode).await
            }
        }
        (CpSide::Local(_), CpSide::Local(_)) => {
            bail!("both sides are local; write the guest side as :PATH")
        }
        (CpSide::Remote { .. }, CpSide::Remote { .. }) => {
            bail!("copying between two guest paths is not supported; use exec cp")
        }
    }
}

fn check_abs(path: &str) -> anyhow::Result<()> {
    if !path.starts_with('/') {
        bail!("guest path {path:?} must be absolute");
    }
    Ok(())
}

/// Last component of a path, refusing `..`, `.` and empty names.
fn base_name(path: &str) -> anyhow::Result<String> {
    let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if name.is_empty() || name == "." || name == ".." {
        bail!("cannot tell a file name from {path:?}");
    }
    Ok(name.to_string())
}

fn remote_join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

async fn upload_file(client: &Client, src: &Path, dest: &str, mode: u32) -> anyhow::Result<u64> {
    let mut f = tokio::fs::File::open(src)
        .await
        .with_context(|| format!("cannot open {}", src.display()))?;
    client
        .write_file(dest, &mut f, mode, false)
        .await
        .with_context(|| format!("cannot copy {} to :{dest}", src.display()))
}

async fn upload_dir(client: &Client, src: &Path, dest: &str) -> anyhow::Result<u64> {
    let mut total = 0;
    // Iterative walk: (local dir, remote dir).
    let mut stack = vec![(src.to_path_buf(), dest.to_string())];
    while let Some((ldir, rdir)) = stack.pop() {
        let mode = tokio::fs::metadata(&ldir)
            .await
            .with_context(|| format!("cannot read {}", ldir.display()))?
            .permissions()
            .mode()
            & 0o7777;
        match client.mkdir(&rdir, mode, true).await {
            Ok(()) => {}
            Err(e) if e.remote_code() == Some(pb::ErrorCode::AlreadyExists) => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create :{rdir}")),
        }
        let mut rd = tokio::fs::read_dir(&ldir)
            .await
            .with_context(|| format!("cannot list {}", ldir.display()))?;
        while let Some(ent) = rd
            .next_entry()
            .await
            .with_context(|| format!("cannot list {}", ldir.display()))?
        {
            let name = ent.file_name().to_string_lossy().into_owned();
            let lpath = ent.path();
            let rpath = remote_join(&rdir, &name);
            let meta = tokio::fs::symlink_metadata(&lpath)
                .await
                .with_context(|| format!("cannot read {}", lpath.display()))?;
            if meta.is_dir() {
                stack.push((lpath, rpath));
            } else if meta.is_file() {
                total +=
                    upload_file(client, &lpath, &rpath, meta.permissions().mode() & 0o7777).await?;
            } else {
                eprintln!(
                    "hearth: skipping {} (not a regular file or directory)",
                    lpath.display()
                );
            }
        }
    }
    Ok(total)
}

async fn download_file(client: &Client, src: &str, dest: &Path, mode: u32) -> anyhow::Result<u64> {
    let mut f = tokio::fs::File::create(dest)
        .await
        .with_context(|| format!("cannot create {}", dest.display()))?;
    let n = client
        .read_file_to(src, &mut f)
        .await
        .with_context(|| format!("cannot copy :{src} to {}", dest.display()))?;
    f.sync_all()
        .await
        .with_context(|| format!("cannot write {}", dest.display()))?;
    tokio::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode & 0o7777))
        .await
        .with_context(|| format!("cannot set the mode of {}", dest.display()))?;
    Ok(n)
}

async fn download_dir(client: &Client, src: &str, dest: &Path, mode: u32) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut stack = vec![(src.to_string(), dest.to_path_buf(), mode)];
    // Directory modes are applied last so a read-only directory can be filled.
    let mut dir_modes = Vec::new();
    while let Some((rdir, ldir, mode)) = stack.pop() {
        match tokio::fs::create_dir(&ldir).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("cannot create {}", ldir.display())),
        }
        dir_modes.push((ldir.clone(), mode));
        let entries = client
            .list_dir(&rdir)
            .await
            .with_context(|| format!("cannot list :{rdir}"))?;
        for ent in entries {
            let name = base_name(&ent.name)?;
            let rpath = remote_join(&rdir, &name);
            let lpath = ldir.join(&name);
            if ent.kind == pb::FileKind::Dir as i32 {
                stack.push((rpath, lpath, ent.mode));
            } else if ent.kind == pb::FileKind::File as i32 {
                total += download_file(client, &rpath, &lpath, ent.mode).await?;
            } else {
                eprintln!("hearth: skipping :{rpath} (not a regular file or directory)");
            }
        }
    }
    for (d, m) in dir_modes.into_iter().rev() {
        tokio::fs::set_permissions(&d, std::fs::Permissions::from_mode(m & 0o7777))
            .await
            .with_context(|| format!("cannot set the mode of {}", d.display()))?;
    }
    Ok(total)
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

    #[test]
    fn base_names() {
        assert_eq!(base_name("/a/b/").unwrap(), "b");
        assert_eq!(base_name("b").unwrap(), "b");
        assert!(base_name("/").is_err());
        assert!(base_name("/a/..").is_err());
    }
}
