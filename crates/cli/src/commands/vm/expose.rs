//! `hearth vm expose --vm ID GUEST_PORT [--listen 127.0.0.1:PORT | --listen
//! unix:PATH] [--json]`: forwards a host listener to a TCP port inside the VM
//! over the agent connection (works with `--network none`), in the
//! foreground like `kubectl port-forward`, until Ctrl-C or SIGTERM.

use hearth_runtime::{ExposeEvent, Listen, Runtime};

use super::select::select;
use crate::exec_io::Signals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VM id or name.
    #[arg(long)]
    pub vm: String,
    /// TCP port inside the VM (the agent connects to 127.0.0.1:GUEST_PORT there).
    pub guest_port: u16,
    /// Host address to listen on: ADDR:PORT (port 0 picks a free one) or unix:PATH.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Print the forwarding line and connection events as JSON objects.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let listen: Listen = a.listen.parse()?;
    let recs = select(rt, std::slice::from_ref(&a.vm), false, |_| true).await?;
    let sb = rt.sandbox(recs.into_iter().next().expect("one vm was named"));
    let mut signals = Signals::install()?;
    let mut exp = sb.expose(a.guest_port, &listen).await?;
    let local = exp.local_addr().to_string();
    if a.json {
        println!(
            "{}",
            serde_json::json!({
                "event": "forwarding", "listen": local, "guest_port": a.guest_port, "vm": sb.id(),
            })
        );
    } else {
        println!("forwarding {local} -> guest port {}", a.guest_port);
    }
    loop {
        tokio::select! {
            ev = exp.next_event() => match ev {
                Some(e) => report(&e, a.json),
                None => break,
            },
            _ = signals.recv() => {
                exp.stop();
                break;
            }
        }
    }
    match exp.finish().await {
        Ok(()) => Ok(0),
        Err(e) => Err(sb.explain(e).await.into()),
    }
}

fn report(e: &ExposeEvent, json: bool) {
    if json {
        if let Ok(s) = serde_json::to_string(e) {
            println!("{s}");
        }
        return;
    }
    // Per-connection news goes to stderr; stdout keeps the forwarding line.
    match e {
        ExposeEvent::Opened { .. } => {}
        ExposeEvent::Refused { conn, peer, reason } => {
            eprintln!("hearth: connection {conn} from {peer} refused by the guest: {reason}")
        }
        ExposeEvent::Closed { conn, reason, .. } if reason != "finished" => {
            eprintln!("hearth: connection {conn} ended: {reason}")
        }
        ExposeEvent::Closed { .. } => {}
    }
}
