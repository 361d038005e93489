//! `hearth vm restore SNAPSHOT [--name NAME]`: a new VM from a snapshot. It
//! continues where the snapshotted VM was (processes, memory, files), with
//! its own id, hostname, machine-id, clock and entropy; connections and
//! foreground execs of the snapshotted VM are gone (background processes
//! run on).
//!
//! Exit code 0 with the new VM's id on stdout, 1 when it could not be made
//! (nothing is left behind).

use hearth_runtime::Runtime;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The snapshot's name (see `hearth snapshot list`).
    pub snapshot: String,
    /// A name for the new VM.
    #[arg(long)]
    pub name: Option<String>,
    /// Print the new VM as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let t0 = std::time::Instant::now();
    match rt.restore(&a.snapshot, a.name.as_deref()).await {
        Ok(sb) => {
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if a.json {
                println!(
                    "{}",
                    serde_json::json!({"id": sb.id(), "name": sb.record().name, "snapshot": a.snapshot, "restore_ms": ms})
                );
            } else {
                println!("{}", sb.id());
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("hearth: cannot restore snapshot {}: {e}", a.snapshot);
            Ok(1)
        }
    }
}
