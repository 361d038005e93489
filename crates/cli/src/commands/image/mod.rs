//! `hearth image build|list|rm`: guest images in the image cache
//! (`HEARTH_IMAGE_CACHE`, else `<state dir>/images`): the boot initramfs and
//! language root images (Debian bookworm squashfs).

use std::path::PathBuf;

use hearth_image::rootfs::{ImageInfo, ImageSelector};
use hearth_runtime::Runtime;

use crate::progress::StderrProgress;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(clap::Subcommand, Debug)]
pub enum Cmd {
    /// Build (or find in the cache) an image: a language root image with
    /// --language, else the boot initramfs.
    Build(BuildArgs),
    /// List cached images.
    List(ListArgs),
    /// Remove cached language images by language or by (a prefix of) their hash.
    Rm(RmArgs),
    /// List (or with --rm remove) the warm-start templates: post-boot
    /// snapshots `vm create` restores instead of booting.
    Templates(templates::Args),
}

mod templates;

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// python, javascript (= node), ruby, golang or base (E2B's base template: bash, git, python3, sudo, default user `user`).
    #[arg(long, conflicts_with = "initramfs")]
    pub language: Option<String>,
    /// Build the boot initramfs (the default without --language).
    #[arg(long)]
    pub initramfs: bool,
    /// Kernel the initramfs is for: a file, `own` or `cloud` (default: own when
    /// built, else cloud; hearth's own kernel needs no modules).
    #[arg(long)]
    pub kernel: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// A language name or at least 4 hex digits of an image hash.
    pub what: String,
    /// Remove it even when VM records still use it.
    #[arg(long)]
    pub force: bool,
}

pub async fn run(args: Args, rt: Runtime) -> anyhow::Result<i32> {
    match args.cmd {
        Cmd::Build(a) => build(&rt, a).await,
        Cmd::List(a) => list(&rt, a),
        Cmd::Rm(a) => rm(&rt, a).await,
        Cmd::Templates(a) => templates::run(&rt, a),
    }
}

fn info_json(i: &ImageInfo) -> serde_json::Value {
    serde_json::json!({
        "kind": "rootfs",
        "language": i.language,
        "hash": i.recipe_hash,
        "path": i.path,
        "size": i.size,
        "tar_size": i.tar_size,
        "compression": i.compression,
        "created": i.created,
        "bootstrap_ms": i.bootstrap_ms,
        "pack_ms": i.pack_ms,
        "current": i.current,
        "env": i.env,
        "hello": i.hello,
    })
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1 << 20) as f64)
}

async fn build(rt: &Runtime, a: BuildArgs) -> anyhow::Result<i32> {
    let progress = StderrProgress::shared();
    if let Some(name) = &a.language {
        let t0 = std::time::Instant::now();
        let (info, built) = rt.ensure_language_image(name, &progress).await?;
        if a.json {
            let mut v = info_json(&info);
            v["built"] = serde_json::json!(built);
            v["elapsed_ms"] = serde_json::json!(t0.elapsed().as_millis() as u64);
            println!("{v}");
        } else {
            println!(
                "language: {}\npath:     {}\nhash:     {}\nsize:     {} (plain tar {})\nbuilt:    {}",
                info.language,
                info.path.display(),
                info.recipe_hash,
                mib(info.size),
                mib(info.tar_size),
                if built {
                    format!(
                        "now (bootstrap {} ms, pack {} ms)",
                        info.bootstrap_ms, info.pack_ms
                    )
                } else {
                    "cached".into()
                }
            );
        }
        return Ok(0);
    }
    let kernel_path = a.kernel.clone().or_else(|| rt.config().kernel.clone());
    let k = hearth_runtime::images::kernel(kernel_path.as_deref(), rt.config())?;
    let img = rt.ensure_initramfs(&k, &progress).await;
    progress.done();
    let img = img?;
    if a.json {
        println!("{}", serde_json::to_string(&img)?);
    } else {
        println!(
            "path:   {}\nhash:   {}\nsize:   {}\nkernel: {} ({})\nshell:  {}",
            img.path.display(),
            img.hash,
            img.size,
            img.kernel.display(),
            img.kernel_release,
            if img.busybox { "busybox" } else { "none" }
        );
    }
    Ok(0)
}

fn list(rt: &Runtime, a: ListArgs) -> anyhow::Result<i32> {
    let (langs, initrds) = rt.list_images()?;
    if a.json {
        let mut v: Vec<_> = langs.iter().map(info_json).collect();
        v.extend(
            initrds
                .iter()
                .map(|(p, s)| serde_json::json!({"kind": "initramfs", "path": p, "size": s})),
        );
        println!("{}", serde_json::Value::Array(v));
        return Ok(0);
    }
    println!(
        "{:<11} {:<16} {:>10} {:>10} {:<7} PATH",
        "LANGUAGE", "HASH", "SIZE", "TAR", "CURRENT"
    );
    for i in &langs {
        println!(
            "{:<11} {:<16} {:>10} {:>10} {:<7} {}",
            i.language.as_str(),
            &i.recipe_hash[..16.min(i.recipe_hash.len())],
            mib(i.size),
            mib(i.tar_size),
            if i.current { "yes" } else { "no" },
            i.path.display()
        );
    }
    for (p, s) in initrds {
        println!(
            "{:<11} {:<16} {:>10} {:>10} {:<7} {}",
            "(initramfs)",
            "-",
            mib(s),
            "-",
            "-",
            p.display()
        );
    }
    Ok(0)
}

async fn rm(rt: &Runtime, a: RmArgs) -> anyhow::Result<i32> {
    let sel: ImageSelector = a
        .what
        .parse()
        .map_err(|e| anyhow::anyhow!("{e}; or give at least 4 hex digits of an image hash"))?;
    let removed = rt.remove_image(&sel, a.force).await?;
    for i in removed {
        println!("{} {}", i.language, i.recipe_hash);
    }
    Ok(0)
}
