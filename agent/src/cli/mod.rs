//! The command line: `faultline serve` runs the agent; every other command is a gRPC client.
//!
//! One file per verb (or verb family): `serve`, `net`, `sys`, `stress`, `process` (the
//! inject verbs, sent by `inject`), `ls`, `get`, `cancel`, `caps`, `watch`, `events`. The
//! flags the fault commands share are in `args`, the value parsers in `parse`, the connection
//! to the agent in `client`, the loop of the live views in `live_view`, and everything shown
//! in `display/`.

pub mod args;
mod cancel;
mod caps;
pub mod client;
pub mod display;
mod events;
mod get;
pub mod inject;
mod live_view;
mod ls;
pub mod net;
pub mod parse;
pub mod process;
pub mod serve;
pub mod stress;
pub mod sys;
mod watch;

use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand, ValueEnum};

pub use self::{parse::parse_bytes, serve::ServeArgs};

#[derive(Parser, Debug)]
#[command(
    name = "faultline",
    version,
    about = "Host-level fault agent: eBPF packet and syscall faults for cgroups"
)]
pub struct Cli {
    /// Agent to talk to: a Unix socket path, unix://PATH, or http://HOST:PORT.
    #[arg(long, global = true, env = "FAULTLINE_ENDPOINT", default_value = client::DEFAULT_ENDPOINT)]
    pub endpoint: String,
    /// Output format of client commands.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// https:// endpoints: the CA that signed the agent's certificate (default: system roots).
    #[arg(long, global = true, env = "FAULTLINE_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// https:// endpoints: this client's certificate and key, for agents that require mutual TLS.
    #[arg(long, global = true, env = "FAULTLINE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    #[arg(long, global = true, env = "FAULTLINE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Bearer token for agents started with --token-file (better: the environment variable).
    #[arg(long, global = true, env = "FAULTLINE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent in the foreground.
    Serve(ServeArgs),
    /// Network faults.
    #[command(subcommand)]
    Net(net::NetCommand),
    /// System-call faults.
    #[command(subcommand)]
    Sys(sys::SysCommand),
    /// CPU, memory and disk stress inside the target cgroup.
    #[command(subcommand)]
    Stress(stress::StressCommand),
    /// Process faults: kill, pause.
    #[command(subcommand)]
    Process(process::ProcessCommand),
    /// List experiments.
    #[command(alias = "list")]
    Ls(ls::LsArgs),
    /// Show one experiment with its counters; with --watch, follow it until it ends.
    Get(get::GetArgs),
    /// End an experiment now.
    Cancel { id: String },
    /// Show what this node's kernel supports.
    Caps,
    /// Live view of the active experiments: counters, first hit, a bar for the time left,
    /// redrawn every interval until Ctrl-C. Piped (or with -o json): one snapshot.
    Watch(watch::WatchArgs),
    /// Stream experiment events, one line each: state changes, first hits, and with
    /// --snapshots live counters.
    Events(events::EventsArgs),
}

/// Runs a client command (every command but `serve`).
pub async fn run_client(cli: Cli) -> anyhow::Result<()> {
    client::set_remote(client::Remote {
        ca: cli.tls_ca.clone(),
        cert: cli.tls_cert.clone(),
        key: cli.tls_key.clone(),
        token: cli.token.clone(),
    });
    let (endpoint, output) = (cli.endpoint.as_str(), cli.output);
    match cli.command {
        Command::Serve(_) => bail!("serve is not a client command"),
        Command::Net(c) => inject::run(endpoint, output, c.into_pb()).await,
        Command::Sys(c) => inject::run(endpoint, output, c.into_pb()).await,
        Command::Stress(c) => inject::run(endpoint, output, c.into_pb()).await,
        Command::Process(c) => inject::run(endpoint, output, c.into_pb()).await,
        Command::Ls(a) => ls::run(endpoint, output, a).await,
        Command::Get(a) => get::run(endpoint, output, a).await,
        Command::Cancel { id } => cancel::run(endpoint, output, id).await,
        Command::Caps => caps::run(endpoint, output).await,
        Command::Watch(a) => watch::run(endpoint, output, a).await,
        Command::Events(a) => events::run(endpoint, output, a).await,
    }
}
