//! Domain types: what an experiment asks for, after validation, independent of the wire format.

use std::{
    collections::BTreeMap,
    time::{Duration, SystemTime},
};

use ipnet::IpNet;

#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentSpec {
    pub target: TargetSpec,
    pub fault: FaultSpec,
    pub duration: Duration,
    pub labels: BTreeMap<String, String>,
    /// Ends it early unless renewed within each (a dead-man's switch).
    pub lease: Option<Duration>,
    /// Evaluated every 250 ms while active; the first that holds aborts it.
    pub stop: Vec<StopCondition>,
    /// Marked as hitting nothing when it has not acted this long after it began.
    pub expect_hit_within: Duration,
    /// A restarted container (same pod and container name) gets the fault again.
    pub follow: bool,
}

/// When `expect_hit_within` is not given.
pub const DEFAULT_EXPECT_HIT_WITHIN: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    Cpu,
    Memory,
    Io,
}

impl Resource {
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Memory => "memory",
            Resource::Io => "io",
        }
    }
}

/// A condition that ends an experiment as aborted when it holds.
#[derive(Clone, Debug, PartialEq)]
pub enum StopCondition {
    /// The target cgroup's PSI "some avg10" of `resource` above a percent.
    Pressure { resource: Resource, above_percent: f64 },
    /// A process of the target was OOM-killed since the experiment began.
    OomKill,
    /// No process is left in the target.
    NoProcesses,
    /// `url` (http://HOST:PORT/PATH) failed to answer 2xx within `timeout`, `failures` times
    /// in a row.
    Http { url: String, timeout: Duration, failures: u32 },
}

impl StopCondition {
    /// As the CLI's --abort-if spells it.
    pub fn describe(&self) -> String {
        match self {
            StopCondition::Pressure { resource, above_percent } => {
                format!("psi.{}>{above_percent}", resource.name())
            }
            StopCondition::OomKill => "oom".into(),
            StopCondition::NoProcesses => "empty".into(),
            StopCondition::Http { url, timeout, failures } => {
                let mut s = url.clone();
                if *timeout != HTTP_PROBE_TIMEOUT {
                    s += &format!(" timeout={}", crate::units::human_duration(*timeout));
                }
                if *failures != 1 {
                    s += &format!(" failures={failures}");
                }
                s
            }
        }
    }
}

/// An HTTP stop condition's timeout per request when not given.
pub const HTTP_PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a dry run would do: the target as resolved, the mechanism, and each kernel object or
/// process the fault would attach, create or act on.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Plan {
    pub resolved: Option<Resolved>,
    pub backend: String,
    pub steps: Vec<PlanStep>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanStep {
    /// e.g. "attach cgroup_skb/egress program", "add fq qdisc", "start 2 cpu workers".
    pub action: String,
    /// e.g. "cgroup /x (id 1234)", "device eth0", "pids 12, 13".
    pub on: String,
}

impl PlanStep {
    pub fn new(action: impl Into<String>, on: impl Into<String>) -> Self {
        PlanStep { action: action.into(), on: on.into() }
    }
}

/// Which stop condition ended an aborted experiment, and what it saw.
#[derive(Clone, Debug, PartialEq)]
pub struct Abort {
    pub condition: String,
    pub value: String,
    pub at: SystemTime,
}

/// What the outside sees of one experiment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub id: String,
    pub spec: ExperimentSpec,
    pub state: State,
    pub reason: String,
    pub resolved: Option<Resolved>,
    pub backend: String,
    /// What the running fault could not do (FaultHandle::note); empty when nothing.
    pub note: String,
    pub created_at: SystemTime,
    pub started_at: Option<SystemTime>,
    pub deadline: Option<SystemTime>,
    pub ended_at: Option<SystemTime>,
    pub first_hit_at: Option<SystemTime>,
    pub counters: Counters,
    /// When the lease runs out unless renewed (with a lease only).
    pub lease_expires: Option<SystemTime>,
    /// Set when a stop condition ended it.
    pub abort: Option<Abort>,
    /// Active for its `expect_hit_within` without acting (cleared by a first hit).
    pub no_hit: bool,
    /// How many restarted containers it followed.
    pub followed: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    CgroupPath(String),
    Pid(u32),
    /// A device in the agent's own network namespace (netns empty), a named one
    /// (/run/netns/NAME) or one given by path (/proc/PID/ns/net).
    Interface {
        name: String,
        netns: String,
    },
    /// A container id or a unique prefix of one (lower-case hex).
    Container(String),
    /// A Kubernetes pod, or one container of it.
    Pod {
        pod: PodRef,
        container: Option<ContainerRef>,
    },
    /// The root cgroup: everything on the host. Only when the policy allows it.
    Host,
}

/// A pod as the API names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodRef {
    /// Canonical (lower case, with dashes).
    Uid(String),
    /// As `kubectl get pod -n NAMESPACE NAME` names it.
    Name { namespace: String, name: String },
}

/// A container of a pod as the API names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerRef {
    /// Its runtime id or a unique prefix of one (lower-case hex).
    Id(String),
    /// Its name in the pod spec.
    Name(String),
}

// Variant names mirror the API's Fault oneof (net_loss, ...); other families join later.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Debug, PartialEq)]
pub enum FaultSpec {
    NetLoss(NetLoss),
    /// Everything to and from matching peers, both directions.
    NetPartition(PacketFilter),
    NetReject(NetReject),
    NetDelay(NetDelay),
    NetBandwidth(NetBandwidth),
    NetCorrupt(NetMangle),
    NetDuplicate(NetMangle),
    NetDns(NetDns),
    SyscallErrno(SyscallErrno),
    SyscallDelay(SyscallDelay),
    CpuStress(CpuStress),
    MemoryStress(MemoryStress),
    DiskFill(DiskFill),
    IoStress(IoStress),
    ProcessKill(ProcessKill),
    /// Freeze every process of the target for the duration.
    ProcessPause,
    TimeSkew(TimeSkew),
}

/// The realtime clocks of the target's processes read `offset_ns` off.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeSkew {
    pub offset_ns: i64,
    /// Clock ids shifted (bit n: id n).
    pub clock_mask: u64,
    pub follow_children: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillMode {
    All,
    RandomOne,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ProcessKill {
    pub signal: i32,
    pub mode: KillMode,
    /// Repeat while the fault lasts; None: once.
    pub interval: Option<Duration>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    Write,
    Read,
    Mixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoAmount {
    /// As fast as it goes, until the end.
    Unlimited,
    Bytes(u64),
    RatePerSecond(u64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct IoStress {
    pub workers: u32,
    pub mode: IoMode,
    pub block_size: u64,
    pub direct: bool,
    /// None: /tmp of the target's root filesystem, chosen when applied.
    pub directory: Option<std::path::PathBuf>,
    pub amount: IoAmount,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CpuStress {
    /// None: as many as the CPUs the target may use.
    pub workers: Option<u32>,
    /// 1-100.
    pub load_percent: u32,
}

/// A size given in bytes or as a percent of something the driver measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Amount {
    Bytes(u64),
    Percent(f64),
}

#[derive(Clone, Debug, PartialEq)]
pub struct MemoryStress {
    /// Percent: of the cgroup's memory limit, or of host memory when it has none.
    pub size: Amount,
    pub workers: u32,
    pub ramp: std::time::Duration,
    pub oom_score_adj: Option<i32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct DiskFill {
    pub path: std::path::PathBuf,
    /// Percent: fill until the filesystem is that much used.
    pub amount: Amount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsAnswer {
    NxDomain,
    ServFail,
    /// No answer: the client times out.
    Drop,
}

/// A DNS name pattern, lower-case, without the trailing dot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamePattern {
    Exact(String),
    /// "*.example.com": any name under the domain (not the domain itself).
    Under(String),
    /// * (any run of characters, dots included) and ? (one character).
    Glob(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetDns {
    /// Which resolvers (remote CIDRs, ports; UDP).
    pub filter: PacketFilter,
    pub names: Vec<NamePattern>,
    pub answer: DnsAnswer,
    pub percent: f64,
}

/// Corrupt or duplicate: what a tc program does to a share of matching packets.
#[derive(Clone, Debug, PartialEq)]
pub struct NetMangle {
    pub filter: PacketFilter,
    pub percent: f64,
    pub seed: Option<u64>,
    pub devices: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Distribution {
    #[default]
    Uniform,
    Normal,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetDelay {
    pub filter: PacketFilter,
    pub latency: Duration,
    pub jitter: Duration,
    /// 0-100.
    pub correlation: f64,
    pub distribution: Distribution,
    pub percent: f64,
    pub seed: Option<u64>,
    pub devices: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetBandwidth {
    pub filter: PacketFilter,
    pub rate_bps: u64,
    pub burst_bytes: u64,
    pub devices: Vec<String>,
}

/// connect() to matching destinations fails with `errno`.
#[derive(Clone, Debug, PartialEq)]
pub struct NetReject {
    pub filter: PacketFilter,
    pub errno: i32,
    pub percent: f64,
}

/// System calls of the target fail with `errno`.
#[derive(Clone, Debug, PartialEq)]
pub struct SyscallErrno {
    /// As the request named them (validated), in order.
    pub syscalls: Vec<String>,
    pub errno: i32,
    /// Of matching calls; 100 when every_nth is set.
    pub percent: f64,
    pub every_nth: Option<u64>,
    pub max_hits: Option<u64>,
    /// Absolute, without a trailing slash (except "/").
    pub path_prefix: Option<String>,
    pub follow_children: bool,
    pub seed: Option<u64>,
}

/// Chosen calls of the target take `latency` (+- jitter) longer before their result reaches
/// the caller; only the calling thread waits.
#[derive(Clone, Debug, PartialEq)]
pub struct SyscallDelay {
    /// As the request named them (validated), in order.
    pub syscalls: Vec<String>,
    /// x86_64 numbers of `syscalls`, in the same order.
    pub numbers: Vec<u32>,
    pub latency: Duration,
    pub jitter: Duration,
    pub distribution: Distribution,
    /// Of matching calls; 100 when every_nth is set.
    pub percent: f64,
    pub every_nth: Option<u64>,
    pub max_hits: Option<u64>,
    /// Absolute, without a trailing slash (except "/").
    pub path_prefix: Option<String>,
    pub follow_children: bool,
    pub seed: Option<u64>,
}

impl FaultSpec {
    /// Whether the fault is expected to make its target go away (a killed container's cgroup
    /// is removed), so that is how it ends rather than a failure.
    pub fn ends_its_target(&self) -> bool {
        matches!(self, FaultSpec::ProcessKill(_))
    }

    /// Whether a pid target means that process alone (its system calls fail, it gets the
    /// signal) rather than the whole cgroup it sits in.
    pub fn acts_on_process(&self) -> bool {
        matches!(
            self,
            FaultSpec::SyscallErrno(_)
                | FaultSpec::SyscallDelay(_)
                | FaultSpec::ProcessKill(_)
                | FaultSpec::TimeSkew(_)
        )
    }

    /// Every kind's API name, as `kind` returns it.
    pub const KINDS: [&'static str; 17] = [
        "net_loss",
        "net_delay",
        "net_bandwidth",
        "net_reject",
        "net_partition",
        "net_corrupt",
        "net_duplicate",
        "net_dns",
        "process_kill",
        "process_pause",
        "syscall_errno",
        "syscall_delay",
        "cpu_stress",
        "memory_stress",
        "io_stress",
        "disk_fill",
        "time_skew",
    ];

    /// Whether its kernel deadline can be moved while it runs, which a lease needs
    /// (FaultHandle::extend): the rules of the packet and errno maps.
    pub fn takes_lease(&self) -> bool {
        matches!(
            self,
            FaultSpec::NetLoss(_)
                | FaultSpec::NetDelay(_)
                | FaultSpec::NetBandwidth(_)
                | FaultSpec::NetReject(_)
                | FaultSpec::NetPartition(_)
                | FaultSpec::NetCorrupt(_)
                | FaultSpec::NetDuplicate(_)
                | FaultSpec::SyscallErrno(_)
        )
    }

    /// The name of the fault as the API spells it (the Fault oneof field).
    pub fn kind(&self) -> &'static str {
        match self {
            FaultSpec::NetLoss(_) => "net_loss",
            FaultSpec::NetPartition(_) => "net_partition",
            FaultSpec::NetReject(_) => "net_reject",
            FaultSpec::NetDelay(_) => "net_delay",
            FaultSpec::NetBandwidth(_) => "net_bandwidth",
            FaultSpec::NetCorrupt(_) => "net_corrupt",
            FaultSpec::NetDuplicate(_) => "net_duplicate",
            FaultSpec::NetDns(_) => "net_dns",
            FaultSpec::SyscallErrno(_) => "syscall_errno",
            FaultSpec::SyscallDelay(_) => "syscall_delay",
            FaultSpec::CpuStress(_) => "cpu_stress",
            FaultSpec::MemoryStress(_) => "memory_stress",
            FaultSpec::DiskFill(_) => "disk_fill",
            FaultSpec::IoStress(_) => "io_stress",
            FaultSpec::ProcessKill(_) => "process_kill",
            FaultSpec::ProcessPause => "process_pause",
            FaultSpec::TimeSkew(_) => "time_skew",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Direction {
    Ingress,
    Egress,
    #[default]
    Both,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    #[default]
    Any,
    Tcp,
    Udp,
    Icmp,
}

/// An inclusive port range; `first <= last`, both non-zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct PacketFilter {
    pub direction: Direction,
    pub protocol: Protocol,
    pub remote: Vec<IpNet>,
    pub exclude: Vec<IpNet>,
    pub ports: Vec<PortRange>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LossModel {
    /// Each packet independently with `percent`.
    Random,
    /// Bursts with this mean length; `percent` is the long-run loss.
    GilbertElliott { burst: f64 },
    /// Exactly every Nth matching packet.
    EveryNth(u32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct NetLoss {
    pub filter: PacketFilter,
    /// 0 < percent <= 100 (unused for EveryNth).
    pub percent: f64,
    pub model: LossModel,
    pub seed: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Pending,
    Active,
    Expired,
    Cancelled,
    Failed,
    /// A stop condition held.
    Aborted,
}

/// What a target resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    Cgroup(ResolvedCgroup),
    Interface(ResolvedInterface),
}

impl Resolved {
    /// The cgroup of a fault that acts on tasks; an interface target is refused with `why`.
    pub fn cgroup(&self, why: &str) -> super::error::Result<&ResolvedCgroup> {
        match self {
            Resolved::Cgroup(cg) => Ok(cg),
            Resolved::Interface(_) => Err(super::error::Error::invalid("target", why)),
        }
    }

    /// "/a/b" for cgroups, "eth0@ns" for interfaces: for logs.
    pub fn describe(&self) -> String {
        match self {
            Resolved::Cgroup(c) => c.path.clone(),
            Resolved::Interface(i) if i.netns.is_empty() => i.name.clone(),
            Resolved::Interface(i) => format!("{}@{}", i.name, i.netns),
        }
    }
}

/// A network device, identified by namespace and index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedInterface {
    pub name: String,
    pub ifindex: i32,
    /// The namespace as the request named it ("" for the agent's own).
    pub netns: String,
    /// A path that opens the namespace.
    pub netns_path: std::path::PathBuf,
    pub netns_ino: u64,
    /// Bytes before the IP header on this device.
    pub l2_len: u32,
}

/// A target resolved to its cgroup v2 directory.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ResolvedCgroup {
    /// Relative to the cgroup2 mount, starting with "/".
    pub path: String,
    /// The cgroup id (inode number of the directory).
    pub id: u64,
    /// Depth below the root cgroup (the root is 0).
    pub level: u32,
    /// The cgroup2 mount point.
    pub mount: std::path::PathBuf,
    /// Set when the request named a process: faults that act per process (system calls)
    /// apply to it rather than to its whole cgroup.
    pub pid: Option<u32>,
    /// With `pid`: the process's start time (clock ticks after boot), so that a reused pid
    /// is told apart from the process that was targeted.
    pub pid_start: Option<u64>,
    /// For container and pod targets: the full container id and its runtime, the pod uid.
    pub container_id: Option<String>,
    pub runtime: Option<&'static str>,
    pub pod_uid: Option<String>,
    /// For a container of a pod: its name in the pod spec, when the kubelet's log links tell
    /// it (a restarted Kubernetes container has a new id; it is found again by this name).
    pub container_name: Option<String>,
}

impl ResolvedCgroup {
    pub fn fs_path(&self) -> std::path::PathBuf {
        self.mount.join(self.path.trim_start_matches('/'))
    }
}

/// Whether cgroup path `a` is a strict ancestor of `b` (both relative to the mount, "/"-led).
pub fn is_ancestor_path(a: &str, b: &str) -> bool {
    if a == "/" {
        return b != "/";
    }
    b.len() > a.len() && b.starts_with(a) && b.as_bytes()[a.len()] == b'/'
}

impl Counters {
    /// Whether the fault has acted at all (matching alone is not acting: a 0% rule matches).
    pub fn acted(&self) -> bool {
        [
            self.packets_dropped,
            self.packets_delayed,
            self.packets_corrupted,
            self.packets_duplicated,
            self.calls_failed,
            self.cpu_usage_usec,
            self.bytes_resident,
            self.bytes_filled,
            self.bytes_written,
            self.bytes_read,
            self.processes_signalled,
            self.processes_frozen,
            self.calls_delayed,
            self.delay_added_usec,
            self.skewed_reads,
        ]
        .iter()
        .any(|&v| v > 0)
    }
}

/// What the kernel counted for one experiment, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub packets_matched: u64,
    pub packets_dropped: u64,
    pub packets_delayed: u64,
    pub calls_seen: u64,
    pub calls_failed: u64,
    pub packets_corrupted: u64,
    pub packets_duplicated: u64,
    pub cpu_usage_usec: u64,
    pub bytes_resident: u64,
    pub bytes_filled: u64,
    pub bytes_written: u64,
    pub bytes_read: u64,
    pub processes_signalled: u64,
    pub processes_frozen: u64,
    pub calls_delayed: u64,
    pub delay_added_usec: u64,
    pub processes_skewed: u64,
    pub skewed_reads: u64,
    pub processes_unskewed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ancestor_paths() {
        assert!(is_ancestor_path("/", "/a"));
        assert!(is_ancestor_path("/a", "/a/b"));
        assert!(is_ancestor_path("/a", "/a/b/c"));
        assert!(!is_ancestor_path("/a", "/a"));
        assert!(!is_ancestor_path("/a", "/ab"));
        assert!(!is_ancestor_path("/a/b", "/a"));
        assert!(!is_ancestor_path("/", "/"));
    }
}
