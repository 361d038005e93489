//! `hearth vm shell --vm ID`: a login shell on a pseudo-terminal (the guest
//! user's shell from /etc/passwd, else `/bin/sh -l`), our terminal in raw
//! mode, our TERM and size; the exit code is the shell's.

use hearth_runtime::{ExecSpec, Runtime, Sandbox};

use super::exec_modes::{one_vm, pty_size, run_on_pty};
use crate::tty;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VM id or name.
    #[arg(long)]
    pub vm: String,
}

/// The login shell of uid 0 in the guest's /etc/passwd, if it exists there.
async fn login_shell(sb: &Sandbox) -> Option<String> {
    let passwd = sb.read_file("/etc/passwd").await.ok()?;
    let text = String::from_utf8_lossy(&passwd);
    let shell = text
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 7 && f[2] == "0")
        .map(|f| f[6].trim().to_string())
        .filter(|s| s.starts_with('/'))?;
    sb.stat(&shell).await.ok()?;
    Some(shell)
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    if !tty::stdin_is_tty() {
        anyhow::bail!("vm shell needs a terminal on stdin, and stdin is not a terminal (use `vm exec -i --cmd ...` instead)");
    }
    let sb = one_vm(rt, std::slice::from_ref(&a.vm)).await?;
    let shell = login_shell(&sb).await.unwrap_or_else(|| "/bin/sh".into());
    let mut spec = ExecSpec::argv([shell.clone(), "-l".to_string()]);
    spec.stdin_open = true;
    spec.pty = Some(pty_size());
    run_on_pty(&sb, &spec, &shell).await
}
