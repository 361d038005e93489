//! `hearth vm snapshot --vm ID [--name N]`: write a snapshot of a running VM
//! (device state, memory and its root disk, with the guest's filesystems
//! frozen and synced first); the VM runs on. `hearth vm restore` makes new
//! VMs from it; `hearth snapshot list|rm` manages them.
//!
//! Exit code 0 when written, 1 when not (nothing is left half-made).

use hearth_runtime::Runtime;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VM (id or name).
    #[arg(long)]
    pub vm: String,
    /// The snapshot's name (letters, digits, `-`, `_`, `.`); default `snap-<id>`.
    #[arg(long)]
    pub name: Option<String>,
    /// Print the snapshot as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let t0 = std::time::Instant::now();
    match rt.snapshot(&a.vm, a.name.as_deref()).await {
        Ok(s) => {
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if a.json {
                let mut v = serde_json::to_value(&s)?;
                v["ms"] = ms.into();
                println!("{v}");
            } else {
                println!("{}", s.name);
                eprintln!(
                    "hearth: snapshot {} of vm {}: {:.1} MiB, vm paused {} ms, {:.0} ms in all",
                    s.name,
                    s.source_id,
                    s.bytes as f64 / 1048576.0,
                    s.paused_ms,
                    ms
                );
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("hearth: cannot snapshot vm {}: {e}", a.vm);
            Ok(1)
        }
    }
}
