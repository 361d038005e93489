//! `hearth serve`: the HTTP server (hearth-server) over this state dir, and
//! `hearth serve token create`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Subcommand;
use hearth_server::{ApiTokens, ServeConfig};

#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  hearth serve token create --token-file ~/.hearth-tokens   # prints a new token once
  hearth serve --listen 127.0.0.1:3000 --token-file ~/.hearth-tokens
  E2B_API_URL=http://127.0.0.1:3000 E2B_SANDBOX_URL=http://127.0.0.1:3000 \\
    E2B_API_KEY=<token> python3 -c 'from e2b import Sandbox; print(Sandbox.create().commands.run(\"uname -a\").stdout)'

The first line on stdout is `listening on http://ADDR` once the listener is
bound (with the real port for --listen 127.0.0.1:0). Logs are JSON lines on
stderr. SIGTERM or SIGINT: stop accepting, finish in-flight requests, exit 0;
sandboxes keep running and a restarted server serves them again.")]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<ServeCommand>,
    /// Address to listen on (a non-loopback address needs --token-file).
    #[arg(long, default_value = "127.0.0.1:3000", value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    /// API tokens, one `sha256:<hex>` line each (see `hearth serve token create`).
    /// Without it, a token is made for this run and printed on stdout.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Seconds a sandbox lives when the create request gives no timeout.
    #[arg(long, default_value_t = 300, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub default_timeout: u64,
    /// The domain E2B responses report (`get_host` builds `PORT-ID.DOMAIN`).
    #[arg(long, default_value = "localhost")]
    pub domain: String,
    /// Seconds in-flight requests may take to finish after SIGTERM.
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub drain: u64,
}

#[derive(Subcommand, Debug)]
pub enum ServeCommand {
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a new API token: prints it once and appends its sha256 to the file.
    Create {
        /// The token file (created 0600).
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
    },
}

pub async fn run(args: Args, state_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    if let Some(ServeCommand::Token(TokenCommand::Create { token_file })) = &args.command {
        let token = ApiTokens::create(token_file)?;
        println!("{token}");
        return Ok(0);
    }
    let tokens = match &args.token_file {
        Some(p) => Some(ApiTokens::load(p)?),
        None => None,
    };
    let runtime = crate::edge::runtime(state_dir).await?;
    let mut config = ServeConfig {
        listen: args.listen,
        tokens,
        drain: Duration::from_secs(args.drain),
        ..Default::default()
    };
    config.settings.default_timeout = Duration::from_secs(args.default_timeout);
    config.settings.domain = args.domain.clone();
    hearth_server::serve(runtime, config, shutdown_signal(), |s| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "listening on http://{}", s.addr);
        if let Some(t) = &s.generated_token {
            let _ = writeln!(out, "api token (this run only): {t}");
        }
        let _ = out.flush();
    })
    .await
    .context("hearth serve")?;
    Ok(0)
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install the signal handlers; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
