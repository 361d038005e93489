//! `hearth vm kill --vm ID PID|TAG [--signal SIG]`: a signal to a background
//! process's whole process group.

use hearth_runtime::{ProcessRef, Runtime};

use super::exec_modes::one_vm;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The VM id or name.
    #[arg(long)]
    pub vm: String,
    /// The process: its pid or its tag.
    pub target: String,
    /// A name (TERM, SIGKILL, int, ...) or a number 1-64.
    #[arg(long, short = 's', default_value = "TERM", value_parser = parse_signal)]
    pub signal: i32,
}

/// `TERM`, `SIGTERM`, `term` or `15`.
pub fn parse_signal(s: &str) -> Result<i32, String> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(format!("signal {n} is out of range 1..=64"))
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    Ok(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "WINCH" => libc::SIGWINCH,
        _ => {
            return Err(format!(
                "unknown signal {s:?} (use a name like TERM or a number)"
            ))
        }
    })
}

pub async fn run(rt: &Runtime, a: Args) -> anyhow::Result<i32> {
    let sb = one_vm(rt, std::slice::from_ref(&a.vm)).await?;
    sb.kill_process(&ProcessRef::parse(&a.target), a.signal)
        .await?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        assert_eq!(parse_signal("TERM"), Ok(15));
        assert_eq!(parse_signal("sigkill"), Ok(9));
        assert_eq!(parse_signal("2"), Ok(2));
        assert!(parse_signal("65").is_err());
        assert!(parse_signal("BOGUS").unwrap_err().contains("BOGUS"));
    }
}
