//! The argument groups every fault command shares, defined once and flattened into each:
//! who the fault is for (`TargetArgs`), which peers it touches (`PeerArgs`, with a
//! direction in `FilterArgs` and `EgressFilterArgs`), and how long it runs with which labels
//! (`RunArgs`).

use std::time::Duration;

use clap::{Args, ValueEnum};
use faultline_proto::v1 as pb;

use super::parse::{parse_abort_if, parse_duration, parse_label, parse_port_range};

/// What `--pid` means for the faults that act on a whole cgroup (network faults, stress).
pub const PID_CGROUP_HELP: &str =
    "Target the cgroup of process PID: every process in it, as --cgroup would";
/// What `--pid` means for stress.
pub const PID_STRESS_HELP: &str = "Target the cgroup of process PID: the workers join it, under \
    its CPU and memory limits, beside every process in it";
/// What `--pid` means for system-call faults.
pub const PID_SYS_HELP: &str = "Target process PID itself: its threads' system calls only, not \
    the rest of its cgroup (with --follow-children, also the processes it forks)";
/// What `--pid` means for `process kill`.
pub const PID_KILL_HELP: &str =
    "Target process PID itself: only it is signalled, not the rest of its cgroup";

/// Who a fault is for, when it acts on whole cgroups (`process pause`): a cgroup, a container
/// or a pod. The larger sets below add what other faults can also take; a flag a fault would
/// always refuse is not offered.
#[derive(Args, Debug)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(true)))]
pub struct CgroupTargetArgs {
    /// Target cgroup (relative to the cgroup2 mount, or a full path under it).
    #[arg(long, group = "target", conflicts_with_all = ["container", "pod"])]
    pub cgroup: Option<String>,
    /// Target a container (containerd, CRI-O, Docker, Podman): its id or a unique prefix; with
    /// --pod, a container of that pod.
    #[arg(long, group = "target")]
    pub container: Option<String>,
    /// Target a Kubernetes pod (all its containers): NAMESPACE/NAME as kubectl shows it, or
    /// its uid. Names are read on the node from the kubelet's /var/log/pods directories.
    #[arg(long, group = "target", value_name = "NAMESPACE/NAME|UID")]
    pub pod: Option<String>,
    /// With --pod: one container of the pod, by its name in the pod spec.
    #[arg(long, value_name = "NAME", requires = "pod", conflicts_with = "container")]
    pub container_name: Option<String>,
}

impl CgroupTargetArgs {
    pub fn to_pb(&self) -> pb::Target {
        target_pb(
            self.cgroup.as_deref(),
            self.container.as_deref(),
            self.pod.as_deref(),
            self.container_name.as_deref(),
        )
        .unwrap_or(pb::Target { kind: Some(pb::target::Kind::CgroupPath(String::new())) })
    }
}

/// The target the --cgroup, --container, --pod and --container-name flags name, if any:
/// a pod (NAMESPACE/NAME or uid; with a container id or name, one container of it), a
/// container, or a cgroup, in that order.
pub fn target_pb(
    cgroup: Option<&str>,
    container: Option<&str>,
    pod: Option<&str>,
    container_name: Option<&str>,
) -> Option<pb::Target> {
    use pb::target::Kind;
    let kind = if let Some(pod) = pod {
        let mut p = pb::Pod {
            container_id: container.unwrap_or_default().to_string(),
            container_name: container_name.unwrap_or_default().to_string(),
            ..Default::default()
        };
        match pod.split_once('/') {
            Some((namespace, name)) => (p.namespace, p.name) = (namespace.into(), name.into()),
            None => p.uid = pod.to_string(),
        }
        Kind::Pod(p)
    } else if let Some(c) = container {
        Kind::ContainerId(c.to_string())
    } else {
        Kind::CgroupPath(cgroup?.to_string())
    };
    Some(pb::Target { kind: Some(kind) })
}

/// Who a fault is for, when it can act on one process (`sys fail`, `process kill`) or on the
/// cgroup of one: a cgroup, a container, a pod, or a pid.
#[derive(Args, Debug)]
#[group(skip)]
pub struct ProcessTargetArgs {
    #[command(flatten)]
    pub cgroups: CgroupTargetArgs,
    #[arg(long, value_name = "PID", group = "target", help = PID_CGROUP_HELP,
          conflicts_with_all = ["cgroup", "container", "pod"])]
    pub pid: Option<u32>,
}

impl ProcessTargetArgs {
    pub fn to_pb(&self) -> pb::Target {
        match self.pid {
            Some(p) => pb::Target { kind: Some(pb::target::Kind::Pid(p)) },
            None => self.cgroups.to_pb(),
        }
    }
}

/// Who a fault is for, when it may also be host-wide (stress, `net reject`, `net dns`).
#[derive(Args, Debug)]
#[group(skip)]
pub struct HostTargetArgs {
    #[command(flatten)]
    pub procs: ProcessTargetArgs,
    /// Target the whole host (the root cgroup); the agent's policy must allow it.
    #[arg(long, group = "target", conflicts_with_all = ["cgroup", "pid", "container", "pod"])]
    pub host: bool,
}

impl HostTargetArgs {
    pub fn to_pb(&self) -> pb::Target {
        if self.host {
            pb::Target { kind: Some(pb::target::Kind::Host(true)) }
        } else {
            self.procs.to_pb()
        }
    }
}

/// Who a packet fault is for: any of the above, or a network device.
#[derive(Args, Debug)]
#[group(skip)]
pub struct TargetArgs {
    #[command(flatten)]
    pub hosts: HostTargetArgs,
    /// Target a network device: every packet through it.
    #[arg(long, group = "target",
          conflicts_with_all = ["cgroup", "pid", "container", "pod", "host"])]
    pub interface: Option<String>,
    /// Network namespace of --interface: a name from `ip netns`, or a path.
    #[arg(long, requires = "interface",
          conflicts_with_all = ["cgroup", "pid", "container", "pod", "host"])]
    pub netns: Option<String>,
}

impl TargetArgs {
    pub fn to_pb(&self) -> pb::Target {
        match &self.interface {
            Some(name) => pb::Target {
                kind: Some(pb::target::Kind::Interface(pb::NetworkInterface {
                    name: name.clone(),
                    netns: self.netns.clone().unwrap_or_default(),
                })),
            },
            None => self.hosts.to_pb(),
        }
    }
}

/// The peers a network fault touches: protocol, addresses in and out, ports. Commands may
/// reword the help of `cidrs`, `excludes` and `ports` (`mut_arg`) to say what a peer is to
/// them (a destination, a partitioned peer).
#[derive(Args, Debug)]
pub struct PeerArgs {
    /// Only this protocol (default: any).
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
    /// Which packets: received (ingress), sent (egress), or both.
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
    /// Which packets: sent (egress, the default), received (ingress), or both.
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
    /// A dead-man's switch, 1s to 1h: the fault ends early (failed, "lease expired") unless
    /// renewed within each LEASE, by --wait or `faultline renew ID`. Network faults (but
    /// `net dns`) and `sys fail` take one.
    #[arg(long, value_parser = parse_duration, value_name = "LEASE")]
    pub lease: Option<Duration>,
    /// Stay in the foreground until the fault ends and show how it ended, renewing its lease
    /// meanwhile; Ctrl-C, SIGTERM or a lost terminal (SIGHUP) cancels it, and if this process
    /// dies without a word its lease runs out.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub drill: DrillArgs,
}

impl RunArgs {
    /// For commands whose --for differs (`process kill`, `time skew`): no lease, no wait.
    pub fn of(duration: Duration, labels: LabelArgs, drill: DrillArgs) -> Self {
        RunArgs { duration, labels, lease: None, wait: false, drill }
    }
}

/// Control of the fault in flight; the same flags on every fault command.
#[derive(Args, Debug, Default)]
pub struct DrillArgs {
    /// End the fault early, as aborted, when this holds (repeatable; checked every 250ms):
    /// 'psi.cpu>N', 'psi.memory>N', 'psi.io>N' (the target's pressure, some avg10, percent),
    /// 'oom' (a process of the target OOM-killed), 'empty' (no process left), or
    /// 'http://HOST:PORT/PATH [timeout=1s] [failures=N]' (not 2xx within the timeout N times
    /// in a row).
    #[arg(long = "abort-if", value_parser = parse_abort_if, value_name = "CONDITION")]
    pub abort_if: Vec<pb::StopCondition>,
    /// Check everything (target, policy, kernel) and print what would be attached where,
    /// applying and recording nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Mark the fault, and say so in get/ls/watch, if it has not acted this long after it
    /// began (default 30s).
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub expect_hit_within: Option<Duration>,
    /// With --container or --pod/--container-name: when the container restarts, the fault
    /// follows it to its successor for the rest of its duration (while none is there, it
    /// waits; a kill without --every ends when its container goes).
    #[arg(long)]
    pub follow: bool,
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
    use crate::cli::{Cli, Command, net, process, stress};

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

    /// The target flags each inject verb offers: those its fault can take, no other.
    #[test]
    fn every_inject_verb_offers_the_targets_its_fault_can_take() {
        let verbs = inject_verbs();
        // net: 8, sys: 2, stress: 4, process: 2.
        assert_eq!(verbs.len(), 16, "{:?}", verbs.iter().map(|v| &v.0).collect::<Vec<_>>());
        let all = ["cgroup", "container", "pod", "pid", "host", "interface", "netns"];
        for (name, cmd) in &verbs {
            let want: &[&str] = match name.as_str() {
                "process pause" => &all[..3],
                "sys fail" | "sys delay" | "process kill" => &all[..4],
                "net reject" | "net dns" => &all[..5],
                n if n.starts_with("stress ") => &all[..5],
                n if n.starts_with("net ") => &all,
                n => panic!("{n}: which targets?"),
            };
            let have = longs(cmd);
            for flag in all {
                assert_eq!(
                    have.iter().any(|h| h == flag),
                    want.contains(&flag),
                    "{name}: --{flag} offered or missing: {have:?}"
                );
            }
            for flag in ["for", "label"] {
                assert!(have.iter().any(|h| h == flag), "{name} has no --{flag}");
            }
            let group = cmd.get_groups().find(|g| g.get_id() == "target");
            assert!(group.is_some_and(|g| g.is_required_set()), "{name}: the target is optional");
        }
    }

    /// --pid says what it does for each family.
    #[test]
    fn pid_help_says_what_it_targets() {
        let help = |verb: &str| {
            let (_, cmd) = inject_verbs().into_iter().find(|(n, _)| n == verb).unwrap();
            let pid = cmd.get_arguments().find(|a| a.get_long() == Some("pid")).unwrap();
            pid.get_help().map(ToString::to_string).unwrap_or_default()
        };
        assert!(help("net loss").contains("cgroup of process PID"));
        assert!(help("net reject").contains("cgroup of process PID"));
        assert!(help("stress cpu").contains("the workers join it"));
        assert!(help("sys fail").contains("process PID itself"));
        assert!(help("sys delay").contains("process PID itself"));
        assert!(help("process kill").contains("only it is signalled"));
    }

    #[test]
    fn a_target_is_required_and_only_one() {
        let kind = |args: &str| parse(args).err().map(|e| e.kind());
        assert_eq!(kind("net loss --percent 5 --for 1s"), Some(ErrorKind::MissingRequiredArgument));
        assert_eq!(
            kind("stress cpu --cgroup x --pid 1 --load 5 --for 1s"),
            Some(ErrorKind::ArgumentConflict)
        );
        // --netns goes with --interface only; with --pid it was once dropped in silence.
        assert_eq!(
            kind("net loss --pid 1 --netns n1 --percent 5 --for 1s"),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            kind("net loss --cgroup x --netns n1 --percent 5 --for 1s"),
            Some(ErrorKind::ArgumentConflict)
        );
        // Flags a fault always refuses are not offered.
        for refused in [
            "stress cpu --interface eth0 --load 5 --for 1s",
            "process kill --interface eth0",
            "process pause --pid 7 --for 1s",
            "process pause --host --for 1s",
            "sys fail --host --syscall openat --for 1s",
            "net reject --interface eth0 --for 1s",
        ] {
            assert_eq!(kind(refused), Some(ErrorKind::UnknownArgument), "{refused}");
        }
        use pb::target::Kind;
        let target = |args: &str| match parse(args).map(|c| c.command) {
            Ok(Command::Process { command: process::ProcessCommand::Pause(a), .. }) => {
                a.target.to_pb()
            }
            Ok(Command::Process { command: process::ProcessCommand::Kill(a), .. }) => {
                a.target.to_pb()
            }
            Ok(Command::Net { command: net::NetCommand::Loss(a), .. }) => a.target.to_pb(),
            Ok(Command::Stress { command: stress::StressCommand::Cpu(a), .. }) => a.target.to_pb(),
            other => panic!("{args}: {other:?}"),
        };
        let pod = target("process pause --pod u1 --container c1 --for 1s");
        assert_eq!(
            pod.kind,
            Some(Kind::Pod(pb::Pod {
                uid: "u1".into(),
                container_id: "c1".into(),
                ..Default::default()
            }))
        );
        let named = target("process pause --pod shop/checkout-7d9 --container-name app --for 1s");
        assert_eq!(
            named.kind,
            Some(Kind::Pod(pb::Pod {
                namespace: "shop".into(),
                name: "checkout-7d9".into(),
                container_name: "app".into(),
                ..Default::default()
            }))
        );
        assert!(parse("process pause --container-name app --for 1s").is_err(), "needs --pod");
        assert!(
            parse("process pause --pod a/b --container c1 --container-name app --for 1s").is_err(),
            "an id or a name"
        );
        assert_eq!(
            target("process pause --container c1 --for 1s").kind,
            Some(Kind::ContainerId("c1".into()))
        );
        assert_eq!(
            target("process pause --cgroup /a --for 1s").kind,
            Some(Kind::CgroupPath("/a".into()))
        );
        let dev = target("net loss --interface eth0 --netns n1 --percent 5 --for 1s");
        let want = pb::NetworkInterface { name: "eth0".into(), netns: "n1".into() };
        assert_eq!(dev.kind, Some(Kind::Interface(want)));
        assert_eq!(target("stress cpu --host --load 5 --for 1s").kind, Some(Kind::Host(true)));
        assert_eq!(target("process kill --pid 7").kind, Some(Kind::Pid(7)));
        assert_eq!(target("net loss --pid 7 --percent 5 --for 1s").kind, Some(Kind::Pid(7)));
    }

    /// One rule for how much a fault does: the flag it needs is required by the command line
    /// (clap's words), for loss as for corrupt.
    #[test]
    fn loss_needs_percent_or_every_nth() {
        let kind = |args: &str| parse(args).err().map(|e| e.kind());
        let missing = Some(ErrorKind::MissingRequiredArgument);
        assert_eq!(kind("net loss --cgroup x --for 1s"), missing);
        assert_eq!(kind("net corrupt --cgroup x --for 1s"), missing);
        let err = parse("net loss --cgroup x --for 1s").unwrap_err().to_string();
        assert!(err.contains("--percent") && err.contains("--every-nth"), "{err}");
        assert_eq!(
            kind("net loss --cgroup x --percent 5 --every-nth 3 --for 1s"),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(
            kind("net loss --cgroup x --every-nth 3 --burst 4 --for 1s"),
            Some(ErrorKind::ArgumentConflict)
        );
        assert_eq!(kind("net loss --cgroup x --burst 4 --for 1s"), missing);
        let loss = |args: &str| match parse(args).unwrap().command {
            Command::Net { command, .. } => match command.into_pb().1 {
                pb::fault::Kind::NetLoss(l) => (l.percent, l.every_nth, l.burst_length),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        };
        assert_eq!(loss("net loss --cgroup x --every-nth 3 --for 1s"), (0.0, 3, 0.0));
        assert_eq!(loss("net loss --cgroup x --percent 5 --burst 4 --for 1s"), (5.0, 0, 4.0));
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
            let Command::Net { command: net, .. } = cli.command else {
                panic!("{verb}: not a net command")
            };
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
        let Command::Stress { command: s, .. } =
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
        let Command::Process { command: p, .. } =
            parse("process kill --pid 1 --label a=b").unwrap().command
        else {
            panic!("not a process command")
        };
        let (_, _, run) = p.into_pb();
        assert_eq!(run.duration, Duration::from_secs(1));
        assert_eq!(run.labels.labels, [("a".into(), "b".into())]);
    }
}
