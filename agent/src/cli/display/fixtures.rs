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

/// An active experiment of `kind` on `target`, started at t0() for 60s, with counters `c`.
pub fn active(
    id: &str,
    kind: pb::fault::Kind,
    target: pb::target::Kind,
    c: pb::Counters,
) -> pb::Experiment {
    let mut e = loss(id, pb::State::Active, t0(), 60);
    e.target = Some(pb::Target { kind: Some(target) });
    e.fault = Some(pb::Fault { kind: Some(kind) });
    e.counters = Some(c);
    e
}

/// Every family's counters moved, each to a different value.
pub fn all_counters() -> pb::Counters {
    pb::Counters {
        packets_matched: 1000,
        packets_dropped: 503,
        packets_delayed: 7,
        packets_corrupted: 8,
        packets_duplicated: 9,
        calls_seen: 40,
        calls_failed: 12,
        cpu_usage_usec: 1_500_000,
        bytes_resident: 256 << 20,
        bytes_filled: 1 << 30,
        bytes_written: 2048,
        bytes_read: 1024,
        processes_signalled: 3,
        processes_frozen: 2,
        calls_delayed: 6,
        delay_added_usec: 600_000,
        processes_skewed: 4,
        skewed_reads: 1,
        processes_unskewed: 5,
    }
}
