//! Validation of the network faults: packet filters (CIDRs, ports, protocol, direction),
//! loss models, delay and bandwidth, reject, DNS. Every refusal names the field.

use std::time::Duration;

use faultline_common::net::MAX_PORT_RANGES;
use faultline_proto::v1 as pb;
use ipnet::IpNet;

use super::fields::{MAX_CIDRS, errno, non_negative, percent};
use crate::engine::{
    error::{Error, Result},
    model::{
        Direction, Distribution, DnsAnswer, FaultSpec, LossModel, NetBandwidth, NetDelay, NetDns,
        NetLoss, NetMangle, NetReject, PacketFilter, PortRange, Protocol, TargetSpec,
    },
};
use crate::units::human_duration;

/// A corrupt or duplicate fault: its filter (egress by default), share and devices.
pub(super) fn mangle(
    filter: Option<&pb::PacketFilter>,
    share: f64,
    seed: Option<u64>,
    list: &[String],
    field: &str,
) -> Result<NetMangle> {
    Ok(NetMangle {
        filter: edt_filter(filter, &format!("{field}.filter"))?,
        percent: percent(share, &format!("{field}.percent"))?,
        seed,
        devices: devices(list, &format!("{field}.devices"))?,
    })
}

/// Corrupt and duplicate on a cgroup target (anything but an interface) act on the packets
/// the target sends: the tc programs on the devices they leave by find the sender's cgroup,
/// and nothing tells them whose a received packet is before it is delivered. Refused here,
/// before anything is applied, naming the field.
pub(super) fn mangle_direction(fault: &FaultSpec, target: &TargetSpec) -> Result<()> {
    let (m, field, verb) = match fault {
        FaultSpec::NetCorrupt(m) => (m, "fault.net_corrupt", "corrupt"),
        FaultSpec::NetDuplicate(m) => (m, "fault.net_duplicate", "duplicate"),
        _ => return Ok(()),
    };
    if m.filter.direction == Direction::Egress || matches!(target, TargetSpec::Interface { .. }) {
        return Ok(());
    }
    Err(Error::invalid(
        format!("{field}.filter.direction"),
        format!(
            "on a cgroup target {verb} acts on the packets it sends only: use direction egress, \
             or an interface target to {verb} received packets"
        ),
    ))
}

pub const MAX_DNS_NAMES: usize = 64;

pub(super) fn net_dns(d: &pb::NetDns, field: &str) -> Result<NetDns> {
    let mut filter = filter(d.filter.as_ref(), &format!("{field}.filter"))?;
    if filter.protocol == Protocol::Tcp || filter.protocol == Protocol::Icmp {
        return Err(Error::invalid(
            format!("{field}.filter.protocol"),
            "DNS queries are intercepted over UDP: UDP or unset",
        ));
    }
    filter.protocol = Protocol::Udp;
    filter.direction = Direction::Egress;
    if filter.ports.is_empty() {
        filter.ports.push(PortRange { first: 53, last: 53 });
    }
    if d.names.is_empty() || d.names.len() > MAX_DNS_NAMES {
        return Err(Error::invalid(
            format!("{field}.names"),
            format!("1 to {MAX_DNS_NAMES} name patterns, got {}", d.names.len()),
        ));
    }
    let names = d
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            crate::faults::net::dnsname::parse(n)
                .map_err(|e| Error::invalid(format!("{field}.names[{i}]"), format!("{n:?}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let answer = match pb::DnsAnswer::try_from(d.answer) {
        Ok(pb::DnsAnswer::Unspecified | pb::DnsAnswer::Nxdomain) => DnsAnswer::NxDomain,
        Ok(pb::DnsAnswer::Servfail) => DnsAnswer::ServFail,
        Ok(pb::DnsAnswer::Drop) => DnsAnswer::Drop,
        Err(_) => {
            return Err(Error::invalid(
                format!("{field}.answer"),
                format!("must be NXDOMAIN, SERVFAIL or DROP, got {}", d.answer),
            ));
        }
    };
    let percent = match d.percent {
        None => 100.0,
        Some(p) => percent(p, &format!("{field}.percent"))?,
    };
    Ok(NetDns { filter, names, answer, percent })
}

/// Longest latency + jitter a delay may ask for (fq's horizon is set well above it).
pub const MAX_DELAY: Duration = Duration::from_secs(30);

pub const MIN_RATE_BPS: u64 = 8_000;

pub const MAX_RATE_BPS: u64 = 100_000_000_000;

pub const MAX_BURST_BYTES: u64 = 1 << 30;

/// Egress unless the filter asks for ingress too (EDT faults default to what the target sends).
pub(super) fn edt_filter(f: Option<&pb::PacketFilter>, field: &str) -> Result<PacketFilter> {
    let mut filter = filter(f, field)?;
    if f.is_none_or(|f| f.direction == pb::Direction::Unspecified as i32) {
        filter.direction = Direction::Egress;
    }
    Ok(filter)
}

pub(super) fn devices(list: &[String], field: &str) -> Result<Vec<String>> {
    for (i, d) in list.iter().enumerate() {
        if d.is_empty() || d.len() > 15 || d.contains('/') || d.contains(char::is_whitespace) {
            return Err(Error::invalid(
                format!("{field}[{i}]"),
                format!("{d:?} is not a device name (1-15 characters)"),
            ));
        }
    }
    Ok(list.to_vec())
}

pub(super) fn net_delay(d: &pb::NetDelay, field: &str) -> Result<NetDelay> {
    let filter = edt_filter(d.filter.as_ref(), &format!("{field}.filter"))?;
    let latency = non_negative(d.latency.as_ref(), &format!("{field}.latency"))?;
    let jitter = non_negative(d.jitter.as_ref(), &format!("{field}.jitter"))?;
    if latency.is_zero() && jitter.is_zero() {
        return Err(Error::invalid(format!("{field}.latency"), "must be > 0 (or give a jitter)"));
    }
    if jitter > latency {
        return Err(Error::invalid(
            format!("{field}.jitter"),
            format!(
                "must be <= latency ({}), got {}",
                human_duration(latency),
                human_duration(jitter)
            ),
        ));
    }
    if latency + jitter > MAX_DELAY {
        return Err(Error::invalid(
            format!("{field}.latency"),
            format!(
                "latency + jitter must be <= {}, got {}",
                human_duration(MAX_DELAY),
                human_duration(latency + jitter)
            ),
        ));
    }
    let c = d.correlation;
    if !(c.is_finite() && (0.0..=100.0).contains(&c)) {
        return Err(Error::invalid(
            format!("{field}.correlation"),
            format!("must be 0-100, got {c}"),
        ));
    }
    let distribution = match pb::Distribution::try_from(d.distribution) {
        Ok(pb::Distribution::Unspecified | pb::Distribution::Uniform) => Distribution::Uniform,
        Ok(pb::Distribution::Normal) => Distribution::Normal,
        Err(_) => {
            return Err(Error::invalid(
                format!("{field}.distribution"),
                format!("must be UNIFORM or NORMAL, got {}", d.distribution),
            ));
        }
    };
    let percent = match d.percent {
        None => 100.0,
        Some(p) => percent(p, &format!("{field}.percent"))?,
    };
    let devices = devices(&d.devices, &format!("{field}.devices"))?;
    Ok(NetDelay {
        filter,
        latency,
        jitter,
        correlation: c,
        distribution,
        percent,
        seed: d.seed,
        devices,
    })
}

pub(super) fn net_bandwidth(b: &pb::NetBandwidth, field: &str) -> Result<NetBandwidth> {
    let filter = edt_filter(b.filter.as_ref(), &format!("{field}.filter"))?;
    let rate = b.rate_bps;
    if !(MIN_RATE_BPS..=MAX_RATE_BPS).contains(&rate) {
        return Err(Error::invalid(
            format!("{field}.rate_bps"),
            format!("must be {MIN_RATE_BPS}-{MAX_RATE_BPS} bits per second, got {rate}"),
        ));
    }
    if b.burst_bytes > MAX_BURST_BYTES {
        return Err(Error::invalid(
            format!("{field}.burst_bytes"),
            format!("must be at most {MAX_BURST_BYTES}, got {}", b.burst_bytes),
        ));
    }
    let burst_bytes = if b.burst_bytes == 0 { (rate / 8 / 100).max(1514) } else { b.burst_bytes };
    let devices = devices(&b.devices, &format!("{field}.devices"))?;
    Ok(NetBandwidth { filter, rate_bps: rate, burst_bytes, devices })
}

pub(super) fn net_reject(r: &pb::NetReject, field: &str) -> Result<NetReject> {
    let mut filter = filter(r.filter.as_ref(), &format!("{field}.filter"))?;
    if filter.protocol == Protocol::Icmp {
        return Err(Error::invalid(
            format!("{field}.filter.protocol"),
            "connect() is TCP or UDP: must be TCP, UDP or unset",
        ));
    }
    filter.direction = Direction::Egress;
    let errno = errno(&r.errno, libc::ECONNREFUSED, &format!("{field}.errno"))?;
    let percent = match r.percent {
        None => 100.0,
        Some(p) => percent(p, &format!("{field}.percent"))?,
    };
    Ok(NetReject { filter, errno, percent })
}

pub(super) fn net_loss(l: &pb::NetLoss, field: &str) -> Result<NetLoss> {
    let filter = filter(l.filter.as_ref(), &format!("{field}.filter"))?;
    let seed = l.seed;
    if l.every_nth > 0 {
        if l.percent != 0.0 || l.burst_length != 0.0 {
            return Err(Error::invalid(
                format!("{field}.every_nth"),
                "drops exactly every Nth packet: leave percent and burst_length unset",
            ));
        }
        let model = LossModel::EveryNth(l.every_nth);
        return Ok(NetLoss { filter, percent: 100.0 / f64::from(l.every_nth), model, seed });
    }
    let p = percent(l.percent, &format!("{field}.percent"))?;
    let model = if l.burst_length == 0.0 {
        LossModel::Random
    } else {
        let b = l.burst_length;
        // The chain's chance to enter the bad state is p/(1-p)/b, which must stay <= 1.
        let min = p / (100.0 - p);
        if !(b.is_finite() && b >= 1.0 && b >= min && p < 100.0) {
            return Err(Error::invalid(
                format!("{field}.burst_length"),
                format!(
                    "must be >= 1 and >= percent/(100-percent) (= {min:.2} here), with percent < 100; got {b}"
                ),
            ));
        }
        LossModel::GilbertElliott { burst: b }
    };
    Ok(NetLoss { filter, percent: p, model, seed })
}

pub fn filter(f: Option<&pb::PacketFilter>, field: &str) -> Result<PacketFilter> {
    let Some(f) = f else { return Ok(PacketFilter::default()) };
    let direction = match pb::Direction::try_from(f.direction) {
        Ok(pb::Direction::Unspecified | pb::Direction::Both) => Direction::Both,
        Ok(pb::Direction::Ingress) => Direction::Ingress,
        Ok(pb::Direction::Egress) => Direction::Egress,
        Err(_) => {
            return Err(Error::invalid(
                format!("{field}.direction"),
                format!("must be INGRESS, EGRESS or BOTH, got {}", f.direction),
            ));
        }
    };
    let protocol = match pb::Protocol::try_from(f.protocol) {
        Ok(pb::Protocol::Unspecified) => Protocol::Any,
        Ok(pb::Protocol::Tcp) => Protocol::Tcp,
        Ok(pb::Protocol::Udp) => Protocol::Udp,
        Ok(pb::Protocol::Icmp) => Protocol::Icmp,
        Err(_) => {
            return Err(Error::invalid(
                format!("{field}.protocol"),
                format!("must be TCP, UDP, ICMP or unset (any), got {}", f.protocol),
            ));
        }
    };
    let remote = cidrs(&f.remote_cidrs, &format!("{field}.remote_cidrs"))?;
    let exclude = cidrs(&f.exclude_cidrs, &format!("{field}.exclude_cidrs"))?;
    let ports = ports(&f.remote_ports, &format!("{field}.remote_ports"))?;
    Ok(PacketFilter { direction, protocol, remote, exclude, ports })
}

/// Parses "10.0.0.0/8", "::1/128" or a bare address. Host bits are cleared ("10.1.2.3/8" is 10.0.0.0/8).
pub fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net.trunc());
    }
    s.parse::<std::net::IpAddr>().ok().map(IpNet::from)
}

pub(super) fn cidrs(list: &[String], field: &str) -> Result<Vec<IpNet>> {
    if list.len() > MAX_CIDRS {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_CIDRS} entries, got {}", list.len()),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, s)| {
            parse_cidr(s).ok_or_else(|| {
                Error::invalid(
                    format!("{field}[{i}]"),
                    format!("{s:?} is not an address or CIDR (e.g. 10.0.0.0/8, 2001:db8::/32)"),
                )
            })
        })
        .collect()
}

pub(super) fn ports(list: &[pb::PortRange], field: &str) -> Result<Vec<PortRange>> {
    if list.len() > MAX_PORT_RANGES {
        return Err(Error::invalid(
            field,
            format!("at most {MAX_PORT_RANGES} ranges, got {}", list.len()),
        ));
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, r) in list.iter().enumerate() {
        let f = format!("{field}[{i}]");
        if r.first == 0 || r.first > 65535 {
            return Err(Error::invalid(
                format!("{f}.first"),
                format!("must be 1-65535, got {}", r.first),
            ));
        }
        let last = if r.last == 0 { r.first } else { r.last };
        if last > 65535 {
            return Err(Error::invalid(
                format!("{f}.last"),
                format!("must be 1-65535, got {last}"),
            ));
        }
        if last < r.first {
            return Err(Error::invalid(
                f,
                format!("reversed range {}-{last}: last must be >= first", r.first),
            ));
        }
        out.push(PortRange { first: r.first as u16, last: last as u16 });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::validate::{Limits, inject};

    fn mangle_req(target: pb::target::Kind, kind: &str, dir: pb::Direction) -> pb::InjectRequest {
        let filter = Some(pb::PacketFilter { direction: dir as i32, ..Default::default() });
        let kind = match kind {
            "corrupt" => pb::fault::Kind::NetCorrupt(pb::NetCorrupt {
                filter,
                percent: 1.0,
                ..Default::default()
            }),
            _ => pb::fault::Kind::NetDuplicate(pb::NetDuplicate {
                filter,
                percent: 1.0,
                ..Default::default()
            }),
        };
        pb::InjectRequest {
            target: Some(pb::Target { kind: Some(target) }),
            fault: Some(pb::Fault { kind: Some(kind) }),
            duration: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
            labels: Default::default(),
            lease: None,
            ..Default::default()
        }
    }

    #[test]
    fn corrupt_and_duplicate_on_a_cgroup_target_are_egress_only_in_plain_words() {
        let l = Limits::default();
        let cgroup = || pb::target::Kind::CgroupPath("/x".into());
        let iface = || {
            pb::target::Kind::Interface(pb::NetworkInterface {
                name: "eth0".into(),
                ..Default::default()
            })
        };
        for kind in ["corrupt", "duplicate"] {
            for dir in [pb::Direction::Both, pb::Direction::Ingress] {
                for target in [cgroup(), pb::target::Kind::Pid(42)] {
                    let err = inject(&mangle_req(target, kind, dir), &l).unwrap_err();
                    let Error::InvalidArgument { field, .. } = &err else {
                        panic!("{kind} {dir:?}: expected InvalidArgument, got {err:?}")
                    };
                    assert_eq!(field, &format!("fault.net_{kind}.filter.direction"));
                    let text = err.to_string();
                    assert!(
                        text.contains(&format!(
                            "on a cgroup target {kind} acts on the packets it sends only"
                        )) && text.contains("use direction egress")
                            && text.contains("interface target"),
                        "{text}"
                    );
                }
                // A device sees both directions.
                assert!(inject(&mangle_req(iface(), kind, dir), &l).is_ok(), "{kind} {dir:?}");
            }
            for dir in [pb::Direction::Egress, pb::Direction::Unspecified] {
                assert!(inject(&mangle_req(cgroup(), kind, dir), &l).is_ok(), "{kind} {dir:?}");
            }
        }
    }
}
