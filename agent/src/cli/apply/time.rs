//! TimeChaos: `timeOffset` as a time skew of the picked containers' (or the whole pod's)
//! processes. faultline shifts the realtime clock (with it realtime_coarse): `clockIds`
//! CLOCK_REALTIME and CLOCK_REALTIME_COARSE are honoured, every other clock refused with its
//! index (a running process's monotonic clocks cannot move without going backwards at the
//! end; CPU-time clocks are not a time of day).

use faultline_proto::v1 as pb;

use super::{
    Translated,
    manifest::{Node, Refusal, Result},
};

/// faultline's bound either way: ten years (365.25-day years).
const MAX_OFFSET_S: u64 = 10 * 31_557_600;

pub fn translate(spec: &Node) -> Result<Translated> {
    let containers = spec.strings("containerNames")?.unwrap_or_default();
    let (neg, d) = spec
        .duration("timeOffset", true)?
        .ok_or_else(|| Refusal::at("spec.timeOffset", "required: e.g. -10m, 1h"))?;
    if d.is_zero()
        || d.as_secs() > MAX_OFFSET_S
        || (d.as_secs() == MAX_OFFSET_S && d.subsec_nanos() > 0)
    {
        return Err(Refusal::at(
            "spec.timeOffset",
            "must be non-zero and at most 10 years either way",
        ));
    }
    for (i, c) in spec.strings("clockIds")?.unwrap_or_default().iter().enumerate() {
        match c.as_str() {
            "CLOCK_REALTIME" | "CLOCK_REALTIME_COARSE" => {}
            "CLOCK_MONOTONIC"
            | "CLOCK_MONOTONIC_RAW"
            | "CLOCK_MONOTONIC_COARSE"
            | "CLOCK_BOOTTIME" => {
                return Err(Refusal::at(
                    format!("spec.clockIds[{i}]"),
                    format!(
                        "{c} is not shifted by faultline: a running process's {c} would go \
                         backwards when the fault ends (CLOCK_REALTIME is)"
                    ),
                ));
            }
            other => {
                return Err(Refusal::at(
                    format!("spec.clockIds[{i}]"),
                    format!(
                        "{other} is not shifted by faultline (CLOCK_REALTIME and CLOCK_REALTIME_COARSE are)"
                    ),
                ));
            }
        }
    }
    let (s, n) = (d.as_secs() as i64, d.subsec_nanos() as i32);
    let offset = if neg {
        prost_types::Duration { seconds: -s, nanos: -n }
    } else {
        prost_types::Duration { seconds: s, nanos: n }
    };
    Ok(Translated {
        faults: vec![pb::fault::Kind::TimeSkew(pb::TimeSkew {
            offset: Some(offset),
            clocks: vec!["realtime".into()],
            follow_children: false,
        })],
        containers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Result<Translated> {
        crate::cli::apply::translate_yaml(translate, yaml)
    }

    #[test]
    fn offsets_signed_and_realtime_clocks() {
        let t = run("timeOffset: -10m\nclockIds: [CLOCK_REALTIME]\ncontainerNames: [app]").unwrap();
        assert_eq!(t.containers, vec!["app".to_string()]);
        let pb::fault::Kind::TimeSkew(s) = &t.faults[0] else { panic!() };
        assert_eq!(s.offset, Some(prost_types::Duration { seconds: -600, nanos: 0 }));
        assert_eq!(s.clocks, vec!["realtime".to_string()]);
        let t = run("timeOffset: 1h30m0.5s\nclockIds: [CLOCK_REALTIME_COARSE]").unwrap();
        let pb::fault::Kind::TimeSkew(s) = &t.faults[0] else { panic!() };
        assert_eq!(s.offset, Some(prost_types::Duration { seconds: 5400, nanos: 500_000_000 }));
        let t = run("timeOffset: '-1.5s'").unwrap();
        let pb::fault::Kind::TimeSkew(s) = &t.faults[0] else { panic!() };
        assert_eq!(s.offset, Some(prost_types::Duration { seconds: -1, nanos: -500_000_000 }));
    }

    #[test]
    fn refusals_name_their_path() {
        for (yaml, path) in [
            ("clockIds: [CLOCK_REALTIME]", "spec.timeOffset"),
            ("timeOffset: 0s", "spec.timeOffset"),
            ("timeOffset: 100000h", "spec.timeOffset"),
            ("timeOffset: ten", "spec.timeOffset"),
            ("timeOffset: 1m\nclockIds: [CLOCK_REALTIME, CLOCK_MONOTONIC]", "spec.clockIds[1]"),
            ("timeOffset: 1m\nclockIds: [CLOCK_PROCESS_CPUTIME_ID]", "spec.clockIds[0]"),
            ("timeOffset: 1m\nclockIds: [CLOCK_BOOTTIME_ALARM]", "spec.clockIds[0]"),
            ("timeOffset: 1m\nremoteCluster: east", "spec.remoteCluster"),
        ] {
            let r = run(yaml).err().unwrap_or_else(|| panic!("{yaml} was accepted"));
            assert_eq!(r.path, path, "{yaml}: {r}");
        }
    }
}
