//! `--vm ID|NAME ...` or `--all`: the VMs a command works on, from one
//! reconcile of the runtime.

use anyhow::bail;
use hearth_runtime::{ListFilter, Runtime, VmRecord};

/// The records named with `--vm` (ids or names), or with `--all` every record
/// `keep` accepts.
pub async fn select(
    rt: &Runtime,
    keys: &[String],
    all: bool,
    keep: impl Fn(&VmRecord) -> bool,
) -> anyhow::Result<Vec<VmRecord>> {
    if all && !keys.is_empty() {
        bail!("give either --vm ID... or --all, not both");
    }
    if !all && keys.is_empty() {
        bail!("name at least one vm with --vm ID (or use --all)");
    }
    let recs = rt.list(&ListFilter::default()).await?;
    if all {
        return Ok(recs.into_iter().filter(|r| keep(r)).collect());
    }
    keys.iter()
        .map(|k| Ok(hearth_runtime::runtime::resolve(&recs, k)?.clone()))
        .collect()
}
