//! How far an experiment got, in words: the counters its kind of fault keeps, when it first
//! acted, and the time it has left (as words or a draining bar).

use std::time::{Duration, SystemTime};

use faultline_proto::v1 as pb;

use faultline_core::{
    counters,
    units::human_duration,
    wire::{convert, convert::system_time as time},
};

pub fn is_live(e: &pb::Experiment) -> bool {
    e.state == pb::State::Pending as i32 || e.state == pb::State::Active as i32
}
/// The counters that say what this kind of fault did, as (label, value).
pub fn counters(e: &pb::Experiment) -> Vec<(&'static str, String)> {
    let Some(kind) = convert::fault_kind(e.fault.as_ref()) else { return Vec::new() };
    counters::of_kind(kind).short(&convert::counters_from_pb(&e.counters.unwrap_or_default()))
}

/// "matched 1000 dropped 503".
pub fn counters_text(e: &pb::Experiment) -> String {
    let parts: Vec<String> = counters(e).iter().map(|(k, v)| format!("{k} {v}")).collect();
    if parts.is_empty() { "-".into() } else { parts.join(" ") }
}

/// In whole seconds (the rest dropped): 42s, 1m30s, 12m5s, 1h2m5s.
pub fn compact(d: Duration) -> String {
    human_duration(Duration::from_secs(d.as_secs()))
}

/// Whole seconds, rounded up: 0.2s left shows as 1s, not 0s.
pub(super) fn ceil_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// When the fault first acted, counted from its start: "+312ms", "+1.3s", "+12s", "+2m5s";
/// "not yet" while it is live and has done nothing, "never" after.
pub fn first_hit(e: &pb::Experiment) -> String {
    match (time(e.first_hit_at.as_ref()), time(e.started_at.as_ref())) {
        (Some(hit), Some(start)) => {
            let d = hit.duration_since(start).unwrap_or_default();
            // Three digits at most below 10s: milliseconds, then tenths.
            let shown = if d < Duration::from_secs(1) {
                Duration::from_millis(d.as_millis() as u64)
            } else if d < Duration::from_secs(10) {
                Duration::from_millis(d.as_millis() as u64 / 100 * 100)
            } else {
                Duration::from_secs(d.as_secs())
            };
            format!("+{}", human_duration(shown))
        }
        (Some(_), None) => "yes".into(),
        (None, _) if is_live(e) => "not yet".into(),
        (None, _) => "never".into(),
    }
}

/// The time column of one experiment: a bar while it is active, words otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeLeft {
    Bar { left: Duration, total: Duration },
    Text(String),
}

pub fn time_left(e: &pb::Experiment, now: SystemTime) -> TimeLeft {
    let deadline = time(e.deadline.as_ref());
    if e.state == pb::State::Active as i32
        && let Some(deadline) = deadline
    {
        let left = deadline.duration_since(now).unwrap_or_default();
        let total = e
            .duration
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
            .filter(|d| !d.is_zero())
            .or_else(|| time(e.started_at.as_ref()).and_then(|s| deadline.duration_since(s).ok()))
            .unwrap_or(left);
        return TimeLeft::Bar { left, total };
    }
    if e.state == pb::State::Pending as i32 {
        return TimeLeft::Text("pending".into());
    }
    match time(e.ended_at.as_ref()) {
        Some(t) => TimeLeft::Text(format!(
            "ended {} ago",
            compact(now.duration_since(t).unwrap_or_default())
        )),
        None => TimeLeft::Text("-".into()),
    }
}

/// In words, for lines: "42s left", "ended 3s ago".
pub fn time_left_text(e: &pb::Experiment, now: SystemTime) -> String {
    match time_left(e, now) {
        TimeLeft::Bar { left, .. } => format!("{} left", compact(ceil_secs(left))),
        TimeLeft::Text(t) => t,
    }
}

/// `[#######---] 42s`: `cells` marks, one `#` for each share of the time still left.
pub fn bar(left: Duration, total: Duration, cells: usize) -> String {
    let frac = if total.is_zero() {
        0.0
    } else {
        (left.as_secs_f64() / total.as_secs_f64()).clamp(0.0, 1.0)
    };
    let filled = ((frac * cells as f64).ceil() as usize).min(cells);
    format!("[{}{}] {}", "#".repeat(filled), "-".repeat(cells - filled), compact(ceil_secs(left)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::display::fixtures::{loss, t0, ts, with_kind};

    #[test]
    fn bars_drain_with_the_time_left() {
        let m = Duration::from_secs(60);
        assert_eq!(bar(m, m, 10), "[##########] 1m");
        assert_eq!(bar(Duration::from_secs(42), m, 10), "[#######---] 42s");
        assert_eq!(bar(Duration::from_millis(41_200), m, 10), "[#######---] 42s");
        // Any time left shows at least one mark, and none once it is over.
        assert_eq!(bar(Duration::from_millis(300), m, 10), "[#---------] 1s");
        assert_eq!(bar(Duration::ZERO, m, 5), "[-----] 0s");
        assert_eq!(bar(Duration::from_secs(90), m, 4), "[####] 1m30s");
        assert_eq!(compact(Duration::from_secs(125)), "2m5s");
        assert_eq!(bar(m, Duration::ZERO, 3), "[---] 1m");
        assert_eq!(compact(Duration::from_millis(3_725_900)), "1h2m5s");
    }

    #[test]
    fn counters_follow_the_kind_of_fault() {
        use pb::fault::Kind;
        let c = pb::Counters {
            packets_matched: 10,
            packets_dropped: 4,
            packets_delayed: 6,
            calls_seen: 7,
            calls_failed: 2,
            cpu_usage_usec: 1_500_000,
            bytes_resident: 1 << 20,
            bytes_written: 2048,
            bytes_read: 1024,
            processes_signalled: 3,
            processes_frozen: 5,
            ..Default::default()
        };
        let text = |k: Kind| counters_text(&with_kind(k, c));
        assert_eq!(text(Kind::NetLoss(Default::default())), "matched 10 dropped 4");
        assert_eq!(text(Kind::NetPartition(Default::default())), "matched 10 dropped 4");
        assert_eq!(text(Kind::NetDelay(Default::default())), "matched 10 delayed 6");
        assert_eq!(text(Kind::SyscallErrno(Default::default())), "calls 7 failed 2");
        assert_eq!(text(Kind::NetReject(Default::default())), "connects 7 failed 2");
        assert_eq!(text(Kind::NetDns(Default::default())), "queries 7 failed 2");
        assert_eq!(text(Kind::CpuStress(Default::default())), "cpu 1.5s");
        assert_eq!(text(Kind::MemoryStress(Default::default())), "resident 1MiB");
        // Reads show once there are any (a write-only stress never reads).
        let write_only = pb::Counters { bytes_read: 0, ..c };
        let io = Kind::IoStress(Default::default());
        assert_eq!(counters_text(&with_kind(io.clone(), write_only)), "written 2KiB");
        let mixed = pb::IoStress { mode: pb::IoMode::Mixed as i32, ..Default::default() };
        assert_eq!(text(Kind::IoStress(mixed)), "written 2KiB read 1KiB");
        assert_eq!(text(Kind::ProcessKill(Default::default())), "signalled 3");
        assert_eq!(text(Kind::ProcessPause(Default::default())), "frozen 5");
        assert_eq!(counters_text(&pb::Experiment::default()), "-");
    }

    #[test]
    fn first_hit_from_the_start() {
        let mut e = loss("a", pb::State::Active, t0(), 60);
        assert_eq!(first_hit(&e), "not yet");
        e.first_hit_at = Some(ts(t0() + Duration::from_micros(312_400)));
        assert_eq!(first_hit(&e), "+312ms");
        e.first_hit_at = Some(ts(t0() + Duration::from_millis(1_380)));
        assert_eq!(first_hit(&e), "+1.3s");
        e.first_hit_at = Some(ts(t0() + Duration::from_millis(125_900)));
        assert_eq!(first_hit(&e), "+2m5s");
        let ended = loss("b", pb::State::Expired, t0(), 60);
        assert_eq!(first_hit(&ended), "never");
    }
}
