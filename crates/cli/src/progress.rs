//! Renders the runtime's [`Progress`] steps on stderr: a spinner on a
//! terminal, one plain line per step otherwise (tool output lines only on the
//! spinner).

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hearth_runtime::{Progress, SharedProgress, Step};

pub struct StderrProgress {
    bar: Mutex<Option<indicatif::ProgressBar>>,
    start: Instant,
}

impl StderrProgress {
    pub fn shared() -> SharedProgress {
        Arc::new(Self {
            bar: Mutex::new(None),
            start: Instant::now(),
        })
    }

    fn with_bar(&self, msg: String) {
        let mut g = self.bar.lock().unwrap_or_else(|e| e.into_inner());
        let bar = g.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.enable_steady_tick(Duration::from_millis(100));
            b
        });
        bar.set_message(msg);
    }
}

fn short(line: &str, max: usize) -> String {
    let line = line.trim();
    if line.chars().count() <= max {
        return line.to_string();
    }
    let mut s: String = line.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

impl Progress for StderrProgress {
    fn step(&self, step: Step) {
        let secs = self.start.elapsed().as_secs();
        if std::io::stderr().is_terminal() {
            let msg = match &step {
                Step::BuildOutput { language, line } => {
                    format!("{language} image ({secs} s): {}", short(line, 60))
                }
                s => format!("{s} ({secs} s)"),
            };
            self.with_bar(msg);
        } else if !matches!(step, Step::BuildOutput { .. }) {
            eprintln!("hearth: {step}");
        }
    }

    fn done(&self) {
        if let Some(bar) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_tool_lines_are_shortened() {
        assert_eq!(short("  abc ", 10), "abc");
        let s = short(&"x".repeat(100), 10);
        assert_eq!(s.chars().count(), 10);
        assert!(s.ends_with('…'));
    }
}
