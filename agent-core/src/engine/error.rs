//! Errors of the engine and its drivers, each carrying the gRPC status it maps to.

/// Every error names what went wrong in terms the caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad request: `field` is the API field path ("fault.net_loss.percent").
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    /// The kernel or host lacks what the fault needs: "unsupported: <what is missing>".
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    /// The agent's policy refuses the request: the message names the rule.
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument { field: field.into(), message: message.into() }
    }

    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        Error::Internal(format!("{context}: {err}"))
    }

    /// Whether this is the agent saying no to a request (bad input, a missing kernel feature,
    /// the policy, a limit, a target that is not there) rather than failing at what it was
    /// asked. A refusal at apply time leaves no experiment behind; only `Internal` does.
    /// A journal write that failed, `what` being the record. A full or read-only state
    /// directory refuses the request that needed it, which then applies nothing (journals are
    /// written before the kernel is touched); any other failure is internal.
    pub fn journal(what: &str, e: &crate::store::PutError) -> Self {
        if e.is_full() {
            Error::ResourceExhausted(format!(
                "the state directory is full, so {what} could not be journaled and nothing was \
                 applied ({e})"
            ))
        } else if e.is_read_only() {
            Error::FailedPrecondition(format!(
                "the state directory is read-only, so {what} could not be journaled and nothing \
                 was applied ({e})"
            ))
        } else {
            Error::internal(&format!("journaling {what}"), e)
        }
    }

    pub fn is_refusal(&self) -> bool {
        !matches!(self, Error::Internal(_))
    }
}

/// An error with its sources ("a: b: c"), since aya's errors keep the errno in the source.
/// A source whose text its error already shows (aya's "returned {io_error}" with the same
/// io_error as its source) is not repeated, and an empty "Verifier output:" is left out.
/// A verifier log can run to megabytes: only its last lines, where the reason is, are kept.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = tidy(&e.to_string());
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = tidy(&c.to_string());
        if !t.is_empty() && !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    brief(&s)
}

/// One error's text without an empty trailing "Verifier output:" (the kernel gave no log).
fn tidy(s: &str) -> String {
    let t = s.trim_end();
    match t.strip_suffix("Verifier output:") {
        Some(head) => head.trim_end().trim_end_matches('.').to_string(),
        None => t.to_string(),
    }
}

/// Keeps the head line and the last `TAIL_LINES` lines of a long multi-line message.
pub fn brief(s: &str) -> String {
    const TAIL_LINES: usize = 25;
    const MAX: usize = 8192;
    let lines: Vec<&str> = s.lines().collect();
    if s.len() <= MAX && lines.len() <= TAIL_LINES + 1 {
        return s.to_string();
    }
    let tail = &lines[lines.len().saturating_sub(TAIL_LINES).max(1)..];
    let mut out =
        format!("{}\n[... {} lines left out ...]\n", lines[0], lines.len() - 1 - tail.len());
    for l in tail {
        // A single huge line is cut too.
        out.push_str(&l.chars().take(MAX / TAIL_LINES).collect::<String>());
        out.push('\n');
    }
    out
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod journal_tests {
    use super::Error;

    #[test]
    fn a_full_or_read_only_state_dir_is_a_refusal_naming_it() {
        let put = |errno| crate::store::PutError {
            dir: "/var/lib/faultline/experiments".into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        let full = Error::journal("the experiment", &put(libc::ENOSPC));
        assert!(matches!(full, Error::ResourceExhausted(_)), "{full:?}");
        let m = full.to_string();
        assert!(m.contains("state directory is full") && m.contains("/var/lib/faultline"), "{m}");
        assert!(matches!(Error::journal("x", &put(libc::EDQUOT)), Error::ResourceExhausted(_)));
        assert!(matches!(Error::journal("x", &put(libc::EROFS)), Error::FailedPrecondition(_)));
        let other = Error::journal("x", &put(libc::EIO));
        assert!(matches!(other, Error::Internal(_)) && !other.is_refusal(), "{other:?}");
    }
}

#[cfg(test)]
mod brief_tests {
    use super::brief;

    #[test]
    fn long_logs_keep_the_head_and_the_last_lines() {
        let log: String = (0..10_000).map(|i| format!("line {i}\n")).collect();
        let b = brief(&format!("load failed: Verifier output: {log}"));
        assert!(b.starts_with("load failed: Verifier output: line 0\n[... "), "{b}");
        assert!(b.contains("line 9999") && b.contains("line 9975") && !b.contains("line 9974"));
        assert!(b.len() < 1000);
        assert_eq!(brief("short: one line"), "short: one line");
    }

    #[derive(Debug)]
    struct Outer(std::io::Error, &'static str);
    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "the BPF_PROG_LOAD syscall returned {}. Verifier output: {}", self.0, self.1)
        }
    }
    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn chains_repeat_no_source_and_drop_an_empty_verifier_log() {
        let eperm = || std::io::Error::from_raw_os_error(1);
        let c = super::chain(&Outer(eperm(), ""));
        assert_eq!(c, "the BPF_PROG_LOAD syscall returned Operation not permitted (os error 1)");
        let c = super::chain(&Outer(eperm(), "0: R1 invalid mem access\n"));
        assert!(c.ends_with("Verifier output: 0: R1 invalid mem access"), "{c}");
        assert!(!c.contains(": :"), "{c}");
        // A source that adds something is kept.
        #[derive(Debug)]
        struct Plain(std::io::Error);
        impl std::fmt::Display for Plain {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("opening /x")
            }
        }
        impl std::error::Error for Plain {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let c = super::chain(&Plain(std::io::Error::from_raw_os_error(2)));
        assert_eq!(c, "opening /x: No such file or directory (os error 2)");
    }
}
