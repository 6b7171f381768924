//! An experiment as a row of `faultline ls`, the detail of `faultline get`, or JSON for
//! scripts.

use std::time::{Duration, SystemTime};

use faultline_core::{
    counters::{self, KindCounters},
    engine::model::Counters,
    units::human_duration,
    wire::{convert, convert::system_time as time},
};
use faultline_proto::v1 as pb;
use serde::Serialize;
use serde_json::{Value, json};

use super::{
    progress,
    summary::{fault_info, fault_summary, target_summary},
    table,
};

pub fn rfc3339(t: Option<&prost_types::Timestamp>) -> Option<String> {
    time(t).map(|t| humantime::format_rfc3339_millis(t).to_string())
}

pub fn state_name(s: i32) -> String {
    pb::State::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("STATE_").to_ascii_lowercase())
        .unwrap_or_else(|_| format!("unknown({s})"))
}

/// The STATE cell of ls, watch and events: the state, marked when an active fault has hit
/// nothing within its expect_hit_within.
pub fn state_cell(e: &pb::Experiment) -> String {
    let name = state_name(e.state);
    if e.no_hit && e.state == pb::State::Active as i32 { format!("{name} (no hit)") } else { name }
}

/// What `get` says of an active fault that has hit nothing within its expect_hit_within.
pub const NO_HIT_MARK: &str = "nothing matched yet: check the target and filters";

/// The stop conditions as --abort-if spells them.
pub fn stop_conditions_text(e: &pb::Experiment) -> Vec<String> {
    match faultline_core::wire::validate_drill::stop_conditions(&e.stop_conditions) {
        Ok(list) => list.iter().map(|c| c.describe()).collect(),
        Err(err) => vec![err.to_string()],
    }
}
#[derive(Serialize)]
pub struct ExperimentJson {
    id: String,
    state: String,
    reason: String,
    fault: String,
    parameters: Value,
    target: Value,
    resolved_cgroup: Option<String>,
    cgroup_id: Option<u64>,
    /// What the resolver found for container and pod targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    container: Option<Value>,
    backend: String,
    /// What the running fault could not do; left out when nothing.
    #[serde(skip_serializing_if = "String::is_empty")]
    note: String,
    duration_ms: u128,
    labels: std::collections::BTreeMap<String, String>,
    created_at: Option<String>,
    started_at: Option<String>,
    deadline: Option<String>,
    ended_at: Option<String>,
    /// When the fault first acted (not only installed); None until then.
    first_hit_at: Option<String>,
    /// With a lease: its length, and when it runs out unless renewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_ms: Option<u128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease_expires_at: Option<String>,
    /// --abort-if conditions, and the one that ended it with the value seen.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_conditions: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    abort: Option<Value>,
    expect_hit_within_ms: u128,
    /// Active for expect_hit_within with nothing matched.
    no_hit: bool,
    follow: bool,
    followed: u32,
    counters: Value,
}

pub fn experiment_json(e: &pb::Experiment) -> ExperimentJson {
    let (fault, parameters, _) = fault_info(e.fault.as_ref());
    let c = convert::counters_from_pb(&e.counters.unwrap_or_default());
    ExperimentJson {
        id: e.id.clone(),
        state: state_name(e.state),
        reason: e.reason.clone(),
        fault,
        parameters,
        target: match e.target.as_ref().and_then(|t| t.kind.as_ref()) {
            Some(pb::target::Kind::CgroupPath(p)) => json!({ "cgroup_path": p }),
            Some(pb::target::Kind::Pid(p)) => json!({ "pid": p }),
            Some(pb::target::Kind::Interface(i)) => {
                json!({ "interface": i.name, "netns": i.netns })
            }
            Some(pb::target::Kind::ContainerId(c)) => json!({ "container_id": c }),
            Some(pb::target::Kind::Pod(p)) if p.uid.is_empty() => json!({
                "pod": format!("{}/{}", p.namespace, p.name),
                "container_id": p.container_id,
                "container_name": p.container_name,
            }),
            Some(pb::target::Kind::Pod(p)) => json!({
                "pod_uid": p.uid,
                "container_id": p.container_id,
                "container_name": p.container_name,
            }),
            Some(pb::target::Kind::Host(h)) => json!({ "host": h }),
            None => Value::Null,
        },
        container: e
            .resolved_target
            .as_ref()
            .filter(|r| !r.container_id.is_empty() || !r.pod_uid.is_empty())
            .map(|r| {
                let mut c =
                    json!({ "id": r.container_id, "runtime": r.runtime, "pod_uid": r.pod_uid });
                if !r.container_name.is_empty() {
                    c["name"] = json!(r.container_name);
                }
                c
            }),
        resolved_cgroup: e
            .resolved_target
            .as_ref()
            .filter(|r| r.interface.is_empty())
            .map(|r| r.cgroup_path.clone()),
        cgroup_id: e.resolved_target.as_ref().map(|r| r.cgroup_id),
        backend: e.backend.clone(),
        note: e.note.clone(),
        duration_ms: e
            .duration
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32).as_millis())
            .unwrap_or_default(),
        labels: e.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        created_at: rfc3339(e.created_at.as_ref()),
        started_at: rfc3339(e.started_at.as_ref()),
        deadline: rfc3339(e.deadline.as_ref()),
        ended_at: rfc3339(e.ended_at.as_ref()),
        first_hit_at: rfc3339(e.first_hit_at.as_ref()),
        lease_ms: e
            .lease
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32).as_millis()),
        lease_expires_at: rfc3339(e.lease_expires_at.as_ref()),
        stop_conditions: stop_conditions_text(e),
        abort: e.abort.as_ref().map(
            |a| json!({ "condition": a.condition, "value": a.value, "at": rfc3339(a.at.as_ref()) }),
        ),
        expect_hit_within_ms: e
            .expect_hit_within
            .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32).as_millis())
            .unwrap_or_default(),
        no_hit: e.no_hit,
        follow: e.follow,
        followed: e.followed,
        // Every counter, whatever the kind: a stable schema for scripts.
        counters: counters::ALL
            .iter()
            .map(|m| (m.field.to_string(), json!((m.read)(&c))))
            .collect(),
    }
}

/// Time left for an active experiment, else when it ended.
fn remaining(e: &pb::Experiment, now: SystemTime) -> String {
    if e.state == pb::State::Active as i32
        && let Some(d) = time(e.deadline.as_ref())
    {
        let left = d.duration_since(now).unwrap_or_default();
        return format!("{} left", human_duration(progress::ceil_secs(left)));
    }
    match time(e.ended_at.as_ref()) {
        Some(t) => {
            let ago = Duration::from_secs(now.duration_since(t).unwrap_or_default().as_secs());
            format!("ended {} ago", human_duration(ago))
        }
        None => "-".into(),
    }
}

/// `ls`'s MATCHED column: what the fault looked at (packets, calls), "-" for the kinds that
/// act on their whole target (stress, kill, pause).
pub fn matched_cell(kind: &KindCounters, c: &Counters) -> String {
    kind.matched.as_ref().map_or("-".into(), |m| m.counter.show(c))
}

/// `ls`'s HIT column: what the fault did, each with its word: "503 dropped", "3 signalled",
/// "2 frozen", "1.5s cpu", "2KiB written, 1KiB read".
pub fn hit_cell(kind: &KindCounters, c: &Counters) -> String {
    let parts: Vec<String> = kind
        .did
        .iter()
        .filter(|s| !s.only_if_moved || (s.counter.read)(c) > 0)
        .map(|s| format!("{} {}", s.counter.show(c), s.label))
        .collect();
    if parts.is_empty() { "-".into() } else { parts.join(", ") }
}

/// The table of `faultline ls`; a line saying so when there is nothing to list.
pub fn experiments_table(list: &[pb::Experiment], now: SystemTime) -> String {
    if list.is_empty() {
        return "(no experiments)\n".into();
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            let c = convert::counters_from_pb(&e.counters.unwrap_or_default());
            let kind = counters::of_kind(convert::fault_kind(e.fault.as_ref()).unwrap_or(""));
            let (matched, hit) = (matched_cell(kind, &c), hit_cell(kind, &c));
            vec![
                e.id.clone(),
                state_cell(e),
                fault_summary(e.fault.as_ref()),
                target_summary(e),
                matched,
                hit,
                remaining(e, now),
            ]
        })
        .collect();
    table(&["ID", "STATE", "FAULT", "TARGET", "MATCHED", "HIT", "TIME"], &rows)
}

/// `faultline get`: one "label value" line each, the values in one column.
pub fn experiment_detail(e: &pb::Experiment) -> String {
    detail_text(&detail_rows(e))
}

/// The label column of `get`: 16 wide, or as wide as its longest label.
pub fn label_width(rows: &[(&str, String)]) -> usize {
    rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0).max(16)
}

/// (label, value) lines as `get` prints them.
pub fn detail_text(rows: &[(&str, String)]) -> String {
    let w = label_width(rows);
    rows.iter().map(|(k, v)| format!("{k:<w$} {v}\n")).collect()
}

/// The lines of `get` that have a value, as (label, value).
pub fn detail_rows(e: &pb::Experiment) -> Vec<(&'static str, String)> {
    let j = experiment_json(e);
    let c = convert::counters_from_pb(&e.counters.unwrap_or_default());
    let mut rows = vec![
        ("id", j.id),
        (
            "state",
            if j.reason.is_empty() { j.state } else { format!("{} ({})", j.state, j.reason) },
        ),
        ("fault", fault_summary(e.fault.as_ref())),
        ("target", target_summary(e)),
        // A pid's cgroup (other targets show theirs as the target).
        (
            "cgroup",
            match e.target.as_ref().and_then(|t| t.kind.as_ref()) {
                Some(pb::target::Kind::Pid(_)) => j.resolved_cgroup.clone().unwrap_or_default(),
                _ => String::new(),
            },
        ),
        ("cgroup id", j.cgroup_id.map(|i| i.to_string()).unwrap_or_default()),
        ("backend", j.backend),
        ("note", j.note),
        ("duration", human_duration(Duration::from_millis(j.duration_ms as u64))),
        ("created", j.created_at.unwrap_or_default()),
        ("started", j.started_at.unwrap_or_default()),
        (
            "first hit",
            // When, and how long after the start; "not yet" while live, "never" after.
            match (j.first_hit_at, progress::first_hit(e)) {
                (Some(t), after) if after.starts_with('+') => format!("{t} ({after})"),
                (Some(t), _) => t,
                (None, words) => words,
            },
        ),
        ("deadline", j.deadline.unwrap_or_default()),
        (
            "lease",
            match (j.lease_ms, j.lease_expires_at) {
                (Some(ms), Some(until)) => {
                    format!(
                        "{} (runs out {until})",
                        human_duration(Duration::from_millis(ms as u64))
                    )
                }
                _ => String::new(),
            },
        ),
        ("ended", j.ended_at.unwrap_or_default()),
        ("abort if", j.stop_conditions.join("; ")),
        (
            "aborted by",
            e.abort.as_ref().map(|a| format!("{} ({})", a.condition, a.value)).unwrap_or_default(),
        ),
        (
            "no hit",
            if j.no_hit && e.state == pb::State::Active as i32 {
                NO_HIT_MARK.to_string()
            } else {
                String::new()
            },
        ),
        (
            "follow",
            match (j.follow, j.followed) {
                (false, _) => String::new(),
                (true, 0) => "yes (no restart yet)".into(),
                (true, n) => format!("yes (followed {n} restart{})", if n == 1 { "" } else { "s" }),
            },
        ),
    ];
    let kind = counters::of_kind(convert::fault_kind(e.fault.as_ref()).unwrap_or(""));
    rows.extend(kind.all().map(|m| (m.detail, m.show(&c))));
    if !j.labels.is_empty() {
        let l: Vec<String> = j.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(("labels", l.join(",")));
    }
    rows.into_iter().filter(|(_, v)| !v.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::display::fixtures::{active, all_counters, loss, t0, ts};
    use pb::{fault::Kind, target::Kind as Target};

    fn cgroup(p: &str) -> Target {
        Target::CgroupPath(p.into())
    }

    #[test]
    fn the_readme_drill_in_ls() {
        let mut e = loss("2f4c81a09b3e", pb::State::Active, t0(), 300);
        e.fault = Some(pb::Fault {
            kind: Some(Kind::NetLoss(pb::NetLoss {
                percent: 100.0,
                filter: Some(pb::PacketFilter {
                    remote_ports: vec![pb::PortRange { first: 6379, last: 0 }],
                    ..Default::default()
                }),
                ..Default::default()
            })),
        });
        e.counters =
            Some(pb::Counters { packets_matched: 412, packets_dropped: 412, ..Default::default() });
        let now = t0() + Duration::from_secs(13);
        assert_eq!(
            experiments_table(&[e], now),
            "ID            STATE   FAULT                TARGET     MATCHED  HIT          TIME\n\
             2f4c81a09b3e  active  loss 100% port 6379  /checkout  412      412 dropped  4m47s left\n"
        );
    }

    #[test]
    fn ls_shows_what_each_family_matched_and_did() {
        let c = all_counters();
        let io = pb::IoStress { mode: pb::IoMode::Mixed as i32, workers: 2, ..Default::default() };
        let mut ended = active("ffff", Kind::NetReject(Default::default()), cgroup("/web"), c);
        ended.state = pb::State::Expired as i32;
        ended.ended_at = Some(ts(t0() + Duration::from_secs(10)));
        let list = [
            active(
                "aaaa",
                Kind::NetLoss(pb::NetLoss { every_nth: 3, ..Default::default() }),
                cgroup("/checkout"),
                c,
            ),
            active("bbbb", Kind::ProcessKill(Default::default()), Target::Pid(4242), c),
            active("cccc", Kind::ProcessPause(Default::default()), cgroup("/batch"), c),
            active(
                "dddd",
                Kind::CpuStress(pb::CpuStress { workers: 1, load_percent: 80 }),
                cgroup("/batch"),
                c,
            ),
            active("eeee", Kind::IoStress(io), Target::Pid(7), pb::Counters { bytes_read: 0, ..c }),
            ended,
        ];
        let t = experiments_table(&list, t0() + Duration::from_millis(29_500));
        assert_eq!(
            t,
            "ID    STATE    FAULT                           TARGET     MATCHED  HIT           TIME\n\
             aaaa  active   loss every 3rd                  /checkout  1000     503 dropped   31s left\n\
             bbbb  active   kill SIGKILL all                pid 4242   -        3 signalled   31s left\n\
             cccc  active   pause (frozen)                  /batch     -        2 frozen      31s left\n\
             dddd  active   cpu 80% x 1 worker              /batch     -        1.5s cpu      31s left\n\
             eeee  active   io mixed unlimited x 2 workers  pid 7      -        2KiB written  31s left\n\
             ffff  expired  reject connect ECONNREFUSED     /web       40       12 failed     ended 19s ago\n",
        );
        // Reads show once an IO stress has read something.
        let mixed =
            active("eeee", list[4].fault.clone().and_then(|f| f.kind).unwrap(), Target::Pid(7), c);
        assert!(experiments_table(&[mixed], t0()).contains("2KiB written, 1KiB read"));
    }

    #[test]
    fn an_empty_ls_says_so() {
        assert_eq!(experiments_table(&[], t0()), "(no experiments)\n");
    }

    #[test]
    fn get_shows_the_counters_of_the_family_only_in_one_column() {
        let kill = active(
            "bbbb",
            Kind::ProcessKill(Default::default()),
            Target::Pid(4242),
            all_counters(),
        );
        let d = experiment_detail(&kill);
        let lines: Vec<&str> = d.lines().collect();
        assert!(lines.contains(&"processes signalled 3"), "{d}");
        assert!(lines.contains(&"target              pid 4242"), "{d}");
        assert!(lines.contains(&"duration            1m"), "{d}");
        // Every value starts in the same column.
        assert!(
            lines.iter().all(|l| l.as_bytes().get(19) == Some(&b' ') && l.as_bytes()[20] != b' '),
            "{d}"
        );
        for other in ["packets", "calls", "cpu used", "bytes", "frozen"] {
            assert!(!d.contains(other), "{other} is not a kill's counter:\n{d}");
        }
        let pause = active(
            "cccc",
            Kind::ProcessPause(Default::default()),
            cgroup("/batch"),
            all_counters(),
        );
        let d = experiment_detail(&pause);
        // Exactly the 16 columns of the narrowest label column: one space, still in line.
        assert!(d.lines().any(|l| l == "processes frozen 2"), "{d}");
        assert!(d.lines().any(|l| l == "target           /batch"), "{d}");
        assert!(!d.contains("signalled") && !d.contains("packets"), "{d}");
        let l = loss("aaaa", pb::State::Active, t0(), 60);
        let d = experiment_detail(&l);
        assert!(d.lines().any(|l| l == "packets matched  1000"), "{d}");
        assert!(d.lines().any(|l| l == "packets dropped  503"), "{d}");
        assert_eq!(d.lines().filter(|l| l.starts_with("packets")).count(), 2, "{d}");
        // JSON keeps every counter: one schema for scripts whatever the kind.
        let j = serde_json::to_value(experiment_json(&kill)).unwrap_or_default();
        assert_eq!(j["counters"].as_object().map(|o| o.len()), Some(counters::ALL.len()));
        assert_eq!(j["counters"]["processes_frozen"], 2);
    }
}
