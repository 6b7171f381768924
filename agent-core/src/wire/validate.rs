//! Request validation: wire messages to domain specs. Every refusal names the field path and
//! what is allowed, and nothing is applied before validation passes.

use std::{collections::BTreeMap, time::Duration};

use faultline_proto::v1 as pb;

use super::fields::proto_duration;
pub use super::fields::{MAX_CIDRS, errno, percent};
use super::validate_drill as drill;
use super::validate_net as net;
pub use super::validate_net::{
    MAX_BURST_BYTES, MAX_DELAY, MAX_DNS_NAMES, MAX_RATE_BPS, MIN_RATE_BPS, filter, parse_cidr,
};
use crate::engine::{
    error::{Error, Result},
    model::{ContainerRef, Direction, ExperimentSpec, FaultSpec, PodRef, State, TargetSpec},
};
use crate::units::human_duration;

pub const MAX_LABELS: usize = 32;

#[derive(Clone, Debug)]
pub struct Limits {
    /// A bound on what a duration can mean at all (7 days).
    pub max_duration: Duration,
    /// The policy's max_duration, the operator's limit (usually below the bound): a longer
    /// duration is refused by the policy (PermissionDenied), and a refusal of a missing or
    /// zero duration names the lower of the two.
    pub policy_max_duration: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_duration: Duration::from_secs(7 * 24 * 3600), policy_max_duration: None }
    }
}

impl Limits {
    /// The longest duration allowed, and the rule it comes from.
    pub fn effective_max_duration(&self) -> (Duration, &'static str) {
        match self.policy_max_duration {
            Some(p) if p < self.max_duration => (p, "the policy's max_duration"),
            _ => (self.max_duration, "the agent's limit"),
        }
    }
}

pub fn inject(req: &pb::InjectRequest, limits: &Limits) -> Result<ExperimentSpec> {
    let target = target(req.target.as_ref())?;
    let fault = fault(req.fault.as_ref())?;
    if matches!(target, TargetSpec::Interface { .. }) && !on_devices(&fault) {
        return Err(Error::invalid(
            "target.interface",
            format!(
                "{} needs a cgroup or pid target (it acts on processes, not on a device's packets)",
                fault.kind()
            ),
        ));
    }
    if target == TargetSpec::Host
        && matches!(
            fault,
            FaultSpec::SyscallErrno(_)
                | FaultSpec::SyscallDelay(_)
                | FaultSpec::ProcessKill(_)
                | FaultSpec::ProcessPause
                | FaultSpec::TimeSkew(_)
        )
    {
        return Err(Error::invalid(
            "target.host",
            format!(
                "{} host-wide would reach the agent and the node's own services: name a cgroup, \
                 container or pod",
                fault.kind()
            ),
        ));
    }
    net::mangle_direction(&fault, &target)?;
    if matches!(target, TargetSpec::Pid(_)) && fault == FaultSpec::ProcessPause {
        return Err(Error::invalid(
            "target.pid",
            "process_pause freezes a whole cgroup, and a pid's cgroup may hold other processes: \
             target its cgroup, container or pod",
        ));
    }
    let follow = match &fault {
        FaultSpec::SyscallErrno(s) => s.follow_children,
        FaultSpec::SyscallDelay(s) => s.follow_children,
        _ => false,
    };
    if follow && !matches!(target, TargetSpec::Pid(_)) {
        return Err(Error::invalid(
            format!("fault.{}.follow_children", fault.kind()),
            "applies to pid targets only (a cgroup target already covers every process in it)",
        ));
    }
    let duration = duration(req.duration.as_ref(), limits)?;
    let labels = labels(&req.labels)?;
    let lease = lease(req.lease.as_ref(), &fault)?;
    let stop = drill::stop_conditions(&req.stop_conditions)?;
    let expect_hit_within = drill::expect_hit_within(req.expect_hit_within.as_ref())?;
    let follow = drill::follow(req.follow, &target)?;
    Ok(ExperimentSpec { target, fault, duration, labels, lease, stop, expect_hit_within, follow })
}

fn target(t: Option<&pb::Target>) -> Result<TargetSpec> {
    match t.and_then(|t| t.kind.as_ref()) {
        None => Err(Error::invalid(
            "target",
            "required: one of cgroup_path, pid, container_id, pod, host, interface",
        )),
        Some(pb::target::Kind::Interface(i)) => {
            Ok(TargetSpec::Interface { name: i.name.clone(), netns: i.netns.clone() })
        }
        Some(pb::target::Kind::CgroupPath(p)) if p.trim().is_empty() => {
            Err(Error::invalid("target.cgroup_path", "must not be empty"))
        }
        Some(pb::target::Kind::CgroupPath(p)) if p.contains('\0') => {
            Err(Error::invalid("target.cgroup_path", "must not contain a NUL byte"))
        }
        Some(pb::target::Kind::CgroupPath(p)) => Ok(TargetSpec::CgroupPath(p.clone())),
        Some(pb::target::Kind::Pid(0)) => Err(Error::invalid("target.pid", "must be > 0")),
        Some(pb::target::Kind::Pid(p)) => Ok(TargetSpec::Pid(*p)),
        Some(pb::target::Kind::ContainerId(c)) => {
            Ok(TargetSpec::Container(container_id(c, "target.container_id")?))
        }
        Some(pb::target::Kind::Pod(p)) => pod(p),
        Some(pb::target::Kind::Host(true)) => Ok(TargetSpec::Host),
        Some(pb::target::Kind::Host(false)) => {
            Err(Error::invalid("target.host", "must be true when set"))
        }
    }
}

/// A pod by uid, or by namespace and name; optionally one container by id or by name.
fn pod(p: &pb::Pod) -> Result<TargetSpec> {
    let by_name = !p.namespace.is_empty() || !p.name.is_empty();
    let pod = match (p.uid.is_empty(), by_name) {
        (false, true) => {
            return Err(Error::invalid("target.pod", "uid, or namespace and name: not both"));
        }
        (true, false) => {
            return Err(Error::invalid("target.pod", "required: uid, or namespace and name"));
        }
        (false, false) => {
            PodRef::Uid(crate::targets::runtime::normalize_uid(&p.uid).ok_or_else(|| {
                Error::invalid(
                    "target.pod.uid",
                    format!("{:?} is not a pod uid (8-4-4-4-12 hex digits)", p.uid),
                )
            })?)
        }
        (true, true) => PodRef::Name {
            namespace: k8s_name(&p.namespace, "target.pod.namespace", 63)?,
            name: k8s_name(&p.name, "target.pod.name", 253)?,
        },
    };
    let container = match (p.container_id.is_empty(), p.container_name.is_empty()) {
        (true, true) => None,
        (false, true) => {
            Some(ContainerRef::Id(container_id(&p.container_id, "target.pod.container_id")?))
        }
        (true, false) => {
            Some(ContainerRef::Name(k8s_name(&p.container_name, "target.pod.container_name", 63)?))
        }
        (false, false) => {
            return Err(Error::invalid("target.pod", "container_id or container_name: not both"));
        }
    };
    Ok(TargetSpec::Pod { pod, container })
}

/// A Kubernetes object name (DNS subdomain, or a DNS label when `max` is 63): 1-`max`
/// lower-case letters, digits, '-' and '.', starting and ending with a letter or digit.
fn k8s_name(raw: &str, field: &str, max: usize) -> Result<String> {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = raw.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= max
        && b.iter().all(|&c| alnum(c) || c == b'-' || (c == b'.' && max > 63))
        && alnum(b[0])
        && alnum(b[b.len() - 1]);
    if ok {
        Ok(raw.to_string())
    } else {
        let chars = if max > 63 { "'-' and '.'" } else { "'-'" };
        Err(Error::invalid(
            field,
            format!(
                "{raw:?} is not a Kubernetes name: 1-{max} lower-case letters, digits and \
                 {chars}, starting and ending with a letter or digit"
            ),
        ))
    }
}

/// A container id or prefix: 4-64 hex digits, as `docker ps` or `crictl ps` show it, or as a
/// pod's status reports it ("containerd://<id>").
fn container_id(raw: &str, field: &str) -> Result<String> {
    let id = raw.rsplit("://").next().unwrap_or(raw).trim().to_ascii_lowercase();
    if !(4..=64).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::invalid(
            field,
            format!("{raw:?} is not a container id: 4-64 hex digits (a unique prefix will do)"),
        ));
    }
    Ok(id)
}

fn fault(f: Option<&pb::Fault>) -> Result<FaultSpec> {
    match f.and_then(|f| f.kind.as_ref()) {
        None => Err(Error::invalid(
            "fault",
            format!("required: one of {}", FaultSpec::KINDS.join(", ")),
        )),
        Some(pb::fault::Kind::NetLoss(l)) => {
            Ok(FaultSpec::NetLoss(net::net_loss(l, "fault.net_loss")?))
        }
        Some(pb::fault::Kind::NetPartition(p)) => {
            let mut f = net::filter(p.filter.as_ref(), "fault.net_partition.filter")?;
            f.direction = Direction::Both;
            Ok(FaultSpec::NetPartition(f))
        }
        Some(pb::fault::Kind::NetReject(r)) => {
            Ok(FaultSpec::NetReject(net::net_reject(r, "fault.net_reject")?))
        }
        Some(pb::fault::Kind::NetDelay(d)) => {
            Ok(FaultSpec::NetDelay(net::net_delay(d, "fault.net_delay")?))
        }
        Some(pb::fault::Kind::NetBandwidth(b)) => {
            Ok(FaultSpec::NetBandwidth(net::net_bandwidth(b, "fault.net_bandwidth")?))
        }
        Some(pb::fault::Kind::NetCorrupt(c)) => Ok(FaultSpec::NetCorrupt(net::mangle(
            c.filter.as_ref(),
            c.percent,
            c.seed,
            &c.devices,
            "fault.net_corrupt",
        )?)),
        Some(pb::fault::Kind::NetDns(d)) => {
            Ok(FaultSpec::NetDns(net::net_dns(d, "fault.net_dns")?))
        }
        Some(pb::fault::Kind::SyscallErrno(s)) => Ok(FaultSpec::SyscallErrno(
            super::validate_sys::syscall_errno(s, "fault.syscall_errno")?,
        )),
        Some(pb::fault::Kind::SyscallDelay(s)) => Ok(FaultSpec::SyscallDelay(
            super::validate_sys::syscall_delay(s, "fault.syscall_delay")?,
        )),
        Some(pb::fault::Kind::CpuStress(c)) => {
            Ok(FaultSpec::CpuStress(super::validate_stress::cpu(c, "fault.cpu_stress")?))
        }
        Some(pb::fault::Kind::MemoryStress(m)) => {
            Ok(FaultSpec::MemoryStress(super::validate_stress::memory(m, "fault.memory_stress")?))
        }
        Some(pb::fault::Kind::IoStress(s)) => {
            Ok(FaultSpec::IoStress(super::validate_stress::io(s, "fault.io_stress")?))
        }
        Some(pb::fault::Kind::DiskFill(d)) => {
            Ok(FaultSpec::DiskFill(super::validate_stress::disk_fill(d, "fault.disk_fill")?))
        }
        Some(pb::fault::Kind::ProcessKill(k)) => {
            Ok(FaultSpec::ProcessKill(super::validate_process::kill(k, "fault.process_kill")?))
        }
        Some(pb::fault::Kind::ProcessPause(_)) => Ok(FaultSpec::ProcessPause),
        Some(pb::fault::Kind::TimeSkew(t)) => {
            Ok(FaultSpec::TimeSkew(super::validate_time::time_skew(t, "fault.time_skew")?))
        }
        Some(pb::fault::Kind::NetDuplicate(d)) => Ok(FaultSpec::NetDuplicate(net::mangle(
            d.filter.as_ref(),
            d.percent,
            None,
            &d.devices,
            "fault.net_duplicate",
        )?)),
    }
}

/// Faults that act on packets, so a device can be their target.
fn on_devices(f: &FaultSpec) -> bool {
    !matches!(
        f,
        FaultSpec::NetReject(_)
            | FaultSpec::NetDns(_)
            | FaultSpec::SyscallErrno(_)
            | FaultSpec::SyscallDelay(_)
            | FaultSpec::CpuStress(_)
            | FaultSpec::MemoryStress(_)
            | FaultSpec::DiskFill(_)
            | FaultSpec::IoStress(_)
            | FaultSpec::ProcessKill(_)
            | FaultSpec::ProcessPause
            | FaultSpec::TimeSkew(_)
    )
}

/// Longer than the policy's max_duration (but within the agent's limit) passes here: the
/// policy refuses it, naming its rule.
fn duration(d: Option<&prost_types::Duration>, limits: &Limits) -> Result<Duration> {
    let (max, rule) = limits.effective_max_duration();
    let allowed = format!("> 0 and at most {} ({rule})", human_duration(max));
    let Some(d) = d else {
        return Err(Error::invalid("duration", format!("required: {allowed}")));
    };
    if d.seconds < 0 || d.nanos < 0 || (d.seconds == 0 && d.nanos == 0) {
        return Err(Error::invalid(
            "duration",
            format!("must be {allowed}, got {}", crate::units::format_proto_duration(d)),
        ));
    }
    let dur = proto_duration(d, "duration")?;
    if dur > limits.max_duration {
        return Err(Error::invalid(
            "duration",
            format!("must be {allowed}, got {}", human_duration(dur)),
        ));
    }
    Ok(dur)
}

/// The lease: 1 s to 1 h, on a fault whose kernel deadline can follow it.
fn lease(d: Option<&prost_types::Duration>, fault: &FaultSpec) -> Result<Option<Duration>> {
    let Some(d) = d else { return Ok(None) };
    let lease = proto_duration(d, "lease")?;
    if !(Duration::from_secs(1)..=Duration::from_secs(3600)).contains(&lease) {
        return Err(Error::invalid(
            "lease",
            format!("must be 1s to 1h, got {}", human_duration(lease)),
        ));
    }
    if !fault.takes_lease() {
        return Err(Error::invalid(
            "lease",
            format!(
                "{} takes no lease: network faults (but net_dns) and syscall_errno do, whose \
                 kernel deadline can follow it",
                fault.kind()
            ),
        ));
    }
    Ok(Some(lease))
}

fn labels(l: &std::collections::HashMap<String, String>) -> Result<BTreeMap<String, String>> {
    if l.len() > MAX_LABELS {
        return Err(Error::invalid(
            "labels",
            format!("at most {MAX_LABELS} labels, got {}", l.len()),
        ));
    }
    for (k, v) in l {
        if k.is_empty() || k.len() > 128 {
            return Err(Error::invalid("labels", format!("keys must be 1-128 bytes, got {k:?}")));
        }
        if v.len() > 256 {
            return Err(Error::invalid(format!("labels[{k}]"), "values must be at most 256 bytes"));
        }
    }
    Ok(l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

pub fn state(s: i32, field: &str) -> Result<State> {
    match pb::State::try_from(s) {
        Ok(pb::State::Pending) => Ok(State::Pending),
        Ok(pb::State::Active) => Ok(State::Active),
        Ok(pb::State::Expired) => Ok(State::Expired),
        Ok(pb::State::Cancelled) => Ok(State::Cancelled),
        Ok(pb::State::Failed) => Ok(State::Failed),
        Ok(pb::State::Aborted) => Ok(State::Aborted),
        _ => Err(Error::invalid(
            field,
            format!("must be PENDING, ACTIVE, EXPIRED, CANCELLED, FAILED or ABORTED, got {s}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::{LossModel, PortRange};

    const UID: &str = "6f1b5c2e-0d3a-4a8e-9a55-2f0c9a1b7e11";

    fn req(percent: f64) -> pb::InjectRequest {
        pb::InjectRequest {
            target: Some(pb::Target { kind: Some(pb::target::Kind::CgroupPath("/x".into())) }),
            fault: Some(pb::Fault {
                kind: Some(pb::fault::Kind::NetLoss(pb::NetLoss { percent, ..Default::default() })),
            }),
            duration: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
            labels: Default::default(),
            lease: None,
            ..Default::default()
        }
    }

    fn field_of(r: Result<ExperimentSpec>) -> String {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    fn with_filter(f: pb::PacketFilter) -> pb::InjectRequest {
        let mut r = req(10.0);
        if let Some(pb::fault::Kind::NetLoss(l)) = r.fault.as_mut().and_then(|f| f.kind.as_mut()) {
            l.filter = Some(f);
        }
        r
    }

    #[test]
    fn pods_by_uid_or_by_namespace_and_name() {
        let with_pod = |p: pb::Pod| {
            let mut r = req(10.0);
            r.target = Some(pb::Target { kind: Some(pb::target::Kind::Pod(p)) });
            inject(&r, &Limits::default())
        };
        let named = |ns: &str, name: &str, container: &str| pb::Pod {
            namespace: ns.into(),
            name: name.into(),
            container_name: container.into(),
            ..Default::default()
        };
        let s = with_pod(named("shop", "checkout-7d9.a", "app")).unwrap();
        assert_eq!(
            s.target,
            TargetSpec::Pod {
                pod: PodRef::Name { namespace: "shop".into(), name: "checkout-7d9.a".into() },
                container: Some(ContainerRef::Name("app".into())),
            }
        );
        for (bad, field) in [
            (named("shop", "", ""), "target.pod.name"),
            (named("", "checkout", ""), "target.pod.namespace"),
            (named("Shop", "checkout", ""), "target.pod.namespace"),
            (named("sh.op", "checkout", ""), "target.pod.namespace"),
            (named("shop", "checkout-", ""), "target.pod.name"),
            (named("shop", "checkout", "app_1"), "target.pod.container_name"),
            (named("shop", &"a".repeat(254), ""), "target.pod.name"),
            (pb::Pod { uid: UID.into(), ..named("shop", "checkout", "") }, "target.pod"),
            (
                pb::Pod { container_id: "abcd".into(), ..named("shop", "checkout", "app") },
                "target.pod",
            ),
            (pb::Pod::default(), "target.pod"),
        ] {
            assert_eq!(field_of(with_pod(bad.clone())), field, "{bad:?}");
        }
    }

    #[test]
    fn accepts_a_plain_request() {
        let s = inject(&req(30.5), &Limits::default()).unwrap();
        assert_eq!(s.duration, Duration::from_secs(30));
        let FaultSpec::NetLoss(l) = s.fault else { panic!() };
        assert_eq!(l.percent, 30.5);
        assert_eq!(l.model, LossModel::Random);
        assert_eq!(l.filter.direction, Direction::Both);
    }

    #[test]
    fn percent_bounds() {
        let l = Limits::default();
        for p in [0.0, -1.0, 100.01, f64::NAN, f64::INFINITY] {
            assert_eq!(field_of(inject(&req(p), &l)), "fault.net_loss.percent", "{p}");
        }
        assert!(inject(&req(100.0), &l).is_ok());
        assert!(inject(&req(0.001), &l).is_ok());
    }

    #[test]
    fn unnormalised_durations_are_refused_by_field() {
        let l = Limits { max_duration: Duration::from_secs(60), ..Limits::default() };
        let mut r = req(30.0);
        r.duration = Some(prost_types::Duration { seconds: 1, nanos: 1_000_000_000 });
        let e = inject(&r, &l).unwrap_err().to_string();
        assert!(e.contains("duration.nanos") && e.contains("0..=999999999"), "{e}");
        r.duration = Some(prost_types::Duration { seconds: 1, nanos: 999_999_999 });
        assert!(inject(&r, &l).is_ok());
    }

    #[test]
    fn nul_in_a_cgroup_path_is_invalid() {
        let mut r = req(30.0);
        r.target = Some(pb::Target { kind: Some(pb::target::Kind::CgroupPath("/a\0b".into())) });
        let e = inject(&r, &Limits::default()).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
        assert!(e.to_string().contains("target.cgroup_path"), "{e}");
    }

    #[test]
    fn duration_bounds() {
        let l = Limits { max_duration: Duration::from_secs(60), ..Limits::default() };
        let mut r = req(10.0);
        r.duration = None;
        assert_eq!(field_of(inject(&r, &l)), "duration");
        r.duration = Some(prost_types::Duration { seconds: 0, nanos: 0 });
        assert_eq!(field_of(inject(&r, &l)), "duration");
        r.duration = Some(prost_types::Duration { seconds: -5, nanos: 0 });
        assert_eq!(field_of(inject(&r, &l)), "duration");
        r.duration = Some(prost_types::Duration { seconds: 61, nanos: 0 });
        assert_eq!(field_of(inject(&r, &l)), "duration");
        r.duration = Some(prost_types::Duration { seconds: 60, nanos: 0 });
        assert!(inject(&r, &l).is_ok());
    }

    #[test]
    fn a_duration_refusal_names_the_limit_in_force_and_its_rule() {
        let msg = |l: &Limits, d: Option<prost_types::Duration>| {
            let mut r = req(10.0);
            r.duration = d;
            inject(&r, l).unwrap_err().to_string()
        };
        let zero = Some(prost_types::Duration { seconds: 0, nanos: 0 });
        let policy =
            Limits { policy_max_duration: Some(Duration::from_secs(3600)), ..Limits::default() };
        assert_eq!(
            msg(&policy, zero),
            "duration: must be > 0 and at most 1h (the policy's max_duration), got 0s"
        );
        assert_eq!(
            msg(&policy, None),
            "duration: required: > 0 and at most 1h (the policy's max_duration)"
        );
        let negative = Some(prost_types::Duration { seconds: 0, nanos: -50_000_000 });
        assert!(msg(&policy, negative).ends_with("got -50ms"));
        // A policy above the agent's limit: the agent's limit is the one in force.
        let week = Limits {
            policy_max_duration: Some(Duration::from_secs(30 * 86400)),
            ..Limits::default()
        };
        assert_eq!(
            msg(&week, Some(prost_types::Duration { seconds: 8 * 86400, nanos: 0 })),
            "duration: must be > 0 and at most 7d (the agent's limit), got 8d"
        );
    }

    #[test]
    fn missing_target_and_fault() {
        let l = Limits::default();
        let mut r = req(10.0);
        r.target = None;
        assert_eq!(field_of(inject(&r, &l)), "target");
        let mut r = req(10.0);
        r.fault = Some(pb::Fault { kind: None });
        assert_eq!(field_of(inject(&r, &l)), "fault");
        let mut r = req(10.0);
        r.target = Some(pb::Target { kind: Some(pb::target::Kind::Pid(0)) });
        assert_eq!(field_of(inject(&r, &l)), "target.pid");
    }

    fn with_loss(f: impl FnOnce(&mut pb::NetLoss)) -> pb::InjectRequest {
        let mut r = req(20.0);
        if let Some(pb::fault::Kind::NetLoss(l)) = r.fault.as_mut().and_then(|f| f.kind.as_mut()) {
            f(l);
        }
        r
    }

    #[test]
    fn loss_models() {
        let l = Limits::default();
        let FaultSpec::NetLoss(n) = inject(&with_loss(|x| x.burst_length = 5.0), &l).unwrap().fault
        else {
            panic!()
        };
        assert_eq!(n.model, LossModel::GilbertElliott { burst: 5.0 });
        let nth = with_loss(|x| {
            x.percent = 0.0;
            x.every_nth = 4;
            x.seed = Some(9);
        });
        let FaultSpec::NetLoss(n) = inject(&nth, &l).unwrap().fault else { panic!() };
        assert_eq!((n.model, n.seed), (LossModel::EveryNth(4), Some(9)));
        assert_eq!(
            field_of(inject(&with_loss(|x| x.every_nth = 4), &l)),
            "fault.net_loss.every_nth"
        );
        assert_eq!(
            field_of(inject(&with_loss(|x| x.burst_length = 0.5), &l)),
            "fault.net_loss.burst_length"
        );
        let infeasible = with_loss(|x| {
            x.percent = 90.0;
            x.burst_length = 2.0;
        });
        assert_eq!(field_of(inject(&infeasible, &l)), "fault.net_loss.burst_length");
    }

    fn with_fault(kind: pb::fault::Kind) -> pb::InjectRequest {
        let mut r = req(10.0);
        r.fault = Some(pb::Fault { kind: Some(kind) });
        r
    }

    fn ms(ms: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 })
    }

    #[test]
    fn delay_bounds() {
        let l = Limits::default();
        let d = |latency, jitter| {
            with_fault(pb::fault::Kind::NetDelay(pb::NetDelay {
                latency,
                jitter,
                ..Default::default()
            }))
        };
        let FaultSpec::NetDelay(ok) = inject(&d(ms(100), ms(20)), &l).unwrap().fault else {
            panic!()
        };
        assert_eq!(
            (ok.latency, ok.jitter, ok.percent),
            (Duration::from_millis(100), Duration::from_millis(20), 100.0)
        );
        assert_eq!(ok.filter.direction, Direction::Egress, "delay defaults to egress");
        assert_eq!(field_of(inject(&d(ms(-100), None), &l)), "fault.net_delay.latency");
        assert_eq!(field_of(inject(&d(None, None), &l)), "fault.net_delay.latency");
        assert_eq!(field_of(inject(&d(ms(100), ms(200)), &l)), "fault.net_delay.jitter");
        assert_eq!(field_of(inject(&d(ms(29_000), ms(2_000)), &l)), "fault.net_delay.latency");
        let bad = with_fault(pb::fault::Kind::NetDelay(pb::NetDelay {
            latency: ms(10),
            correlation: 150.0,
            ..Default::default()
        }));
        assert_eq!(field_of(inject(&bad, &l)), "fault.net_delay.correlation");
        let dev = with_fault(pb::fault::Kind::NetDelay(pb::NetDelay {
            latency: ms(10),
            devices: vec!["a/b".into()],
            ..Default::default()
        }));
        assert_eq!(field_of(inject(&dev, &l)), "fault.net_delay.devices[0]");
    }

    /// sys delay takes the targets sys fail takes: cgroup, pid, container, pod; not the host,
    /// not a device; follow_children only with a pid.
    #[test]
    fn syscall_delay_targets() {
        use pb::target::Kind as T;
        let l = Limits::default();
        let r = |target: T, follow: bool| {
            let mut r = with_fault(pb::fault::Kind::SyscallDelay(pb::SyscallDelay {
                syscalls: vec!["read".into()],
                latency: ms(100),
                follow_children: follow,
                ..Default::default()
            }));
            r.target = Some(pb::Target { kind: Some(target) });
            r
        };
        let pod =
            pb::Pod { uid: "0123abcd-0000-1111-2222-333344445555".into(), ..Default::default() };
        for ok in
            [T::CgroupPath("/x".into()), T::Pid(7), T::ContainerId("abcd12".into()), T::Pod(pod)]
        {
            let s = inject(&r(ok.clone(), false), &l).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
            assert_eq!(s.fault.kind(), "syscall_delay");
        }
        assert!(inject(&r(T::Pid(7), true), &l).is_ok());
        assert_eq!(field_of(inject(&r(T::Host(true), false), &l)), "target.host");
        let dev = T::Interface(pb::NetworkInterface { name: "eth0".into(), netns: String::new() });
        assert_eq!(field_of(inject(&r(dev, false), &l)), "target.interface");
        assert_eq!(
            field_of(inject(&r(T::CgroupPath("/x".into()), true), &l)),
            "fault.syscall_delay.follow_children"
        );
    }

    #[test]
    fn bandwidth_bounds() {
        let l = Limits::default();
        let b = |rate, burst| {
            with_fault(pb::fault::Kind::NetBandwidth(pb::NetBandwidth {
                rate_bps: rate,
                burst_bytes: burst,
                ..Default::default()
            }))
        };
        assert_eq!(field_of(inject(&b(0, 0), &l)), "fault.net_bandwidth.rate_bps");
        assert_eq!(field_of(inject(&b(MAX_RATE_BPS + 1, 0), &l)), "fault.net_bandwidth.rate_bps");
        assert_eq!(
            field_of(inject(&b(8_000_000, MAX_BURST_BYTES + 1), &l)),
            "fault.net_bandwidth.burst_bytes"
        );
        let FaultSpec::NetBandwidth(ok) = inject(&b(8_000_000, 0), &l).unwrap().fault else {
            panic!()
        };
        assert_eq!(ok.burst_bytes, 10_000);
    }

    #[test]
    fn partition_is_always_both_ways() {
        let mut r = req(10.0);
        r.fault = Some(pb::Fault {
            kind: Some(pb::fault::Kind::NetPartition(pb::NetPartition {
                filter: Some(pb::PacketFilter {
                    direction: pb::Direction::Egress as i32,
                    ..Default::default()
                }),
            })),
        });
        let FaultSpec::NetPartition(f) = inject(&r, &Limits::default()).unwrap().fault else {
            panic!()
        };
        assert_eq!(f.direction, Direction::Both);
    }

    #[test]
    fn cidrs_and_ports() {
        let l = Limits::default();
        let bad_cidr = with_filter(pb::PacketFilter {
            remote_cidrs: vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()],
            ..Default::default()
        });
        assert_eq!(field_of(inject(&bad_cidr, &l)), "fault.net_loss.filter.remote_cidrs[1]");
        let port0 = with_filter(pb::PacketFilter {
            remote_ports: vec![pb::PortRange { first: 0, last: 0 }],
            ..Default::default()
        });
        assert_eq!(field_of(inject(&port0, &l)), "fault.net_loss.filter.remote_ports[0].first");
        let reversed = with_filter(pb::PacketFilter {
            remote_ports: vec![
                pb::PortRange { first: 80, last: 80 },
                pb::PortRange { first: 90, last: 10 },
            ],
            ..Default::default()
        });
        assert_eq!(field_of(inject(&reversed, &l)), "fault.net_loss.filter.remote_ports[1]");
        let dir = with_filter(pb::PacketFilter { direction: 9, ..Default::default() });
        assert_eq!(field_of(inject(&dir, &l)), "fault.net_loss.filter.direction");
        let ok = with_filter(pb::PacketFilter {
            remote_cidrs: vec!["127.0.0.1".into(), "10.1.2.3/8".into(), "::1".into()],
            remote_ports: vec![pb::PortRange { first: 6379, last: 0 }],
            ..Default::default()
        });
        let FaultSpec::NetLoss(n) = inject(&ok, &l).unwrap().fault else { panic!() };
        assert_eq!(n.filter.remote[0].to_string(), "127.0.0.1/32");
        assert_eq!(n.filter.remote[1].to_string(), "10.0.0.0/8");
        assert_eq!(n.filter.remote[2].to_string(), "::1/128");
        assert_eq!(n.filter.ports, vec![PortRange { first: 6379, last: 6379 }]);
    }
}
