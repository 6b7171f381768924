//! The argument groups every fault command shares, defined once and flattened into each:
//! who the fault is for (`TargetArgs`), which peers it touches (`PeerArgs`, with a
//! direction in `FilterArgs` and `EgressFilterArgs`), and how long it runs with which labels
//! (`RunArgs`).

use std::time::Duration;

use clap::{Args, ValueEnum};
use faultline_proto::v1 as pb;

use super::parse::{parse_duration, parse_label, parse_port_range};

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

/// The peers a network fault touches: protocol, addresses in and out, ports. Commands may
/// reword the help of `cidrs`, `excludes` and `ports` (`mut_arg`) to say what a peer is to
/// them (a destination, a partitioned peer).
#[derive(Args, Debug)]
pub struct PeerArgs {
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

impl PeerArgs {
    pub fn to_pb(&self, direction: DirectionArg) -> pb::PacketFilter {
        pb::PacketFilter {
            direction: match direction {
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

/// The peers, with a --direction that is both ways unless told.
#[derive(Args, Debug)]
pub struct FilterArgs {
    #[arg(long, value_enum, default_value_t = DirectionArg::Both)]
    pub direction: DirectionArg,
    #[command(flatten)]
    pub peers: PeerArgs,
}

impl FilterArgs {
    pub fn to_pb(&self) -> pb::PacketFilter {
        self.peers.to_pb(self.direction)
    }
}

/// The peers, with a --direction that is egress unless told (faults made on the way out).
#[derive(Args, Debug)]
pub struct EgressFilterArgs {
    #[arg(long, value_enum, default_value_t = DirectionArg::Egress)]
    pub direction: DirectionArg,
    #[command(flatten)]
    pub peers: PeerArgs,
}

impl EgressFilterArgs {
    pub fn to_pb(&self) -> pb::PacketFilter {
        self.peers.to_pb(self.direction)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DirectionArg {
    Ingress,
    Egress,
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ProtocolArg {
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// How long a fault lasts and how it is labelled; the same flags on every fault command.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// How long the fault lasts, e.g. 30s, 5m.
    #[arg(long = "for", value_parser = parse_duration)]
    pub duration: Duration,
    #[command(flatten)]
    pub labels: LabelArgs,
}

/// The labels of a fault, for commands whose --for differs (`process kill`).
#[derive(Args, Debug)]
pub struct LabelArgs {
    /// key=value label (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory as _, Parser as _, error::ErrorKind};

    use super::*;
    use crate::cli::{Cli, Command};

    /// The leaf commands that inject a fault, as "family verb".
    fn inject_verbs() -> Vec<(String, clap::Command)> {
        let cli = Cli::command();
        let mut verbs = Vec::new();
        for family in ["net", "sys", "stress", "process"] {
            let Some(f) = cli.find_subcommand(family) else { panic!("no {family} command") };
            for v in f.get_subcommands() {
                verbs.push((format!("{family} {}", v.get_name()), v.clone()));
            }
        }
        verbs
    }

    fn longs(cmd: &clap::Command) -> Vec<String> {
        cmd.get_arguments().filter_map(|a| a.get_long()).map(str::to_string).collect()
    }

    fn parse(args: &str) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("faultline").chain(args.split_whitespace()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_inject_verb_takes_the_same_target_and_run_flags() {
        let verbs = inject_verbs();
        // net: 8, sys: 1, stress: 4, process: 2.
        assert_eq!(verbs.len(), 15, "{:?}", verbs.iter().map(|v| &v.0).collect::<Vec<_>>());
        let want =
            ["cgroup", "pid", "container", "pod", "host", "interface", "netns", "for", "label"];
        for (name, cmd) in &verbs {
            let have = longs(cmd);
            for flag in want {
                assert!(have.iter().any(|h| h == flag), "{name} has no --{flag}");
            }
            let group = cmd.get_groups().find(|g| g.get_id() == "target");
            assert!(group.is_some_and(|g| g.is_required_set()), "{name}: the target is optional");
        }
    }

    #[test]
    fn a_target_is_required_and_only_one() {
        let missing = parse("net loss --percent 5 --for 1s").err().map(|e| e.kind());
        assert_eq!(missing, Some(ErrorKind::MissingRequiredArgument));
        let both = parse("stress cpu --cgroup x --pid 1 --load 5 --for 1s").err().map(|e| e.kind());
        assert_eq!(both, Some(ErrorKind::ArgumentConflict));
        let target = |args: &str| match parse(args).map(|c| c.command) {
            Ok(Command::Process(crate::cli::process::ProcessCommand::Pause(a))) => a.target.to_pb(),
            other => panic!("{args}: {other:?}"),
        };
        use pb::target::Kind;
        let pod = target("process pause --pod u1 --container c1 --for 1s");
        assert_eq!(
            pod.kind,
            Some(Kind::Pod(pb::Pod { uid: "u1".into(), container_id: "c1".into() }))
        );
        let dev = target("process pause --interface eth0 --netns n1 --for 1s");
        let want = pb::NetworkInterface { name: "eth0".into(), netns: "n1".into() };
        assert_eq!(dev.kind, Some(Kind::Interface(want)));
        assert_eq!(target("process pause --host --for 1s").kind, Some(Kind::Host(true)));
        assert_eq!(target("process pause --pid 7 --for 1s").kind, Some(Kind::Pid(7)));
    }

    #[test]
    fn every_peer_filtered_verb_takes_the_same_peer_flags() {
        let filtered =
            ["loss", "partition", "reject", "delay", "bandwidth", "corrupt", "duplicate"];
        for (name, cmd) in inject_verbs() {
            let have = longs(&cmd);
            let peers =
                ["protocol", "cidr", "exclude", "port"].map(|f| have.iter().any(|h| h == f));
            let verb = name.strip_prefix("net ").unwrap_or_default();
            if filtered.contains(&verb) {
                assert_eq!(peers, [true; 4], "{name}: {have:?}");
            } else if verb != "dns" {
                assert_eq!(peers, [false; 4], "{name}: {have:?}");
            }
        }
    }

    /// The filter each net verb sends for the same peer flags: only the direction differs.
    #[test]
    fn peer_flags_become_the_same_filter() {
        let peers = "--cidr 10.0.0.0/8 --exclude 10.0.0.1 --port 80-90 --protocol tcp --for 1s";
        let filter = |verb: &str| {
            let cli = parse(&format!("net {verb} --cgroup x {peers}"))
                .unwrap_or_else(|e| panic!("{verb}: {e}"));
            let Command::Net(net) = cli.command else { panic!("{verb}: not a net command") };
            let (_, kind, run) = net.into_pb();
            assert_eq!(run.duration, Duration::from_secs(1));
            use pb::fault::Kind;
            match kind {
                Kind::NetLoss(f) => f.filter,
                Kind::NetPartition(f) => f.filter,
                Kind::NetReject(f) => f.filter,
                Kind::NetDelay(f) => f.filter,
                Kind::NetBandwidth(f) => f.filter,
                Kind::NetCorrupt(f) => f.filter,
                Kind::NetDuplicate(f) => f.filter,
                other => panic!("{verb}: {other:?}"),
            }
        };
        let want = |direction: pb::Direction| {
            Some(pb::PacketFilter {
                direction: direction as i32,
                protocol: pb::Protocol::Tcp as i32,
                remote_cidrs: vec!["10.0.0.0/8".into()],
                exclude_cidrs: vec!["10.0.0.1".into()],
                remote_ports: vec![pb::PortRange { first: 80, last: 90 }],
            })
        };
        assert_eq!(filter("loss --percent 5"), want(pb::Direction::Both));
        assert_eq!(filter("loss --percent 5 --direction ingress"), want(pb::Direction::Ingress));
        assert_eq!(filter("partition"), want(pb::Direction::Both));
        assert_eq!(filter("reject"), want(pb::Direction::Egress));
        assert_eq!(filter("delay --latency 5ms"), want(pb::Direction::Egress));
        assert_eq!(filter("bandwidth --rate 1mbit --direction both"), want(pb::Direction::Both));
        assert_eq!(filter("corrupt --percent 5"), want(pb::Direction::Egress));
        assert_eq!(filter("duplicate --percent 5"), want(pb::Direction::Egress));
        // Partition and reject have no direction to choose.
        let kind = |args: &str| parse(args).err().map(|e| e.kind());
        assert_eq!(
            kind("net partition --cgroup x --for 1s --direction egress"),
            Some(ErrorKind::UnknownArgument)
        );
    }

    #[test]
    fn run_flags_carry_duration_and_labels() {
        let Command::Stress(s) =
            parse("stress cpu --cgroup x --load 5 --for 2m --label a=b --label c=d")
                .unwrap()
                .command
        else {
            panic!("not a stress command")
        };
        let (_, _, run) = s.into_pb();
        assert_eq!(run.duration, Duration::from_secs(120));
        assert_eq!(run.labels.labels, [("a".into(), "b".into()), ("c".into(), "d".into())]);
        // process kill has its own --for (a default of 1s) and the shared labels.
        let Command::Process(p) = parse("process kill --pid 1 --label a=b").unwrap().command else {
            panic!("not a process command")
        };
        let (_, _, run) = p.into_pb();
        assert_eq!(run.duration, Duration::from_secs(1));
        assert_eq!(run.labels.labels, [("a".into(), "b".into())]);
    }
}
