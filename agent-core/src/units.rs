//! Human units on the command line and in the policy file: durations ("250ms", "5m"), sizes
//! ("64kb", "512MiB") and rates ("8mbit"). Values are checked by the API's validation; these
//! only read the syntax. `human_duration` and `human_bytes` write them back for people.

use std::time::Duration;

/// "30s", "250ms", "5m" (humantime).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 250ms, 5m)"))
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

/// A protobuf Duration as people write it, its sign included ("-2s 500ms"), for messages
/// that show a value they refuse.
pub fn format_proto_duration(d: &prost_types::Duration) -> String {
    let nanos = i128::from(d.seconds) * 1_000_000_000 + i128::from(d.nanos);
    let abs = nanos.unsigned_abs();
    let secs = u64::try_from(abs / 1_000_000_000).unwrap_or(u64::MAX);
    let text = human_duration(Duration::new(secs, (abs % 1_000_000_000) as u32));
    if nanos < 0 { format!("-{text}") } else { text }
}

/// Bytes in powers of 1024: "256MiB", "1.5GiB".
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if v.fract() == 0.0 { format!("{v}{}", UNITS[u]) } else { format!("{v:.1}{}", UNITS[u]) }
}

/// A duration for people, the one way every message and view writes one: "0s", "250ns",
/// "1.5us", "50ms", "1.5s", "2m30s", "1h", "1h5s" (zero parts left out), "7d". Exact (round
/// first where fewer digits will do), and `parse_duration` reads it back.
pub fn human_duration(d: Duration) -> String {
    /// "1", "1.5", "1.000000001": `whole` and `frac` of `digits` decimal digits, trailing
    /// zeros cut.
    fn decimal(whole: u64, frac: u64, digits: usize) -> String {
        if frac == 0 {
            return whole.to_string();
        }
        let f = format!("{frac:0digits$}");
        format!("{whole}.{}", f.trim_end_matches('0'))
    }
    let (secs, nanos) = (d.as_secs(), u64::from(d.subsec_nanos()));
    if secs == 0 {
        return match nanos {
            0 => "0s".into(),
            n if n < 1_000 => format!("{n}ns"),
            n if n < 1_000_000 => format!("{}us", decimal(n / 1_000, n % 1_000, 3)),
            n => format!("{}ms", decimal(n / 1_000_000, n % 1_000_000, 6)),
        };
    }
    let (days, hours, mins, s) =
        (secs / 86_400, secs % 86_400 / 3_600, secs % 3_600 / 60, secs % 60);
    let mut out = String::new();
    for (v, unit) in [(days, "d"), (hours, "h"), (mins, "m")] {
        if v > 0 {
            out += &format!("{v}{unit}");
        }
    }
    if s > 0 || nanos > 0 {
        out += &format!("{}s", decimal(s, nanos, 9));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_powers_of_1024() {
        assert_eq!(parse_bytes("64kb"), Ok(64 << 10));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1500"), Ok(1500));
        assert!(parse_bytes("lots").is_err());
    }

    #[test]
    fn rates_are_bits_per_second() {
        assert_eq!(parse_rate("8mbit"), Ok(8_000_000));
        assert_eq!(parse_rate("512kbit/s"), Ok(512_000));
        assert_eq!(parse_rate("1.5Mbit/s"), Ok(1_500_000));
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("-1mbit").is_err());
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let pd = |seconds, nanos| format_proto_duration(&prost_types::Duration { seconds, nanos });
        assert_eq!(pd(0, 0), "0s");
        assert_eq!(pd(0, 50_000_000), "50ms");
        assert_eq!(pd(90, 0), "1m30s");
        assert_eq!(pd(-2, -500_000_000), "-2.5s");
        assert_eq!(pd(0, -1), "-1ns");
    }

    #[test]
    fn durations_take_humantime() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("soon").unwrap_err().contains("examples"));
    }

    #[test]
    fn durations_read_like_people_write_them() {
        let ms = Duration::from_millis;
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(250), "250ns"),
            (Duration::from_nanos(1_500), "1.5us"),
            (ms(50), "50ms"),
            (Duration::from_micros(2_250), "2.25ms"),
            (ms(1_500), "1.5s"),
            (ms(30_000), "30s"),
            (ms(150_000), "2m30s"),
            (ms(300_000), "5m"),
            (Duration::from_secs(3_600), "1h"),
            (Duration::from_secs(3_605), "1h5s"),
            (Duration::from_secs(5_400), "1h30m"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::new(61, 1), "1m1.000000001s"),
        ];
        for (d, text) in cases {
            assert_eq!(human_duration(d), text, "{d:?}");
            // What it writes, `--for` and the policy file read back.
            if !d.is_zero() {
                assert_eq!(parse_duration(text), Ok(d), "{text}");
            }
        }
    }
}
