//! `hearth exec --connect ENDPOINT [--env K=V]... [--cwd DIR] [--timeout SECS] [--json] -- CMD...`
//!
//! Runs a command through an agent endpoint directly (no state, no VM),
//! streaming its output, forwarding stdin and signals; exits with its code.

use std::time::Duration;

use anyhow::Context;
use hearth_runtime::{Agent, Endpoint, ExecSpec};

use crate::exec_io::{self, parse_env, parse_timeout, Signals, StreamOpts};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Agent endpoint: unix:PATH, hybrid:PATH:PORT or vsock:CID:PORT.
    #[arg(long, value_name = "ENDPOINT")]
    pub connect: Endpoint,
    /// Environment variable for the command (repeatable).
    #[arg(long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// Working directory in the guest (default /).
    #[arg(long)]
    pub cwd: Option<String>,
    /// Kill the command's process group after this many seconds (exit code 124).
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<Duration>,
    /// Print one JSON object with the outcome and the output at the end.
    #[arg(long)]
    pub json: bool,
    /// Seconds to wait for the agent to answer.
    #[arg(long, value_name = "SECS", default_value = "10", value_parser = parse_timeout)]
    pub connect_timeout: Duration,
    /// The command and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub cmd: Vec<String>,
}

/// Connects to an endpoint; shared by the agent commands.
pub async fn connect(ep: &Endpoint, timeout: Duration) -> anyhow::Result<Agent> {
    Ok(Agent::connect(ep, timeout).await?)
}

pub async fn run(args: Args) -> anyhow::Result<i32> {
    let mut signals = Signals::install()?;
    let agent = connect(&args.connect, args.connect_timeout).await?;
    let spec = ExecSpec {
        argv: args.cmd.clone(),
        env: args.env.clone(),
        cwd: args.cwd.clone(),
        stdin_open: true,
        timeout: args.timeout,
        window: 1024 * 1024,
        ..Default::default()
    };
    let s = agent.exec_stream(&spec).await?;
    let opts = StreamOpts {
        forward_stdin: true,
        collect: args.json,
    };
    let r = exec_io::stream(s, &mut signals, opts)
        .await
        .with_context(|| format!("running {:?}", args.cmd[0]))?;
    if args.json {
        println!(
            "{}",
            exec_io::exec_json(&r.exit, r.wall, &r.stdout, &r.stderr)
        );
        return Ok(r.exit.outcome.exit_code());
    }
    Ok(exec_io::report(&args.cmd[0], &r.exit.outcome))
}
