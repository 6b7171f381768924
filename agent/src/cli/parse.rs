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
