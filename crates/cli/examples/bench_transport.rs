//! The agent transport before and after the VM link (issue 10, part 1), in
//! one run: one VM booted by a baseline hearth (vhost-user-vsock +
//! vhost-device-vsock) and one by this tree (the VM link: virtio-serial +
//! `hearth-guest vm-proxy`), measured interleaved through the same client
//! over each VM's hybrid socket.
//!
//! ```text
//! cargo run --release -p hearth-cli --example bench_transport -- \
//!   --old-hearth OLD/hearth --old-guest OLD/hearth-guest \
//!   --new-hearth target/release/hearth --new-guest target/x86_64-unknown-linux-gnu/release/hearth-guest
//! ```
//! `scripts/bench_transport.sh` builds the baseline (a git worktree of the
//! commit before the switch) and runs this.
//!
//! Figures (medians): ping round trip; one-shot exec of `/bin/true`; stdout
//! stream throughput (`head -c 32M /dev/zero`); copy-in throughput (a 16 MiB
//! `write_file`). Each VM: 1 vCPU, 512 MiB, the bare initramfs.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use hearth_client::{pb, Client, ConnectOptions, Endpoint, ExecEvent};

#[derive(Parser, Debug)]
struct Opts {
    #[arg(long)]
    old_hearth: PathBuf,
    #[arg(long)]
    old_guest: PathBuf,
    #[arg(long)]
    new_hearth: PathBuf,
    #[arg(long)]
    new_guest: PathBuf,
    /// Interleaved rounds (each: pings, execs, one stream, one copy-in).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long, default_value = "/var/tmp/hearth-test-images")]
    image_cache: PathBuf,
}

struct Side {
    name: &'static str,
    hearth: PathBuf,
    guest: PathBuf,
    state: tempfile::TempDir,
    cache: PathBuf,
    client: Option<Client>,
    ping: Vec<f64>,
    exec: Vec<f64>,
    stream: Vec<f64>,
    copy_in: Vec<f64>,
}

impl Side {
    fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.hearth);
        c.args(args)
            .env("HEARTH_STATE_DIR", self.state.path())
            .env("HEARTH_GUEST_BIN", &self.guest)
            .env("HEARTH_IMAGE_CACHE", &self.cache);
        c
    }

    async fn boot(&mut self) -> anyhow::Result<()> {
        let out = self
            .cmd(&["vm", "create", "--json", "--mem", "512"])
            .output()
            .with_context(|| format!("running {}", self.hearth.display()))?;
        if !out.status.success() {
            bail!(
                "{}: vm create failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        let dir = Path::new(v["dir"].as_str().context("no dir")?).to_path_buf();
        let ep = Endpoint::Hybrid {
            path: dir.join("vsock.sock"),
            port: 1000,
        };
        let opts = ConnectOptions {
            timeout: Duration::from_secs(20),
            ..Default::default()
        };
        self.client = Some(Client::connect(&ep, &opts).await?);
        Ok(())
    }

    async fn round(&mut self, pings: usize, execs: usize) -> anyhow::Result<()> {
        let c = self.client.as_ref().unwrap();
        for _ in 0..pings {
            let t = Instant::now();
            c.ping().await?;
            self.ping.push(t.elapsed().as_secs_f64() * 1e6);
        }
        for _ in 0..execs {
            let t = Instant::now();
            let r = c
                .exec(pb::Exec {
                    argv: vec!["/bin/true".into()],
                    ..Default::default()
                })
                .await?;
            if hearth_client::exit_code(r.outcome.as_ref()) != 0 {
                bail!("/bin/true failed");
            }
            self.exec.push(t.elapsed().as_secs_f64() * 1e6);
        }
        const STREAM: u64 = 32 << 20;
        let t = Instant::now();
        let mut h = c
            .exec_stream(pb::ExecStart {
                argv: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    format!("head -c {STREAM} /dev/zero"),
                ],
                ..Default::default()
            })
            .await?;
        let mut got = 0u64;
        while let Some(ev) = h.next_event().await? {
            match ev {
                ExecEvent::Stdout(b) => got += b.len() as u64,
                ExecEvent::Exit(_) => break,
                _ => {}
            }
        }
        if got != STREAM {
            bail!("{}: streamed {got} of {STREAM} bytes", self.name);
        }
        self.stream
            .push(STREAM as f64 / t.elapsed().as_secs_f64() / 1e6);
        const COPY: usize = 16 << 20;
        let data = vec![0x5au8; COPY];
        let t = Instant::now();
        c.write_file("/tmp/bench-copy-in", &mut &data[..], 0o644, false)
            .await?;
        self.copy_in
            .push(COPY as f64 / t.elapsed().as_secs_f64() / 1e6);
        Ok(())
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let o = Opts::parse();
    let mk = |name, hearth: &PathBuf, guest: &PathBuf| -> anyhow::Result<Side> {
        Ok(Side {
            name,
            hearth: hearth.clone(),
            guest: guest.clone(),
            state: tempfile::tempdir()?,
            cache: o.image_cache.clone(),
            client: None,
            ping: vec![],
            exec: vec![],
            stream: vec![],
            copy_in: vec![],
        })
    };
    let mut sides = [
        mk("vhost-user-vsock (baseline)", &o.old_hearth, &o.old_guest)?,
        mk("vm link (virtio-serial + mux)", &o.new_hearth, &o.new_guest)?,
    ];
    let result = async {
        for s in sides.iter_mut() {
            s.boot().await?;
            s.round(20, 3).await?; // warm-up, not counted
            s.ping.clear();
            s.exec.clear();
            s.stream.clear();
            s.copy_in.clear();
        }
        for _ in 0..o.rounds {
            for s in sides.iter_mut() {
                s.round(100, 10).await?;
            }
        }
        anyhow::Ok(())
    }
    .await;
    for s in &sides {
        let _ = s.cmd(&["vm", "clean", "--all"]).output();
    }
    result?;
    let [old, new] = &sides;
    println!(
        "transport benchmark, {} interleaved rounds, medians (ratio = new / old)",
        o.rounds
    );
    println!(
        "{:<22} {:>16} {:>16} {:>8}",
        "",
        old.name.split(' ').next().unwrap(),
        "vm link",
        "ratio"
    );
    let row = |label: &str, a: f64, b: f64, unit: &str| {
        println!(
            "{label:<22} {a:>13.1} {unit:<2} {b:>13.1} {unit:<2} {:>7.2}x",
            b / a
        );
    };
    row(
        "ping round trip",
        median(&old.ping),
        median(&new.ping),
        "us",
    );
    row("exec /bin/true", median(&old.exec), median(&new.exec), "us");
    row(
        "stdout stream",
        median(&old.stream),
        median(&new.stream),
        "MB/s",
    );
    row(
        "copy-in 16 MiB",
        median(&old.copy_in),
        median(&new.copy_in),
        "MB/s",
    );
    Ok(())
}
