//! What an embedding user writes: create a python sandbox, run code in it,
//! copy a file out, remove it.
//!
//! ```sh
//! cargo run -p hearth-runtime --example python_sandbox -- \
//!     --guest target/x86_64-unknown-linux-gnu/release/hearth-guest
//! ```
//! Options: `--state DIR` (default a temporary dir), `--image-cache DIR`
//! (default `/var/tmp/hearth-test-images`, where the test suite keeps its
//! images; the python image is built there on first use, which needs root and
//! Debian's package mirror).

use std::path::PathBuf;
use std::sync::Arc;

use hearth_runtime::{
    CreateSpec, ExecSpec, Progress, Runtime, RuntimeConfig, SharedProgress, Step,
};

/// Prints each long step on stderr.
struct Print;

impl Progress for Print {
    fn step(&self, step: Step) {
        if !matches!(step, Step::BuildOutput { .. }) {
            eprintln!(".. {step}");
        }
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let tmp = std::env::temp_dir().join(format!("hearth-example-{}", std::process::id()));
    let state = arg("--state").map(PathBuf::from).unwrap_or(tmp.clone());
    let mut config = RuntimeConfig::new(&state);
    config.guest_binary = Some(
        arg("--guest")
            .unwrap_or_else(|| "target/x86_64-unknown-linux-gnu/release/hearth-guest".into())
            .into(),
    );
    config.image_cache = arg("--image-cache")
        .unwrap_or_else(|| "/var/tmp/hearth-test-images".into())
        .into();

    let rt = Runtime::open(config).await?;
    let progress: SharedProgress = Arc::new(Print);
    let spec = CreateSpec {
        language: Some("python".into()),
        ..Default::default()
    };
    let sandbox = rt.create(&spec, &progress).await?;
    println!("created vm {}", sandbox.id());

    let code = "import platform, json\n\
                json.dump({'python': platform.python_version(), 'sum': sum(range(10))}, open('/out/result.json', 'w'))\n\
                print('hello from python', platform.python_version())";
    let out = sandbox
        .exec(&ExecSpec::argv(["python3", "-c", code]))
        .await?;
    print!("{}", String::from_utf8_lossy(&out.stdout));
    println!("python {}", out.exit.outcome);

    let local =
        std::env::temp_dir().join(format!("hearth-example-result-{}.json", std::process::id()));
    sandbox.copy_out("/out/result.json", &local).await?;
    println!(
        "copied /out/result.json: {}",
        std::fs::read_to_string(&local)?
    );
    std::fs::remove_file(&local)?;

    rt.remove(sandbox.id(), false, &progress).await?;
    println!("removed vm {}", sandbox.id());
    if arg("--state").is_none() {
        std::fs::remove_dir_all(&tmp)?;
    }
    Ok(())
}
