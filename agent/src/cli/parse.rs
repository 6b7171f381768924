//! The value parsers of the command line: intervals, port ranges and labels here; durations,
//! sizes and rates from the core's units. Each checks the syntax only and says what it expected; the agent checks the
//! values and names the field.

use std::time::Duration;

/// Durations, sizes and rates are the core's units (the policy file reads them too).
pub use faultline_core::units::{parse_bytes, parse_duration, parse_rate};
use faultline_proto::v1 as pb;

/// A redraw or snapshot interval: a duration of at least 100ms.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err(format!("{s:?} is too short: at least 100ms"));
    }
    Ok(d)
}

/// Only the syntax is checked here; the agent checks the values and names the field.
pub fn parse_port_range(s: &str) -> Result<pb::PortRange, String> {
    let num = |p: &str| {
        p.trim()
            .parse::<u32>()
            .map_err(|_| format!("{s:?} is not a port or range (e.g. 6379, 8000-8080)"))
    };
    match s.split_once('-') {
        Some((a, b)) => Ok(pb::PortRange { first: num(a)?, last: num(b)? }),
        None => Ok(pb::PortRange { first: num(s)?, last: 0 }),
    }
}

pub fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not key=value"))
}

/// An --abort-if condition: `psi.cpu|memory|io>PERCENT`, `oom`, `empty`, or
/// `http://HOST[:PORT]/PATH [timeout=DURATION] [failures=N]`.
pub fn parse_abort_if(s: &str) -> Result<pb::StopCondition, String> {
    use pb::stop_condition::Condition;
    let expected = "expected psi.cpu>N, psi.memory>N, psi.io>N, oom, empty, or \
                    'http://HOST:PORT/PATH [timeout=1s] [failures=N]'";
    let t = s.trim();
    let condition = if let Some(rest) = t.strip_prefix("psi.") {
        let (res, pct) = rest.split_once('>').ok_or_else(|| format!("{s:?}: {expected}"))?;
        let resource = match res.trim() {
            "cpu" => pb::Resource::Cpu,
            "memory" => pb::Resource::Memory,
            "io" => pb::Resource::Io,
            other => return Err(format!("{s:?}: no PSI resource {other:?} (cpu, memory, io)")),
        };
        let above_percent = pct
            .trim()
            .trim_end_matches('%')
            .parse::<f64>()
            .map_err(|_| format!("{s:?}: {pct:?} is not a percent"))?;
        Condition::Pressure(pb::Pressure { resource: resource as i32, above_percent })
    } else if t == "oom" {
        Condition::OomKill(pb::OomKill {})
    } else if t == "empty" {
        Condition::NoProcesses(pb::NoProcesses {})
    } else if t.starts_with("http://") || t.starts_with("https://") {
        let mut words = t.split_whitespace();
        let url = words.next().unwrap_or_default().to_string();
        let mut probe = pb::HttpProbe { url, ..Default::default() };
        for w in words {
            match w.split_once('=') {
                Some(("timeout", v)) => probe.timeout = Some(duration_pb(parse_duration(v)?)),
                Some(("failures", v)) => {
                    probe.failures =
                        v.parse().map_err(|_| format!("{s:?}: failures={v} is not a count"))?
                }
                _ => return Err(format!("{s:?}: unknown option {w:?} (timeout=, failures=)")),
            }
        }
        Condition::Http(probe)
    } else {
        return Err(format!("{s:?}: {expected}"));
    };
    Ok(pb::StopCondition { condition: Some(condition) })
}

fn duration_pb(d: Duration) -> prost_types::Duration {
    faultline_core::wire::convert::duration(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_ports_and_labels() {
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("50ms"), Err("\"50ms\" is too short: at least 100ms".into()));
        assert!(parse_duration("1parsec").unwrap_err().contains("examples: 30s"));
        assert_eq!(parse_port_range("6379"), Ok(pb::PortRange { first: 6379, last: 0 }));
        assert_eq!(parse_port_range("8000-8080"), Ok(pb::PortRange { first: 8000, last: 8080 }));
        assert!(parse_port_range("80-x").is_err());
        assert_eq!(parse_label("team=core"), Ok(("team".into(), "core".into())));
        assert_eq!(parse_label("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_label("nolabel").is_err());
    }
}
