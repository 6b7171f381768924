//! Logging (structured tracing to stderr, text or JSON) and Prometheus metrics.

pub mod http;
pub mod metrics;

use tracing_subscriber::{EnvFilter, fmt};

#[derive(Clone, Copy, Debug, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The kernel programs' debug log lines (agent-ebpf/src/dlog.rs).
const BPF_DIRECTIVE: &str = "faultline_ebpf=debug";

/// aya's loader at debug level writes a line per relocation (5,500 per start): unless
/// FAULTLINE_LOG names aya itself, its crates log at info.
const AYA_DIRECTIVES: [&str; 2] = ["aya=info", "aya_obj=info"];

/// `debug_bpf`: the kernel programs' debug log lines (`serve --debug-bpf`, target
/// faultline_ebpf) are shown whatever FAULTLINE_LOG says. They come through the `log` crate,
/// which tracing-subscriber bridges into tracing (its tracing-log feature).
pub fn init(format: LogFormat, debug_bpf: bool) {
    let asked = std::env::var("FAULTLINE_LOG").unwrap_or_default();
    let mut filter =
        EnvFilter::try_from_env("FAULTLINE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if !asked.contains("aya") {
        for d in AYA_DIRECTIVES.iter().filter_map(|d| d.parse().ok()) {
            filter = filter.add_directive(d);
        }
    }
    if debug_bpf && let Ok(directive) = BPF_DIRECTIVE.parse() {
        filter = filter.add_directive(directive);
    }
    use std::io::IsTerminal as _;
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Ignore "already set": tests may initialise twice in one process.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}
