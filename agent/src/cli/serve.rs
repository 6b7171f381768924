//! `faultline serve`: the agent's own flags (everything else in this folder is the client).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Args;

use super::{client, parse::parse_duration};
use crate::telemetry::LogFormat;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Unix socket to serve gRPC on (mode 0600).
    #[arg(long, default_value = client::DEFAULT_ENDPOINT)]
    pub socket: PathBuf,
    /// Directory for the agent's state (lock file, journal).
    #[arg(long, default_value = "/var/lib/faultline")]
    pub state_dir: PathBuf,
    /// Also serve gRPC on this TCP address: with TLS (--tls-cert, --tls-key), or plain text
    /// with --insecure-tcp.
    #[arg(long)]
    pub tcp_listen: Option<SocketAddr>,
    /// This agent's certificate (PEM) for the TCP listener. (Clients present theirs with
    /// --tls-client-cert.)
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of this agent's --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM): mutual TLS.
    #[arg(long, requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
    /// Require `authorization: Bearer <token>` on TCP calls; the token is this file's content.
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Allow --tcp-listen without TLS.
    #[arg(long, conflicts_with = "tls_cert")]
    pub insecure_tcp: bool,
    /// Calls per second each TCP client may make (bursts of --rate-burst).
    #[arg(long, default_value_t = 100.0)]
    pub rate_limit: f64,
    /// Calls each TCP client may make at once before --rate-limit paces it.
    #[arg(long, default_value_t = 200.0)]
    pub rate_burst: f64,
    /// Largest request message accepted, in bytes.
    #[arg(long, default_value_t = 256 * 1024)]
    pub max_request_bytes: usize,
    /// The audit log (JSON lines); default: audit.log in the state dir.
    #[arg(long)]
    pub audit_log: Option<PathBuf>,
    /// Policy file (TOML): protected targets, host-wide faults, limits. Without one, the
    /// defaults: nothing host-wide, at most 1h, kube-system pods and the agent protected.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Longest duration an experiment may ask for (overrides the policy's max_duration).
    #[arg(long, value_parser = parse_duration)]
    pub max_duration: Option<Duration>,
    /// Log lines on stderr as text, or as JSON objects for a log collector (the level is
    /// FAULTLINE_LOG, e.g. info, debug).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0: any free port, logged).
    #[arg(long, default_value = "127.0.0.1:9464", conflicts_with = "no_metrics")]
    pub metrics_addr: SocketAddr,
    /// Do not serve metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// At start, undo the experiments a previous agent left in effect instead of resuming
    /// them for their remaining time.
    #[arg(long)]
    pub no_resume: bool,
    /// How long an ended experiment's series stay in the metrics.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub metrics_grace: Duration,
    /// Debug log lines from the kernel programs (a rule matched, its action) in this log,
    /// at debug level under the target faultline_ebpf. Off: they cost nothing.
    #[arg(long)]
    pub debug_bpf: bool,
}
