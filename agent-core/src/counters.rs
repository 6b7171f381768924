//! What each kind of fault counts, declared once. The CLI (get, ls, watch, events) and the
//! Prometheus exporter render these declarations; neither holds per-kind counter code.
//! A new fault kind adds its row to `of_kind` (and, for a new counter, one `Counter` here, a
//! field in `Counters` and in the proto's `Counters`).

use crate::{engine::model::Counters, units::human_bytes};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Bytes,
    /// Kept in microseconds, shown in seconds.
    Micros,
}

impl Unit {
    pub fn show(self, v: u64) -> String {
        match self {
            Unit::Count => v.to_string(),
            Unit::Bytes => human_bytes(v),
            Unit::Micros => format!("{:.1}s", v as f64 / 1e6),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricType {
    Counter,
    Gauge,
}

impl MetricType {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
        }
    }
}

/// What a counter counts: packets, calls, stress work or processes. Prometheus exports every
/// counter of an experiment's group (zeros too), so a family's series do not come and go with
/// the kinds running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Packets,
    Calls,
    Stress,
    Processes,
}

/// One counter: its field (in the proto's and the JSON's `counters`), its words in `get`,
/// its Prometheus family, and how to read it from `Counters`.
pub struct Counter {
    pub field: &'static str,
    pub group: Group,
    pub detail: &'static str,
    pub unit: Unit,
    pub metric: &'static str,
    pub metric_type: MetricType,
    pub help: &'static str,
    pub read: fn(&Counters) -> u64,
}

impl Counter {
    /// For people: "503", "1.5MiB", "1.5s".
    pub fn show(&self, c: &Counters) -> String {
        self.unit.show((self.read)(c))
    }

    /// For Prometheus, in base units (seconds, bytes).
    pub fn metric_value(&self, c: &Counters) -> String {
        let v = (self.read)(c);
        match self.unit {
            Unit::Micros => format!("{:.6}", v as f64 / 1e6),
            Unit::Count | Unit::Bytes => v.to_string(),
        }
    }
}

macro_rules! counter {
    ($name:ident, $group:ident, $field:ident, $detail:literal, $unit:ident, $metric:literal, $ty:ident, $help:literal) => {
        pub const $name: Counter = Counter {
            field: stringify!($field),
            group: Group::$group,
            detail: $detail,
            unit: Unit::$unit,
            metric: $metric,
            metric_type: MetricType::$ty,
            help: $help,
            read: |c| c.$field,
        };
    };
}

#[rustfmt::skip]
mod defs {
    use super::*;
    counter!(PACKETS_MATCHED, Packets, packets_matched, "packets matched", Count,
        "faultline_experiment_packets_matched_total", Counter, "Packets the experiment's filter matched.");
    counter!(PACKETS_DROPPED, Packets, packets_dropped, "packets dropped", Count,
        "faultline_experiment_packets_dropped_total", Counter, "Packets dropped.");
    counter!(PACKETS_DELAYED, Packets, packets_delayed, "packets delayed", Count,
        "faultline_experiment_packets_delayed_total", Counter,
        "Packets whose departure a delay or bandwidth fault moved.");
    counter!(PACKETS_CORRUPTED, Packets, packets_corrupted, "packets corrupted", Count,
        "faultline_experiment_packets_corrupted_total", Counter, "Packets with a flipped bit.");
    counter!(PACKETS_DUPLICATED, Packets, packets_duplicated, "packets duplicated", Count,
        "faultline_experiment_packets_duplicated_total", Counter, "Packets sent twice.");
    counter!(CALLS_SEEN, Calls, calls_seen, "calls seen", Count,
        "faultline_experiment_calls_seen_total", Counter,
        "Calls (system calls, connect(), DNS queries) the experiment matched.");
    counter!(CALLS_FAILED, Calls, calls_failed, "calls failed", Count,
        "faultline_experiment_calls_failed_total", Counter, "Calls the experiment failed.");
    counter!(CPU_USAGE, Stress, cpu_usage_usec, "cpu used", Micros,
        "faultline_experiment_cpu_seconds_total", Counter,
        "CPU time the target cgroup used while a stress fault ran.");
    counter!(BYTES_RESIDENT, Stress, bytes_resident, "bytes resident", Bytes,
        "faultline_experiment_resident_bytes", Gauge, "Memory the stress workers hold resident.");
    counter!(BYTES_FILLED, Stress, bytes_filled, "bytes filled", Bytes,
        "faultline_experiment_filled_bytes", Gauge, "Disk space a disk fill holds.");
    counter!(BYTES_WRITTEN, Stress, bytes_written, "bytes written", Bytes,
        "faultline_experiment_written_bytes_total", Counter, "Bytes IO stress wrote.");
    counter!(BYTES_READ, Stress, bytes_read, "bytes read", Bytes,
        "faultline_experiment_read_bytes_total", Counter, "Bytes IO stress read.");
    counter!(PROCESSES_SIGNALLED, Processes, processes_signalled, "processes signalled", Count,
        "faultline_experiment_processes_signalled_total", Counter,
        "Signals a kill fault delivered.");
    counter!(PROCESSES_FROZEN, Processes, processes_frozen, "processes frozen", Count,
        "faultline_experiment_frozen_processes", Gauge, "Processes a pause fault froze.");
    counter!(CALLS_DELAYED, Calls, calls_delayed, "calls delayed", Count,
        "faultline_experiment_calls_delayed_total", Counter, "System calls a delay fault held.");
    counter!(DELAY_ADDED, Calls, delay_added_usec, "delay added", Micros,
        "faultline_experiment_delay_added_seconds_total", Counter,
        "Time the threads of a delay fault's target were held, in all.");
    counter!(PROCESSES_SKEWED, Processes, processes_skewed, "processes skewed", Count,
        "faultline_experiment_skewed_processes", Gauge,
        "Processes whose clock a time skew fault shifted (exec'd programs counted again).");
    counter!(SKEWED_READS, Processes, skewed_reads, "shifted reads seen", Count,
        "faultline_experiment_skewed_reads", Gauge,
        "1 once a process read the clock a time skew fault shifted.");
    counter!(PROCESSES_UNSKEWED, Processes, processes_unskewed, "processes not skewed", Count,
        "faultline_experiment_unskewed_processes", Gauge,
        "Processes of a time skew fault's target that could not be shifted (see its note).");
}
pub use defs::*;

/// Every counter, in the order of the proto's `Counters`.
pub const ALL: [&Counter; 19] = [
    &PACKETS_MATCHED,
    &PACKETS_DROPPED,
    &PACKETS_DELAYED,
    &PACKETS_CORRUPTED,
    &PACKETS_DUPLICATED,
    &CALLS_SEEN,
    &CALLS_FAILED,
    &CPU_USAGE,
    &BYTES_RESIDENT,
    &BYTES_FILLED,
    &BYTES_WRITTEN,
    &BYTES_READ,
    &PROCESSES_SIGNALLED,
    &PROCESSES_FROZEN,
    &CALLS_DELAYED,
    &DELAY_ADDED,
    &PROCESSES_SKEWED,
    &SKEWED_READS,
    &PROCESSES_UNSKEWED,
];

/// One counter as a kind of fault shows it in the short views: "dropped 503".
pub struct Shown {
    pub label: &'static str,
    pub counter: &'static Counter,
    /// Left out of the short views while zero (a counter only some modes of the kind move).
    pub only_if_moved: bool,
}

const fn shown(label: &'static str, counter: &'static Counter) -> Shown {
    Shown { label, counter, only_if_moved: false }
}

const fn if_moved(label: &'static str, counter: &'static Counter) -> Shown {
    Shown { label, counter, only_if_moved: true }
}

/// The counters of one kind of fault.
pub struct KindCounters {
    /// What the fault looked at (packets or calls it matched), if it matches anything: `ls`'s
    /// MATCHED column.
    pub matched: Option<Shown>,
    /// What it did, in order: `ls`'s HIT column is their sum.
    pub did: &'static [Shown],
    /// More of what it did, in another unit (not in HIT): the delay a delay fault added.
    pub also: &'static [Shown],
}

impl KindCounters {
    /// The group of the kind's counters (none for an unknown kind).
    pub fn group(&self) -> Option<Group> {
        self.all().next().map(|c| c.group)
    }

    /// (label, value) for the short views (watch, events, the live view): matched, then did.
    pub fn short(&self, c: &Counters) -> Vec<(&'static str, String)> {
        self.matched
            .iter()
            .chain(self.did)
            .chain(self.also)
            .filter(|s| !s.only_if_moved || (s.counter.read)(c) > 0)
            .map(|s| (s.label, s.counter.show(c)))
            .collect()
    }

    /// `ls`'s HIT column: the sum of what the fault did, in its unit.
    pub fn hit(&self, c: &Counters) -> String {
        let Some(first) = self.did.first() else { return "-".into() };
        let sum = self.did.iter().map(|s| (s.counter.read)(c)).sum();
        first.counter.unit.show(sum)
    }

    /// Every counter the kind keeps: `get`'s detail and the Prometheus families.
    pub fn all(&self) -> impl Iterator<Item = &'static Counter> + '_ {
        self.matched.iter().chain(self.did).chain(self.also).map(|s| s.counter)
    }
}

const fn packets(did: &'static [Shown]) -> KindCounters {
    KindCounters { matched: Some(shown("matched", &PACKETS_MATCHED)), did, also: &[] }
}

const FAILED: [Shown; 1] = [shown("failed", &CALLS_FAILED)];

const fn calls(label: &'static str) -> KindCounters {
    KindCounters { matched: Some(shown(label, &CALLS_SEEN)), did: &FAILED, also: &[] }
}

const fn only(did: &'static [Shown]) -> KindCounters {
    KindCounters { matched: None, did, also: &[] }
}

const LOSS: KindCounters = packets(&[shown("dropped", &PACKETS_DROPPED)]);
const DELAY: KindCounters = packets(&[shown("delayed", &PACKETS_DELAYED)]);
const CORRUPT: KindCounters = packets(&[shown("corrupted", &PACKETS_CORRUPTED)]);
const DUPLICATE: KindCounters = packets(&[shown("duplicated", &PACKETS_DUPLICATED)]);
const DNS: KindCounters = calls("queries");
const REJECT: KindCounters = calls("connects");
const SYSCALL: KindCounters = calls("calls");
const SYSCALL_DELAY: KindCounters = KindCounters {
    matched: Some(shown("calls", &CALLS_SEEN)),
    did: &[shown("delayed", &CALLS_DELAYED)],
    also: &[shown("added", &DELAY_ADDED)],
};
const CPU: KindCounters = only(&[shown("cpu", &CPU_USAGE)]);
const MEMORY: KindCounters = only(&[shown("resident", &BYTES_RESIDENT)]);
const IO: KindCounters = only(&[shown("written", &BYTES_WRITTEN), if_moved("read", &BYTES_READ)]);
const FILL: KindCounters = only(&[shown("filled", &BYTES_FILLED)]);
const KILL: KindCounters = only(&[shown("signalled", &PROCESSES_SIGNALLED)]);
const PAUSE: KindCounters = only(&[shown("frozen", &PROCESSES_FROZEN)]);
const SKEW: KindCounters = KindCounters {
    matched: None,
    did: &[shown("skewed", &PROCESSES_SKEWED)],
    also: &[if_moved("not skewed", &PROCESSES_UNSKEWED)],
};
const NOTHING: KindCounters = only(&[]);

/// The counters each kind of fault keeps, by the kind's API name (the Fault oneof field).
pub fn of_kind(kind: &str) -> &'static KindCounters {
    match kind {
        "net_loss" | "net_partition" => &LOSS,
        "net_delay" | "net_bandwidth" => &DELAY,
        "net_corrupt" => &CORRUPT,
        "net_duplicate" => &DUPLICATE,
        "net_dns" => &DNS,
        "net_reject" => &REJECT,
        "syscall_errno" => &SYSCALL,
        "syscall_delay" => &SYSCALL_DELAY,
        "cpu_stress" => &CPU,
        "memory_stress" => &MEMORY,
        "io_stress" => &IO,
        "disk_fill" => &FILL,
        "process_kill" => &KILL,
        "process_pause" => &PAUSE,
        "time_skew" => &SKEW,
        _ => &NOTHING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::model::FaultSpec;

    #[test]
    fn every_counter_is_declared_once_and_reads_its_own_field() {
        let fields: std::collections::BTreeSet<_> = ALL.iter().map(|c| c.field).collect();
        assert_eq!(fields.len(), ALL.len());
        let metrics: std::collections::BTreeSet<_> = ALL.iter().map(|c| c.metric).collect();
        assert_eq!(metrics.len(), ALL.len());
        // A different value in every field: each declaration reads its own, in proto order.
        let c = Counters {
            packets_matched: 1,
            packets_dropped: 2,
            packets_delayed: 3,
            packets_corrupted: 4,
            packets_duplicated: 5,
            calls_seen: 6,
            calls_failed: 7,
            cpu_usage_usec: 8,
            bytes_resident: 9,
            bytes_filled: 10,
            bytes_written: 11,
            bytes_read: 12,
            processes_signalled: 13,
            processes_frozen: 14,
            calls_delayed: 15,
            delay_added_usec: 16,
            processes_skewed: 17,
            skewed_reads: 18,
            processes_unskewed: 19,
        };
        let read: Vec<u64> = ALL.iter().map(|d| (d.read)(&c)).collect();
        assert_eq!(read, (1..=ALL.len() as u64).collect::<Vec<u64>>());
    }

    #[test]
    fn every_kind_declares_what_it_counts() {
        for kind in FaultSpec::KINDS {
            assert!(of_kind(kind).all().next().is_some(), "{kind} declares no counter");
        }
        assert!(of_kind("no_such_kind").all().next().is_none());
        // A kind's counters are all of one group.
        for kind in FaultSpec::KINDS {
            let k = of_kind(kind);
            assert!(k.all().all(|c| Some(c.group) == k.group()), "{kind}");
        }
    }

    #[test]
    fn short_views_and_hit() {
        let c = Counters {
            packets_matched: 10,
            packets_dropped: 4,
            bytes_written: 2048,
            cpu_usage_usec: 1_500_000,
            ..Default::default()
        };
        let text = |k: &str| {
            of_kind(k).short(&c).iter().map(|(l, v)| format!("{l} {v}")).collect::<Vec<_>>()
        };
        assert_eq!(text("net_loss"), ["matched 10", "dropped 4"]);
        assert_eq!(text("io_stress"), ["written 2KiB"]);
        let d = Counters { calls_seen: 9, calls_delayed: 4, delay_added_usec: 400_000, ..c };
        let delay: Vec<String> =
            of_kind("syscall_delay").short(&d).iter().map(|(l, v)| format!("{l} {v}")).collect();
        assert_eq!(delay, ["calls 9", "delayed 4", "added 0.4s"]);
        assert_eq!(of_kind("syscall_delay").hit(&d), "4");
        assert_eq!(of_kind("net_loss").hit(&c), "4");
        assert_eq!(of_kind("cpu_stress").hit(&c), "1.5s");
        assert_eq!(CPU_USAGE.metric_value(&c), "1.500000");
    }
}
