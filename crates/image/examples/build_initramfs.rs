//! Builds (or reuses) the boot initramfs and prints its path.
//!
//! `cargo run -p hearth-image --example build_initramfs -- GUEST_BINARY OUT_DIR [KERNEL]`

use std::path::PathBuf;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (Some(guest), Some(out)) = (args.next(), args.next()) else {
        eprintln!("usage: build_initramfs GUEST_BINARY OUT_DIR [KERNEL]");
        std::process::exit(2);
    };
    let kernel = args.next().map(PathBuf::from);
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let kernel = hearth_image::find_kernel(kernel.as_deref())?;
        let spec = hearth_image::InitramfsSpec::with_default_modules(guest.into(), &kernel);
        let start = std::time::Instant::now();
        let img = hearth_image::build_cached(&spec, &PathBuf::from(out))?;
        eprintln!(
            "kernel {} ({}), initramfs {} bytes, hash {}, {:?}",
            kernel.path.display(),
            kernel.release,
            img.size,
            &img.hash[..16],
            start.elapsed()
        );
        println!("{}", img.path.display());
        Ok(())
    };
    if let Err(e) = run() {
        let mut msg = format!("error: {e}");
        let mut src = e.source();
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        eprintln!("{msg}");
        std::process::exit(1);
    }
}
