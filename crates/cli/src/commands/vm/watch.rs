//! `hearth vm watch --vm ID PATH [--recursive] [--json]`: prints one line per
//! file event in the VM (create, write, remove, rename, attrib, overflow)
//! until Ctrl-C, SIGTERM, or the watched path is removed.

use std::io::Write;

use hearth_runtime::Runtime;

use super::select::select;
use crate::exec_io::Signals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// VM id or name.
    #[arg(long)]
    pub vm: String,
    /// Absolute path in the VM (a file or a directory).
    pub path: String,
    /// Also watch every subdirectory, including ones created later.
    #[arg(long, short)]
    pub recursive: bool,
    /// One JSON object per line: {"kind", "path", "to", "is_dir", "lost"}.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let recs = select(rt, std::slice::from_ref(&a.vm), false, |_| true).await?;
    let sb = rt.sandbox(recs.into_iter().next().expect("one vm was named"));
    let mut signals = Signals::install()?;
    let mut w = sb.watch(&a.path, a.recursive).await?;
    // On stderr, so stdout has events only: from here on, changes are reported.
    eprintln!(
        "watching {}{}",
        a.path,
        if a.recursive { " (recursive)" } else { "" }
    );
    let mut out = std::io::stdout().lock();
    loop {
        let ev = tokio::select! {
            ev = w.next() => ev,
            _ = signals.recv() => {
                drop(out);
                w.close().await?;
                return Ok(0);
            }
        };
        match ev {
            Ok(Some(e)) => {
                if a.json {
                    writeln!(out, "{}", serde_json::to_string(&e)?)?;
                } else {
                    writeln!(out, "{e}")?;
                }
                out.flush()?;
            }
            Ok(None) => {
                let why = w.end_reason().unwrap_or_else(|| "ended".into());
                if a.json {
                    writeln!(
                        out,
                        "{}",
                        serde_json::json!({ "kind": "end", "reason": why })
                    )?;
                } else {
                    writeln!(out, "end: {why}")?;
                }
                return Ok(0);
            }
            Err(e) => return Err(sb.explain(e).await.into()),
        }
    }
}
