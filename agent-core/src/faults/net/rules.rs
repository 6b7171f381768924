//! Compiles a validated network fault into the kernel's rule layout (pure, unit-tested).

use aya::maps::lpm_trie::Key;
use faultline_common::net::{
    ACTION_CORRUPT, ACTION_DELAY, ACTION_DNS, ACTION_DROP, ACTION_DUPLICATE, ACTION_RATE,
    ACTION_REJECT, CIDR_EXCLUDE, CIDR_INCLUDE, CIDR_KEY_HEADER_BITS, CidrKey, DIR_EGRESS,
    DIR_INGRESS, DIST_NORMAL, DIST_UNIFORM, FAMILY_V4, FAMILY_V6, MODEL_GE, MODEL_NTH,
    MODEL_RANDOM, NetRule, PORT_KEY_HEADER_BITS, PROB_ONE, PROTO_ANY, PROTO_ICMP, PROTO_TCP,
    PROTO_UDP, PortKey, RULE_F_CIDRS, RULE_F_PORTS, RULE_F_SEEDED, RuleState, SlotFilter,
    range_buckets,
};
use ipnet::IpNet;

use crate::engine::model::{
    Direction, Distribution, LossModel, NetBandwidth, NetDelay, NetDns, NetLoss, NetMangle,
    NetReject, PacketFilter, Protocol,
};

pub struct CompiledRule {
    pub rule: NetRule,
    /// The rule's starting state (its seeded generator).
    pub state: RuleState,
    pub cidrs: Vec<(Key<CidrKey>, u32)>,
    pub ports: Vec<Key<PortKey>>,
    /// The lowest and highest port of the filter's ranges, if it has any.
    pub port_span: Option<(u16, u16)>,
}

impl CompiledRule {
    /// The rule's filter in brief, as the programs test it before looking the rule up.
    pub fn slot_filter(&self) -> SlotFilter {
        let (lo, hi) = self.port_span.unwrap_or((0, u16::MAX));
        SlotFilter {
            action: self.rule.action as u8,
            directions: self.rule.directions as u8,
            protocol: self.rule.protocol as u8,
            has_ports: u8::from(self.port_span.is_some()),
            port_lo: lo,
            port_hi: hi,
        }
    }

    /// The port buckets (`CgroupRules::candidates`) its ranges touch, a bit each.
    pub fn port_buckets(&self) -> u32 {
        self.ports.iter().fold(0, |m, k| {
            let bits = k.prefix_len().saturating_sub(PORT_KEY_HEADER_BITS).min(16);
            let lo = u16::from_be_bytes(k.data().port);
            let hi = (u32::from(lo) + (1u32 << (16 - bits)) - 1).min(65535) as u16;
            m | range_buckets(lo, hi)
        })
    }
}

/// A rule's action as a dry run names it.
pub fn action_name(action: u32) -> &'static str {
    match action {
        ACTION_DROP => "drop",
        ACTION_DELAY => "delay",
        ACTION_RATE => "pace",
        ACTION_REJECT => "reject",
        ACTION_CORRUPT => "corrupt",
        ACTION_DUPLICATE => "duplicate",
        ACTION_DNS => "dns",
        _ => "unknown",
    }
}

/// splitmix64: spreads any seed (0 included) into a non-zero xorshift state.
pub fn seed_state(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    (z ^ (z >> 31)).max(1)
}

fn seeded(c: &mut CompiledRule, seed: Option<u64>) {
    if let Some(seed) = seed {
        c.rule.flags |= RULE_F_SEEDED;
        c.rule.seed = seed;
        c.state.rng = seed_state(seed);
    }
}

pub fn compile_loss(loss: &NetLoss, slot: u32, expires_ns: u64) -> CompiledRule {
    let mut c = compile_filter(&loss.filter, slot, expires_ns);
    c.rule.action = ACTION_DROP;
    c.rule.threshold = threshold(loss.percent);
    match loss.model {
        LossModel::Random => c.rule.model = MODEL_RANDOM,
        LossModel::EveryNth(n) => {
            c.rule.model = MODEL_NTH;
            c.rule.every_nth = n;
        }
        LossModel::GilbertElliott { burst } => {
            // Bad state drops everything; mean stay there = burst, long-run share = percent.
            let p = loss.percent / 100.0;
            let leave = 1.0 / burst;
            let enter = p * leave / (1.0 - p);
            c.rule.model = MODEL_GE;
            c.rule.ge_leave = threshold(leave * 100.0);
            c.rule.ge_enter = threshold(enter * 100.0);
        }
    }
    seeded(&mut c, loss.seed);
    c
}

/// Delay (EDT): the packet's departure moves by latency + jitter; egress in the cgroup
/// programs, ingress through the tc programs and an ifb.
pub fn compile_delay(d: &NetDelay, slot: u32, expires_ns: u64) -> CompiledRule {
    let mut c = compile_filter(&d.filter, slot, expires_ns);
    c.rule.action = ACTION_DELAY;
    c.rule.threshold = threshold(d.percent);
    c.rule.delay_ns = d.latency.as_nanos() as u64;
    c.rule.jitter_ns = d.jitter.as_nanos() as u64;
    c.rule.correlation = if d.correlation > 0.0 { threshold(d.correlation) } else { 0 };
    c.rule.distribution = match d.distribution {
        Distribution::Uniform => DIST_UNIFORM,
        Distribution::Normal => DIST_NORMAL,
    };
    seeded(&mut c, d.seed);
    c
}

/// Bandwidth (EDT): every matching packet of the experiment shares one pacing clock.
pub fn compile_rate(b: &NetBandwidth, slot: u32, expires_ns: u64) -> CompiledRule {
    let mut c = compile_filter(&b.filter, slot, expires_ns);
    c.rule.action = ACTION_RATE;
    c.rule.threshold = PROB_ONE;
    c.rule.rate_bps = b.rate_bps;
    c.rule.burst_ns = b.burst_bytes.saturating_mul(8_000_000_000) / b.rate_bps.max(1);
    c
}

/// Corrupt or duplicate (tc programs): a share of matching packets, direction as asked.
pub fn compile_mangle(m: &NetMangle, action: u32, slot: u32, expires_ns: u64) -> CompiledRule {
    let mut c = compile_filter(&m.filter, slot, expires_ns);
    c.rule.action = action;
    c.rule.threshold = threshold(m.percent);
    seeded(&mut c, m.seed);
    c
}

/// DNS: UDP to matching resolvers is steered to the responder at these ports.
pub fn compile_dns(d: &NetDns, port4: u16, port6: u16, slot: u32, expires_ns: u64) -> CompiledRule {
    let mut c = compile_filter(&d.filter, slot, expires_ns);
    c.rule.action = ACTION_DNS;
    c.rule.threshold = PROB_ONE;
    c.rule.redirect_port4 = port4.into();
    c.rule.redirect_port6 = port6.into();
    c
}

/// Reject: matching connect() calls fail with the errno.
pub fn compile_reject(r: &NetReject, slot: u32, expires_ns: u64) -> CompiledRule {
    let mut c = compile_filter(&r.filter, slot, expires_ns);
    c.rule.action = ACTION_REJECT;
    c.rule.threshold = threshold(r.percent);
    c.rule.errno = r.errno as u32;
    c
}

/// Partition: every matching packet, both ways.
pub fn compile_partition(filter: &PacketFilter, slot: u32, expires_ns: u64) -> CompiledRule {
    let both = PacketFilter { direction: Direction::Both, ..filter.clone() };
    let mut c = compile_filter(&both, slot, expires_ns);
    c.rule.action = ACTION_DROP;
    c.rule.threshold = PROB_ONE;
    c
}

/// `percent` of 2^32, at least 1 so a tiny percentage is not silently zero.
pub fn threshold(percent: f64) -> u64 {
    let t = (percent / 100.0 * PROB_ONE as f64).round();
    (t as u64).clamp(1, PROB_ONE)
}

fn compile_filter(f: &PacketFilter, slot: u32, expires_ns: u64) -> CompiledRule {
    let ports: Vec<Key<PortKey>> = f
        .ports
        .iter()
        .flat_map(|r| port_prefixes(r.first, r.last))
        .map(|(port, len)| {
            Key::new(
                PORT_KEY_HEADER_BITS + u32::from(len),
                PortKey { slot: slot.to_be_bytes(), port: port.to_be_bytes(), _pad: [0; 2] },
            )
        })
        .collect();
    let mut cidrs: Vec<(Key<CidrKey>, u32)> = Vec::new();
    for net in &f.remote {
        cidrs.push((cidr_key(slot, net), CIDR_INCLUDE));
    }
    if !f.exclude.is_empty() && f.remote.is_empty() {
        // Only exclusions: everything else matches.
        for all in ["0.0.0.0/0", "::/0"] {
            if let Ok(net) = all.parse::<IpNet>() {
                cidrs.push((cidr_key(slot, &net), CIDR_INCLUDE));
            }
        }
    }
    // Inserted after the includes, so an exclusion of the very same prefix wins.
    for net in &f.exclude {
        cidrs.push((cidr_key(slot, net), CIDR_EXCLUDE));
    }
    let rule = NetRule {
        expires_ns,
        directions: match f.direction {
            Direction::Ingress => DIR_INGRESS,
            Direction::Egress => DIR_EGRESS,
            Direction::Both => DIR_INGRESS | DIR_EGRESS,
        },
        protocol: match f.protocol {
            Protocol::Any => PROTO_ANY,
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
            Protocol::Icmp => PROTO_ICMP,
        },
        flags: if cidrs.is_empty() { 0 } else { RULE_F_CIDRS }
            | if ports.is_empty() { 0 } else { RULE_F_PORTS },
        ..Default::default()
    };
    let port_span = f.ports.iter().map(|r| r.first).min().zip(f.ports.iter().map(|r| r.last).max());
    CompiledRule { rule, state: RuleState::default(), cidrs, ports, port_span }
}

/// Splits an inclusive port range into aligned (port, prefix length) blocks for the LPM trie.
pub fn port_prefixes(first: u16, last: u16) -> Vec<(u16, u8)> {
    let (mut lo, hi) = (u32::from(first), u32::from(last));
    let mut out = Vec::new();
    while lo <= hi {
        // The largest aligned block starting at lo that stays within hi.
        let mut k = if lo == 0 { 16 } else { lo.trailing_zeros().min(16) };
        while k > 0 && lo + (1 << k) - 1 > hi {
            k -= 1;
        }
        out.push((lo as u16, (16 - k) as u8));
        lo += 1 << k;
    }
    out
}

pub fn cidr_key(slot: u32, net: &IpNet) -> Key<CidrKey> {
    let mut addr = [0u8; 16];
    let family = match net.network() {
        std::net::IpAddr::V4(a) => {
            addr[..4].copy_from_slice(&a.octets());
            FAMILY_V4
        }
        std::net::IpAddr::V6(a) => {
            addr.copy_from_slice(&a.octets());
            FAMILY_V6
        }
    };
    Key::new(
        CIDR_KEY_HEADER_BITS + u32::from(net.prefix_len()),
        CidrKey { slot: slot.to_be_bytes(), family, addr, _pad: [0; 3] },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::PortRange as Ports;

    fn loss(filter: PacketFilter, percent: f64) -> NetLoss {
        NetLoss { filter, percent, model: LossModel::Random, seed: None }
    }

    #[test]
    fn gilbert_elliott_chain_matches_percent_and_burst() {
        let l = NetLoss {
            model: LossModel::GilbertElliott { burst: 5.0 },
            ..loss(PacketFilter::default(), 20.0)
        };
        let c = compile_loss(&l, 0, 0);
        assert_eq!(c.rule.model, MODEL_GE);
        let leave = c.rule.ge_leave as f64 / PROB_ONE as f64;
        let enter = c.rule.ge_enter as f64 / PROB_ONE as f64;
        assert!((1.0 / leave - 5.0).abs() < 1e-6);
        // Stationary share of the bad state.
        assert!((enter / (enter + leave) - 0.2).abs() < 1e-6);
    }

    #[test]
    fn delay_and_rate_rules() {
        let d = NetDelay {
            filter: PacketFilter { direction: Direction::Both, ..Default::default() },
            latency: std::time::Duration::from_millis(100),
            jitter: std::time::Duration::from_millis(20),
            correlation: 25.0,
            distribution: Distribution::Normal,
            percent: 100.0,
            seed: None,
            devices: vec![],
        };
        let c = compile_delay(&d, 0, 0);
        assert_eq!((c.rule.action, c.rule.directions), (ACTION_DELAY, DIR_EGRESS | DIR_INGRESS));
        assert_eq!((c.rule.delay_ns, c.rule.jitter_ns), (100_000_000, 20_000_000));
        assert_eq!((c.rule.correlation, c.rule.distribution), (PROB_ONE / 4, DIST_NORMAL));
        let b = NetBandwidth {
            filter: PacketFilter::default(),
            rate_bps: 8_000_000,
            burst_bytes: 10_000,
            devices: vec![],
        };
        let c = compile_rate(&b, 0, 0);
        assert_eq!((c.rule.action, c.rule.rate_bps), (ACTION_RATE, 8_000_000));
        // 10 kB at 1 MB/s is 10 ms.
        assert_eq!(c.rule.burst_ns, 10_000_000);
    }

    #[test]
    fn seeds_make_a_nonzero_generator() {
        let l = NetLoss { seed: Some(0), ..loss(PacketFilter::default(), 20.0) };
        let c = compile_loss(&l, 0, 0);
        assert_eq!(c.rule.flags & RULE_F_SEEDED, RULE_F_SEEDED);
        assert_ne!(c.state.rng, 0);
        assert_ne!(seed_state(1), seed_state(2));
        let nth = NetLoss { model: LossModel::EveryNth(3), ..loss(PacketFilter::default(), 0.0) };
        assert_eq!(
            (compile_loss(&nth, 0, 0).rule.model, compile_loss(&nth, 0, 0).rule.every_nth),
            (MODEL_NTH, 3)
        );
    }

    #[test]
    fn probability_scale() {
        assert_eq!(threshold(100.0), PROB_ONE);
        assert_eq!(threshold(50.0), PROB_ONE / 2);
        assert_eq!(threshold(30.0), 1_288_490_189);
        assert_eq!(threshold(1e-12), 1);
    }

    #[test]
    fn filter_fields_map_to_kernel_values() {
        let f = PacketFilter {
            direction: Direction::Egress,
            protocol: Protocol::Udp,
            ports: vec![Ports { first: 53, last: 53 }, Ports { first: 6379, last: 6380 }],
            ..Default::default()
        };
        let c = compile_loss(&loss(f, 100.0), 3, 99);
        assert_eq!(c.rule.directions, DIR_EGRESS);
        assert_eq!(c.rule.protocol, PROTO_UDP);
        assert_eq!(c.rule.flags & RULE_F_PORTS, RULE_F_PORTS);
        let ports: Vec<(u16, u32)> =
            c.ports.iter().map(|k| (u16::from_be_bytes(k.data().port), k.prefix_len())).collect();
        assert_eq!(ports, vec![(53, 48), (6379, 48), (6380, 48)]);
        assert_eq!(c.rule.expires_ns, 99);
        assert_eq!(c.rule.action, ACTION_DROP);
        assert_eq!(c.rule.flags & RULE_F_CIDRS, 0);
        assert!(c.cidrs.is_empty());
        // In brief: the span of the ranges (the rule keeps the exact ones).
        let b = c.slot_filter();
        assert_eq!((b.action, b.directions, b.protocol), (1, DIR_EGRESS as u8, PROTO_UDP as u8));
        assert_eq!((b.has_ports, b.port_lo, b.port_hi), (1, 53, 6380));
        let any = compile_loss(&loss(PacketFilter::default(), 1.0), 4, 99).slot_filter();
        assert_eq!((any.has_ports, any.port_lo, any.port_hi), (0, 0, 65535));
        // The buckets: the exact ports, not the span (53 -> 21, 6379 -> 11, 6380 -> 12).
        assert_eq!(c.port_buckets(), 1 << 21 | 1 << 11 | 1 << 12);
        let wide =
            PacketFilter { ports: vec![Ports { first: 1024, last: 65535 }], ..Default::default() };
        assert_eq!(compile_loss(&loss(wide, 1.0), 5, 99).port_buckets(), u32::MAX);
    }

    /// Expands prefixes back to the set of ports they cover.
    fn covered(blocks: &[(u16, u8)]) -> Vec<u32> {
        let mut v: Vec<u32> = blocks
            .iter()
            .flat_map(|&(p, len)| u32::from(p)..u32::from(p) + (1u32 << (16 - len)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn port_ranges_become_exact_prefix_covers() {
        assert_eq!(port_prefixes(6379, 6379), vec![(6379, 16)]);
        assert_eq!(port_prefixes(1, 65535).len(), 16);
        assert_eq!(port_prefixes(8000, 8001), vec![(8000, 15)]);
        for (a, b) in [(1, 65535), (80, 443), (1024, 2047), (3, 3), (65535, 65535), (1000, 1999)] {
            let blocks = port_prefixes(a, b);
            assert!(blocks.len() <= 30, "{a}-{b}: {}", blocks.len());
            assert_eq!(
                covered(&blocks),
                (u32::from(a)..=u32::from(b)).collect::<Vec<_>>(),
                "{a}-{b}"
            );
        }
    }

    #[test]
    fn cidrs_are_keyed_by_slot_family_and_prefix() {
        let f = PacketFilter {
            remote: vec!["10.0.0.0/8".parse().unwrap(), "2001:db8::/32".parse().unwrap()],
            exclude: vec!["10.1.0.0/16".parse().unwrap()],
            ..Default::default()
        };
        let c = compile_loss(&loss(f, 10.0), 0x01020304, 0);
        assert_eq!(c.rule.flags & RULE_F_CIDRS, RULE_F_CIDRS);
        assert_eq!(c.cidrs.len(), 3);
        let (k, v) = &c.cidrs[0];
        let (prefix, data) = (k.prefix_len(), k.data());
        assert_eq!((prefix, *v), (48, CIDR_INCLUDE));
        assert_eq!(data.slot, [1, 2, 3, 4]);
        assert_eq!(data.family, FAMILY_V4);
        assert_eq!(&data.addr[..4], &[10, 0, 0, 0]);
        assert_eq!(c.cidrs[1].0.prefix_len(), 72);
        assert_eq!(c.cidrs[1].0.data().family, FAMILY_V6);
        assert_eq!((c.cidrs[2].0.prefix_len(), c.cidrs[2].1), (56, CIDR_EXCLUDE));
    }

    #[test]
    fn exclusions_alone_include_everything_else() {
        let f =
            PacketFilter { exclude: vec!["127.0.0.1/32".parse().unwrap()], ..Default::default() };
        let c = compile_loss(&loss(f, 10.0), 1, 0);
        let includes: Vec<_> = c
            .cidrs
            .iter()
            .filter(|(_, v)| *v == CIDR_INCLUDE)
            .map(|(k, _)| k.prefix_len())
            .collect();
        assert_eq!(includes, vec![40, 40]);
        assert_eq!(c.cidrs.last().map(|(k, v)| (k.prefix_len(), *v)), Some((72, CIDR_EXCLUDE)));
    }
}
