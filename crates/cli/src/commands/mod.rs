//! One module per command. Each has `Args` (clap) and `run(args) -> exit code`.

pub mod cp;
pub mod exec;
pub mod image;
pub mod info;
pub mod ping;
pub mod run;
pub mod vm;

use crate::Command;

pub async fn dispatch(cmd: Command) -> anyhow::Result<i32> {
    match cmd {
        Command::Exec(a) => exec::run(a).await,
        Command::Cp(a) => cp::run(a).await,
        Command::Info(a) => info::run(a).await,
        Command::Ping(a) => ping::run(a).await,
        Command::Vm(a) => vm::run(a).await,
        Command::Run(a) => run::run(a).await,
        Command::Image(a) => image::run(a).await,
    }
}
