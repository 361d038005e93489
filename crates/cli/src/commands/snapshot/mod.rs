//! `hearth snapshot list|rm`: the snapshots `hearth vm snapshot` wrote.

use hearth_runtime::Runtime;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// List snapshots (oldest first).
    List {
        /// Print them as a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Remove snapshots.
    Rm {
        /// Snapshot names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

pub async fn run(a: Args, rt: Runtime) -> anyhow::Result<i32> {
    match a.cmd {
        Cmd::List { json } => {
            let all = rt.list_snapshots()?;
            if json {
                println!("{}", serde_json::to_string(&all)?);
            } else {
                println!(
                    "{:<28} {:<10} {:<10} {:>4} {:>6} {:>9}",
                    "NAME", "SOURCE", "LANGUAGE", "CPUS", "MEM", "SIZE"
                );
                for s in &all {
                    println!(
                        "{:<28} {:<10} {:<10} {:>4} {:>5}M {:>8.1}M",
                        s.name,
                        s.source_id,
                        s.language,
                        s.cpus,
                        s.mem_mib,
                        s.bytes as f64 / 1048576.0
                    );
                }
            }
            Ok(0)
        }
        Cmd::Rm { names } => {
            let mut code = 0;
            for n in names {
                match rt.remove_snapshot(&n) {
                    Ok(()) => println!("{n}"),
                    Err(e) => {
                        eprintln!("hearth: cannot remove snapshot {n}: {e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
    }
}
