//! `hearth image templates [--rm] [--json]`: the warm-start templates in
//! `<image cache>/templates/` (see `hearth_runtime::warm`).

use hearth_runtime::Runtime;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Remove every template (the next create of each shape rebuilds it).
    #[arg(long)]
    pub rm: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    if a.rm {
        let n = rt.remove_templates()?;
        if a.json {
            println!("{}", serde_json::json!({ "removed": n }));
        } else {
            println!("removed {n} template(s)");
        }
        return Ok(0);
    }
    let list = rt.list_templates()?;
    if a.json {
        println!("{}", serde_json::to_string(&list)?);
        return Ok(0);
    }
    println!(
        "{:<24} {:<10} {:>4} {:>8} {:>9} {:>10}",
        "KEY", "LANGUAGE", "CPUS", "MEM_MIB", "DISK_MIB", "SIZE"
    );
    for t in &list {
        println!(
            "{:<24} {:<10} {:>4} {:>8} {:>9} {:>10}",
            t.key,
            t.language,
            t.cpus,
            t.mem_mib,
            t.disk_mib,
            hearth_runtime::format_bytes(t.bytes)
        );
    }
    Ok(0)
}
