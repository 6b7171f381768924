//! Domain to wire conversions.

use std::time::{Duration, SystemTime};

use faultline_proto::v1 as pb;

use crate::{
    caps::Capabilities,
    engine::model::{
        Amount, ContainerRef, Counters, Direction, Distribution, DnsAnswer, FaultSpec, IoAmount,
        IoMode, KillMode, LossModel, NamePattern, PacketFilter, Plan, PodRef, Protocol, Resolved,
        Resource, Snapshot, State, StopCondition, TargetSpec,
    },
};

/// A received timestamp as a time (None when absent or beyond what SystemTime holds).
pub fn system_time(t: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    let d = Duration::new(t?.seconds.max(0) as u64, t?.nanos.max(0) as u32);
    SystemTime::UNIX_EPOCH.checked_add(d)
}

pub fn timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

pub fn state(s: State) -> pb::State {
    match s {
        State::Pending => pb::State::Pending,
        State::Active => pb::State::Active,
        State::Expired => pb::State::Expired,
        State::Cancelled => pb::State::Cancelled,
        State::Failed => pb::State::Failed,
        State::Aborted => pb::State::Aborted,
    }
}

fn target(t: &TargetSpec) -> pb::Target {
    let kind = match t {
        TargetSpec::CgroupPath(p) => pb::target::Kind::CgroupPath(p.clone()),
        TargetSpec::Pid(p) => pb::target::Kind::Pid(*p),
        TargetSpec::Interface { name, netns } => {
            pb::target::Kind::Interface(pb::NetworkInterface {
                name: name.clone(),
                netns: netns.clone(),
            })
        }
        TargetSpec::Container(id) => pb::target::Kind::ContainerId(id.clone()),
        TargetSpec::Pod { pod, container } => {
            let mut p = pb::Pod::default();
            match pod {
                PodRef::Uid(uid) => p.uid = uid.clone(),
                PodRef::Name { namespace, name } => {
                    (p.namespace, p.name) = (namespace.clone(), name.clone());
                }
            }
            match container {
                Some(ContainerRef::Id(id)) => p.container_id = id.clone(),
                Some(ContainerRef::Name(name)) => p.container_name = name.clone(),
                None => {}
            }
            pb::target::Kind::Pod(p)
        }
        TargetSpec::Host => pb::target::Kind::Host(true),
    };
    pb::Target { kind: Some(kind) }
}

fn filter(f: &PacketFilter) -> pb::PacketFilter {
    pb::PacketFilter {
        direction: match f.direction {
            Direction::Ingress => pb::Direction::Ingress,
            Direction::Egress => pb::Direction::Egress,
            Direction::Both => pb::Direction::Both,
        } as i32,
        protocol: match f.protocol {
            Protocol::Any => pb::Protocol::Unspecified,
            Protocol::Tcp => pb::Protocol::Tcp,
            Protocol::Udp => pb::Protocol::Udp,
            Protocol::Icmp => pb::Protocol::Icmp,
        } as i32,
        remote_cidrs: f.remote.iter().map(ToString::to_string).collect(),
        exclude_cidrs: f.exclude.iter().map(ToString::to_string).collect(),
        remote_ports: f
            .ports
            .iter()
            .map(|p| pb::PortRange { first: p.first.into(), last: p.last.into() })
            .collect(),
    }
}

fn fault(f: &FaultSpec) -> pb::Fault {
    let kind = match f {
        FaultSpec::NetLoss(l) => pb::fault::Kind::NetLoss(pb::NetLoss {
            filter: Some(filter(&l.filter)),
            percent: if matches!(l.model, LossModel::EveryNth(_)) { 0.0 } else { l.percent },
            burst_length: match l.model {
                LossModel::GilbertElliott { burst } => burst,
                _ => 0.0,
            },
            every_nth: match l.model {
                LossModel::EveryNth(n) => n,
                _ => 0,
            },
            seed: l.seed,
        }),
        FaultSpec::NetPartition(f) => {
            pb::fault::Kind::NetPartition(pb::NetPartition { filter: Some(filter(f)) })
        }
        FaultSpec::NetDelay(d) => pb::fault::Kind::NetDelay(pb::NetDelay {
            filter: Some(filter(&d.filter)),
            latency: Some(duration(d.latency)),
            jitter: Some(duration(d.jitter)),
            correlation: d.correlation,
            distribution: match d.distribution {
                Distribution::Uniform => pb::Distribution::Uniform,
                Distribution::Normal => pb::Distribution::Normal,
            } as i32,
            percent: Some(d.percent),
            seed: d.seed,
            devices: d.devices.clone(),
        }),
        FaultSpec::NetBandwidth(b) => pb::fault::Kind::NetBandwidth(pb::NetBandwidth {
            filter: Some(filter(&b.filter)),
            rate_bps: b.rate_bps,
            burst_bytes: b.burst_bytes,
            devices: b.devices.clone(),
        }),
        FaultSpec::NetCorrupt(m) => pb::fault::Kind::NetCorrupt(pb::NetCorrupt {
            filter: Some(filter(&m.filter)),
            percent: m.percent,
            seed: m.seed,
            devices: m.devices.clone(),
        }),
        FaultSpec::NetDuplicate(m) => pb::fault::Kind::NetDuplicate(pb::NetDuplicate {
            filter: Some(filter(&m.filter)),
            percent: m.percent,
            devices: m.devices.clone(),
        }),
        FaultSpec::NetDns(d) => pb::fault::Kind::NetDns(pb::NetDns {
            names: d
                .names
                .iter()
                .map(|n| match n {
                    NamePattern::Exact(e) | NamePattern::Glob(e) => e.clone(),
                    NamePattern::Under(u) => format!("*.{u}"),
                })
                .collect(),
            answer: match d.answer {
                DnsAnswer::NxDomain => pb::DnsAnswer::Nxdomain,
                DnsAnswer::ServFail => pb::DnsAnswer::Servfail,
                DnsAnswer::Drop => pb::DnsAnswer::Drop,
            } as i32,
            percent: Some(d.percent),
            filter: Some(filter(&d.filter)),
        }),
        FaultSpec::NetReject(r) => pb::fault::Kind::NetReject(pb::NetReject {
            filter: Some(filter(&r.filter)),
            errno: crate::errno::name(r.errno),
            percent: Some(r.percent),
        }),
        FaultSpec::SyscallErrno(s) => pb::fault::Kind::SyscallErrno(pb::SyscallErrno {
            syscalls: s.syscalls.clone(),
            errno: crate::errno::name(s.errno),
            percent: s.every_nth.is_none().then_some(s.percent),
            every_nth: s.every_nth,
            max_hits: s.max_hits,
            path_prefix: s.path_prefix.clone().unwrap_or_default(),
            follow_children: s.follow_children,
            seed: s.seed,
        }),
        FaultSpec::SyscallDelay(s) => pb::fault::Kind::SyscallDelay(pb::SyscallDelay {
            syscalls: s.syscalls.clone(),
            latency: Some(duration(s.latency)),
            jitter: Some(duration(s.jitter)),
            distribution: match s.distribution {
                Distribution::Uniform => pb::Distribution::Uniform,
                Distribution::Normal => pb::Distribution::Normal,
            } as i32,
            percent: s.every_nth.is_none().then_some(s.percent),
            every_nth: s.every_nth,
            max_hits: s.max_hits,
            path_prefix: s.path_prefix.clone().unwrap_or_default(),
            follow_children: s.follow_children,
            seed: s.seed,
        }),
        FaultSpec::CpuStress(c) => pb::fault::Kind::CpuStress(pb::CpuStress {
            workers: c.workers.unwrap_or(0),
            load_percent: c.load_percent,
        }),
        FaultSpec::MemoryStress(m) => pb::fault::Kind::MemoryStress(pb::MemoryStress {
            size: Some(match m.size {
                Amount::Bytes(b) => pb::memory_stress::Size::Bytes(b),
                Amount::Percent(p) => pb::memory_stress::Size::Percent(p),
            }),
            workers: m.workers,
            ramp: (!m.ramp.is_zero()).then(|| duration(m.ramp)),
            oom_score_adj: m.oom_score_adj,
        }),
        FaultSpec::IoStress(s) => pb::fault::Kind::IoStress(pb::IoStress {
            workers: s.workers,
            mode: match s.mode {
                IoMode::Write => pb::IoMode::Write,
                IoMode::Read => pb::IoMode::Read,
                IoMode::Mixed => pb::IoMode::Mixed,
            } as i32,
            block_size: s.block_size,
            direct: s.direct,
            directory: s.directory.as_ref().map(|d| d.display().to_string()).unwrap_or_default(),
            amount: match s.amount {
                IoAmount::Unlimited => None,
                IoAmount::Bytes(b) => Some(pb::io_stress::Amount::Bytes(b)),
                IoAmount::RatePerSecond(r) => Some(pb::io_stress::Amount::RateBytesPerSecond(r)),
            },
        }),
        FaultSpec::DiskFill(d) => pb::fault::Kind::DiskFill(pb::DiskFill {
            path: d.path.display().to_string(),
            amount: Some(match d.amount {
                Amount::Bytes(b) => pb::disk_fill::Amount::Bytes(b),
                Amount::Percent(p) => pb::disk_fill::Amount::Percent(p),
            }),
        }),
        FaultSpec::ProcessKill(k) => pb::fault::Kind::ProcessKill(pb::ProcessKill {
            signal: crate::wire::validate_process::signal_name(k.signal),
            mode: match k.mode {
                KillMode::All => pb::KillMode::All,
                KillMode::RandomOne => pb::KillMode::RandomOne,
            } as i32,
            interval: k.interval.map(duration),
        }),
        FaultSpec::ProcessPause => pb::fault::Kind::ProcessPause(pb::ProcessPause {}),
        FaultSpec::TimeSkew(t) => pb::fault::Kind::TimeSkew(pb::TimeSkew {
            offset: Some(prost_types::Duration {
                seconds: t.offset_ns / 1_000_000_000,
                nanos: (t.offset_ns % 1_000_000_000) as i32,
            }),
            clocks: vec!["realtime".into()],
            follow_children: t.follow_children,
        }),
    };
    pb::Fault { kind: Some(kind) }
}

pub fn plan(p: &Plan) -> pb::Plan {
    pb::Plan {
        resolved_target: p.resolved.as_ref().map(resolved_target),
        backend: p.backend.clone(),
        steps: p
            .steps
            .iter()
            .map(|s| pb::PlanStep { action: s.action.clone(), on: s.on.clone() })
            .collect(),
    }
}

pub fn resolved_target(r: &Resolved) -> pb::ResolvedTarget {
    match r {
        Resolved::Cgroup(c) => pb::ResolvedTarget {
            cgroup_path: c.path.clone(),
            cgroup_id: c.id,
            cgroup_mount: c.mount.display().to_string(),
            container_id: c.container_id.clone().unwrap_or_default(),
            runtime: c.runtime.unwrap_or_default().to_string(),
            pod_uid: c.pod_uid.clone().unwrap_or_default(),
            container_name: c.container_name.clone().unwrap_or_default(),
            ..Default::default()
        },
        Resolved::Interface(i) => pb::ResolvedTarget {
            interface: i.name.clone(),
            ifindex: i.ifindex,
            netns: i.netns.clone(),
            ..Default::default()
        },
    }
}

pub fn experiment(s: &Snapshot) -> pb::Experiment {
    pb::Experiment {
        id: s.id.clone(),
        target: Some(target(&s.spec.target)),
        fault: Some(fault(&s.spec.fault)),
        duration: Some(duration(s.spec.duration)),
        labels: s.spec.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        state: state(s.state) as i32,
        reason: s.reason.clone(),
        resolved_target: s.resolved.as_ref().map(resolved_target),
        backend: s.backend.clone(),
        note: s.note.clone(),
        created_at: Some(timestamp(s.created_at)),
        started_at: s.started_at.map(timestamp),
        deadline: s.deadline.map(timestamp),
        ended_at: s.ended_at.map(timestamp),
        first_hit_at: s.first_hit_at.map(timestamp),
        counters: Some(counters(&s.counters)),
        lease: s.spec.lease.map(duration),
        lease_expires_at: s.lease_expires.map(timestamp),
        stop_conditions: s.spec.stop.iter().map(stop_condition).collect(),
        abort: s.abort.as_ref().map(|a| pb::Abort {
            condition: a.condition.clone(),
            value: a.value.clone(),
            at: Some(timestamp(a.at)),
        }),
        expect_hit_within: Some(duration(s.spec.expect_hit_within)),
        no_hit: s.no_hit,
        follow: s.spec.follow,
        followed: s.followed,
    }
}

pub fn stop_condition(c: &StopCondition) -> pb::StopCondition {
    use pb::stop_condition::Condition;
    let condition = match c {
        StopCondition::Pressure { resource, above_percent } => Condition::Pressure(pb::Pressure {
            resource: match resource {
                Resource::Cpu => pb::Resource::Cpu,
                Resource::Memory => pb::Resource::Memory,
                Resource::Io => pb::Resource::Io,
            } as i32,
            above_percent: *above_percent,
        }),
        StopCondition::OomKill => Condition::OomKill(pb::OomKill {}),
        StopCondition::NoProcesses => Condition::NoProcesses(pb::NoProcesses {}),
        StopCondition::Http { url, timeout, failures } => Condition::Http(pb::HttpProbe {
            url: url.clone(),
            timeout: Some(duration(*timeout)),
            failures: *failures,
        }),
    };
    pb::StopCondition { condition: Some(condition) }
}

pub fn counters(c: &Counters) -> pb::Counters {
    pb::Counters {
        packets_matched: c.packets_matched,
        packets_dropped: c.packets_dropped,
        packets_delayed: c.packets_delayed,
        calls_seen: c.calls_seen,
        calls_failed: c.calls_failed,
        packets_corrupted: c.packets_corrupted,
        packets_duplicated: c.packets_duplicated,
        cpu_usage_usec: c.cpu_usage_usec,
        bytes_resident: c.bytes_resident,
        bytes_filled: c.bytes_filled,
        bytes_written: c.bytes_written,
        bytes_read: c.bytes_read,
        processes_signalled: c.processes_signalled,
        processes_frozen: c.processes_frozen,
        calls_delayed: c.calls_delayed,
        delay_added_usec: c.delay_added_usec,
        processes_skewed: c.processes_skewed,
        skewed_reads: c.skewed_reads,
        processes_unskewed: c.processes_unskewed,
    }
}

/// The counters a client received, as the core's declarations (crate::counters) read them.
pub fn counters_from_pb(c: &pb::Counters) -> Counters {
    Counters {
        packets_matched: c.packets_matched,
        packets_dropped: c.packets_dropped,
        packets_delayed: c.packets_delayed,
        calls_seen: c.calls_seen,
        calls_failed: c.calls_failed,
        packets_corrupted: c.packets_corrupted,
        packets_duplicated: c.packets_duplicated,
        cpu_usage_usec: c.cpu_usage_usec,
        bytes_resident: c.bytes_resident,
        bytes_filled: c.bytes_filled,
        bytes_written: c.bytes_written,
        bytes_read: c.bytes_read,
        processes_signalled: c.processes_signalled,
        processes_frozen: c.processes_frozen,
        calls_delayed: c.calls_delayed,
        delay_added_usec: c.delay_added_usec,
        processes_skewed: c.processes_skewed,
        skewed_reads: c.skewed_reads,
        processes_unskewed: c.processes_unskewed,
    }
}

/// A received fault's kind by its API name (`FaultSpec::kind` of the same fault).
pub fn fault_kind(f: Option<&pb::Fault>) -> Option<&'static str> {
    use pb::fault::Kind;
    Some(match f?.kind.as_ref()? {
        Kind::NetLoss(_) => "net_loss",
        Kind::NetPartition(_) => "net_partition",
        Kind::NetReject(_) => "net_reject",
        Kind::NetDelay(_) => "net_delay",
        Kind::NetBandwidth(_) => "net_bandwidth",
        Kind::NetCorrupt(_) => "net_corrupt",
        Kind::NetDuplicate(_) => "net_duplicate",
        Kind::NetDns(_) => "net_dns",
        Kind::SyscallErrno(_) => "syscall_errno",
        Kind::SyscallDelay(_) => "syscall_delay",
        Kind::CpuStress(_) => "cpu_stress",
        Kind::MemoryStress(_) => "memory_stress",
        Kind::DiskFill(_) => "disk_fill",
        Kind::IoStress(_) => "io_stress",
        Kind::ProcessKill(_) => "process_kill",
        Kind::ProcessPause(_) => "process_pause",
        Kind::TimeSkew(_) => "time_skew",
    })
}

pub fn capabilities(c: &Capabilities) -> pb::CapabilitiesResponse {
    pb::CapabilitiesResponse {
        agent_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: c.kernel_release.clone(),
        cgroup2_mount: c.cgroup2_mount.clone(),
        btf: c.btf,
        probes: c
            .probes
            .iter()
            .map(|p| pb::Probe {
                name: p.name.into(),
                supported: p.supported,
                detail: p.detail.clone(),
            })
            .collect(),
        faults: c
            .faults
            .iter()
            .map(|f| pb::FaultSupport {
                fault: f.fault.into(),
                supported: f.supported,
                backend: f.backend.into(),
                reason: f.reason.clone(),
            })
            .collect(),
    }
}
