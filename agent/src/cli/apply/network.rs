//! NetworkChaos: loss, delay, duplicate, corrupt, bandwidth, partition and netem (several of
//! delay, loss, duplicate, corrupt at once: one experiment each), on the pods' traffic to
//! and from `externalTargets` in `direction`.

use std::time::Duration;

use faultline_core::wire::convert;
use faultline_proto::v1 as pb;

use super::{
    Translated,
    manifest::{Node, Refusal, Result},
};

/// faultline's bounds (agent-core's validation), checked here so a refusal names the
/// manifest's field rather than the API's.
const MAX_DELAY: Duration = Duration::from_secs(30);
const MIN_RATE_BPS: u64 = 8_000;
const MAX_RATE_BPS: u64 = 100_000_000_000;
const MAX_BURST_BYTES: u64 = 1 << 30;

/// What every action of the resource shares: the packets (direction, peers) and the device.
struct Common {
    filter: pb::PacketFilter,
    /// `spec.device`, for the faults that act on a device (delay, bandwidth, corrupt,
    /// duplicate); refused for the others.
    devices: Vec<String>,
}

impl Common {
    fn direction(&self) -> pb::Direction {
        pb::Direction::try_from(self.filter.direction).unwrap_or(pb::Direction::Egress)
    }

    fn no_device(&self, spec: &Node, action: &str) -> Result<()> {
        if self.devices.is_empty() {
            return Ok(());
        }
        Err(Refusal::at(
            spec.path_of("device"),
            format!(
                "faultline's {action} acts on the pod's sockets, on every device: it cannot be narrowed to one"
            ),
        ))
    }

    /// Corrupt and duplicate change what the pod sends (the tc program on the device finds
    /// the sender); received packets belong to no cgroup before delivery.
    fn egress_only(&self, spec: &Node, action: &str) -> Result<()> {
        if self.direction() == pb::Direction::Egress {
            return Ok(());
        }
        Err(Refusal::at(
            spec.path_of("direction"),
            format!("faultline's {action} acts on the packets a pod sends only: direction to"),
        ))
    }
}

pub fn translate(spec: &Node) -> Result<Translated> {
    let action = spec.string("action")?.ok_or_else(|| Refusal::at("spec.action", "required"))?;
    let common = Common {
        filter: filter(spec)?,
        devices: spec.string("device")?.filter(|d| !d.is_empty()).into_iter().collect(),
    };
    if let Some(d) = common.devices.first()
        && (d.len() > 15 || d.contains('/') || d.contains(char::is_whitespace))
    {
        return Err(Refusal::at(spec.path_of("device"), format!("{d:?} is not a device name")));
    }
    if spec.has("targetDevice") {
        return Err(Refusal::at(
            spec.path_of("targetDevice"),
            "a device of the target pods: faultline does not act on other pods (see spec.target)",
        ));
    }
    let faults = match action.as_str() {
        "delay" | "loss" | "duplicate" | "corrupt" | "netem" => netem(spec, &action, &common)?,
        "bandwidth" => {
            let b = spec.node("bandwidth")?.ok_or_else(|| {
                Refusal::at(spec.path_of("bandwidth"), "required with action bandwidth")
            })?;
            vec![bandwidth(&b, &common)?]
        }
        "partition" => {
            common.no_device(spec, "partition")?;
            vec![partition(&common)]
        }
        other => {
            return Err(Refusal::at(
                "spec.action",
                format!(
                    "{other:?}: faultline runs loss, delay, duplicate, corrupt, bandwidth, partition and netem"
                ),
            ));
        }
    };
    Ok(Translated { faults, containers: Vec::new() })
}

/// The netem actions. `netem` runs each of `delay`, `loss`, `duplicate`, `corrupt` given
/// (Chaos Mesh merges them into one netem qdisc; faultline runs one experiment each, on the
/// same packets); the others run their own block, which is required, and refuse another
/// (combining is what `netem` is for).
const NETEM: [&str; 4] = ["delay", "loss", "duplicate", "corrupt"];

fn netem(spec: &Node, action: &str, common: &Common) -> Result<Vec<pb::fault::Kind>> {
    let mut out = Vec::new();
    for key in NETEM {
        if action != "netem" && key != action {
            if spec.has(key) {
                return Err(Refusal::at(
                    spec.path_of(key),
                    format!("action {action} runs spec.{action} only: use action netem to combine"),
                ));
            }
            continue;
        }
        let Some(n) = spec.node(key)? else {
            if action == key {
                return Err(Refusal::at(
                    spec.path_of(key),
                    format!("required with action {action}"),
                ));
            }
            continue;
        };
        out.push(match key {
            "delay" => delay(&n, common)?,
            "loss" => {
                common.no_device(spec, "loss")?;
                loss(&n, common)?
            }
            "duplicate" => {
                common.egress_only(spec, "duplicate")?;
                duplicate(&n, common)?
            }
            _ => {
                common.egress_only(spec, "corrupt")?;
                corrupt(&n, common)?
            }
        });
    }
    if out.is_empty() {
        return Err(Refusal::at(
            "spec.action",
            "netem needs at least one of spec.delay, spec.loss, spec.duplicate, spec.corrupt",
        ));
    }
    Ok(out)
}

/// A percent that must be above 0 (netem's loss, duplicate, corrupt).
fn share(n: &Node, key: &str) -> Result<f64> {
    let p = n.percent(key)?.ok_or_else(|| Refusal::at(n.path_of(key), "required"))?;
    if p <= 0.0 {
        return Err(Refusal::at(n.path_of(key), "must be above 0"));
    }
    Ok(p)
}

/// netem correlates each draw with the last; faultline's duplicate and corrupt draw each
/// packet on its own. A correlation is refused rather than dropped.
fn no_correlation(n: &Node, action: &str) -> Result<()> {
    match n.percent("correlation")? {
        Some(c) if c > 0.0 => Err(Refusal::at(
            n.path_of("correlation"),
            format!("faultline's {action} draws every packet on its own: no correlation"),
        )),
        _ => Ok(()),
    }
}

fn loss(l: &Node, c: &Common) -> Result<pb::fault::Kind> {
    let p = share(l, "loss")?;
    let corr = l.percent("correlation")?.unwrap_or(0.0);
    l.finish()?;
    Ok(pb::fault::Kind::NetLoss(pb::NetLoss {
        filter: Some(c.filter.clone()),
        percent: p,
        burst_length: netem_burst(p, corr),
        ..Default::default()
    }))
}

/// `latency` (Go duration), `jitter` (uniform +/- jitter around it: netem's draw without a
/// distribution table), `correlation` (of each jitter draw with the last, as netem's).
fn delay(d: &Node, c: &Common) -> Result<pb::fault::Kind> {
    let (_, latency) = d
        .duration("latency", false)?
        .ok_or_else(|| Refusal::at(d.path_of("latency"), "required"))?;
    let jitter = d.duration("jitter", false)?.map(|(_, j)| j).unwrap_or_default();
    let corr = d.percent("correlation")?.unwrap_or(0.0);
    if latency.is_zero() && jitter.is_zero() {
        return Err(Refusal::at(d.path_of("latency"), "must be more than 0 (or give a jitter)"));
    }
    if jitter > latency {
        return Err(Refusal::at(
            d.path_of("jitter"),
            "faultline never sends a packet before its time: the jitter must be at most the latency",
        ));
    }
    if latency + jitter > MAX_DELAY {
        return Err(Refusal::at(
            d.path_of("latency"),
            format!("latency + jitter must be at most {}s", MAX_DELAY.as_secs()),
        ));
    }
    if d.has("reorder") {
        return Err(Refusal::at(
            d.path_of("reorder"),
            "faultline does not send chosen packets ahead of the others",
        ));
    }
    d.finish()?;
    Ok(pb::fault::Kind::NetDelay(pb::NetDelay {
        filter: Some(c.filter.clone()),
        latency: Some(convert::duration(latency)),
        jitter: Some(convert::duration(jitter)),
        correlation: corr,
        distribution: pb::Distribution::Uniform as i32,
        devices: c.devices.clone(),
        ..Default::default()
    }))
}

fn duplicate(d: &Node, c: &Common) -> Result<pb::fault::Kind> {
    let p = share(d, "duplicate")?;
    no_correlation(d, "duplicate")?;
    d.finish()?;
    Ok(pb::fault::Kind::NetDuplicate(pb::NetDuplicate {
        filter: Some(c.filter.clone()),
        percent: p,
        devices: c.devices.clone(),
    }))
}

fn corrupt(d: &Node, c: &Common) -> Result<pb::fault::Kind> {
    let p = share(d, "corrupt")?;
    no_correlation(d, "corrupt")?;
    d.finish()?;
    Ok(pb::fault::Kind::NetCorrupt(pb::NetCorrupt {
        filter: Some(c.filter.clone()),
        percent: p,
        devices: c.devices.clone(),
        ..Default::default()
    }))
}

/// Chaos Mesh's tbf: `rate` in bytes per second (bps, kbps, mbps, gbps, tbps, each 1024
/// times the last), `buffer` (the bucket, bytes) and `limit` (the queue, bytes; required by
/// Chaos Mesh). faultline paces at the rate (EDT): `buffer` is its burst; it has no byte
/// queue that overflows (a sender is held back; fq keeps up to 10 000 packets a flow), so
/// `limit` is read, checked and has no setting to go to.
fn bandwidth(b: &Node, c: &Common) -> Result<pb::fault::Kind> {
    let text = b.string("rate")?.ok_or_else(|| Refusal::at(b.path_of("rate"), "required"))?;
    let bytes = rate_bytes(&text).ok_or_else(|| {
        Refusal::at(
            b.path_of("rate"),
            format!(
                "{text:?} is not a rate: a whole number with bps, kbps, mbps, gbps or tbps (bytes per second)"
            ),
        )
    })?;
    let bits = bytes.saturating_mul(8);
    if !(MIN_RATE_BPS..=MAX_RATE_BPS).contains(&bits) {
        return Err(Refusal::at(
            b.path_of("rate"),
            format!(
                "{text:?} is {bits} bits per second: faultline paces {MIN_RATE_BPS} to {MAX_RATE_BPS}"
            ),
        ));
    }
    let buffer = b.number("buffer")?.unwrap_or(0.0);
    if buffer < 0.0 || buffer.fract() != 0.0 || buffer > MAX_BURST_BYTES as f64 {
        return Err(Refusal::at(
            b.path_of("buffer"),
            format!("must be a whole number of bytes, at most {MAX_BURST_BYTES}, got {buffer}"),
        ));
    }
    let limit = b.number("limit")?;
    if let Some(l) = limit
        && (l < 0.0 || l.fract() != 0.0)
    {
        return Err(Refusal::at(
            b.path_of("limit"),
            format!("must be a whole number of bytes, got {l}"),
        ));
    }
    for (key, why) in [
        ("peakrate", "faultline paces at one rate: no second, peak rate"),
        ("minburst", "the peak rate's bucket: faultline has no peak rate"),
    ] {
        if b.number(key)?.is_some_and(|v| v != 0.0) {
            return Err(Refusal::at(b.path_of(key), why));
        }
    }
    b.finish()?;
    Ok(pb::fault::Kind::NetBandwidth(pb::NetBandwidth {
        filter: Some(c.filter.clone()),
        rate_bps: bits,
        burst_bytes: buffer as u64,
        devices: c.devices.clone(),
    }))
}

/// Chaos Mesh's rate: digits and a unit, bytes per second, units 1024 apart ("1mbps" is
/// 1 048 576 bytes, 8 388 608 bits, per second).
pub fn rate_bytes(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    for (i, unit) in ["tbps", "gbps", "mbps", "kbps", "bps"].iter().enumerate() {
        if let Some(n) = t.strip_suffix(unit) {
            let n: u64 = n.trim().parse().ok()?;
            return n.checked_mul(1024u64.pow(4 - i as u32));
        }
    }
    None
}

/// `both`: nothing either way (faultline's partition); `to` or `from`: one way only, every
/// packet sent to (received from) the peers dropped.
fn partition(c: &Common) -> pb::fault::Kind {
    match c.direction() {
        pb::Direction::Both => {
            pb::fault::Kind::NetPartition(pb::NetPartition { filter: Some(c.filter.clone()) })
        }
        _ => pb::fault::Kind::NetLoss(pb::NetLoss {
            filter: Some(c.filter.clone()),
            percent: 100.0,
            ..Default::default()
        }),
    }
}

/// netem's correlated loss as a two-state chain with the same long-run loss `p` (percent):
/// netem draws each packet's number as `c * last + (1 - c) * fresh`, so a loss follows a
/// loss with probability about `c + (1 - c) * p`, and bursts last on average
/// `1 / ((1 - c) * (1 - p))` packets (p, c as fractions). 0 (independent losses) without
/// correlation.
pub fn netem_burst(p_percent: f64, c_percent: f64) -> f64 {
    if c_percent <= 0.0 || p_percent >= 100.0 {
        return 0.0;
    }
    let (p, c) = (p_percent / 100.0, c_percent / 100.0);
    1.0 / ((1.0 - c) * (1.0 - p))
}

/// The packets: `direction` (to: sent, from: received, both) and the peers
/// (`externalTargets`: addresses or CIDRs; `target`, other pods, is refused: their addresses
/// are not known on the node).
fn filter(spec: &Node) -> Result<pb::PacketFilter> {
    let direction = match spec.string("direction")?.as_deref() {
        None | Some("to") => pb::Direction::Egress,
        Some("from") => pb::Direction::Ingress,
        Some("both") => pb::Direction::Both,
        Some(other) => {
            return Err(Refusal::at("spec.direction", format!("{other:?}: to, from or both")));
        }
    };
    let mut remote = Vec::new();
    for (i, t) in spec.strings("externalTargets")?.unwrap_or_default().into_iter().enumerate() {
        let cidr = if t.contains('/') {
            t.clone()
        } else if t.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("{t}/128")
        } else if t.parse::<std::net::Ipv4Addr>().is_ok() {
            format!("{t}/32")
        } else {
            return Err(Refusal::at(
                format!("spec.externalTargets[{i}]"),
                format!("{t:?}: an address or CIDR (host names are not resolved)"),
            ));
        };
        remote.push(cidr);
    }
    if spec.has("target") {
        return Err(Refusal::at(
            "spec.target",
            "other pods as peers need their addresses, which the node does not know: list them in externalTargets",
        ));
    }
    Ok(pb::PacketFilter { direction: direction as i32, remote_cidrs: remote, ..Default::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netem_correlation_as_a_burst_length() {
        assert_eq!(netem_burst(10.0, 0.0), 0.0);
        // p = 0.1, c = 0.5: 1 / (0.5 * 0.9).
        assert!((netem_burst(10.0, 50.0) - 2.222).abs() < 0.001);
        assert!((netem_burst(25.0, 25.0) - 1.778).abs() < 0.001);
    }

    /// The faults of a NetworkChaos with this spec (indented two spaces), on a cgroup.
    fn plan(spec: &str) -> anyhow::Result<Vec<pb::fault::Kind>> {
        let text = format!(
            "apiVersion: chaos-mesh.org/v1alpha1\nkind: NetworkChaos\nmetadata: {{name: n, namespace: shop}}\nspec:\n  duration: 30s\n  mode: all\n{spec}"
        );
        let t = pb::Target { kind: Some(pb::target::Kind::CgroupPath("/x".into())) };
        let planned = super::super::plan_file(&text, Some(&t), &mut || 0.0)?;
        Ok(planned.into_iter().map(|p| p.request.fault.unwrap().kind.unwrap()).collect())
    }

    fn one(spec: &str) -> pb::fault::Kind {
        let mut f = plan(spec).unwrap();
        assert_eq!(f.len(), 1, "{f:?}");
        f.remove(0)
    }

    /// The refusal's text after the document's name: "spec.x: why".
    fn refused(spec: &str) -> String {
        let e = plan(spec).unwrap_err().to_string();
        e.split_once("): ").map(|(_, r)| r.to_string()).unwrap_or(e)
    }

    fn dir(f: &Option<pb::PacketFilter>) -> pb::Direction {
        pb::Direction::try_from(f.as_ref().unwrap().direction).unwrap()
    }

    #[test]
    fn delay_latency_jitter_correlation() {
        let f = one(
            "  action: delay\n  delay:\n    latency: 90ms\n    jitter: 10ms\n    correlation: \"25\"\n  direction: both\n  device: eth0\n",
        );
        let pb::fault::Kind::NetDelay(d) = f else { panic!("{f:?}") };
        assert_eq!(d.latency, Some(convert::duration(Duration::from_millis(90))));
        assert_eq!(d.jitter, Some(convert::duration(Duration::from_millis(10))));
        assert_eq!(d.correlation, 25.0);
        assert_eq!(d.distribution, pb::Distribution::Uniform as i32);
        assert_eq!(d.devices, vec!["eth0".to_string()]);
        assert_eq!(dir(&d.filter), pb::Direction::Both);
        // Chaos Mesh's defaults (correlation "0", jitter "0ms") are absent values.
        let f = one("  action: delay\n  delay: {latency: 1s, jitter: 0ms, correlation: \"0\"}\n");
        let pb::fault::Kind::NetDelay(d) = f else { panic!() };
        assert_eq!((d.jitter, d.correlation), (Some(convert::duration(Duration::ZERO)), 0.0));
        assert_eq!(dir(&d.filter), pb::Direction::Egress, "direction to by default");
        for (spec, want) in [
            ("  action: delay\n  delay: {latency: 10ms, jitter: 20ms}\n", "spec.delay.jitter: "),
            ("  action: delay\n  delay: {latency: 29s, jitter: 2s}\n", "spec.delay.latency: "),
            ("  action: delay\n  delay: {latency: 0s}\n", "spec.delay.latency: "),
            ("  action: delay\n  delay: {latency: 10}\n", "spec.delay.latency: "),
            ("  action: delay\n  delay: {jitter: 1ms}\n", "spec.delay.latency: required"),
            (
                "  action: delay\n  delay: {latency: 1ms, correlation: \"101\"}\n",
                "spec.delay.correlation: ",
            ),
            (
                "  action: delay\n  delay: {latency: 1ms, reorder: {reorder: \"50\", gap: 5}}\n",
                "spec.delay.reorder: ",
            ),
            ("  action: delay\n", "spec.delay: required with action delay"),
            (
                "  action: delay\n  delay: {latency: 1ms}\n  loss: {loss: \"5\"}\n",
                "spec.loss: action delay runs spec.delay only: use action netem",
            ),
            ("  action: delay\n  delay: {latency: 1ms}\n  device: a/b\n", "spec.device: "),
        ] {
            assert!(refused(spec).starts_with(want), "{spec}: {}", refused(spec));
        }
    }

    #[test]
    fn loss_with_correlation_and_refusals() {
        let f = one(
            "  action: loss\n  loss: {loss: \"20\", correlation: \"50\"}\n  externalTargets: [10.1.0.0/16, 192.0.2.7, \"2001:db8::1\"]\n",
        );
        let pb::fault::Kind::NetLoss(l) = f else { panic!() };
        assert_eq!(l.percent, 20.0);
        assert!((l.burst_length - 2.5).abs() < 1e-9, "1 / (0.5 * 0.8)");
        assert_eq!(
            l.filter.unwrap().remote_cidrs,
            vec!["10.1.0.0/16", "192.0.2.7/32", "2001:db8::1/128"]
        );
        assert!(refused("  action: loss\n  loss: {loss: \"0\"}\n").starts_with("spec.loss.loss: "));
        assert!(
            refused("  action: loss\n  loss: {loss: \"5\"}\n  device: eth0\n")
                .starts_with("spec.device: faultline's loss acts on the pod's sockets")
        );
        assert!(
            refused("  action: loss\n  loss: {loss: \"5\"}\n  externalTargets: [db.example.com]\n")
                .starts_with("spec.externalTargets[0]: ")
        );
        assert!(
            refused("  action: loss\n  loss: {loss: \"5\"}\n  target: {mode: all, selector: {namespaces: [a]}}\n")
                .starts_with("spec.target: ")
        );
        assert!(
            refused("  action: loss\n  loss: {loss: \"5\"}\n  targetDevice: eth1\n")
                .starts_with("spec.targetDevice: ")
        );
        assert!(
            refused("  action: loss\n  loss: {loss: \"5\"}\n  direction: up\n")
                .starts_with("spec.direction: ")
        );
    }

    #[test]
    fn duplicate_and_corrupt() {
        let f = one(
            "  action: duplicate\n  duplicate: {duplicate: \"40\", correlation: \"0\"}\n  device: veth1\n",
        );
        let pb::fault::Kind::NetDuplicate(d) = f else { panic!() };
        assert_eq!((d.percent, d.devices), (40.0, vec!["veth1".to_string()]));
        assert_eq!(dir(&d.filter), pb::Direction::Egress);
        let f = one("  action: corrupt\n  corrupt: {corrupt: \"3.5\"}\n  direction: to\n");
        let pb::fault::Kind::NetCorrupt(c) = f else { panic!() };
        assert_eq!(c.percent, 3.5);
        for (spec, want) in [
            (
                "  action: duplicate\n  duplicate: {duplicate: \"40\", correlation: \"25\"}\n",
                "spec.duplicate.correlation: ",
            ),
            (
                "  action: corrupt\n  corrupt: {corrupt: \"1\", correlation: \"5\"}\n",
                "spec.corrupt.correlation: ",
            ),
            (
                "  action: corrupt\n  corrupt: {corrupt: \"1\"}\n  direction: from\n",
                "spec.direction: ",
            ),
            (
                "  action: duplicate\n  duplicate: {duplicate: \"1\"}\n  direction: both\n",
                "spec.direction: ",
            ),
            ("  action: corrupt\n  corrupt: {corrupt: \"101\"}\n", "spec.corrupt.corrupt: "),
            ("  action: corrupt\n  corrupt: {corrupt: \"x\"}\n", "spec.corrupt.corrupt: "),
        ] {
            assert!(refused(spec).starts_with(want), "{spec}: {}", refused(spec));
        }
    }

    #[test]
    fn bandwidth_rates_are_bytes_per_second_in_powers_of_1024() {
        assert_eq!(rate_bytes("1mbps"), Some(1 << 20));
        assert_eq!(rate_bytes("100 KBPS"), Some(102_400));
        assert_eq!(rate_bytes("8000bps"), Some(8000));
        assert_eq!(rate_bytes("2gbps"), Some(2 << 30));
        assert_eq!(rate_bytes("1tbps"), Some(1 << 40));
        for bad in ["1mbit", "1.5mbps", "mbps", "10", "-1kbps"] {
            assert_eq!(rate_bytes(bad), None, "{bad}");
        }
        let f = one(
            "  action: bandwidth\n  bandwidth: {rate: 1mbps, limit: 20971520, buffer: 10000}\n  device: eth0\n",
        );
        let pb::fault::Kind::NetBandwidth(b) = f else { panic!() };
        assert_eq!(b.rate_bps, 8 * 1_048_576);
        assert_eq!(b.burst_bytes, 10_000);
        assert_eq!(b.devices, vec!["eth0".to_string()]);
        let f = one(
            "  action: bandwidth\n  bandwidth: {rate: 100kbps, limit: 1, buffer: 1, peakrate: 0, minburst: 0}\n",
        );
        let pb::fault::Kind::NetBandwidth(b) = f else { panic!() };
        assert_eq!((b.rate_bps, b.burst_bytes), (819_200, 1));
        for (spec, want) in [
            (
                "  action: bandwidth\n  bandwidth: {rate: 1mbps, limit: 100, buffer: 100, peakrate: 2000000, minburst: 1500}\n",
                "spec.bandwidth.peakrate: faultline paces at one rate",
            ),
            (
                "  action: bandwidth\n  bandwidth: {rate: 1mbps, limit: 100, buffer: 100, minburst: 1500}\n",
                "spec.bandwidth.minburst: ",
            ),
            (
                "  action: bandwidth\n  bandwidth: {rate: 1mbit, limit: 100, buffer: 100}\n",
                "spec.bandwidth.rate: \"1mbit\" is not a rate",
            ),
            (
                "  action: bandwidth\n  bandwidth: {rate: 999bps, limit: 100, buffer: 100}\n",
                "spec.bandwidth.rate: \"999bps\" is 7992 bits per second",
            ),
            (
                "  action: bandwidth\n  bandwidth: {rate: 20gbps, limit: 100, buffer: 100}\n",
                "spec.bandwidth.rate: ",
            ),
            (
                "  action: bandwidth\n  bandwidth: {limit: 100, buffer: 100}\n",
                "spec.bandwidth.rate: required",
            ),
            (
                "  action: bandwidth\n  bandwidth: {rate: 1mbps, buffer: 2000000000}\n",
                "spec.bandwidth.buffer: ",
            ),
            (
                "  action: bandwidth\n  bandwidth: {rate: 1mbps, buffer: 1.5}\n",
                "spec.bandwidth.buffer: ",
            ),
            (
                "  action: bandwidth\n  bandwidth: {rate: 1mbps, limit: -3}\n",
                "spec.bandwidth.limit: ",
            ),
            (
                "  action: bandwidth\n  bandwidth: {rate: 1mbps, cell: 3}\n",
                "spec.bandwidth.cell: not supported",
            ),
            ("  action: bandwidth\n", "spec.bandwidth: required"),
        ] {
            assert!(refused(spec).starts_with(want), "{spec}: {}", refused(spec));
        }
    }

    #[test]
    fn partition_by_direction() {
        let both =
            one("  action: partition\n  direction: both\n  externalTargets: [10.9.0.0/16]\n");
        let pb::fault::Kind::NetPartition(p) = both else { panic!("{both:?}") };
        assert_eq!(p.filter.unwrap().remote_cidrs, vec!["10.9.0.0/16"]);
        for (d, want) in [("to", pb::Direction::Egress), ("from", pb::Direction::Ingress)] {
            let f = one(&format!(
                "  action: partition\n  direction: {d}\n  externalTargets: [10.9.0.1]\n"
            ));
            let pb::fault::Kind::NetLoss(l) = f else { panic!("{f:?}") };
            assert_eq!((l.percent, l.burst_length, dir(&l.filter)), (100.0, 0.0, want), "{d}");
        }
        assert!(refused("  action: partition\n  device: eth0\n").starts_with("spec.device: "));
    }

    #[test]
    fn netem_runs_each_block_given() {
        let f = plan(
            "  action: netem\n  delay: {latency: 10ms}\n  loss: {loss: \"5\"}\n  duplicate: {duplicate: \"1\"}\n  corrupt: {corrupt: \"2\"}\n",
        )
        .unwrap();
        let kinds: Vec<&str> = f
            .iter()
            .map(|k| convert::fault_kind(Some(&pb::Fault { kind: Some(k.clone()) })).unwrap())
            .collect();
        assert_eq!(kinds, ["net_delay", "net_loss", "net_duplicate", "net_corrupt"]);
        assert!(refused("  action: netem\n").starts_with("spec.action: netem needs"));
        assert!(
            refused("  action: netem\n  loss: {loss: \"5\"}\n  bandwidth: {rate: 1mbps}\n")
                .starts_with("spec.bandwidth: not supported")
        );
        assert!(
            refused("  action: netem\n  delay: {latency: 10ms}\n  rate: {rate: 1mbps}\n")
                .starts_with("spec.rate: ")
        );
        assert!(refused("  action: reorder\n").starts_with("spec.action: \"reorder\""));
    }
}
