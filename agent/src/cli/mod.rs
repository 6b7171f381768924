//! The command line: `faultline serve` runs the agent; every other command is a gRPC client.

pub mod client;
mod follow;
mod live;
pub mod process;
pub mod stress;
mod term;
pub mod view;

pub use faultline_core::units::{parse_bytes, parse_duration, parse_rate};
use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use faultline_proto::v1 as pb;

use faultline_core::wire::convert;

use crate::telemetry::LogFormat;

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
    Net(NetCommand),
    /// System-call faults.
    #[command(subcommand)]
    Sys(SysCommand),
    /// CPU, memory and disk stress inside the target cgroup.
    #[command(subcommand)]
    Stress(stress::StressCommand),
    /// Process faults: kill, pause.
    #[command(subcommand)]
    Process(process::ProcessCommand),
    /// List experiments.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show one experiment with its counters; with --watch, follow it until it ends.
    Get(GetArgs),
    /// End an experiment now.
    Cancel { id: String },
    /// Show what this node's kernel supports.
    Caps,
    /// Live view of the active experiments: counters, first hit, a bar for the time left,
    /// redrawn every interval until Ctrl-C. Piped (or with -o json): one snapshot.
    Watch(WatchArgs),
    /// Stream experiment events, one line each: state changes, first hits, and with
    /// --snapshots live counters.
    Events(EventsArgs),
}

#[derive(Args, Debug)]
pub struct GetArgs {
    /// Experiment id.
    pub id: String,
    /// Follow the experiment: redraw it every interval on a terminal (a line for each
    /// change when piped) until it ends or Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// How often --watch redraws, e.g. 1s, 500ms (at least 100ms).
    #[arg(long, requires = "watch", value_parser = parse_interval, default_value = "1s")]
    pub interval: Duration,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// How often to redraw, e.g. 1s, 500ms (at least 100ms).
    #[arg(long, value_parser = parse_interval, default_value = "1s")]
    pub interval: Duration,
    /// Also show experiments that ended in the last 10 minutes.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only this experiment.
    pub id: Option<String>,
    /// Do not print the current state of experiments first.
    #[arg(long)]
    pub no_initial: bool,
    /// Also a snapshot of every active experiment's counters this often (at least 100ms).
    #[arg(long, value_parser = parse_interval)]
    pub snapshots: Option<Duration>,
}

/// A redraw or snapshot interval: a duration of at least 100ms.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err(format!("{s:?} is too short: at least 100ms"));
    }
    Ok(d)
}

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
    pub tcp_listen: Option<std::net::SocketAddr>,
    /// Server certificate (PEM) for the TCP listener.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
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
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0: any free port, logged).
    #[arg(long, default_value = "127.0.0.1:9464", conflicts_with = "no_metrics")]
    pub metrics_addr: std::net::SocketAddr,
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
}

#[derive(Subcommand, Debug)]
pub enum NetCommand {
    /// Drop the target's packets: a percentage, in bursts, or every Nth.
    Loss(LossArgs),
    /// Drop everything to and from matching peers, both ways.
    #[command(alias = "blackhole")]
    Partition(PartitionArgs),
    /// Make connect() to matching destinations fail at once (ECONNREFUSED by default).
    Reject(RejectArgs),
    /// Delay the target's packets (latency, jitter; EDT with fq on the egress devices).
    Delay(DelayArgs),
    /// Cap the target's traffic to a rate (EDT pacing with fq on the egress devices).
    Bandwidth(BandwidthArgs),
    /// Flip a random bit in the payload of a share of packets (checksum left wrong).
    Corrupt(MangleArgs),
    /// Send a share of packets twice.
    Duplicate(MangleArgs),
    /// Fail DNS lookups of chosen names: NXDOMAIN, SERVFAIL, or no answer.
    Dns(DnsArgs),
}

#[derive(Subcommand, Debug)]
pub enum SysCommand {
    /// Make chosen system calls of the target fail with an errno.
    Fail(SysFailArgs),
}

#[derive(Args, Debug)]
pub struct SysFailArgs {
    /// With --pid: that process and its threads only.
    #[command(flatten)]
    pub target: TargetArgs,
    /// With --pid: also the processes it forks while the fault lasts.
    #[arg(long, requires = "pid")]
    pub follow_children: bool,
    /// System call (repeatable, or comma-separated): openat, read, write, unlink, mkdir,
    /// rename, mmap, execve, clone, connect, bind, sendmsg, socket, ...
    #[arg(long = "syscall", required = true, value_delimiter = ',')]
    pub syscalls: Vec<String>,
    /// errno name or number the calls fail with.
    #[arg(long, default_value = "EIO")]
    pub errno: String,
    /// Percent of matching calls that fail (default all).
    #[arg(long, allow_negative_numbers = true)]
    pub percent: Option<f64>,
    /// Fail exactly every Nth matching call instead of --percent.
    #[arg(long)]
    pub every_nth: Option<u64>,
    /// After this many failures the calls succeed again.
    #[arg(long)]
    pub max_hits: Option<u64>,
    /// Only calls on files under this absolute path (open, read, write).
    #[arg(long)]
    pub path: Option<String>,
    /// Seed for reproducible random decisions.
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub common: CommonArgs,
}

impl SysFailArgs {
    fn into_pb(self) -> (pb::Target, pb::fault::Kind, CommonArgs) {
        let fault = pb::fault::Kind::SyscallErrno(pb::SyscallErrno {
            syscalls: self.syscalls,
            errno: self.errno,
            percent: self.percent,
            every_nth: self.every_nth,
            max_hits: self.max_hits,
            path_prefix: self.path.unwrap_or_default(),
            follow_children: self.follow_children,
            seed: self.seed,
        });
        (self.target.to_pb(), fault, self.common)
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DnsAnswerArg {
    Nxdomain,
    Servfail,
    /// No answer: the client times out.
    Drop,
}

#[derive(Args, Debug)]
pub struct DnsArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Name pattern (repeatable): db.example.com, *.example.com, or a glob like redis-?.prod.*
    #[arg(long = "name", required = true)]
    pub names: Vec<String>,
    /// What matching queries get: nxdomain, servfail, or drop (the client times out).
    #[arg(long, value_enum, default_value_t = DnsAnswerArg::Nxdomain)]
    pub answer: DnsAnswerArg,
    /// Percent of matching queries that fail (default all).
    #[arg(long)]
    pub percent: Option<f64>,
    /// Only queries to this resolver address or CIDR (repeatable; default any).
    #[arg(long = "resolver")]
    pub resolvers: Vec<String>,
    /// Resolver port (repeatable; default 53).
    #[arg(long = "port", value_parser = parse_port_range)]
    pub ports: Vec<pb::PortRange>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct MangleArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Percent of matching packets (0 < P <= 100).
    #[arg(long, allow_negative_numbers = true)]
    pub percent: f64,
    /// Seed for reproducible random decisions.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Device that gets the tc programs, for cgroup targets (repeatable).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    #[command(flatten)]
    pub filter: EdtFilterArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DistributionArg {
    Uniform,
    Normal,
}

#[derive(Args, Debug)]
pub struct DelayArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Added latency, e.g. 100ms.
    #[arg(long, value_parser = parse_duration)]
    pub latency: Duration,
    /// Jitter around the latency (at most the latency), e.g. 20ms.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub jitter: Duration,
    /// 0-100: how much each jitter draw follows the previous one.
    #[arg(long, default_value_t = 0.0)]
    pub correlation: f64,
    #[arg(long, value_enum, default_value_t = DistributionArg::Uniform)]
    pub distribution: DistributionArg,
    /// Percent of matching packets delayed (default all).
    #[arg(long)]
    pub percent: Option<f64>,
    /// Seed for reproducible random decisions.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Device that gets fq (repeatable; default: routed devices, or all that are up).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    #[command(flatten)]
    pub filter: EdtFilterArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct BandwidthArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Rate, e.g. 8mbit, 512kbit, 1gbit, or bits per second.
    #[arg(long, value_parser = parse_rate)]
    pub rate: u64,
    /// Bytes allowed back to back after idle (default 10 ms at the rate), e.g. 64kb.
    #[arg(long, value_parser = parse_bytes, default_value = "0")]
    pub burst: u64,
    #[arg(long = "device")]
    pub devices: Vec<String>,
    #[command(flatten)]
    pub filter: EdtFilterArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Like FilterArgs, with egress as the default direction.
#[derive(Args, Debug)]
pub struct EdtFilterArgs {
    #[arg(long, value_enum, default_value_t = DirectionArg::Egress)]
    pub direction: DirectionArg,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Any)]
    pub protocol: ProtocolArg,
    #[arg(long = "cidr")]
    pub cidrs: Vec<String>,
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    #[arg(long = "port", value_parser = parse_port_range)]
    pub ports: Vec<pb::PortRange>,
}

impl EdtFilterArgs {
    fn into_filter(self) -> FilterArgs {
        FilterArgs {
            direction: self.direction,
            protocol: self.protocol,
            cidrs: self.cidrs,
            excludes: self.excludes,
            ports: self.ports,
        }
    }
}

#[derive(Args, Debug)]
pub struct RejectArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// errno name or number connect() fails with.
    #[arg(long, default_value = "ECONNREFUSED")]
    pub errno: String,
    /// Percent of matching connect() calls that fail.
    #[arg(long, allow_negative_numbers = true)]
    pub percent: Option<f64>,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Any)]
    pub protocol: ProtocolArg,
    /// Destination address or CIDR (repeatable).
    #[arg(long = "cidr")]
    pub cidrs: Vec<String>,
    /// Destination address or CIDR left alone (repeatable).
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Destination port or range (repeatable).
    #[arg(long = "port", value_parser = parse_port_range)]
    pub ports: Vec<pb::PortRange>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Who a fault is for; the same flags on every fault command.
#[derive(Args, Debug)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true)
    .args(["cgroup", "pid", "container", "pod", "host", "interface"])))]
pub struct TargetArgs {
    /// Target cgroup (relative to the cgroup2 mount, or a full path under it).
    #[arg(long, conflicts_with_all = ["pid", "container", "pod", "host", "interface"])]
    pub cgroup: Option<String>,
    /// Target the cgroup of this process.
    #[arg(long, conflicts_with_all = ["container", "pod", "host", "interface"])]
    pub pid: Option<u32>,
    /// Target a container (containerd, CRI-O, Docker, Podman): its id or a unique prefix; with
    /// --pod, a container of that pod.
    #[arg(long, conflicts_with_all = ["host", "interface"])]
    pub container: Option<String>,
    /// Target a Kubernetes pod (all its containers) by uid.
    #[arg(long, conflicts_with_all = ["host", "interface"])]
    pub pod: Option<String>,
    /// Target the whole host (the root cgroup); the agent's policy must allow it.
    #[arg(long, conflicts_with = "interface")]
    pub host: bool,
    /// Target a network device: every packet through it (network faults).
    #[arg(long)]
    pub interface: Option<String>,
    /// Network namespace of --interface: a name from `ip netns`, or a path.
    #[arg(long, requires = "interface")]
    pub netns: Option<String>,
}

impl TargetArgs {
    pub fn to_pb(&self) -> pb::Target {
        use pb::target::Kind;
        let kind = if let Some(c) = &self.cgroup {
            Kind::CgroupPath(c.clone())
        } else if let Some(p) = self.pid {
            Kind::Pid(p)
        } else if let Some(uid) = &self.pod {
            Kind::Pod(pb::Pod {
                uid: uid.clone(),
                container_id: self.container.clone().unwrap_or_default(),
            })
        } else if let Some(c) = &self.container {
            Kind::ContainerId(c.clone())
        } else if self.host {
            Kind::Host(true)
        } else {
            Kind::Interface(pb::NetworkInterface {
                name: self.interface.clone().unwrap_or_default(),
                netns: self.netns.clone().unwrap_or_default(),
            })
        };
        pb::Target { kind: Some(kind) }
    }
}

#[derive(Args, Debug)]
pub struct FilterArgs {
    #[arg(long, value_enum, default_value_t = DirectionArg::Both)]
    pub direction: DirectionArg,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Any)]
    pub protocol: ProtocolArg,
    /// Remote address or CIDR (repeatable).
    #[arg(long = "cidr")]
    pub cidrs: Vec<String>,
    /// Remote address or CIDR left alone (repeatable).
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Remote port or range, e.g. 6379 or 8000-8080 (repeatable).
    #[arg(long = "port", value_parser = parse_port_range)]
    pub ports: Vec<pb::PortRange>,
}

#[derive(Args, Debug)]
pub struct CommonArgs {
    /// How long the fault lasts, e.g. 30s, 5m.
    #[arg(long = "for", value_parser = parse_duration)]
    pub duration: Duration,
    /// key=value label (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

#[derive(Args, Debug)]
pub struct LossArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Percent of matching packets to drop (0 < P <= 100).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub percent: f64,
    /// Lose packets in bursts of this mean length (Gilbert-Elliott); --percent stays the
    /// long-run loss.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub burst: f64,
    /// Drop exactly every Nth matching packet instead of --percent.
    #[arg(long, default_value_t = 0)]
    pub every_nth: u32,
    /// Seed for reproducible random decisions.
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct PartitionArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Any)]
    pub protocol: ProtocolArg,
    /// Peer address or CIDR (repeatable; none: every peer).
    #[arg(long = "cidr")]
    pub cidrs: Vec<String>,
    /// Peer address or CIDR left reachable (repeatable).
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Peer port or range (repeatable), e.g. --port 6379 for "Redis is down".
    #[arg(long = "port", value_parser = parse_port_range)]
    pub ports: Vec<pb::PortRange>,
    #[command(flatten)]
    pub common: CommonArgs,
}

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only these states (repeatable).
    #[arg(long = "state", value_enum)]
    pub states: Vec<StateArg>,
    /// Only experiments with this key=value label (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DirectionArg {
    Ingress,
    Egress,
    Both,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ProtocolArg {
    Any,
    Tcp,
    Udp,
    Icmp,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StateArg {
    Pending,
    Active,
    Expired,
    Cancelled,
    Failed,
}

/// Only the syntax is checked here; the agent checks the values and names the field.
fn parse_port_range(s: &str) -> Result<pb::PortRange, String> {
    let num = |p: &str| {
        p.trim()
            .parse::<u32>()
            .map_err(|_| format!("{s:?} is not a port or range (e.g. 6379, 8000-8080)"))
    };
    match s.split_once('-') {
        Some((a, b)) => Ok(pb::PortRange { first: num(a)?, last: num(b)? }),
        None => Ok(pb::PortRange { first: num(s)?, last: 0 }),
    }
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

impl FilterArgs {
    fn to_pb(&self) -> pb::PacketFilter {
        pb::PacketFilter {
            direction: match self.direction {
                DirectionArg::Ingress => pb::Direction::Ingress,
                DirectionArg::Egress => pb::Direction::Egress,
                DirectionArg::Both => pb::Direction::Both,
            } as i32,
            protocol: match self.protocol {
                ProtocolArg::Any => pb::Protocol::Unspecified,
                ProtocolArg::Tcp => pb::Protocol::Tcp,
                ProtocolArg::Udp => pb::Protocol::Udp,
                ProtocolArg::Icmp => pb::Protocol::Icmp,
            } as i32,
            remote_cidrs: self.cidrs.clone(),
            exclude_cidrs: self.excludes.clone(),
            remote_ports: self.ports.clone(),
        }
    }
}

/// The wire form of a `faultline net ...` command.
fn net_fault(cmd: NetCommand) -> (pb::Target, pb::fault::Kind, CommonArgs) {
    match cmd {
        NetCommand::Loss(a) => (
            a.target.to_pb(),
            pb::fault::Kind::NetLoss(pb::NetLoss {
                filter: Some(a.filter.to_pb()),
                percent: a.percent,
                burst_length: a.burst,
                every_nth: a.every_nth,
                seed: a.seed,
            }),
            a.common,
        ),
        NetCommand::Delay(a) => (
            a.target.to_pb(),
            pb::fault::Kind::NetDelay(pb::NetDelay {
                filter: Some(a.filter.into_filter().to_pb()),
                latency: Some(convert::duration(a.latency)),
                jitter: Some(convert::duration(a.jitter)),
                correlation: a.correlation,
                distribution: match a.distribution {
                    DistributionArg::Uniform => pb::Distribution::Uniform,
                    DistributionArg::Normal => pb::Distribution::Normal,
                } as i32,
                percent: a.percent,
                seed: a.seed,
                devices: a.devices,
            }),
            a.common,
        ),
        NetCommand::Bandwidth(a) => (
            a.target.to_pb(),
            pb::fault::Kind::NetBandwidth(pb::NetBandwidth {
                filter: Some(a.filter.into_filter().to_pb()),
                rate_bps: a.rate,
                burst_bytes: a.burst,
                devices: a.devices,
            }),
            a.common,
        ),
        NetCommand::Dns(a) => (
            a.target.to_pb(),
            pb::fault::Kind::NetDns(pb::NetDns {
                names: a.names,
                answer: match a.answer {
                    DnsAnswerArg::Nxdomain => pb::DnsAnswer::Nxdomain,
                    DnsAnswerArg::Servfail => pb::DnsAnswer::Servfail,
                    DnsAnswerArg::Drop => pb::DnsAnswer::Drop,
                } as i32,
                percent: a.percent,
                filter: Some(pb::PacketFilter {
                    remote_cidrs: a.resolvers,
                    remote_ports: a.ports,
                    ..Default::default()
                }),
            }),
            a.common,
        ),
        NetCommand::Corrupt(a) => (
            a.target.to_pb(),
            pb::fault::Kind::NetCorrupt(pb::NetCorrupt {
                filter: Some(a.filter.into_filter().to_pb()),
                percent: a.percent,
                seed: a.seed,
                devices: a.devices,
            }),
            a.common,
        ),
        NetCommand::Duplicate(a) => (
            a.target.to_pb(),
            pb::fault::Kind::NetDuplicate(pb::NetDuplicate {
                filter: Some(a.filter.into_filter().to_pb()),
                percent: a.percent,
                devices: a.devices,
            }),
            a.common,
        ),
        NetCommand::Reject(a) => {
            let filter = FilterArgs {
                direction: DirectionArg::Egress,
                protocol: a.protocol,
                cidrs: a.cidrs,
                excludes: a.excludes,
                ports: a.ports,
            };
            (
                a.target.to_pb(),
                pb::fault::Kind::NetReject(pb::NetReject {
                    filter: Some(filter.to_pb()),
                    errno: a.errno,
                    percent: a.percent,
                }),
                a.common,
            )
        }
        NetCommand::Partition(a) => {
            let filter = FilterArgs {
                direction: DirectionArg::Both,
                protocol: a.protocol,
                cidrs: a.cidrs,
                excludes: a.excludes,
                ports: a.ports,
            };
            (
                a.target.to_pb(),
                pb::fault::Kind::NetPartition(pb::NetPartition { filter: Some(filter.to_pb()) }),
                a.common,
            )
        }
    }
}

fn print_experiments(output: Output, list: &[pb::Experiment]) -> anyhow::Result<()> {
    match output {
        Output::Table => print!("{}", view::experiments_table(list)),
        Output::Json => {
            let v: Vec<_> = list.iter().map(view::experiment_json).collect();
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
    }
    Ok(())
}

fn print_experiment(output: Output, e: &pb::Experiment) -> anyhow::Result<()> {
    match output {
        Output::Table => print!("{}", view::experiment_detail(e)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&view::experiment_json(e))?),
    }
    Ok(())
}

/// gRPC errors become one line: "<code>: <message>".
fn status(s: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", s.code(), s.message())
}

async fn inject(
    c: &mut client::Client,
    output: Output,
    (target, kind, common): (pb::Target, pb::fault::Kind, CommonArgs),
) -> anyhow::Result<()> {
    let req = pb::InjectRequest {
        target: Some(target),
        fault: Some(pb::Fault { kind: Some(kind) }),
        duration: Some(convert::duration(common.duration)),
        labels: common.labels.into_iter().collect(),
    };
    let resp = c.inject(req).await.map_err(status)?.into_inner();
    let e = resp.experiment.context("agent returned no experiment")?;
    print_experiment(output, &e)
}

pub async fn run_client(cli: Cli) -> anyhow::Result<()> {
    client::set_remote(client::Remote {
        ca: cli.tls_ca.clone(),
        cert: cli.tls_cert.clone(),
        key: cli.tls_key.clone(),
        token: cli.token.clone(),
    });
    // The commands that keep running manage their connection themselves.
    match cli.command {
        Command::Watch(a) => {
            return follow::watch(&cli.endpoint, cli.output, a.interval, a.all).await;
        }
        Command::Get(a) if a.watch => {
            return follow::get_watch(&cli.endpoint, cli.output, &a.id, a.interval).await;
        }
        Command::Events(a) => {
            return follow::events(&cli.endpoint, cli.output, a.id, a.no_initial, a.snapshots)
                .await;
        }
        _ => {}
    }
    let mut c = client::connect(&cli.endpoint).await?;
    match cli.command {
        Command::Serve(_) => bail!("serve is not a client command"),
        Command::Net(net) => inject(&mut c, cli.output, net_fault(net)).await?,
        Command::Sys(SysCommand::Fail(a)) => inject(&mut c, cli.output, a.into_pb()).await?,
        Command::Stress(s) => inject(&mut c, cli.output, s.into_pb()).await?,
        Command::Process(p) => inject(&mut c, cli.output, p.into_pb()).await?,
        Command::Ls(a) => {
            let req = pb::ListRequest {
                states: a
                    .states
                    .iter()
                    .map(|s| match s {
                        StateArg::Pending => pb::State::Pending,
                        StateArg::Active => pb::State::Active,
                        StateArg::Expired => pb::State::Expired,
                        StateArg::Cancelled => pb::State::Cancelled,
                        StateArg::Failed => pb::State::Failed,
                    } as i32)
                    .collect(),
                labels: a.labels.into_iter().collect(),
            };
            let list = c.list(req).await.map_err(status)?.into_inner().experiments;
            print_experiments(cli.output, &list)?;
        }
        Command::Get(GetArgs { id, .. }) => {
            let e = c.get(pb::GetRequest { id }).await.map_err(status)?.into_inner();
            print_experiment(cli.output, &e)?;
        }
        Command::Cancel { id } => {
            let e = c.cancel(pb::CancelRequest { id }).await.map_err(status)?.into_inner();
            print_experiment(cli.output, &e)?;
        }
        Command::Caps => {
            let caps =
                c.capabilities(pb::CapabilitiesRequest {}).await.map_err(status)?.into_inner();
            match cli.output {
                Output::Table => print!("{}", view::caps_table(&caps)),
                Output::Json => {
                    println!("{}", serde_json::to_string_pretty(&view::caps_json(&caps))?)
                }
            }
        }
        Command::Watch(_) | Command::Events(_) => bail!("handled above"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_sizes() {
        assert_eq!(parse_rate("8mbit"), Ok(8_000_000));
        assert_eq!(parse_rate("1.5Mbit/s"), Ok(1_500_000));
        assert_eq!(parse_rate("512kbit"), Ok(512_000));
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_bytes("64kb"), Ok(65536));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("1500"), Ok(1500));
        assert!(parse_bytes("lots").is_err());
    }
}
