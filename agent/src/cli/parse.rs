//! The value parsers of the command line: durations, intervals, sizes, rates, port ranges,
//! labels. Each checks the syntax only and says what it expected; the agent checks the
//! values and names the field.

use std::time::Duration;

use faultline_proto::v1 as pb;

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 250ms, 5m)"))
}

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

/// "8mbit", "512kbit", "1gbit", "100000" (bits per second).
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix("/s").or_else(|| t.strip_suffix("ps")).unwrap_or(&t).to_string();
    let (num, mult) = [("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3), ("bit", 1.0)]
        .iter()
        .find_map(|(u, m)| t.strip_suffix(u).map(|n| (n.to_string(), *m)))
        .unwrap_or((t.clone(), 1.0));
    num.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .map(|v| (v * mult).round() as u64)
        .ok_or_else(|| format!("{s:?} is not a rate (e.g. 8mbit, 512kbit, 1gbit)"))
}

/// "64kb", "1mb", "1500" (bytes; k/m/g are powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t).trim_end_matches('i').to_string();
    let (num, mult) = [("k", 1u64 << 10), ("m", 1 << 20), ("g", 1 << 30)]
        .iter()
        .find_map(|(u, m)| t.strip_suffix(u).map(|n| (n.to_string(), *m)))
        .unwrap_or((t.clone(), 1));
    num.trim()
        .parse::<u64>()
        .map(|v| v.saturating_mul(mult))
        .map_err(|_| format!("{s:?} is not a size (e.g. 64kb, 1mb)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_sizes() {
        assert_eq!(parse_rate("8mbit"), Ok(8_000_000));
        assert_eq!(parse_rate("1.5Mbit/s"), Ok(1_500_000));
        assert_eq!(parse_rate("512kbit"), Ok(512_000));
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert!(parse_rate("fast").is_err());
        assert_eq!(parse_bytes("64kb"), Ok(65536));
        assert_eq!(parse_bytes("1MiB"), Ok(1 << 20));
        assert_eq!(parse_bytes("1500"), Ok(1500));
        assert!(parse_bytes("lots").is_err());
    }

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
