//! An experiment as a row of `faultline ls`, the detail of `faultline get`, or JSON for
//! scripts.

use std::time::{Duration, SystemTime};

use faultline_core::{
    counters,
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
    duration_ms: u128,
    labels: std::collections::BTreeMap<String, String>,
    created_at: Option<String>,
    started_at: Option<String>,
    deadline: Option<String>,
    ended_at: Option<String>,
    /// When the fault first acted (not only installed); None until then.
    first_hit_at: Option<String>,
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
            Some(pb::target::Kind::Pod(p)) => {
                json!({ "pod_uid": p.uid, "container_id": p.container_id })
            }
            Some(pb::target::Kind::Host(h)) => json!({ "host": h }),
            None => Value::Null,
        },
        container: e
            .resolved_target
            .as_ref()
            .filter(|r| !r.container_id.is_empty() || !r.pod_uid.is_empty())
            .map(|r| json!({ "id": r.container_id, "runtime": r.runtime, "pod_uid": r.pod_uid })),
        resolved_cgroup: e
            .resolved_target
            .as_ref()
            .filter(|r| r.interface.is_empty())
            .map(|r| r.cgroup_path.clone()),
        cgroup_id: e.resolved_target.as_ref().map(|r| r.cgroup_id),
        backend: e.backend.clone(),
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
        // Every counter, whatever the kind: a stable schema for scripts.
        counters: counters::ALL
            .iter()
            .map(|m| (m.field.to_string(), json!((m.read)(&c))))
            .collect(),
    }
}

/// Time left for an active experiment, else when it ended.
fn remaining(e: &pb::Experiment) -> String {
    let now = SystemTime::now();
    if e.state == pb::State::Active as i32
        && let Some(d) = time(e.deadline.as_ref())
    {
        let left = d.duration_since(now).unwrap_or_default();
        return format!("{}s left", left.as_secs_f64().ceil() as u64);
    }
    match time(e.ended_at.as_ref()) {
        Some(t) => format!("ended {}s ago", now.duration_since(t).unwrap_or_default().as_secs()),
        None => "-".into(),
    }
}
pub fn experiments_table(list: &[pb::Experiment]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            let c = convert::counters_from_pb(&e.counters.unwrap_or_default());
            let kind = counters::of_kind(convert::fault_kind(e.fault.as_ref()).unwrap_or(""));
            let matched = kind.matched.as_ref().map_or("-".into(), |m| m.counter.show(&c));
            let hit = kind.hit(&c);
            vec![
                e.id.clone(),
                state_name(e.state),
                fault_summary(e.fault.as_ref()),
                target_summary(e),
                matched,
                hit,
                remaining(e),
            ]
        })
        .collect();
    table(&["ID", "STATE", "FAULT", "TARGET", "MATCHED", "HIT", "TIME"], &rows)
}

pub fn experiment_detail(e: &pb::Experiment) -> String {
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
        ("cgroup id", j.cgroup_id.map(|i| i.to_string()).unwrap_or_default()),
        ("backend", j.backend),
        (
            "duration",
            humantime::format_duration(Duration::from_millis(j.duration_ms as u64)).to_string(),
        ),
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
        ("ended", j.ended_at.unwrap_or_default()),
    ];
    let kind = counters::of_kind(convert::fault_kind(e.fault.as_ref()).unwrap_or(""));
    rows.extend(kind.all().map(|m| (m.detail, m.show(&c))));
    if !j.labels.is_empty() {
        let l: Vec<String> = j.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(("labels", l.join(",")));
    }
    rows.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k:<16} {v}\n")).collect()
}
