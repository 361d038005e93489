//! `hearth` — the command-line tool.
//!
//! Flag parsing and rendering only: every command calls hearth-runtime.
//!
//! - `commands/`: one file per command (`exec`, `cp`, `info`, `ping` talk to an
//!   agent endpoint; `vm`, `run`, `image` manage microVM sandboxes).
//! - `edge.rs`: the environment and global flags → `RuntimeConfig`.
//! - `exec_io.rs`: the one exec path (streaming, signals, exit codes, `--json`).
//! - `progress.rs`: the runtime's progress steps on stderr.
//! - `logging.rs`: `--log-level` / `--log-file` (JSON lines in the file).
//!
//! Exit codes: the remote command's code for `exec`/`run`/`vm run`, 128+signal when it
//! was killed, 124 on timeout, 127 when it never started; 1 for hearth's own errors,
//! 2 for usage errors (clap).

mod commands;
mod edge;
mod exec_io;
mod interactive;
mod limit_flags;
mod logging;
mod progress;
mod tty;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "hearth",
    version,
    about = "microVM sandboxes for untrusted code"
)]
pub struct Cli {
    /// Log filter (error, warn, info, debug, trace or a tracing directive;
    /// default warn, and info for `serve`).
    #[arg(long, global = true, env = "HEARTH_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Also write JSON log lines to this file.
    #[arg(long, global = true, env = "HEARTH_LOG_FILE")]
    pub log_file: Option<std::path::PathBuf>,
    /// State dir (default /var/lib/hearth when writable, else ~/.local/state/hearth).
    #[arg(long, global = true, env = "HEARTH_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command through an agent endpoint, streaming its output.
    Exec(commands::exec::Args),
    /// Copy files between the host and a sandbox.
    Cp(commands::cp::Args),
    /// Show the guest's system information.
    Info(commands::info::Args),
    /// Measure a round trip to an agent.
    Ping(commands::ping::Args),
    /// Manage microVM sandboxes that outlive the CLI.
    Vm(commands::vm::Args),
    /// Run one command in a fresh microVM, then remove it.
    Run(commands::run::Args),
    /// Build or list guest images.
    Image(commands::image::Args),
    /// Serve hearth's HTTP API and the E2B-compatible endpoint.
    Serve(commands::serve::Args),
    /// List or remove snapshots (`hearth vm snapshot` writes them).
    Snapshot(commands::snapshot::Args),
}

fn main() {
    let cli = Cli::parse();
    let serving = matches!(cli.command, Command::Serve(_));
    let level = cli
        .log_level
        .clone()
        .unwrap_or_else(|| if serving { "info" } else { "warn" }.into());
    let _guard = match logging::init(&level, cli.log_file.as_deref(), serving) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("hearth: {e:#}");
            std::process::exit(1);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hearth: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let code = match rt.block_on(commands::dispatch(cli.command, cli.state_dir)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hearth: {e:#}");
            1
        }
    };
    // Do not wait for detached helper tasks (e.g. stdin readers) to finish.
    rt.shutdown_background();
    std::process::exit(code);
}
