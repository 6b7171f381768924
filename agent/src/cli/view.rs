//! Rendering experiments and capabilities: a readable table, or JSON for scripts.

use std::time::{Duration, SystemTime};

use faultline_proto::v1 as pb;
use serde::Serialize;
use serde_json::{Value, json};

pub fn time(t: Option<&prost_types::Timestamp>) -> Option<SystemTime> {
    t.map(|t| {
        SystemTime::UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
    })
}

pub fn rfc3339(t: Option<&prost_types::Timestamp>) -> Option<String> {
    time(t).map(|t| humantime::format_rfc3339_millis(t).to_string())
}

pub fn state_name(s: i32) -> String {
    pb::State::try_from(s)
        .map(|s| s.as_str_name().trim_start_matches("STATE_").to_ascii_lowercase())
        .unwrap_or_else(|_| format!("unknown({s})"))
}

fn enum_name(s: &str, prefix: &str) -> String {
    s.trim_start_matches(prefix).to_ascii_lowercase()
}

fn filter_json(f: &pb::PacketFilter) -> Value {
    json!({
        "direction": pb::Direction::try_from(f.direction).map(|d| enum_name(d.as_str_name(), "DIRECTION_")).unwrap_or_default(),
        "protocol": pb::Protocol::try_from(f.protocol).map(|p| enum_name(p.as_str_name(), "PROTOCOL_")).unwrap_or_default().replace("unspecified", "any"),
        "remote_cidrs": f.remote_cidrs,
        "exclude_cidrs": f.exclude_cidrs,
        "remote_ports": f.remote_ports.iter().map(|p| if p.last == 0 || p.last == p.first { p.first.to_string() } else { format!("{}-{}", p.first, p.last) }).collect::<Vec<_>>(),
    })
}

/// The filter in words: " egress tcp to 10.0.0.0/8 port 6379" (empty parts left out).
fn filter_summary(f: Option<&pb::PacketFilter>, with_direction: bool) -> String {
    let Some(f) = f else { return String::new() };
    let v = filter_json(f);
    let mut s = String::new();
    if with_direction && v["direction"] != "both" {
        s += &format!(" {}", v["direction"].as_str().unwrap_or_default());
    }
    if v["protocol"] != "any" {
        s += &format!(" {}", v["protocol"].as_str().unwrap_or_default());
    }
    if !f.remote_cidrs.is_empty() {
        s += &format!(" to {}", f.remote_cidrs.join(","));
    }
    if !f.exclude_cidrs.is_empty() {
        s += &format!(" except {}", f.exclude_cidrs.join(","));
    }
    if let Some(ports) = v["remote_ports"].as_array().filter(|p| !p.is_empty()) {
        let p: Vec<&str> = ports.iter().filter_map(|p| p.as_str()).collect();
        s += &format!(" port {}", p.join(","));
    }
    s
}

/// (kind, parameters, one-line summary) of a fault.
fn fault_info(f: Option<&pb::Fault>) -> (String, Value, String) {
    match f.and_then(|f| f.kind.as_ref()) {
        Some(pb::fault::Kind::NetLoss(l)) => {
            let model = if l.every_nth > 0 {
                format!("every {}th", l.every_nth)
            } else if l.burst_length > 0.0 {
                format!("{}% in bursts of {}", l.percent, l.burst_length)
            } else {
                format!("{}%", l.percent)
            };
            let seed = l.seed.map(|s| format!(" seed {s}")).unwrap_or_default();
            (
                "net_loss".into(),
                json!({ "percent": l.percent, "burst_length": l.burst_length, "every_nth": l.every_nth,
                        "seed": l.seed, "filter": l.filter.as_ref().map(filter_json) }),
                format!("loss {model}{}{seed}", filter_summary(l.filter.as_ref(), true)),
            )
        }
        Some(pb::fault::Kind::NetDelay(d)) => {
            let dur = |d: Option<&prost_types::Duration>| {
                d.map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
                    .unwrap_or_default()
            };
            let (latency, jitter) = (dur(d.latency.as_ref()), dur(d.jitter.as_ref()));
            let dist = pb::Distribution::try_from(d.distribution)
                .map(|x| enum_name(x.as_str_name(), "DISTRIBUTION_"))
                .unwrap_or_default()
                .replace("unspecified", "uniform");
            let mut summary = format!("delay {}", humantime::format_duration(latency));
            if !jitter.is_zero() {
                summary += &format!(" +/- {} {dist}", humantime::format_duration(jitter));
            }
            if d.correlation > 0.0 {
                summary += &format!(" corr {}%", d.correlation);
            }
            (
                "net_delay".into(),
                json!({ "latency_ms": latency.as_secs_f64() * 1000.0, "jitter_ms": jitter.as_secs_f64() * 1000.0,
                        "correlation": d.correlation, "distribution": dist, "percent": d.percent.unwrap_or(100.0),
                        "seed": d.seed, "devices": d.devices, "filter": d.filter.as_ref().map(filter_json) }),
                summary + &filter_summary(d.filter.as_ref(), true),
            )
        }
        Some(pb::fault::Kind::NetBandwidth(b)) => (
            "net_bandwidth".into(),
            json!({ "rate_bps": b.rate_bps, "burst_bytes": b.burst_bytes, "devices": b.devices,
                    "filter": b.filter.as_ref().map(filter_json) }),
            format!("bandwidth {}", human_rate(b.rate_bps))
                + &filter_summary(b.filter.as_ref(), true),
        ),
        Some(pb::fault::Kind::NetReject(r)) => {
            let pct = r.percent.unwrap_or(100.0);
            let share = if pct >= 100.0 { String::new() } else { format!(" {pct}%") };
            (
                "net_reject".into(),
                json!({ "errno": r.errno, "percent": pct, "filter": r.filter.as_ref().map(filter_json) }),
                format!(
                    "reject connect {}{share}{}",
                    r.errno,
                    filter_summary(r.filter.as_ref(), false)
                ),
            )
        }
        Some(pb::fault::Kind::SyscallErrno(e)) => {
            let how = match (e.every_nth, e.percent) {
                (Some(n), _) => format!(" every {n}th"),
                (None, Some(p)) if p < 100.0 => format!(" {p}%"),
                _ => String::new(),
            };
            let hits = e.max_hits.map(|m| format!(" max {m}")).unwrap_or_default();
            let path = if e.path_prefix.is_empty() {
                String::new()
            } else {
                format!(" under {}", e.path_prefix)
            };
            let follow = if e.follow_children { " +children" } else { "" };
            (
                "syscall_errno".into(),
                json!({ "syscalls": e.syscalls, "errno": e.errno, "percent": e.percent.unwrap_or(100.0),
                        "every_nth": e.every_nth, "max_hits": e.max_hits, "path_prefix": e.path_prefix,
                        "follow_children": e.follow_children, "seed": e.seed }),
                format!("fail {} with {}{how}{hits}{path}{follow}", e.syscalls.join(","), e.errno),
            )
        }
        Some(pb::fault::Kind::CpuStress(c)) => {
            let workers = if c.workers == 0 { "auto".to_string() } else { c.workers.to_string() };
            (
                "cpu_stress".into(),
                json!({ "workers": c.workers, "load_percent": c.load_percent }),
                format!("cpu {}% x {workers} workers", c.load_percent),
            )
        }
        Some(pb::fault::Kind::MemoryStress(m)) => {
            let size = match m.size {
                Some(pb::memory_stress::Size::Bytes(b)) => human_bytes(b),
                Some(pb::memory_stress::Size::Percent(p)) => format!("{p}% of the limit"),
                None => "?".into(),
            };
            let (bytes, percent) = match m.size {
                Some(pb::memory_stress::Size::Bytes(b)) => (Some(b), None),
                Some(pb::memory_stress::Size::Percent(p)) => (None, Some(p)),
                None => (None, None),
            };
            let ramp = m.ramp.map(|d| d.seconds as f64 + d.nanos as f64 / 1e9).unwrap_or(0.0);
            (
                "memory_stress".into(),
                json!({ "bytes": bytes, "percent": percent, "workers": m.workers,
                        "ramp_s": ramp, "oom_score_adj": m.oom_score_adj }),
                format!("memory {size} x {} workers", m.workers.max(1)),
            )
        }
        Some(pb::fault::Kind::IoStress(s)) => {
            let mode = match pb::IoMode::try_from(s.mode) {
                Ok(pb::IoMode::Read) => "read",
                Ok(pb::IoMode::Mixed) => "mixed",
                _ => "write",
            };
            let (bytes, rate, how) = match s.amount {
                Some(pb::io_stress::Amount::Bytes(b)) => (Some(b), None, human_bytes(b)),
                Some(pb::io_stress::Amount::RateBytesPerSecond(r)) => {
                    (None, Some(r), format!("{}/s", human_bytes(r)))
                }
                None => (None, None, "unlimited".to_string()),
            };
            let direct = if s.direct { " direct" } else { "" };
            (
                "io_stress".into(),
                json!({ "workers": s.workers, "mode": mode, "block_size": s.block_size,
                        "direct": s.direct, "directory": s.directory, "bytes": bytes,
                        "rate_bytes_per_second": rate }),
                format!("io {mode} {how} x {} workers{direct}", s.workers.max(1)),
            )
        }
        Some(pb::fault::Kind::ProcessKill(k)) => {
            let mode = pb::KillMode::try_from(k.mode)
                .map(|m| enum_name(m.as_str_name(), "KILL_MODE_"))
                .unwrap_or_default()
                .replace("unspecified", "all");
            let every = k
                .interval
                .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
                .filter(|d| !d.is_zero());
            let signal = if k.signal.is_empty() { "SIGKILL" } else { k.signal.as_str() };
            (
                "process_kill".into(),
                json!({ "signal": signal, "mode": mode,
                        "interval_ms": every.map(|d| d.as_millis() as u64) }),
                format!(
                    "kill {signal} {}{}",
                    mode.replace('_', " "),
                    every
                        .map(|d| format!(" every {}", humantime::format_duration(d)))
                        .unwrap_or_default()
                ),
            )
        }
        Some(pb::fault::Kind::ProcessPause(_)) => {
            ("process_pause".into(), json!({}), "pause (frozen)".into())
        }
        Some(pb::fault::Kind::DiskFill(d)) => {
            let (bytes, percent, what) = match d.amount {
                Some(pb::disk_fill::Amount::Bytes(b)) => (Some(b), None, human_bytes(b)),
                Some(pb::disk_fill::Amount::Percent(p)) => (None, Some(p), format!("to {p}%")),
                None => (None, None, "?".into()),
            };
            (
                "disk_fill".into(),
                json!({ "path": d.path, "bytes": bytes, "percent": percent }),
                format!("fill {} {what}", d.path),
            )
        }
        Some(pb::fault::Kind::NetCorrupt(c)) => (
            "net_corrupt".into(),
            json!({ "percent": c.percent, "seed": c.seed, "devices": c.devices, "filter": c.filter.as_ref().map(filter_json) }),
            format!("corrupt {}%{}", c.percent, filter_summary(c.filter.as_ref(), true)),
        ),
        Some(pb::fault::Kind::NetDuplicate(d)) => (
            "net_duplicate".into(),
            json!({ "percent": d.percent, "devices": d.devices, "filter": d.filter.as_ref().map(filter_json) }),
            format!("duplicate {}%{}", d.percent, filter_summary(d.filter.as_ref(), true)),
        ),
        Some(pb::fault::Kind::NetDns(d)) => {
            let answer = pb::DnsAnswer::try_from(d.answer)
                .map(|a| enum_name(a.as_str_name(), "DNS_ANSWER_"))
                .unwrap_or_default()
                .replace("unspecified", "nxdomain");
            let pct = d.percent.unwrap_or(100.0);
            let share = if pct >= 100.0 { String::new() } else { format!(" {pct}%") };
            (
                "net_dns".into(),
                json!({ "names": d.names, "answer": answer, "percent": pct, "filter": d.filter.as_ref().map(filter_json) }),
                format!("dns {answer}{share} for {}", d.names.join(",")),
            )
        }
        Some(pb::fault::Kind::NetPartition(p)) => (
            "net_partition".into(),
            json!({ "filter": p.filter.as_ref().map(filter_json) }),
            format!("partition{}", filter_summary(p.filter.as_ref(), false)),
        ),
        None => ("none".into(), Value::Null, "-".into()),
    }
}

/// 8000000 -> "8Mbit/s".
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

pub fn human_rate(bps: u64) -> String {
    for (unit, div) in [("Gbit/s", 1_000_000_000u64), ("Mbit/s", 1_000_000), ("kbit/s", 1_000)] {
        if bps >= div && bps.is_multiple_of(div / 10) {
            let v = bps as f64 / div as f64;
            return format!(
                "{}{unit}",
                if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v:.1}") }
            );
        }
    }
    format!("{bps}bit/s")
}

pub fn fault_summary(f: Option<&pb::Fault>) -> String {
    fault_info(f).2
}

fn interface_name(name: &str, netns: &str) -> String {
    if netns.is_empty() { format!("dev {name}") } else { format!("dev {name}@{netns}") }
}

pub fn target_summary(e: &pb::Experiment) -> String {
    if let Some(r) = &e.resolved_target {
        if !r.interface.is_empty() {
            return interface_name(&r.interface, &r.netns);
        }
        return r.cgroup_path.clone();
    }
    match e.target.as_ref().and_then(|t| t.kind.as_ref()) {
        Some(pb::target::Kind::CgroupPath(p)) => p.clone(),
        Some(pb::target::Kind::Pid(p)) => format!("pid {p}"),
        Some(pb::target::Kind::Interface(i)) => interface_name(&i.name, &i.netns),
        Some(pb::target::Kind::ContainerId(c)) => format!("container {c}"),
        Some(pb::target::Kind::Pod(p)) if p.container_id.is_empty() => format!("pod {}", p.uid),
        Some(pb::target::Kind::Pod(p)) => format!("pod {} container {}", p.uid, p.container_id),
        Some(pb::target::Kind::Host(_)) => "host".into(),
        None => "-".into(),
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
    let c = e.counters.unwrap_or_default();
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
        counters: json!({ "packets_matched": c.packets_matched, "packets_dropped": c.packets_dropped,
                          "packets_delayed": c.packets_delayed, "packets_corrupted": c.packets_corrupted,
                          "packets_duplicated": c.packets_duplicated, "calls_seen": c.calls_seen,
                          "calls_failed": c.calls_failed, "cpu_usage_usec": c.cpu_usage_usec,
                          "bytes_resident": c.bytes_resident, "bytes_filled": c.bytes_filled,
                          "bytes_written": c.bytes_written, "bytes_read": c.bytes_read,
                          "processes_signalled": c.processes_signalled,
                          "processes_frozen": c.processes_frozen }),
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

/// Left-aligned columns separated by two spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s += c;
            } else {
                s += &format!("{c:<w$}  ");
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for r in rows {
        out += &line(r.clone());
    }
    out
}

pub fn experiments_table(list: &[pb::Experiment]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            let c = e.counters.unwrap_or_default();
            // Faults on calls count calls; the others count packets (the changed ones).
            let stress = matches!(
                e.fault.as_ref().and_then(|f| f.kind.as_ref()),
                Some(
                    pb::fault::Kind::CpuStress(_)
                        | pb::fault::Kind::MemoryStress(_)
                        | pb::fault::Kind::DiskFill(_)
                        | pb::fault::Kind::IoStress(_)
                )
            );
            let (matched, hit) = if stress {
                // What stress achieved: CPU time, or bytes held.
                let held = c.bytes_resident + c.bytes_filled + c.bytes_written + c.bytes_read;
                let done = if held > 0 {
                    human_bytes(held)
                } else {
                    format!("{:.1}s cpu", c.cpu_usage_usec as f64 / 1e6)
                };
                ("-".to_string(), done)
            } else if c.calls_seen > 0 || c.calls_failed > 0 {
                (c.calls_seen.to_string(), c.calls_failed.to_string())
            } else {
                let changed = c.packets_dropped
                    + c.packets_delayed
                    + c.packets_corrupted
                    + c.packets_duplicated;
                (c.packets_matched.to_string(), changed.to_string())
            };
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
    let c = e.counters.unwrap_or_default();
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
            match (j.first_hit_at, super::live::first_hit(e)) {
                (Some(t), after) if after.starts_with('+') => format!("{t} ({after})"),
                (Some(t), _) => t,
                (None, words) => words,
            },
        ),
        ("deadline", j.deadline.unwrap_or_default()),
        ("ended", j.ended_at.unwrap_or_default()),
        ("packets matched", c.packets_matched.to_string()),
        ("packets dropped", c.packets_dropped.to_string()),
        ("packets delayed", c.packets_delayed.to_string()),
        ("packets corrupted", c.packets_corrupted.to_string()),
        ("packets duplicated", c.packets_duplicated.to_string()),
        ("calls seen", c.calls_seen.to_string()),
        ("calls failed", c.calls_failed.to_string()),
        ("cpu used", format!("{:.2}s", c.cpu_usage_usec as f64 / 1e6)),
        ("bytes resident", human_bytes(c.bytes_resident)),
        ("bytes filled", human_bytes(c.bytes_filled)),
        ("bytes written", human_bytes(c.bytes_written)),
        ("bytes read", human_bytes(c.bytes_read)),
    ];
    if !j.labels.is_empty() {
        let l: Vec<String> = j.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        rows.push(("labels", l.join(",")));
    }
    rows.iter().filter(|(_, v)| !v.is_empty()).map(|(k, v)| format!("{k:<16} {v}\n")).collect()
}

pub fn caps_table(c: &pb::CapabilitiesResponse) -> String {
    let mut out = format!(
        "kernel {}  cgroup2 {}  btf {}  agent {}\n\n",
        c.kernel_release,
        c.cgroup2_mount,
        if c.btf { "yes" } else { "no" },
        c.agent_version
    );
    let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
    let probes: Vec<Vec<String>> =
        c.probes.iter().map(|p| vec![p.name.clone(), yes(p.supported), p.detail.clone()]).collect();
    out += &table(&["PROBE", "SUPPORTED", "DETAIL"], &probes);
    out += "\n";
    let faults: Vec<Vec<String>> = c
        .faults
        .iter()
        .map(|f| vec![f.fault.clone(), yes(f.supported), f.backend.clone(), f.reason.clone()])
        .collect();
    out += &table(&["FAULT", "SUPPORTED", "BACKEND", "REASON"], &faults);
    out
}

pub fn caps_json(c: &pb::CapabilitiesResponse) -> Value {
    json!({
        "agent_version": c.agent_version,
        "kernel_release": c.kernel_release,
        "cgroup2_mount": c.cgroup2_mount,
        "btf": c.btf,
        "probes": c.probes.iter().map(|p| json!({"name": p.name, "supported": p.supported, "detail": p.detail})).collect::<Vec<_>>(),
        "faults": c.faults.iter().map(|f| json!({"fault": f.fault, "supported": f.supported, "backend": f.backend, "reason": f.reason})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_like_tc() {
        assert_eq!(human_rate(8_000_000), "8Mbit/s");
        assert_eq!(human_rate(1_500_000), "1.5Mbit/s");
        assert_eq!(human_rate(1_000_000_000), "1Gbit/s");
        assert_eq!(human_rate(8_001), "8001bit/s");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(&["A", "BB"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "A    BB\nxxx  y\n");
    }

    #[test]
    fn summary_of_a_filtered_loss() {
        let f = pb::Fault {
            kind: Some(pb::fault::Kind::NetLoss(pb::NetLoss {
                percent: 30.0,
                burst_length: 0.0,
                every_nth: 0,
                seed: None,
                filter: Some(pb::PacketFilter {
                    direction: pb::Direction::Egress as i32,
                    protocol: pb::Protocol::Tcp as i32,
                    remote_cidrs: vec!["10.0.0.0/8".into()],
                    remote_ports: vec![pb::PortRange { first: 6379, last: 0 }],
                    ..Default::default()
                }),
            })),
        };
        assert_eq!(fault_summary(Some(&f)), "loss 30% egress tcp to 10.0.0.0/8 port 6379");
    }
}
