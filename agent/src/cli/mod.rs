//! The command line: `faultline serve` runs the agent; every other command is a gRPC client.
//!
//! One file per verb (or verb family): `serve`, `net`, `sys`, `stress`, `process` (the
//! inject verbs, sent by `inject`, held in the foreground by `hold` with --wait), `ls`, `get`,
//! `cancel`, `renew`, `halt`, `resume`, `caps`, `watch`, `events`. The
//! flags the fault commands share are in `args`, the value parsers in `parse`, the connection
//! to the agent in `client`, the loop of the live views in `live_view`, everything shown
//! in `display/`, and where it is written (stdout, errors on stderr) in `output`. `generate`
//! makes the shell completion scripts and the man pages from these definitions.

pub mod apply;
pub mod args;
mod cancel;
mod caps;
pub mod client;
pub mod display;
mod events;
pub mod generate;
mod get;
mod halt;
mod hold;
pub mod inject;
mod live_view;
mod ls;
pub mod net;
pub mod output;
pub mod parse;
pub mod process;
mod renew;
mod resume;
pub mod serve;
pub mod stress;
pub mod sys;
pub mod time;
mod watch;

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, Parser, Subcommand, ValueEnum};

pub use self::{parse::parse_bytes, serve::ServeArgs};

#[derive(Parser, Debug)]
#[command(
    name = "faultline",
    version,
    about = "Host-level fault agent: eBPF packet and syscall faults for cgroups"
)]
pub struct Cli {
    #[command(flatten)]
    pub client: RootClientArgs,
    #[command(subcommand)]
    pub command: Command,
}

const ENDPOINT_HELP: &str = "Agent to talk to: a Unix socket path, unix://PATH, \
    https://HOST:PORT (TLS: see --tls-ca, --tls-client-cert), or http://HOST:PORT (plain text) \
    [env: FAULTLINE_ENDPOINT] [default: /run/faultline/faultline.sock]";
const OUTPUT_HELP: &str = "Output format: a table (default), or json for scripts (errors too: one \
    JSON object on stderr)";
const TLS_CA_HELP: &str = "https:// endpoints: the CA that signed the agent's certificate \
    (default: the system's roots) [env: FAULTLINE_TLS_CA]";
const TLS_CLIENT_CERT_HELP: &str = "https:// endpoints: this client's certificate (PEM), for \
    agents that require mutual TLS (serve --tls-client-ca) [env: FAULTLINE_TLS_CLIENT_CERT]";
const TLS_CLIENT_KEY_HELP: &str =
    "Private key (PEM) of --tls-client-cert [env: FAULTLINE_TLS_CLIENT_KEY]";
const TOKEN_HELP: &str = "Bearer token for agents started with --token-file (better: the \
    environment variable, which `ps` does not show) [env: FAULTLINE_TOKEN]";

/// How a client command reaches the agent and shows its answer, given before the verb
/// (`faultline -o json ls`). The flags of `ClientArgs` again: not global, so that `serve`
/// does not offer them.
#[derive(Args, Debug, Clone, Default)]
pub struct RootClientArgs {
    #[arg(long, id = "root_endpoint", value_name = "ENDPOINT", help = ENDPOINT_HELP)]
    pub endpoint: Option<String>,
    #[arg(long, short = 'o', id = "root_output", value_name = "FORMAT", value_enum, help = OUTPUT_HELP)]
    pub output: Option<Output>,
    #[arg(long, id = "root_tls_ca", value_name = "FILE", help = TLS_CA_HELP)]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, id = "root_tls_client_cert", alias = "tls-cert", value_name = "FILE",
          requires = "root_tls_client_key", help = TLS_CLIENT_CERT_HELP)]
    pub tls_client_cert: Option<PathBuf>,
    #[arg(long, id = "root_tls_client_key", alias = "tls-key", value_name = "FILE",
          requires = "root_tls_client_cert", help = TLS_CLIENT_KEY_HELP)]
    pub tls_client_key: Option<PathBuf>,
    #[arg(long, id = "root_token", value_name = "TOKEN", help = TOKEN_HELP)]
    pub token: Option<String>,
}

/// How a client command reaches the agent and shows its answer: on every client verb, before
/// or after its own flags (`faultline ls -o json`).
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Client options")]
pub struct ClientArgs {
    #[arg(long, global = true, value_name = "ENDPOINT", help = ENDPOINT_HELP)]
    pub endpoint: Option<String>,
    #[arg(long, short = 'o', global = true, value_name = "FORMAT", value_enum, help = OUTPUT_HELP)]
    pub output: Option<Output>,
    #[arg(long, global = true, value_name = "FILE", help = TLS_CA_HELP)]
    pub tls_ca: Option<PathBuf>,
    #[arg(long, global = true, alias = "tls-cert", value_name = "FILE",
          requires = "tls_client_key", help = TLS_CLIENT_CERT_HELP)]
    pub tls_client_cert: Option<PathBuf>,
    #[arg(long, global = true, alias = "tls-key", value_name = "FILE",
          requires = "tls_client_cert", help = TLS_CLIENT_KEY_HELP)]
    pub tls_client_key: Option<PathBuf>,
    #[arg(long, global = true, value_name = "TOKEN", help = TOKEN_HELP)]
    pub token: Option<String>,
}

/// What a client command was told, from the flags after the verb, before it, then the
/// environment, then the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientOptions {
    pub endpoint: String,
    pub output: Output,
    pub remote: client::Remote,
}

impl ClientOptions {
    fn merge(
        root: &RootClientArgs,
        verb: &ClientArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> Self {
        let path = |v: &Option<PathBuf>, r: &Option<PathBuf>, var: &str| {
            v.clone().or_else(|| r.clone()).or_else(|| env(var).map(PathBuf::from))
        };
        // A client certificate and its key come from one place, never one from each.
        let (cert, key) = match (&verb.tls_client_cert, &root.tls_client_cert) {
            (Some(c), _) => (Some(c.clone()), verb.tls_client_key.clone()),
            (None, Some(c)) => (Some(c.clone()), root.tls_client_key.clone()),
            // FAULTLINE_TLS_CERT and _KEY: the names before the client's flags were renamed.
            (None, None) => match (env("FAULTLINE_TLS_CLIENT_CERT"), env("FAULTLINE_TLS_CERT")) {
                (Some(c), _) => (Some(c.into()), env("FAULTLINE_TLS_CLIENT_KEY").map(Into::into)),
                (None, Some(c)) => (Some(c.into()), env("FAULTLINE_TLS_KEY").map(Into::into)),
                (None, None) => (None, None),
            },
        };
        ClientOptions {
            endpoint: verb
                .endpoint
                .clone()
                .or_else(|| root.endpoint.clone())
                .or_else(|| env("FAULTLINE_ENDPOINT").filter(|e| !e.is_empty()))
                .unwrap_or_else(|| client::DEFAULT_ENDPOINT.to_string()),
            output: verb.output.or(root.output).unwrap_or(Output::Table),
            remote: client::Remote {
                ca: path(&verb.tls_ca, &root.tls_ca, "FAULTLINE_TLS_CA"),
                cert,
                key,
                token: verb
                    .token
                    .clone()
                    .or_else(|| root.token.clone())
                    .or_else(|| env("FAULTLINE_TOKEN")),
            },
        }
    }
}

impl Cli {
    /// The client options of a client command; None for `serve`, `completions` and `man`.
    pub fn client_options(&self) -> Option<ClientOptions> {
        let env = |v: &str| std::env::var(v).ok();
        self.command.client().map(|verb| ClientOptions::merge(&self.client, verb, env))
    }
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
    Net {
        #[command(subcommand)]
        command: net::NetCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// System-call faults.
    Sys {
        #[command(subcommand)]
        command: sys::SysCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// CPU, memory and disk stress inside the target cgroup.
    Stress {
        #[command(subcommand)]
        command: stress::StressCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Process faults: kill, pause.
    Process {
        #[command(subcommand)]
        command: process::ProcessCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Time faults: skew (a container's clock, not the node's).
    Time {
        #[command(subcommand)]
        command: time::TimeCommand,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Run Chaos Mesh resources (chaos-mesh.org/v1alpha1) as they are: each document becomes
    /// experiments labelled chaos-mesh.org/resource=NAMESPACE/NAME. The whole file is checked
    /// before anything is applied.
    Apply {
        #[command(flatten)]
        args: apply::ApplyArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List experiments.
    #[command(alias = "list")]
    Ls {
        #[command(flatten)]
        args: ls::LsArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show one experiment with its counters; with --watch, follow it until it ends.
    Get {
        #[command(flatten)]
        args: get::GetArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// End an experiment now (one that had already ended is shown as it ended), or with
    /// --label every active experiment carrying the label.
    Cancel {
        /// Experiment id, or a unique prefix of one (at least 4 characters).
        #[arg(required_unless_present = "labels", conflicts_with = "labels")]
        id: Option<String>,
        /// key=value: every active experiment with this label (repeatable: all of them).
        #[arg(long = "label", value_parser = parse::parse_label)]
        labels: Vec<(String, String)>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Renew the lease of an experiment injected with --lease: it runs for another lease.
    Renew {
        /// Experiment id, or a unique prefix of one (at least 4 characters).
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Emergency stop: end every active experiment now and refuse new ones until `resume`.
    Halt {
        #[command(flatten)]
        args: halt::HaltArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Lift a halt: experiments are taken again.
    Resume {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show what this node's kernel supports.
    Caps {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Live view of the active experiments: counters, first hit, a bar for the time left,
    /// redrawn every interval until Ctrl-C. Piped (or with -o json): one snapshot.
    Watch {
        #[command(flatten)]
        args: watch::WatchArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Stream experiment events, one line each: state changes, first hits, and with
    /// --snapshots live counters.
    Events {
        #[command(flatten)]
        args: events::EventsArgs,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a shell completion script (bash, zsh or fish) for this command line.
    Completions(generate::CompletionsArgs),
    /// Print the manual page (roff), or write one page per command into a directory.
    Man(generate::ManArgs),
}

impl Command {
    /// The client flags of a client command.
    fn client(&self) -> Option<&ClientArgs> {
        match self {
            Command::Serve(_) | Command::Completions(_) | Command::Man(_) => None,
            Command::Net { client, .. }
            | Command::Sys { client, .. }
            | Command::Stress { client, .. }
            | Command::Process { client, .. }
            | Command::Time { client, .. }
            | Command::Apply { client, .. }
            | Command::Ls { client, .. }
            | Command::Get { client, .. }
            | Command::Cancel { client, .. }
            | Command::Renew { client, .. }
            | Command::Halt { client, .. }
            | Command::Resume { client }
            | Command::Caps { client }
            | Command::Watch { client, .. }
            | Command::Events { client, .. } => Some(client),
        }
    }
}

/// Runs a client command (every command but `serve`, `completions` and `man`).
pub async fn run_client(cli: Cli) -> anyhow::Result<()> {
    let Some(opts) = cli.client_options() else { bail!("not a client command") };
    client::set_remote(opts.remote.clone());
    let (endpoint, output) = (opts.endpoint.as_str(), opts.output);
    match cli.command {
        Command::Serve(_) | Command::Completions(_) | Command::Man(_) => {
            bail!("not a client command")
        }
        Command::Net { command, .. } => inject::run(endpoint, output, command.into_pb()).await,
        Command::Sys { command, .. } => inject::run(endpoint, output, command.into_pb()).await,
        Command::Stress { command, .. } => inject::run(endpoint, output, command.into_pb()).await,
        Command::Process { command, .. } => inject::run(endpoint, output, command.into_pb()).await,
        Command::Time { command, .. } => inject::run(endpoint, output, command.into_pb()).await,
        Command::Apply { args, .. } => apply::run(endpoint, output, args).await,
        Command::Ls { args, .. } => ls::run(endpoint, output, args).await,
        Command::Get { args, .. } => get::run(endpoint, output, args).await,
        Command::Cancel { id: Some(id), .. } => cancel::run(endpoint, output, id).await,
        Command::Cancel { id: None, labels, .. } => {
            cancel::by_label(endpoint, output, labels).await
        }
        Command::Renew { id, .. } => renew::run(endpoint, output, id).await,
        Command::Halt { args, .. } => halt::run(endpoint, output, args).await,
        Command::Resume { .. } => resume::run(endpoint, output).await,
        Command::Caps { .. } => caps::run(endpoint, output).await,
        Command::Watch { args, .. } => watch::run(endpoint, output, args).await,
        Command::Events { args, .. } => events::run(endpoint, output, args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    fn parse(args: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("faultline").chain(args.split_whitespace()))
    }

    /// Every command and every flag of every command says what it is for, so --help, the man
    /// pages and the completions never show a bare flag.
    #[test]
    fn every_flag_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                let help = a.get_help().map(ToString::to_string).unwrap_or_default();
                if help.trim().is_empty() {
                    missing.push(format!("{path} {}", a.get_long().unwrap_or(id)));
                }
            }
            for sc in cmd.get_subcommands() {
                if sc.get_name() == "help" {
                    continue;
                }
                if sc.get_about().is_none() {
                    missing.push(format!("{path} {} (the command)", sc.get_name()));
                }
                walk(sc, &format!("{path} {}", sc.get_name()), missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "faultline", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    /// `serve` offers the agent's flags only: none of the client's (they were global once).
    #[test]
    fn serve_offers_only_the_servers_flags() {
        let mut cmd = Cli::command();
        cmd.build();
        let serve = cmd.find_subcommand("serve").unwrap();
        let longs: Vec<&str> = serve.get_arguments().filter_map(|a| a.get_long()).collect();
        for client in ["endpoint", "output", "tls-ca", "tls-client-cert", "token"] {
            assert!(!longs.contains(&client), "serve offers --{client}: {longs:?}");
        }
        assert!(longs.contains(&"tls-cert") && longs.contains(&"tcp-listen"), "{longs:?}");
        assert!(parse("serve --endpoint /x").is_err());
        assert!(parse("serve -o json").is_err());
        let help = serve.clone().render_long_help().to_string();
        assert!(!help.contains("--endpoint"), "{help}");
        // The client's TLS flags are named apart from the server's; the old names still work.
        let cli = parse("ls --tls-cert c.pem --tls-key k.pem").unwrap();
        let o = cli.client_options().unwrap();
        assert_eq!(o.remote.cert, Some(PathBuf::from("c.pem")));
        assert_eq!(o.remote.key, Some(PathBuf::from("k.pem")));
    }

    #[test]
    fn endpoint_help_names_every_scheme() {
        let cmd = Cli::command();
        let ep = cmd.get_arguments().find(|a| a.get_long() == Some("endpoint")).unwrap();
        let help = ep.get_help().unwrap().to_string();
        for scheme in ["unix://", "https://", "http://", "FAULTLINE_ENDPOINT"] {
            assert!(help.contains(scheme), "{help}");
        }
    }

    /// Client flags before or after the verb (after wins), then the environment, then the
    /// defaults.
    #[test]
    fn client_flags_go_before_or_after_the_verb() {
        let none = |_: &str| None;
        let opts = |args: &str, env: &dyn Fn(&str) -> Option<String>| {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args}: {e}"));
            let verb = cli.command.client().unwrap().clone();
            ClientOptions::merge(&cli.client, &verb, env)
        };
        let o = opts("ls", &none);
        assert_eq!((o.endpoint.as_str(), o.output), (client::DEFAULT_ENDPOINT, Output::Table));
        assert_eq!(opts("-o json ls", &none).output, Output::Json);
        assert_eq!(opts("ls -o json", &none).output, Output::Json);
        assert_eq!(opts("get abcd -o json", &none).output, Output::Json);
        assert_eq!(opts("-o json ls -o table", &none).output, Output::Table);
        assert_eq!(
            opts("net -o json loss --cgroup x --percent 5 --for 1s", &none).output,
            Output::Json
        );
        assert_eq!(
            opts("net loss --cgroup x --percent 5 --for 1s -o json", &none).output,
            Output::Json
        );
        let env = |v: &str| match v {
            "FAULTLINE_ENDPOINT" => Some("/env.sock".to_string()),
            "FAULTLINE_TOKEN" => Some("t0k".to_string()),
            "FAULTLINE_TLS_CERT" => Some("old.pem".to_string()),
            "FAULTLINE_TLS_KEY" => Some("old.key".to_string()),
            _ => None,
        };
        let o = opts("caps", &env);
        assert_eq!(o.endpoint, "/env.sock");
        assert_eq!(o.remote.token.as_deref(), Some("t0k"));
        assert_eq!(o.remote.cert, Some(PathBuf::from("old.pem")));
        assert_eq!(o.remote.key, Some(PathBuf::from("old.key")));
        assert_eq!(opts("--endpoint /root.sock caps", &env).endpoint, "/root.sock");
        assert_eq!(opts("--endpoint /a caps --endpoint /b", &env).endpoint, "/b");
        // Cert and key from one place.
        let o = opts("caps --tls-client-cert c --tls-client-key k", &env);
        assert_eq!((o.remote.cert, o.remote.key), (Some("c".into()), Some("k".into())));
        assert!(parse("caps --tls-client-cert c").is_err(), "a certificate without its key");
        assert!(Cli::command().find_subcommand("serve").unwrap().get_arguments().count() > 0);
        assert!(parse("completions bash").unwrap().client_options().is_none());
    }
}
