//! `hearth run -- CMD...`: create a VM, run the command (no shell), destroy the VM,
//! exit with the command's code.

use std::path::PathBuf;

use hearth_client::pb;

use super::vm::boot::{create_vm, CreateOpts};
use super::vm::common::{destroy_vm, exec_env, outcome_code, stream_exec, timeout_ms};
use crate::paths;
use crate::state::State;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Seconds before the command is killed (exit code 124).
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Virtual CPUs.
    #[arg(long = "cpu", default_value_t = 1)]
    pub cpus: u32,
    /// Guest memory in MiB.
    #[arg(long = "mem", default_value_t = 256)]
    pub mem_mib: u32,
    /// Guest kernel (default: newest /boot/vmlinuz-*-cloud-amd64).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Language image (python, javascript, node, ruby, golang) or none.
    #[arg(long, default_value = "none")]
    pub language: String,
    /// Your own squashfs/ext4 root image.
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// none or allow_all.
    #[arg(long, default_value = "none")]
    pub network: String,
    /// Working directory in the guest.
    #[arg(long)]
    pub cwd: Option<String>,
    /// The command and its arguments, after `--`.
    #[arg(required = true, last = true)]
    pub argv: Vec<String>,
}

pub async fn run(a: Args) -> anyhow::Result<i32> {
    let state = State::new(paths::state_dir()?);
    let opts = CreateOpts {
        language: a.language.clone(),
        image: a.image.clone(),
        cpus: a.cpus,
        mem_mib: a.mem_mib,
        network: a.network.clone(),
        kernel: a.kernel.clone(),
        name: Some("hearth-run".into()),
        ..Default::default()
    };
    let (rec, client) = create_vm(&state, &opts).await?;
    let start = pb::ExecStart {
        argv: a.argv.clone(),
        env: exec_env(&rec),
        cwd: a.cwd.clone().unwrap_or_default(),
        timeout_ms: timeout_ms(a.timeout),
        ..Default::default()
    };
    let result = stream_exec(&client, start).await;
    drop(client);
    let cleanup = destroy_vm(&state, &rec, false).await;
    let exit = result?;
    if let Err(e) = cleanup {
        eprintln!("hearth: cannot remove vm {}: {e:#}", rec.id);
    }
    Ok(outcome_code(exit.outcome.as_ref()))
}
