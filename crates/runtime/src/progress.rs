//! [`Progress`]: how long steps (image builds, boots) report what they do.
//! The runtime never draws anything itself: the CLI renders these events with
//! a spinner, a server streams them.

use std::sync::Arc;

/// One step of a long operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Building or finding the boot initramfs.
    PrepareInitramfs,
    /// Building a language image (`phase` is the builder's current phase).
    BuildImage { language: String, phase: String },
    /// A line of the image builder's output.
    BuildOutput { language: String, line: String },
    /// An image build finished (`secs`, image size in bytes).
    ImageBuilt {
        language: String,
        secs: f64,
        size: u64,
    },
    /// Making the sandbox's disks.
    MakeDisks { id: String },
    /// Booting the sandbox (`accel`: tcg, kvm).
    Boot { id: String, accel: String },
    /// Stopping a sandbox.
    Stop { id: String },
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Step::PrepareInitramfs => write!(f, "preparing the guest image"),
            Step::BuildImage { language, phase } => {
                write!(f, "building the {language} image: {phase}")
            }
            Step::BuildOutput { language, line } => write!(f, "{language} image: {line}"),
            Step::ImageBuilt {
                language,
                secs,
                size,
            } => write!(
                f,
                "built the {language} image in {secs:.1} s ({} MiB)",
                size >> 20
            ),
            Step::MakeDisks { id } => write!(f, "making the disks of vm {id}"),
            Step::Boot { id, accel } => write!(f, "booting vm {id} ({accel})"),
            Step::Stop { id } => write!(f, "stopping vm {id}"),
        }
    }
}

/// Receives the steps of long operations. Calls come from runtime tasks, so
/// implementations must be cheap and must not block.
pub trait Progress: Send + Sync {
    /// A step began (it ends when the next one begins or [`Progress::done`]).
    fn step(&self, step: Step);
    /// The operation finished (successfully or not).
    fn done(&self) {}
}

/// Ignores every step.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn step(&self, _: Step) {}
}

/// A shareable progress sink.
pub type SharedProgress = Arc<dyn Progress>;
