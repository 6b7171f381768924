//! Where the client's words go: results to stdout through one writer that treats a closed
//! pipe as the end of the command (never a panic), and errors to stderr as one line, or as
//! one JSON object with `-o json`.
//!
//! A reader that goes away early (`faultline ls | head -1`, `| grep -q`) ends the command
//! quietly with exit status 0, as ripgrep does and as `watch` and `events` always did: the
//! reader had what it wanted, and a `set -o pipefail` script does not fail on it. An inject
//! whose stdout is closed still made its experiment: its id goes to stderr instead.

use std::io::Write as _;

use tonic::Code;

use super::Output;

/// Stdout was closed by its reader: the command ends quietly (exit 0).
#[derive(Debug, thiserror::Error)]
#[error("stdout closed by its reader")]
pub struct StdoutClosed;

/// Writes `text` to stdout as it is; a closed pipe is `StdoutClosed`.
pub fn print(text: &str) -> anyhow::Result<()> {
    write_to(&mut std::io::stdout().lock(), text)
}

/// `print` with a newline.
pub fn println(text: &str) -> anyhow::Result<()> {
    print(&format!("{text}\n"))
}

fn write_to(out: &mut impl std::io::Write, text: &str) -> anyhow::Result<()> {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("writing to stdout")),
    }
}

/// Whether `e` is (or was caused by) a closed stdout.
pub fn is_stdout_closed(e: &anyhow::Error) -> bool {
    e.downcast_ref::<StdoutClosed>().is_some()
}

/// One line to stderr; a closed or full stderr is ignored (there is nowhere else to say it).
pub fn eprint_line(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "{text}");
}

/// A refusal with a gRPC status code: the agent's answer, or the client's own refusal (an
/// ambiguous id prefix, an agent it cannot reach) in the same terms, so that `-o json`
/// errors carry a code either way.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.line())]
pub struct Coded {
    pub code: Code,
    pub message: String,
    /// Whether the one-line form starts with the code ("NOT_FOUND: ..."); an unreachable
    /// agent says so in words.
    pub show_code: bool,
}

impl Coded {
    pub fn new(code: Code, message: impl Into<String>) -> Coded {
        Coded { code, message: message.into(), show_code: true }
    }

    /// The client's own words, with a code only for `-o json`.
    pub fn quiet(code: Code, message: impl Into<String>) -> Coded {
        Coded { code, message: message.into(), show_code: false }
    }

    fn line(&self) -> String {
        if self.show_code {
            format!("{}: {}", code_name(self.code), self.message)
        } else {
            self.message.clone()
        }
    }
}

/// The agent's answer as an error: "<CODE>: <message>".
pub fn from_status(s: tonic::Status) -> anyhow::Error {
    Coded::new(s.code(), s.message()).into()
}

/// A status code as gRPC and the API name it: `FAILED_PRECONDITION`, not `FailedPrecondition`.
pub fn code_name(c: Code) -> &'static str {
    match c {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The messages of an error chain, each distinct cause once: a cause whose words the
/// message before it already holds ("tcp connect error: tcp connect error", "No such file
/// or directory (os error 2): No such file or directory") is left out.
fn messages(chain: impl Iterator<Item = String>) -> Vec<String> {
    let mut kept: Vec<String> = Vec::new();
    for m in chain {
        let m = m.replace('\n', " ").trim().to_string();
        if m.is_empty() || kept.iter().any(|k| k.contains(&m)) {
            continue;
        }
        kept.push(m);
    }
    kept
}

/// How a failed command is reported: a status code and the chain of causes.
#[derive(Debug, PartialEq)]
pub struct Report {
    /// The first code in the chain; UNKNOWN when nothing in it had one.
    pub code: Code,
    /// The one-line text: the causes joined by ": ".
    pub line: String,
    /// The same without the code in front, for JSON (where the code has its own field).
    pub message: String,
}

impl Report {
    pub fn of(e: &anyhow::Error) -> Report {
        // anyhow finds a context or the root error of this type anywhere in the chain.
        let coded = e.downcast_ref::<Coded>();
        let code = coded.map_or(Code::Unknown, |c| c.code);
        let line = messages(e.chain().map(|c| c.to_string())).join(": ");
        let message = messages(e.chain().map(|c| {
            let text = c.to_string();
            match coded {
                Some(coded) if text == coded.to_string() => coded.message.clone(),
                _ => text,
            }
        }))
        .join(": ");
        Report { code, line, message }
    }

    /// A refusal of the command line itself (clap): INVALID_ARGUMENT.
    pub fn usage(line: String) -> Report {
        let message = line.strip_prefix("error: ").unwrap_or(&line).to_string();
        Report { code: Code::InvalidArgument, line, message }
    }

    /// The text for stderr: "error: <line>", or `{"error":{"code":...,"message":...}}`.
    pub fn render(&self, output: Output) -> String {
        match output {
            Output::Table if self.line.starts_with("error:") => self.line.clone(),
            Output::Table => format!("error: {}", self.line),
            Output::Json => serde_json::json!({
                "error": { "code": code_name(self.code), "message": self.message }
            })
            .to_string(),
        }
    }
}

/// The output format asked for on a command line, found without parsing it (for errors in
/// the command line itself): the last `-o`/`--output` before a `--`; table when none.
pub fn output_of(args: &[String]) -> Output {
    let mut output = Output::Table;
    let mut it = args.iter().skip(1).take_while(|a| *a != "--");
    while let Some(a) = it.next() {
        let value = match a.as_str() {
            "-o" | "--output" => it.next().map(String::as_str),
            a => a
                .strip_prefix("--output=")
                .or_else(|| a.strip_prefix("-o="))
                .or_else(|| a.strip_prefix("-o").filter(|v| !v.is_empty())),
        };
        match value {
            Some("json") => output = Output::Json,
            Some("table") => output = Output::Table,
            _ => {}
        }
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_print_as_grpc_names() {
        assert_eq!(code_name(Code::FailedPrecondition), "FAILED_PRECONDITION");
        assert_eq!(code_name(Code::InvalidArgument), "INVALID_ARGUMENT");
        let e = from_status(tonic::Status::failed_precondition("no fq"));
        assert_eq!(e.to_string(), "FAILED_PRECONDITION: no fq");
        let r = Report::of(&e.context("injecting"));
        assert_eq!(r.code, Code::FailedPrecondition);
        assert_eq!(r.line, "injecting: FAILED_PRECONDITION: no fq");
        assert_eq!(r.message, "injecting: no fq");
    }

    /// An error whose Display repeats its source's, as hyper's and io's do.
    #[derive(Debug, thiserror::Error)]
    #[error("{0}")]
    struct Echo(String, #[source] std::io::Error);

    #[test]
    fn each_cause_is_said_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let shown = io.to_string();
        assert_eq!(shown, "No such file or directory (os error 2)");
        let inner = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(Echo(shown, inner))
            .context("tcp connect error")
            .context("tcp connect error")
            .context("cannot reach the agent at /x.sock");
        let r = Report::of(&e);
        assert_eq!(
            r.line,
            "cannot reach the agent at /x.sock: tcp connect error: No such file or directory (os \
             error 2)"
        );
        assert_eq!(r.code, Code::Unknown);
        // Distinct causes all stay, in order.
        let e = anyhow::anyhow!("c").context("b").context("a");
        assert_eq!(Report::of(&e).line, "a: b: c");
    }

    #[test]
    fn json_errors_are_one_object() {
        let e = anyhow::Error::new(Coded::quiet(Code::Unavailable, "cannot reach the agent"))
            .context("listing");
        let r = Report::of(&e);
        assert_eq!(r.render(Output::Table), "error: listing: cannot reach the agent");
        let text = r.render(Output::Json);
        assert!(!text.contains('\n'), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"error": {"code": "UNAVAILABLE",
                "message": "listing: cannot reach the agent"}})
        );
        let u = Report::usage("error: unexpected argument '--x' found".into());
        let v: serde_json::Value = serde_json::from_str(&u.render(Output::Json)).unwrap();
        assert_eq!(v["error"]["code"], "INVALID_ARGUMENT");
        assert_eq!(v["error"]["message"], "unexpected argument '--x' found");
        assert_eq!(u.render(Output::Table), "error: unexpected argument '--x' found");
    }

    #[test]
    fn the_output_format_is_found_before_parsing() {
        let of = |s: &str| output_of(&s.split_whitespace().map(String::from).collect::<Vec<_>>());
        assert_eq!(of("faultline ls"), Output::Table);
        assert_eq!(of("faultline -o json ls"), Output::Json);
        assert_eq!(of("faultline ls --output json --bad"), Output::Json);
        assert_eq!(of("faultline ls --output=json"), Output::Json);
        assert_eq!(of("faultline ls -ojson"), Output::Json);
        assert_eq!(of("faultline ls -o=json"), Output::Json);
        assert_eq!(of("faultline ls -o json -o table"), Output::Table);
        assert_eq!(of("faultline get -- -o json"), Output::Table);
    }

    #[test]
    fn a_closed_pipe_is_its_own_error() {
        struct Closed;
        impl std::io::Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let e = write_to(&mut Closed, "x").unwrap_err();
        assert!(is_stdout_closed(&e));
        assert!(is_stdout_closed(&e.context("printing")));
        let other = anyhow::anyhow!("x").context("y");
        assert!(!is_stdout_closed(&other));
    }
}
