//! NetworkChaos: loss, delay, duplicate, corrupt, bandwidth and partition, on the pods'
//! traffic to and from `target`/`externalTargets` in `direction`.

use faultline_proto::v1 as pb;

use super::{
    Translated,
    manifest::{Node, Refusal, Result},
};

pub fn translate(spec: &Node) -> Result<Translated> {
    let action = spec.string("action")?.ok_or_else(|| Refusal::at("spec.action", "required"))?;
    let filter = filter(spec)?;
    let fault = match action.as_str() {
        "loss" => {
            let l = spec
                .node("loss")?
                .ok_or_else(|| Refusal::at("spec.loss", "required with action loss"))?;
            let p = l.percent("loss")?.ok_or_else(|| Refusal::at(l.path_of("loss"), "required"))?;
            if p <= 0.0 {
                return Err(Refusal::at(l.path_of("loss"), "must be above 0"));
            }
            let c = l.percent("correlation")?.unwrap_or(0.0);
            l.finish()?;
            pb::fault::Kind::NetLoss(pb::NetLoss {
                filter: Some(filter),
                percent: p,
                burst_length: netem_burst(p, c),
                ..Default::default()
            })
        }
        other => return Err(Refusal::at("spec.action", format!("{other:?} is not supported"))),
    };
    Ok(Translated { faults: vec![fault], containers: Vec::new() })
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
}
