//! `hearth vm …`: sandboxes that outlive the CLI, tracked in the state DB.
//! One file per subcommand; `select.rs` picks the VMs a command names.

pub mod attach;
pub mod clean;
pub mod create;
pub mod exec;
pub mod exec_modes;
pub mod expose;
pub mod fork;
pub mod kill;
pub mod list;
pub mod logs;
pub mod pause;
pub mod ps;
pub mod restore;
pub mod resume;
pub mod run;
pub mod select;
pub mod shell;
pub mod snapshot;
pub mod start;
pub mod stats;
pub mod stop;
pub mod watch;

use hearth_runtime::Runtime;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Boot a new VM and print its id.
    Create(create::Args),
    /// Boot a stopped VM again with its disks.
    Start(start::Args),
    /// Copy files into a VM's /in and run a shell command there.
    Run(run::Args),
    /// Run a command (or a hello check) in one or more VMs.
    Exec(exec::Args),
    /// List VMs.
    List(list::Args),
    /// Show a VM's console or agent log (--tail, --since, --follow).
    Logs(logs::Args),
    /// Show a VM's CPU, memory, disk, load, process and network use.
    Stats(stats::Args),
    /// Pause VMs: their vCPUs stop, memory and processes stay (see `resume`).
    Pause(pause::Args),
    /// Resume paused VMs.
    Resume(resume::Args),
    /// Write a snapshot of a running VM (it runs on); see `restore`, `hearth snapshot`.
    Snapshot(snapshot::Args),
    /// A new VM from a snapshot.
    Restore(restore::Args),
    /// New VMs that are copies of a running VM as it is now.
    Fork(fork::Args),
    /// Stop VMs (the records stay; see `clean`).
    Stop(stop::Args),
    /// Stop VMs and remove their directories, records and persist volumes.
    Clean(clean::Args),
    /// A login shell on a terminal in a VM.
    Shell(shell::Args),
    /// List a VM's background processes (`vm exec --detach`).
    Ps(ps::Args),
    /// Follow a background process's output (replayed, then live).
    Attach(attach::Args),
    /// Send a signal to a background process's group.
    Kill(kill::Args),
    /// Print file events (create, write, remove, rename, attrib) in a VM until Ctrl-C.
    Watch(watch::Args),
    /// Forward a host port or Unix socket to a TCP port in a VM until Ctrl-C.
    Expose(expose::Args),
}

pub async fn run(args: Args, state: Runtime) -> anyhow::Result<i32> {
    let state = &state;
    match args.cmd {
        Cmd::Create(a) => create::run(state, a).await,
        Cmd::Start(a) => start::run(state, a).await,
        Cmd::Run(a) => run::run(state, a).await,
        Cmd::Exec(a) => exec::run(state, a).await,
        Cmd::List(a) => list::run(state, a).await,
        Cmd::Logs(a) => logs::run(state, a).await,
        Cmd::Stats(a) => stats::run(state, a).await,
        Cmd::Pause(a) => pause::run(state, a).await,
        Cmd::Resume(a) => resume::run(state, a).await,
        Cmd::Snapshot(a) => snapshot::run(state, a).await,
        Cmd::Restore(a) => restore::run(state, a).await,
        Cmd::Fork(a) => fork::run(state, a).await,
        Cmd::Stop(a) => stop::run(state, a).await,
        Cmd::Clean(a) => clean::run(state, a).await,
        Cmd::Shell(a) => shell::run(state, a).await,
        Cmd::Ps(a) => ps::run(state, a).await,
        Cmd::Attach(a) => attach::run(state, a).await,
        Cmd::Kill(a) => kill::run(state, a).await,
        Cmd::Watch(a) => watch::run(state, a).await,
        Cmd::Expose(a) => expose::run(state, a).await,
    }
}
