//! `faultline net loss|partition|reject|delay|bandwidth|corrupt|duplicate|dns`: network
//! faults.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use faultline_proto::v1 as pb;

use super::{
    args::{EgressFilterArgs, FilterArgs, HostTargetArgs, PeerArgs, RunArgs, TargetArgs},
    inject::Injection,
    parse::{parse_bytes, parse_duration, parse_port_range, parse_rate},
};
use faultline_core::wire::convert;

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

/// How much a loss drops: --percent or --every-nth, one of them required (as --percent is
/// for corrupt and duplicate).
#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("loss").required(true).args(["percent", "every_nth"])))]
pub struct LossArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Percent of matching packets to drop (0 < P <= 100).
    #[arg(long, allow_negative_numbers = true)]
    pub percent: Option<f64>,
    /// Lose packets in bursts of this mean length (Gilbert-Elliott); --percent stays the
    /// long-run loss.
    #[arg(long, allow_negative_numbers = true, requires = "percent", conflicts_with = "every_nth")]
    pub burst: Option<f64>,
    /// Drop exactly every Nth matching packet instead of --percent.
    #[arg(long, value_name = "N")]
    pub every_nth: Option<u32>,
    /// Seed for reproducible random decisions.
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub filter: FilterArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
#[command(
    mut_arg("cidrs", |a| a.help("Peer address or CIDR (repeatable; none: every peer)")),
    mut_arg("excludes", |a| a.help("Peer address or CIDR left reachable (repeatable)")),
    mut_arg("ports", |a| a.help("Peer port or range (repeatable), e.g. --port 6379 for \"Redis is down\"")),
)]
pub struct PartitionArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub peers: PeerArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
#[command(
    mut_arg("cidrs", |a| a.help("Destination address or CIDR (repeatable)")),
    mut_arg("excludes", |a| a.help("Destination address or CIDR left alone (repeatable)")),
    mut_arg("ports", |a| a.help("Destination port or range (repeatable)")),
)]
pub struct RejectArgs {
    #[command(flatten)]
    pub target: HostTargetArgs,
    /// errno name or number connect() fails with.
    #[arg(long, default_value = "ECONNREFUSED")]
    pub errno: String,
    /// Percent of matching connect() calls that fail.
    #[arg(long, allow_negative_numbers = true)]
    pub percent: Option<f64>,
    #[command(flatten)]
    pub peers: PeerArgs,
    #[command(flatten)]
    pub run: RunArgs,
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
    /// How jitter draws spread around the latency.
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
    pub filter: EgressFilterArgs,
    #[command(flatten)]
    pub run: RunArgs,
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
    /// Device that gets fq (repeatable; default: routed devices, or all that are up).
    #[arg(long = "device")]
    pub devices: Vec<String>,
    #[command(flatten)]
    pub filter: EgressFilterArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

/// `corrupt` and `duplicate`: a share of packets changed on the way out.
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
    pub filter: EgressFilterArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum DnsAnswerArg {
    Nxdomain,
    Servfail,
    /// No answer: the client times out.
    Drop,
}

/// DNS filters by resolver (its own --resolver and --port), not by peer.
#[derive(Args, Debug)]
pub struct DnsArgs {
    #[command(flatten)]
    pub target: HostTargetArgs,
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
    pub run: RunArgs,
}

impl NetCommand {
    /// The wire form of a `faultline net ...` command.
    pub fn into_pb(self) -> Injection {
        use super::args::DirectionArg;
        match self {
            NetCommand::Loss(a) => (
                a.target.to_pb(),
                pb::fault::Kind::NetLoss(pb::NetLoss {
                    filter: Some(a.filter.to_pb()),
                    percent: a.percent.unwrap_or_default(),
                    burst_length: a.burst.unwrap_or_default(),
                    every_nth: a.every_nth.unwrap_or_default(),
                    seed: a.seed,
                }),
                a.run,
            ),
            NetCommand::Delay(a) => (
                a.target.to_pb(),
                pb::fault::Kind::NetDelay(pb::NetDelay {
                    filter: Some(a.filter.to_pb()),
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
                a.run,
            ),
            NetCommand::Bandwidth(a) => (
                a.target.to_pb(),
                pb::fault::Kind::NetBandwidth(pb::NetBandwidth {
                    filter: Some(a.filter.to_pb()),
                    rate_bps: a.rate,
                    burst_bytes: a.burst,
                    devices: a.devices,
                }),
                a.run,
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
                a.run,
            ),
            NetCommand::Corrupt(a) => (
                a.target.to_pb(),
                pb::fault::Kind::NetCorrupt(pb::NetCorrupt {
                    filter: Some(a.filter.to_pb()),
                    percent: a.percent,
                    seed: a.seed,
                    devices: a.devices,
                }),
                a.run,
            ),
            NetCommand::Duplicate(a) => (
                a.target.to_pb(),
                pb::fault::Kind::NetDuplicate(pb::NetDuplicate {
                    filter: Some(a.filter.to_pb()),
                    percent: a.percent,
                    devices: a.devices,
                }),
                a.run,
            ),
            // connect() is egress only.
            NetCommand::Reject(a) => (
                a.target.to_pb(),
                pb::fault::Kind::NetReject(pb::NetReject {
                    filter: Some(a.peers.to_pb(DirectionArg::Egress)),
                    errno: a.errno,
                    percent: a.percent,
                }),
                a.run,
            ),
            NetCommand::Partition(a) => (
                a.target.to_pb(),
                pb::fault::Kind::NetPartition(pb::NetPartition {
                    filter: Some(a.peers.to_pb(DirectionArg::Both)),
                }),
                a.run,
            ),
        }
    }
}
