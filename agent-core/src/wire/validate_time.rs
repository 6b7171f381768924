//! TimeSkew requests to checked values.

use faultline_proto::v1 as pb;

use crate::{
    engine::{
        error::{Error, Result},
        model::TimeSkew,
    },
    faults::time::stub::REALTIME_MASK,
};

/// At most ten years either way (365.25-day years).
pub const MAX_OFFSET_NS: i64 = 10 * 31_557_600 * 1_000_000_000;

pub fn time_skew(t: &pb::TimeSkew, field: &str) -> Result<TimeSkew> {
    let offset = t
        .offset
        .as_ref()
        .ok_or_else(|| Error::invalid(format!("{field}.offset"), "required: a signed duration"))?;
    let offset_ns = (offset.seconds as i128) * 1_000_000_000 + offset.nanos as i128;
    if offset_ns == 0 || offset_ns.abs() > MAX_OFFSET_NS as i128 {
        return Err(Error::invalid(
            format!("{field}.offset"),
            format!(
                "must be non-zero and at most 10 years either way (+-315576000 s), got {} s",
                offset_ns as f64 / 1e9
            ),
        ));
    }
    let mut clock_mask = 0;
    for c in &t.clocks {
        clock_mask |= match c.as_str() {
            "realtime" | "CLOCK_REALTIME" => REALTIME_MASK,
            "monotonic" | "boottime" | "CLOCK_MONOTONIC" | "CLOCK_BOOTTIME" => {
                return Err(Error::invalid(
                    format!("{field}.clocks"),
                    format!(
                        "{c} cannot be shifted: a running process's {c} clock would go \
                         backwards when the fault ends (allowed: realtime)"
                    ),
                ));
            }
            other => {
                return Err(Error::invalid(
                    format!("{field}.clocks"),
                    format!("unknown clock {other:?} (allowed: realtime)"),
                ));
            }
        };
    }
    if clock_mask == 0 {
        clock_mask = REALTIME_MASK;
    }
    Ok(TimeSkew { offset_ns: offset_ns as i64, clock_mask, follow_children: t.follow_children })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn skew(seconds: i64, clocks: &[&str]) -> Result<TimeSkew> {
        let t = pb::TimeSkew {
            offset: Some(prost_types::Duration { seconds, nanos: 0 }),
            clocks: clocks.iter().map(|c| c.to_string()).collect(),
            follow_children: false,
        };
        time_skew(&t, "fault.time_skew")
    }

    #[test]
    fn offsets_and_clocks_are_checked() {
        assert_eq!(skew(-600, &[]).unwrap().offset_ns, -600_000_000_000);
        assert_eq!(skew(3600, &["realtime"]).unwrap().clock_mask, REALTIME_MASK);
        for bad in [0, 315_576_001, -315_576_001] {
            let e = skew(bad, &[]).unwrap_err().to_string();
            assert!(e.contains("fault.time_skew.offset") && e.contains("10 years"), "{e}");
        }
        assert!(skew(315_576_000, &[]).is_ok());
        let e = skew(60, &["monotonic"]).unwrap_err().to_string();
        assert!(e.contains("fault.time_skew.clocks") && e.contains("backwards"), "{e}");
        assert!(skew(60, &["utc"]).unwrap_err().to_string().contains("unknown clock"));
        let none = pb::TimeSkew::default();
        assert!(time_skew(&none, "f").unwrap_err().to_string().contains("f.offset"));
    }
}
