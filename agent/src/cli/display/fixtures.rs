//! Experiments for the rendering tests, at a fixed time.

use std::time::{Duration, SystemTime};

use faultline_proto::v1 as pb;

pub fn ts(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

pub fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

pub fn loss(id: &str, state: pb::State, started: SystemTime, secs: i64) -> pb::Experiment {
    pb::Experiment {
        id: id.into(),
        state: state as i32,
        target: Some(pb::Target { kind: Some(pb::target::Kind::CgroupPath("/checkout".into())) }),
        fault: Some(pb::Fault {
            kind: Some(pb::fault::Kind::NetLoss(pb::NetLoss {
                percent: 50.0,
                ..Default::default()
            })),
        }),
        duration: Some(prost_types::Duration { seconds: secs, nanos: 0 }),
        created_at: Some(ts(started)),
        started_at: Some(ts(started)),
        deadline: Some(ts(started + Duration::from_secs(secs as u64))),
        counters: Some(pb::Counters {
            packets_matched: 1000,
            packets_dropped: 503,
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn with_kind(kind: pb::fault::Kind, c: pb::Counters) -> pb::Experiment {
    pb::Experiment {
        fault: Some(pb::Fault { kind: Some(kind) }),
        counters: Some(c),
        ..Default::default()
    }
}
