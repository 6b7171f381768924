//! Validation of process faults (kill, pause).

use faultline_proto::v1 as pb;

use crate::engine::{
    error::{Error, Result},
    model::{KillMode, ProcessKill},
};

/// Signal names without the SIG prefix, by number (Linux x86_64).
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// "SIGKILL", "kill", "9" -> 9; None when it is no signal.
pub fn parse_signal(s: &str) -> Option<i32> {
    let t = s.trim().to_ascii_uppercase();
    if let Ok(n) = t.parse::<i32>() {
        return (1..=64).contains(&n).then_some(n);
    }
    let name = t.strip_prefix("SIG").unwrap_or(&t);
    SIGNALS.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

pub fn signal_name(sig: i32) -> String {
    SIGNALS
        .iter()
        .find(|&&(_, v)| v == sig)
        .map_or_else(|| sig.to_string(), |(n, _)| format!("SIG{n}"))
}

pub fn kill(k: &pb::ProcessKill, field: &str) -> Result<ProcessKill> {
    let signal = if k.signal.is_empty() {
        libc::SIGKILL
    } else {
        parse_signal(&k.signal).ok_or_else(|| {
            Error::invalid(
                format!("{field}.signal"),
                format!("{:?} is not a signal: a name (SIGKILL, TERM) or a number 1-64", k.signal),
            )
        })?
    };
    let mode = match pb::KillMode::try_from(k.mode) {
        Ok(pb::KillMode::Unspecified | pb::KillMode::All) => KillMode::All,
        Ok(pb::KillMode::RandomOne) => KillMode::RandomOne,
        Err(_) => {
            return Err(Error::invalid(
                format!("{field}.mode"),
                format!("must be ALL or RANDOM_ONE, got {}", k.mode),
            ));
        }
    };
    let interval = match &k.interval {
        None => None,
        Some(d) if d.seconds == 0 && d.nanos == 0 => None,
        Some(d) => {
            let interval = super::fields::proto_duration(d, &format!("{field}.interval"))?;
            if interval < std::time::Duration::from_millis(100) {
                return Err(Error::invalid(
                    format!("{field}.interval"),
                    format!(
                        "must be zero (once) or at least 100ms, got {}",
                        crate::units::format_proto_duration(d)
                    ),
                ));
            }
            Some(interval)
        }
    };
    Ok(ProcessKill { signal, mode, interval })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("SIGKILL"), Some(9));
        assert_eq!(parse_signal("term"), Some(15));
        assert_eq!(parse_signal("19"), Some(19));
        assert_eq!(parse_signal("0"), None);
        assert_eq!(parse_signal("65"), None);
        assert_eq!(parse_signal("SIGFOO"), None);
        assert_eq!(signal_name(15), "SIGTERM");
        assert_eq!(signal_name(40), "40");
    }

    #[test]
    fn bad_kill_names_the_field() {
        let bad = pb::ProcessKill { signal: "nope".into(), ..Default::default() };
        assert!(
            matches!(kill(&bad, "f"), Err(Error::InvalidArgument { field, .. }) if field == "f.signal")
        );
        let bad = pb::ProcessKill {
            interval: Some(prost_types::Duration { seconds: 0, nanos: 1000 }),
            ..Default::default()
        };
        assert!(
            matches!(kill(&bad, "f"), Err(Error::InvalidArgument { field, .. }) if field == "f.interval")
        );
        let ok = kill(&pb::ProcessKill::default(), "f").unwrap();
        assert_eq!((ok.signal, ok.mode, ok.interval), (9, KillMode::All, None));
    }
}
