//! A fault and a target in words ("loss 30% egress tcp to 10.0.0.0/8 port 6379",
//! "pod u1 container c1"), and a fault's kind and parameters as JSON.

use std::time::Duration;

use faultline_core::units::human_duration;
use faultline_proto::v1 as pb;
use serde_json::{Value, json};

/// 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 101st, 111th.
pub fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// "1 worker", "2 workers", "0 workers".
pub fn count(n: u64, one: &str) -> String {
    if n == 1 { format!("1 {one}") } else { format!("{n} {one}s") }
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

/// Which way a fault's packets go, as its summary says it.
#[derive(Clone, Copy)]
enum Way {
    /// Not said (partition: both ways always; reject: connect() goes out).
    Unsaid,
    /// Unspecified means both ways (loss): said unless both.
    BothByDefault,
    /// Unspecified means egress (delay, bandwidth, corrupt, duplicate): said unless both.
    EgressByDefault,
}

/// The filter in words: " egress tcp to 10.0.0.0/8 port 6379" (empty parts left out).
fn filter_summary(f: Option<&pb::PacketFilter>, way: Way) -> String {
    let mut s = String::new();
    let dir = match (f.map(|f| pb::Direction::try_from(f.direction)), way) {
        (_, Way::Unsaid) => None,
        (None | Some(Ok(pb::Direction::Unspecified)), Way::EgressByDefault) => Some("egress"),
        (None | Some(Ok(pb::Direction::Unspecified | pb::Direction::Both)), _) => None,
        (Some(Ok(pb::Direction::Egress)), _) => Some("egress"),
        (Some(Ok(pb::Direction::Ingress)), _) => Some("ingress"),
        (Some(Err(_)), _) => Some("unknown direction"),
    };
    if let Some(d) = dir {
        s += &format!(" {d}");
    }
    let Some(f) = f else { return s };
    let v = filter_json(f);
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
pub(super) fn fault_info(f: Option<&pb::Fault>) -> (String, Value, String) {
    match f.and_then(|f| f.kind.as_ref()) {
        Some(pb::fault::Kind::NetLoss(l)) => {
            let model = if l.every_nth > 0 {
                format!("every {}", ordinal(l.every_nth.into()))
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
                format!(
                    "loss {model}{}{seed}",
                    filter_summary(l.filter.as_ref(), Way::BothByDefault)
                ),
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
            let mut summary = format!("delay {}", human_duration(latency));
            if !jitter.is_zero() {
                summary += &format!(" +/- {} {dist}", human_duration(jitter));
            }
            if d.correlation > 0.0 {
                summary += &format!(" corr {}%", d.correlation);
            }
            (
                "net_delay".into(),
                json!({ "latency_ms": latency.as_secs_f64() * 1000.0, "jitter_ms": jitter.as_secs_f64() * 1000.0,
                        "correlation": d.correlation, "distribution": dist, "percent": d.percent.unwrap_or(100.0),
                        "seed": d.seed, "devices": d.devices, "filter": d.filter.as_ref().map(filter_json) }),
                summary + &filter_summary(d.filter.as_ref(), Way::EgressByDefault),
            )
        }
        Some(pb::fault::Kind::NetBandwidth(b)) => (
            "net_bandwidth".into(),
            json!({ "rate_bps": b.rate_bps, "burst_bytes": b.burst_bytes, "devices": b.devices,
                    "filter": b.filter.as_ref().map(filter_json) }),
            format!("bandwidth {}", human_rate(b.rate_bps))
                + &filter_summary(b.filter.as_ref(), Way::EgressByDefault),
        ),
        Some(pb::fault::Kind::NetReject(r)) => {
            let pct = r.percent.unwrap_or(100.0);
            let share = if pct >= 100.0 { String::new() } else { format!(" {pct}%") };
            let errno = if r.errno.is_empty() { "ECONNREFUSED" } else { r.errno.as_str() };
            (
                "net_reject".into(),
                json!({ "errno": r.errno, "percent": pct, "filter": r.filter.as_ref().map(filter_json) }),
                format!(
                    "reject connect {errno}{share}{}",
                    filter_summary(r.filter.as_ref(), Way::Unsaid)
                ),
            )
        }
        Some(pb::fault::Kind::SyscallErrno(e)) => {
            let how = match (e.every_nth, e.percent) {
                (Some(n), _) => format!(" every {}", ordinal(n)),
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
        Some(pb::fault::Kind::SyscallDelay(d)) => {
            let dur = |d: Option<&prost_types::Duration>| {
                d.map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
                    .unwrap_or_default()
            };
            let (latency, jitter) = (dur(d.latency.as_ref()), dur(d.jitter.as_ref()));
            let dist = pb::Distribution::try_from(d.distribution)
                .map(|x| enum_name(x.as_str_name(), "DISTRIBUTION_"))
                .unwrap_or_default()
                .replace("unspecified", "uniform");
            let mut summary = format!("delay {} {}", d.syscalls.join(","), human_duration(latency));
            if !jitter.is_zero() {
                summary += &format!(" +/- {}", human_duration(jitter));
                if dist != "uniform" {
                    summary += &format!(" {dist}");
                }
            }
            match (d.every_nth, d.percent) {
                (Some(n), _) => summary += &format!(" every {}", ordinal(n)),
                (None, Some(p)) if p < 100.0 => summary += &format!(" {p}%"),
                _ => {}
            }
            if let Some(m) = d.max_hits {
                summary += &format!(" max {m}");
            }
            if !d.path_prefix.is_empty() {
                summary += &format!(" under {}", d.path_prefix);
            }
            if d.follow_children {
                summary += " +children";
            }
            (
                "syscall_delay".into(),
                json!({ "syscalls": d.syscalls, "latency_ms": latency.as_secs_f64() * 1000.0,
                        "jitter_ms": jitter.as_secs_f64() * 1000.0, "distribution": dist,
                        "percent": d.percent.unwrap_or(100.0), "every_nth": d.every_nth,
                        "max_hits": d.max_hits, "path_prefix": d.path_prefix,
                        "follow_children": d.follow_children, "seed": d.seed }),
                summary,
            )
        }
        Some(pb::fault::Kind::CpuStress(c)) => {
            // No count: a worker for each CPU the target may use.
            let workers = if c.workers == 0 {
                "on each allowed CPU".to_string()
            } else {
                format!("x {}", count(c.workers.into(), "worker"))
            };
            (
                "cpu_stress".into(),
                json!({ "workers": c.workers, "load_percent": c.load_percent }),
                format!("cpu {}% {workers}", c.load_percent),
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
            let ramp_words = m
                .ramp
                .map(|d| Duration::new(d.seconds.max(0) as u64, d.nanos.max(0) as u32))
                .filter(|d| !d.is_zero())
                .map(|d| format!(" ramp {}", human_duration(d)))
                .unwrap_or_default();
            (
                "memory_stress".into(),
                json!({ "bytes": bytes, "percent": percent, "workers": m.workers,
                        "ramp_s": ramp, "oom_score_adj": m.oom_score_adj }),
                format!("memory {size} x {}{ramp_words}", count(m.workers.max(1).into(), "worker")),
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
                format!("io {mode} {how} x {}{direct}", count(s.workers.max(1).into(), "worker")),
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
                    every.map(|d| format!(" every {}", human_duration(d))).unwrap_or_default()
                ),
            )
        }
        Some(pb::fault::Kind::ProcessPause(_)) => {
            ("process_pause".into(), json!({}), "pause (frozen)".into())
        }
        Some(pb::fault::Kind::TimeSkew(t)) => {
            let ns = t.offset.map_or(0, |d| d.seconds as i128 * 1_000_000_000 + d.nanos as i128);
            let (sign, abs) = if ns < 0 { ("-", -ns) } else { ("+", ns) };
            let d = Duration::from_nanos(abs as u64);
            let clocks =
                if t.clocks.is_empty() { vec!["realtime".to_string()] } else { t.clocks.clone() };
            (
                "time_skew".into(),
                json!({ "offset_ms": (ns / 1_000_000) as i64, "clocks": clocks,
                        "follow_children": t.follow_children }),
                format!("clock {sign}{} ({})", human_duration(d), clocks.join(",")),
            )
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
            format!(
                "corrupt {}%{}",
                c.percent,
                filter_summary(c.filter.as_ref(), Way::EgressByDefault)
            ),
        ),
        Some(pb::fault::Kind::NetDuplicate(d)) => (
            "net_duplicate".into(),
            json!({ "percent": d.percent, "devices": d.devices, "filter": d.filter.as_ref().map(filter_json) }),
            format!(
                "duplicate {}%{}",
                d.percent,
                filter_summary(d.filter.as_ref(), Way::EgressByDefault)
            ),
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
            format!("partition{}", filter_summary(p.filter.as_ref(), Way::Unsaid)),
        ),
        None => ("none".into(), Value::Null, "-".into()),
    }
}

pub use faultline_core::units::human_bytes;

/// 8000000 -> "8Mbit/s".
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

/// The target in words: what was asked for a pid ("pid 4242": kill and pause act on that
/// process alone), else where the agent found it (the cgroup or the device).
pub fn target_summary(e: &pb::Experiment) -> String {
    if let Some(pb::target::Kind::Pid(p)) = e.target.as_ref().and_then(|t| t.kind.as_ref()) {
        return format!("pid {p}");
    }
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
        Some(pb::target::Kind::Pod(p)) => {
            let pod = if p.uid.is_empty() {
                format!("{}/{}", p.namespace, p.name)
            } else {
                p.uid.clone()
            };
            match (&*p.container_id, &*p.container_name) {
                ("", "") => format!("pod {pod}"),
                ("", name) => format!("pod {pod} container {name}"),
                (id, _) => format!("pod {pod} container {id}"),
            }
        }
        Some(pb::target::Kind::Host(_)) => "host".into(),
        None => "-".into(),
    }
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

    #[test]
    fn ordinals_and_counts_read_as_english() {
        let o: Vec<String> =
            [1, 2, 3, 4, 10, 11, 12, 13, 21, 22, 23, 101, 111, 112].map(ordinal).into();
        assert_eq!(
            o,
            [
                "1st", "2nd", "3rd", "4th", "10th", "11th", "12th", "13th", "21st", "22nd", "23rd",
                "101st", "111th", "112th"
            ]
        );
        assert_eq!(count(1, "worker"), "1 worker");
        assert_eq!(count(0, "worker"), "0 workers");
        assert_eq!(count(4, "worker"), "4 workers");
    }

    #[test]
    fn summaries_in_words() {
        use pb::fault::Kind;
        let ms = |n: i64| {
            Some(prost_types::Duration { seconds: n / 1000, nanos: (n % 1000) as i32 * 1_000_000 })
        };
        let text = |k: Kind| fault_summary(Some(&pb::Fault { kind: Some(k) }));
        assert_eq!(
            text(Kind::NetLoss(pb::NetLoss { every_nth: 3, ..Default::default() })),
            "loss every 3rd"
        );
        assert_eq!(
            text(Kind::NetLoss(pb::NetLoss { every_nth: 1, ..Default::default() })),
            "loss every 1st"
        );
        let sys = pb::SyscallErrno {
            syscalls: vec!["openat".into()],
            errno: "EIO".into(),
            every_nth: Some(2),
            ..Default::default()
        };
        assert_eq!(text(Kind::SyscallErrno(sys)), "fail openat with EIO every 2nd");
        let sd = |f: &dyn Fn(&mut pb::SyscallDelay)| {
            let mut d = pb::SyscallDelay {
                syscalls: vec!["read".into(), "write".into()],
                latency: ms(100),
                ..Default::default()
            };
            f(&mut d);
            text(Kind::SyscallDelay(d))
        };
        assert_eq!(sd(&|_| {}), "delay read,write 100ms");
        assert_eq!(
            sd(&|d| {
                d.jitter = ms(10);
                d.percent = Some(50.0);
            }),
            "delay read,write 100ms +/- 10ms 50%"
        );
        assert_eq!(
            sd(&|d| {
                d.jitter = ms(10);
                d.distribution = pb::Distribution::Normal as i32;
                d.every_nth = Some(3);
                d.max_hits = Some(5);
                d.follow_children = true;
            }),
            "delay read,write 100ms +/- 10ms normal every 3rd max 5 +children"
        );
        let delay = pb::NetDelay { latency: ms(50), jitter: ms(1500), ..Default::default() };
        assert_eq!(text(Kind::NetDelay(delay)), "delay 50ms +/- 1.5s uniform egress");
        assert_eq!(
            text(Kind::CpuStress(pb::CpuStress { workers: 1, load_percent: 80 })),
            "cpu 80% x 1 worker"
        );
        assert_eq!(
            text(Kind::CpuStress(pb::CpuStress { workers: 2, load_percent: 50 })),
            "cpu 50% x 2 workers"
        );
        assert_eq!(
            text(Kind::CpuStress(pb::CpuStress { workers: 0, load_percent: 80 })),
            "cpu 80% on each allowed CPU"
        );
        let mem = pb::MemoryStress {
            size: Some(pb::memory_stress::Size::Bytes(256 << 20)),
            workers: 1,
            ramp: ms(30_000),
            ..Default::default()
        };
        assert_eq!(text(Kind::MemoryStress(mem)), "memory 256MiB x 1 worker ramp 30s");
        let io = pb::IoStress {
            workers: 4,
            amount: Some(pb::io_stress::Amount::Bytes(2 << 30)),
            ..Default::default()
        };
        assert_eq!(text(Kind::IoStress(io)), "io write 2GiB x 4 workers");
        let kill = pb::ProcessKill { interval: ms(2_500), ..Default::default() };
        assert_eq!(text(Kind::ProcessKill(kill)), "kill SIGKILL all every 2.5s");
        assert_eq!(text(Kind::NetReject(Default::default())), "reject connect ECONNREFUSED");
    }

    #[test]
    fn a_pid_target_shows_as_the_pid() {
        let e = pb::Experiment {
            target: Some(pb::Target { kind: Some(pb::target::Kind::Pid(4242)) }),
            resolved_target: Some(pb::ResolvedTarget {
                cgroup_path: "/checkout".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(target_summary(&e), "pid 4242");
        let c = pb::Experiment {
            target: Some(pb::Target { kind: Some(pb::target::Kind::ContainerId("abc".into())) }),
            ..e
        };
        assert_eq!(target_summary(&c), "/checkout");
    }
}
