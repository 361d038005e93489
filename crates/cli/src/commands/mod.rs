//! One module per command. Each has `Args` (clap) and `run(args) -> exit code`.

pub mod cp;
pub mod exec;
pub mod image;
pub mod info;
pub mod ping;
pub mod run;
pub mod serve;
pub mod snapshot;
pub mod vm;

use std::path::PathBuf;

use crate::Command;

pub async fn dispatch(cmd: Command, state_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    match cmd {
        Command::Exec(a) => exec::run(a).await,
        Command::Cp(a) => cp::run(a, state_dir).await,
        Command::Info(a) => info::run(a).await,
        Command::Ping(a) => ping::run(a).await,
        Command::Vm(a) => vm::run(a, crate::edge::runtime(state_dir).await?).await,
        Command::Run(a) => run::run(a, crate::edge::runtime(state_dir).await?).await,
        Command::Image(a) => image::run(a, crate::edge::runtime(state_dir).await?).await,
        Command::Serve(a) => serve::run(a, state_dir).await,
        Command::Snapshot(a) => snapshot::run(a, crate::edge::runtime(state_dir).await?).await,
    }
}
