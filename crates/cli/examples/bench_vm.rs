//! The microVM benchmarks of issue 3, each against a baseline measured in the same run.
//!
//! Build first (the bench drives the real `hearth` binary and the static guest):
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" \
//!   cargo build --release -p hearth-guest --target x86_64-unknown-linux-gnu
//! cargo build --release -p hearth-cli
//! cargo run --release -p hearth-cli --example bench_vm -- [--json] [--runs N]
//! ```
//!
//! `HEARTH_BIN` / `HEARTH_GUEST_BIN` override where the two binaries are looked for
//! (default: `<target>/release/hearth` and
//! `<target>/x86_64-unknown-linux-gnu/release/hearth-guest`). Every VM lives in a
//! private temporary `HEARTH_STATE_DIR` and is removed with `vm clean --all` at the
//! end, also after an error or Ctrl-C.
//!
//! Figures (median of n samples; samples of a figure and its baseline interleave):
//! - cold start: `hearth vm create` + `hearth vm exec --cmd true` (two CLI processes,
//!   wall time) vs the same kernel, QEMU argv and memory booting a baseline initramfs
//!   whose PID 1 powers off at once (`rdinit=/poweroff`), QEMU start to QEMU exit;
//! - exec round trip: one-shot exec of `/bin/true` by the client over the hybrid
//!   vsock socket vs a raw echo through the same socket to `vsock-echo` in the guest;
//!   also ping vs the same echo;
//! - host memory per idle VM beyond guest RAM: (QEMU RSS − its shared-memory RSS,
//!   i.e. guest pages touched) + (link proxy RSS − its shared-memory RSS);
//! - 4 `hearth vm create` processes at once vs one: wall-time ratio.
//!
//! Modules: `bench_vm/rtt.rs` (round trips), `bench_vm/mem.rs` (/proc memory).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hearth_vmm::qemu::cmdline::{qemu_argv, QemuArgs};
use hearth_vmm::QemuFactory;
use serde_json::json;
use tokio::process::Command;

#[path = "bench_vm/mem.rs"]
mod mem;
#[path = "bench_vm/rtt.rs"]
mod rtt;

use mem::{vm_memory, Mem};
use rtt::rtt_bench;

const MEM_MIB: u32 = 256;
const CPUS: u32 = 1;

#[derive(Parser, Debug)]
#[command(about = "hearth microVM benchmarks (issue 3)")]
struct Opts {
    /// Print the figures as JSON too (after the table).
    #[arg(long)]
    json: bool,
    /// Cold-start samples of each kind (hearth and baseline).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Rounds of the round-trip benchmark (each round times every kind).
    #[arg(long, default_value_t = 10)]
    rtt_rounds: usize,
    /// Echoes and pings per round (execs per round are a fifth of it).
    #[arg(long, default_value_t = 50)]
    rtt_iters: usize,
    /// Rounds of one create vs 4 parallel creates.
    #[arg(long, default_value_t = 3)]
    parallel_runs: usize,
}

/// Paths and the private state dir every `hearth` call shares.
struct Env {
    hearth: PathBuf,
    guest: PathBuf,
    state: tempfile::TempDir,
    work: PathBuf,
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.hearth);
        c.args(args)
            .env("HEARTH_STATE_DIR", self.state.path())
            .env("HEARTH_GUEST_BIN", &self.guest)
            .env("HEARTH_LOG_LEVEL", "warn")
            .env_remove("HEARTH_LOG_FILE")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs `hearth ARGS`, failing with its stderr when it does not exit 0.
    async fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self
            .cmd(args)
            .output()
            .await
            .with_context(|| format!("cannot run {}", self.hearth.display()))?;
        if !out.status.success() {
            bail!(
                "`hearth {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `hearth vm clean --all` in the private state dir: only this bench's VMs.
    fn clean_all_blocking(&self) {
        let r = std::process::Command::new(&self.hearth)
            .args(["vm", "clean", "--all"])
            .env("HEARTH_STATE_DIR", self.state.path())
            .env("HEARTH_GUEST_BIN", &self.guest)
            .stdin(Stdio::null())
            .output();
        match r {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "bench: vm clean --all failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("bench: cannot run vm clean --all: {e}"),
        }
    }
}

/// Median and spread of one figure's samples.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Stat {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

fn stat(samples: &[f64]) -> anyhow::Result<Stat> {
    if samples.is_empty() {
        bail!("no samples");
    }
    let mut v = samples.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    let median = if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    };
    Ok(Stat {
        median,
        min: v[0],
        max: v[v.len() - 1],
        n: v.len(),
    })
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"))
}

fn find_binary(env_var: &str, default: PathBuf, hint: &str) -> anyhow::Result<PathBuf> {
    let p = std::env::var_os(env_var)
        .map(PathBuf::from)
        .unwrap_or(default);
    if !p.is_file() {
        bail!("{} not found (set {env_var}); {hint}", p.display());
    }
    Ok(p)
}

/// The baseline initramfs: `/init` = the guest binary, `/poweroff -> /init`,
/// `/dev/console`, gzip like hearth's own image.
fn baseline_initramfs(guest: &Path, out: &Path) -> anyhow::Result<()> {
    let data = std::fs::read(guest).with_context(|| format!("cannot read {}", guest.display()))?;
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let mut w = hearth_image::cpio::CpioWriter::new(enc);
    w.dir("dev", 0o755)?;
    w.char_device("dev/console", 0o600, 5, 1)?;
    w.file("init", 0o755, &data)?;
    w.symlink("poweroff", "init")?;
    let bytes = w.finish()?.finish()?;
    std::fs::write(out, bytes).with_context(|| format!("cannot write {}", out.display()))
}

/// hearth's boot image with one more gzip cpio layer holding `/poweroff -> /init`
/// (the kernel unpacks concatenated archives in order).
fn hearth_image_with_poweroff(image: &Path, out: &Path) -> anyhow::Result<()> {
    let mut bytes =
        std::fs::read(image).with_context(|| format!("cannot read {}", image.display()))?;
    let enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let mut w = hearth_image::cpio::CpioWriter::new(enc);
    w.symlink("poweroff", "init")?;
    bytes.extend(w.finish()?.finish()?);
    std::fs::write(out, bytes).with_context(|| format!("cannot write {}", out.display()))
}

/// One baseline boot: QEMU start to QEMU exit, with the same devices (the
/// link's port, no proxy: the baseline guest never uses it).
async fn baseline_boot(
    f: &QemuFactory,
    kernel: &Path,
    initrd: &Path,
    dir: &Path,
) -> anyhow::Result<f64> {
    std::fs::create_dir_all(dir)?;
    let console = dir.join("console.log");
    let args = QemuArgs {
        accel: f.accel,
        cpus: CPUS,
        mem_mib: MEM_MIB,
        kernel: kernel.into(),
        initrd: Some(initrd.into()),
        cmdline_extra: "rdinit=/poweroff".into(),
        serial: hearth_vmm::qemu::cmdline::Serial::File(console.clone()),
        link_socket: Some(dir.join("link.sock")),
        drives: Vec::new(),
        user_net: false,
        qmp_socket: None,
        incoming: false,
        // The cloud kernel (find_kernel), which finds its devices through ACPI.
        acpi: true,
    };
    let qlog = std::fs::File::create(dir.join("qemu.log"))?;
    let t0 = Instant::now();
    let mut qemu = Command::new(&f.qemu)
        .args(qemu_argv(&args))
        .stdin(Stdio::null())
        .stdout(qlog.try_clone()?)
        .stderr(qlog)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start qemu")?;
    let status = tokio::time::timeout(Duration::from_secs(120), qemu.wait())
        .await
        .context("baseline boot did not power off within 120 s")??;
    let secs = t0.elapsed().as_secs_f64();
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    if !status.success() || text.contains("Kernel panic") {
        bail!(
            "baseline boot was not a clean power-off ({status}); console:\n{}",
            text.lines().rev().take(10).collect::<Vec<_>>().join("\n")
        );
    }
    Ok(secs)
}

/// Parses `vm create --json` output.
fn created(out: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(out.trim()).with_context(|| format!("bad vm create output {out:?}"))
}

fn str_field<'a>(v: &'a serde_json::Value, k: &str) -> anyhow::Result<&'a str> {
    v.get(k)
        .and_then(|x| x.as_str())
        .with_context(|| format!("no {k:?} in {v}"))
}

/// One hearth cold start through the CLI: (create s, create + exec s, guest boot timings µs).
async fn hearth_cold(env: &Env) -> anyhow::Result<(f64, f64, (u64, u64))> {
    let t0 = Instant::now();
    let v = created(&env.run(&["vm", "create", "--json"]).await?)?;
    let t_create = t0.elapsed().as_secs_f64();
    let id = str_field(&v, "id")?.to_string();
    let out = env
        .cmd(&["vm", "exec", "--vm", &id, "--cmd", "true"])
        .output()
        .await?;
    let total = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "vm exec --cmd true failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let boot = v.get("boot").cloned().unwrap_or_default();
    let us = |k: &str| boot.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
    let timings = (us("kernel_to_init_us"), us("init_to_agent_us"));
    env.run(&["vm", "clean", "--vm", &id]).await?;
    Ok((t_create, total, timings))
}

/// `k` `hearth vm create` processes at once: wall time until all have exited, and
/// the created VMs' records.
async fn create_many(env: &Env, k: usize) -> anyhow::Result<(f64, Vec<serde_json::Value>)> {
    let t0 = Instant::now();
    // Every process starts on the first poll; all are awaited together.
    let outs = join_all(
        (0..k)
            .map(|_| env.run(&["vm", "create", "--json"]))
            .collect(),
    )
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let mut vms = Vec::new();
    let mut errs = Vec::new();
    for o in outs {
        match o.and_then(|s| created(&s)) {
            Ok(v) => vms.push(v),
            Err(e) => errs.push(format!("{e:#}")),
        }
    }
    if !errs.is_empty() {
        bail!("{} of {k} creates failed: {}", errs.len(), errs.join("; "));
    }
    Ok((secs, vms))
}

/// Polls every future concurrently (a tiny `join_all`, to avoid a dependency).
async fn join_all<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let handles: Vec<_> = fs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut handles: Vec<Option<_>> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, h) in handles.iter_mut().enumerate() {
            if let Some(f) = h {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        outs[i] = Some(v);
                        *h = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().flatten().collect()
}

/// One table row.
struct Row {
    figure: String,
    value: String,
    baseline: String,
    ratio: String,
    target: String,
}

fn row(figure: &str, value: String, baseline: String, ratio: String, target: &str) -> Row {
    Row {
        figure: figure.into(),
        value,
        baseline,
        ratio,
        target: target.into(),
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED"
    }
}

async fn bench(
    env: &Env,
    o: &Opts,
    report: &mut serde_json::Map<String, serde_json::Value>,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    eprintln!("bench: building/warming the image cache and the accel probe");
    let img = created(&env.run(&["image", "build", "--json"]).await?)?;
    let hearth_image = PathBuf::from(str_field(&img, "path")?);
    // Warm-up create (also runs the KVM probe once and caches it); not measured.
    let (_, _, _) = hearth_cold(env).await?;
    let kernel = hearth_image::find_kernel(None)?;
    let factory = QemuFactory::detect(&kernel.path, env.state.path()).await?;
    report.insert("accel".into(), json!(factory.accel.as_str()));
    report.insert("kernel".into(), json!(kernel.path));
    let initrd = env.work.join("baseline.cpio.gz");
    baseline_initramfs(&env.guest, &initrd)?;
    baseline_boot(&factory, &kernel.path, &initrd, &env.work.join("base-warm")).await?;
    // Decomposition: hearth's own image plus a layer with `/poweroff -> /init`, booted
    // with the trivial init, shows what the bigger initramfs alone costs.
    let big_initrd = env.work.join("hearth-image-poweroff.cpio.gz");
    hearth_image_with_poweroff(&hearth_image, &big_initrd)?;

    // --- cold start, interleaved ---
    let (mut base, mut big, mut create, mut cold, mut k2i, mut i2a) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for i in 0..o.runs {
        eprintln!("bench: cold start {}/{}", i + 1, o.runs);
        base.push(
            baseline_boot(
                &factory,
                &kernel.path,
                &initrd,
                &env.work.join(format!("base-{i}")),
            )
            .await?,
        );
        let dir = env.work.join(format!("big-{i}"));
        big.push(baseline_boot(&factory, &kernel.path, &big_initrd, &dir).await?);
        let (c, t, (a, b)) = hearth_cold(env).await?;
        create.push(c);
        cold.push(t);
        k2i.push(a as f64 / 1000.0);
        i2a.push(b as f64 / 1000.0);
    }
    let (sb, sbig, sc, st) = (stat(&base)?, stat(&big)?, stat(&create)?, stat(&cold)?);
    let cold_ratio = st.median / sb.median;
    report.insert(
        "cold_start".into(),
        json!({
            "create_plus_exec_s": st, "create_only_s": sc, "baseline_poweroff_boot_s": sb,
            "hearth_image_poweroff_boot_s": sbig, "ratio_of_minima": st.min / sb.min,
            "ratio": cold_ratio, "create_only_ratio": sc.median / sb.median, "target_ratio": 1.15,
            "guest_kernel_to_init_ms": stat(&k2i)?, "guest_init_to_agent_ms": stat(&i2a)?,
        }),
    );
    rows.push(row(
        "cold start: vm create + vm exec true",
        format!("{:.2} s (min {:.2})", st.median, st.min),
        format!("{:.2} s (min {:.2}) poweroff-init boot", sb.median, sb.min),
        format!("{cold_ratio:.2}x (min {:.2}x)", st.min / sb.min),
        &format!("<=1.15x {}", verdict(cold_ratio <= 1.15)),
    ));
    rows.push(row(
        "  of which vm create alone",
        format!("{:.2} s (min {:.2})", sc.median, sc.min),
        format!("{:.2} s", sb.median),
        format!("{:.2}x", sc.median / sb.median),
        "-",
    ));
    rows.push(row(
        "  poweroff-init with hearth's image",
        format!("{:.2} s (min {:.2})", sbig.median, sbig.min),
        format!("{:.2} s", sb.median),
        format!("{:.2}x", sbig.median / sb.median),
        "-",
    ));

    // --- one idle VM: memory, then round trips ---
    eprintln!("bench: round trips");
    let v = created(&env.run(&["vm", "create", "--json"]).await?)?;
    let id = str_field(&v, "id")?.to_string();
    let dir = PathBuf::from(str_field(&v, "dir")?);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let list: serde_json::Value = serde_json::from_str(&env.run(&["vm", "list", "--json"]).await?)?;
    let mut mems = vec![vm_memory(&list, &id)?];
    let r = rtt_bench(&dir, o.rtt_rounds, o.rtt_iters).await?;
    env.run(&["vm", "clean", "--vm", &id]).await?;
    let gs = stat(&r.guest_spawn)?;
    let (e1, e9, p, x, xg) = (
        stat(&r.echo1)?,
        stat(&r.echo9)?,
        stat(&r.ping)?,
        stat(&r.exec)?,
        stat(&r.exec_guest)?,
    );
    let echo_base = e1.median.min(e9.median);
    let exec_ratio = x.median / echo_base;
    report.insert(
        "round_trip_us".into(),
        json!({
            "exec_true": x, "exec_true_guest_duration": xg, "guest_local_spawn_true": gs,
            "exec_vs_guest_spawn_ratio": x.median / gs.median, "ping": p, "echo_1b": e1, "echo_9b": e9,
            "baseline_us": echo_base, "exec_ratio": exec_ratio, "ping_ratio": p.median / echo_base,
            "target_exec_ratio": 1.5,
        }),
    );
    rows.push(row(
        "exec /bin/true round trip",
        format!("{:.0} us", x.median),
        format!("{echo_base:.0} us raw vsock echo"),
        format!("{exec_ratio:.2}x"),
        &format!("<=1.5x {}", verdict(exec_ratio <= 1.5)),
    ));
    rows.push(row(
        "  vs fork+exec /bin/true in guest sh",
        format!("{:.0} us", x.median),
        format!("{:.0} us guest-local spawn", gs.median),
        format!("{:.2}x", x.median / gs.median),
        "-",
    ));
    rows.push(row(
        "  agent's spawn..exit (guest clock)",
        format!("{:.0} us", xg.median),
        "-".into(),
        "-".into(),
        "-",
    ));
    rows.push(row(
        "ping round trip",
        format!("{:.0} us", p.median),
        format!("{echo_base:.0} us raw vsock echo"),
        format!("{:.2}x", p.median / echo_base),
        "-",
    ));
    rows.push(row(
        "raw echo 1 B / 9 B",
        format!("{:.0} / {:.0} us", e1.median, e9.median),
        "-".into(),
        "-".into(),
        "-",
    ));

    // --- one create vs 4 at once (memory of the 4 idle VMs sampled too) ---
    let (mut one, mut four) = (vec![], vec![]);
    for i in 0..o.parallel_runs {
        eprintln!(
            "bench: 1 vs 4 parallel creates {}/{}",
            i + 1,
            o.parallel_runs
        );
        let (s1, _) = create_many(env, 1).await?;
        one.push(s1);
        env.run(&["vm", "clean", "--all"]).await?;
        let (s4, vms) = create_many(env, 4).await?;
        four.push(s4);
        if i == 0 {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let list: serde_json::Value =
                serde_json::from_str(&env.run(&["vm", "list", "--json"]).await?)?;
            for vm in &vms {
                mems.push(vm_memory(&list, str_field(vm, "id")?)?);
            }
        }
        env.run(&["vm", "clean", "--all"]).await?;
    }
    let (s1, s4) = (stat(&one)?, stat(&four)?);
    let par_ratio = s4.median / s1.median;
    report.insert(
        "parallel_create_s".into(),
        json!({"one": s1, "four": s4, "ratio": par_ratio, "host_cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)}),
    );
    rows.push(row(
        "4 vm creates at once",
        format!("{:.2} s", s4.median),
        format!("{:.2} s one create", s1.median),
        format!("{par_ratio:.2}x"),
        "-",
    ));

    let beyond = stat(&mems.iter().map(|m| m.beyond_guest).collect::<Vec<_>>())?;
    let pick = |f: fn(&Mem) -> f64| stat(&mems.iter().map(f).collect::<Vec<_>>()).map(|s| s.median);
    report.insert(
        "memory_mib".into(),
        json!({
            "beyond_guest_ram": beyond, "samples": mems, "target_mib": 64,
            "qemu_rss": pick(|m| m.qemu_rss)?, "qemu_shmem_guest_pages": pick(|m| m.qemu_shmem)?,
            "pss_beyond_guest_ram": pick(|m| m.pss_beyond_guest)?,
            "qemu_anon": pick(|m| m.qemu_anon)?, "qemu_file": pick(|m| m.qemu_file)?,
            "vhost_rss": pick(|m| m.vhost_rss)?, "guest_ram_mib": MEM_MIB,
        }),
    );
    rows.push(row(
        "host memory per idle VM beyond guest RAM",
        format!("{:.1} MiB", beyond.median),
        format!(
            "guest touched {:.1} of {MEM_MIB} MiB",
            pick(|m| m.qemu_shmem)?
        ),
        "-".into(),
        &format!("<=64 MiB {}", verdict(beyond.median <= 64.0)),
    ));
    rows.push(row(
        "  same with PSS (libs shared)",
        format!("{:.1} MiB", pick(|m| m.pss_beyond_guest)?),
        "-".into(),
        "-".into(),
        "-",
    ));
    rows.push(row(
        "  qemu anon / file / vhost",
        format!(
            "{:.1} / {:.1} / {:.1} MiB",
            pick(|m| m.qemu_anon)?,
            pick(|m| m.qemu_file)?,
            pick(|m| m.vhost_rss - m.vhost_shmem)?
        ),
        "-".into(),
        "-".into(),
        "-",
    ));
    report.insert(
        "n".into(),
        json!({"cold_start": o.runs, "rtt_rounds": o.rtt_rounds, "rtt_iters": o.rtt_iters,
               "execs": r.exec.len(), "parallel_runs": o.parallel_runs, "memory_vms": mems.len()}),
    );
    Ok(())
}

fn print_table(rows: &[Row]) {
    let w = |f: fn(&Row) -> &str, h: &str| {
        rows.iter()
            .map(|r| f(r).len())
            .max()
            .unwrap_or(0)
            .max(h.len())
    };
    let (a, b, c, d) = (
        w(|r| &r.figure, "figure"),
        w(|r| &r.value, "value"),
        w(|r| &r.baseline, "same-run baseline"),
        w(|r| &r.ratio, "ratio"),
    );
    println!(
        "{:<a$}  {:>b$}  {:<c$}  {:>d$}  target",
        "figure", "value", "same-run baseline", "ratio"
    );
    for r in rows {
        println!(
            "{:<a$}  {:>b$}  {:<c$}  {:>d$}  {}",
            r.figure, r.value, r.baseline, r.ratio, r.target
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Opts::parse();
    let t = target_dir();
    let hearth = find_binary(
        "HEARTH_BIN",
        t.join("release/hearth"),
        "build it with: cargo build --release -p hearth-cli",
    )?;
    let guest = find_binary(
        "HEARTH_GUEST_BIN",
        t.join("x86_64-unknown-linux-gnu/release/hearth-guest"),
        "build it with: RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build --release -p hearth-guest --target x86_64-unknown-linux-gnu",
    )?;
    let state = tempfile::Builder::new().prefix("hearth-bench-").tempdir()?;
    let work = state.path().join("bench");
    std::fs::create_dir_all(&work)?;
    let env = Env {
        hearth,
        guest,
        state,
        work,
    };
    let mut report = serde_json::Map::new();
    let mut rows = Vec::new();
    let started = Instant::now();
    let outcome = tokio::select! {
        r = bench(&env, &o, &mut report, &mut rows) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    eprintln!("bench: cleaning up");
    env.clean_all_blocking();
    outcome?;
    report.insert("wall_s".into(), json!(started.elapsed().as_secs_f64()));
    print_table(&rows);
    println!("n: cold start {} runs each (interleaved), round trips {}x{} echoes/pings and {} execs, parallel {} runs; medians",
        o.runs, o.rtt_rounds, o.rtt_iters, o.rtt_rounds * (o.rtt_iters / 5).max(1), o.parallel_runs);
    if o.json {
        println!("{}", serde_json::Value::Object(report));
    }
    Ok(())
}
