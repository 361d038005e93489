//! `hearth vm fork --vm ID --count N`: N new VMs, each a copy of a running
//! VM as it is now (which runs on). Each gets its own disk, id, hostname,
//! machine-id and entropy. A VM with a /persist volume cannot be forked.
//!
//! Exit code 0 with one new id per line, 1 when the fork failed (the clones
//! made so far are removed again).

use hearth_runtime::Runtime;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VM to copy (id or name).
    #[arg(long)]
    pub vm: String,
    /// How many copies (1..=64).
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Print the clones as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let t0 = std::time::Instant::now();
    match rt.fork(&a.vm, a.count).await {
        Ok(clones) => {
            let ms = t0.elapsed().as_secs_f64() * 1000.0;
            if a.json {
                let ids: Vec<&str> = clones.iter().map(|s| s.id()).collect();
                println!(
                    "{}",
                    serde_json::json!({"source": a.vm, "clones": ids, "ms": ms})
                );
            } else {
                for c in &clones {
                    println!("{}", c.id());
                }
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("hearth: cannot fork vm {}: {e}", a.vm);
            Ok(1)
        }
    }
}
