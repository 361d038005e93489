//! `hearth vm logs --vm ID [--source console|agent] [--tail N] [--since T]
//! [--follow] [--timestamps] [--json]`: the guest console (kept on the host,
//! bounded and rotated, so it is there for a stopped or failed VM too) or the
//! agent's own log (asked of the running agent).

use hearth_runtime::logs::{format_time, parse_since};
use hearth_runtime::{LogEvent, LogLine, LogQuery, LogSource, Runtime};

use crate::exec_io::Signals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VM (id or name).
    #[arg(long)]
    pub vm: String,
    /// Which log: the serial console (kernel, init, agent, /dev/console), or
    /// only the agent's own lines.
    #[arg(long, value_enum, default_value = "console")]
    pub source: Source,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub tail: Option<usize>,
    /// Only lines since a time: a duration ago (30s, 15m, 2h, 1d) or an RFC
    /// 3339 time (2026-12-01T12:00:00Z).
    #[arg(long, value_name = "T", value_parser = since_arg)]
    pub since: Option<i64>,
    /// Keep printing new lines until the VM stops (console) or Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Put each line's UTC time first.
    #[arg(long, short = 't')]
    pub timestamps: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
pub enum Source {
    Console,
    Agent,
}

impl From<Source> for LogSource {
    fn from(s: Source) -> Self {
        match s {
            Source::Console => LogSource::Console,
            Source::Agent => LogSource::Agent,
        }
    }
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let mut signals = Signals::install()?;
    let sb = rt.get(&a.vm).await?;
    let source = LogSource::from(a.source);
    // The follower starts before the snapshot is read, so no line falls
    // between the two (a line may show twice at the seam, never go missing).
    let mut follow = if a.follow {
        Some(sb.follow_log(source).await?)
    } else {
        None
    };
    let query = LogQuery {
        tail: a.tail,
        since_ms: a.since,
    };
    let lines = sb.log(source, query).await?;
    let printer = Printer { a: &a, source };
    printer.lines(&lines);
    let Some(follow) = follow.as_mut() else {
        return Ok(0);
    };
    loop {
        tokio::select! {
            ev = follow.next() => match ev {
                None => return Ok(0),
                Some(Ok(LogEvent::Lines(lines))) => printer.lines(&lines),
                Some(Ok(LogEvent::Dropped(n))) => {
                    eprintln!("hearth: {n} agent log lines were dropped before they could be shown");
                }
                Some(Err(e)) => return Err(e.into()),
            },
            sig = signals.recv() => return Ok(128 + sig),
        }
    }
}

struct Printer<'a> {
    a: &'a Args,
    source: LogSource,
}

impl Printer<'_> {
    fn lines(&self, lines: &[LogLine]) {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        for l in lines {
            let r = if self.a.json {
                let v = serde_json::json!({
                    "source": self.source,
                    "time": l.at_ms.map(format_time),
                    "at_ms": l.at_ms,
                    "level": l.level,
                    "text": l.text,
                });
                writeln!(out, "{v}")
            } else {
                let time = match (self.a.timestamps, l.at_ms) {
                    (true, Some(ms)) => format!("{} ", format_time(ms)),
                    (true, None) => format!("{:24} ", "-"),
                    (false, _) => String::new(),
                };
                let level = l
                    .level
                    .as_deref()
                    .map(|lv| format!("{lv:5} "))
                    .unwrap_or_default();
                writeln!(out, "{time}{level}{}", l.text)
            };
            if r.is_err() {
                // stdout closed (a pipe to `head`): nothing more to show.
                std::process::exit(0);
            }
        }
        let _ = out.flush();
    }
}

/// `--since` as ms since the epoch (a usage error when it does not parse).
fn since_arg(s: &str) -> Result<i64, String> {
    parse_since(s, now_ms())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
