//! `hearth vm resume --vm ID`: let a paused VM's vCPUs run again; its agent
//! answers again and interrupted execs carry on. Exit code 0 when every named
//! VM was resumed, 1 when any was not.

use hearth_runtime::Runtime;

use super::pause::{apply, Op};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VM ids or names to resume (repeatable).
    #[arg(long)]
    pub vm: Vec<String>,
    /// Resume every paused VM.
    #[arg(long)]
    pub all: bool,
    /// Print one JSON object per VM (`id`, `ok`, `status`, `ms`, `error`) as an array.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    apply(rt, Op::Resume, &a.vm, a.all, a.json).await
}
