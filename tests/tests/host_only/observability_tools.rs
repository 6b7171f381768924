//! The agent's metrics as the observability tools see them: `promtool check metrics` (from
//! Debian's prometheus package, as `cargo xtask setup` installs it) accepts a scrape that has
//! series of every family, and every metric the Grafana dashboard
//! (deploy/grafana/faultline-dashboard.json) queries is a family a live agent declares, with
//! the labels the dashboard selects and groups by. Host only: the VM guests have no promtool
//! (xtask/src/vm/mod.rs leaves this binary out).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use faultline_tests::{Agent, Cgroup, TempDir, net::UdpSink, probe, udp_loss};

/// Labels a series gets from the scrape rather than from the agent: Prometheus' own, and
/// those deploy/prometheus/scrape.yaml adds (check.py checks that it does).
const SCRAPE_LABELS: &[&str] = &["instance", "job", "node", "namespace", "pod"];

/// A `sleep` in a cgroup, killed at the end.
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent running a fault of each family (packets, calls, stress, processes), with one
/// ended experiment in its grace period and a refused call behind it. Fields drop in order:
/// the agent first, which ends the faults (a paused cgroup thaws), then the processes and
/// the cgroups.
struct Busy {
    agent: Agent,
    _sleeper: Sleeper,
    _sink: UdpSink,
    _cgroups: Vec<Cgroup>,
    /// Experiment ids: net loss, process pause, stress cpu, net reject (cancelled).
    loss: String,
    pause: String,
    cpu: String,
    reject: String,
}

fn busy() -> Busy {
    let agent = Agent::start();
    let (net, paused, stressed, rejected) = (
        Cgroup::new("obs-net"),
        Cgroup::new("obs-pause"),
        Cgroup::new("obs-cpu"),
        Cgroup::new("obs-reject"),
    );
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    let id = |e: serde_json::Value| e["id"].as_str().unwrap().to_string();
    let loss = id(agent.cli_json_args(&udp_loss(&["--cgroup", &net.rel], "30", &port, "60s")));
    probe(Some(&net), &["udp-send", &sink.addr().to_string(), "500"]);
    let sleeper =
        Sleeper(paused.command("sleep").arg("60").stdout(Stdio::null()).spawn().expect("sleep"));
    let pause = id(agent.cli_json(&["process", "pause", "--cgroup", &paused.rel, "--for", "30s"]));
    let cpu = id(agent.cli_json(&[
        "stress",
        "cpu",
        "--cgroup",
        &stressed.rel,
        "--workers",
        "1",
        "--load",
        "10",
        "--for",
        "30s",
    ]));
    let reject = id(agent.cli_json(&[
        "net",
        "reject",
        "--cgroup",
        &rejected.rel,
        "--port",
        "9",
        "--for",
        "60s",
    ]));
    agent.cli_json(&["cancel", &reject]);
    // Refused (percent must be > 0): a gRPC status other than OK.
    let refused =
        agent.cli(&["net", "loss", "--cgroup", &net.rel, "--percent", "0", "--for", "5s"]);
    assert!(!refused.status.success(), "a 0% loss was accepted");
    Busy {
        agent,
        _sleeper: sleeper,
        _sink: sink,
        _cgroups: vec![net, paused, stressed, rejected],
        loss,
        pause,
        cpu,
        reject,
    }
}

/// promtool from PATH; its absence fails the test: this binary runs where `cargo xtask
/// setup` has installed it.
fn promtool() -> Command {
    let tool = Command::new("promtool").arg("--version").output();
    match tool {
        Ok(out) if out.status.success() => Command::new("promtool"),
        Ok(out) => panic!("promtool --version failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => panic!(
            "promtool not found ({e}): run `cargo xtask setup`, which installs Debian's \
             prometheus package (promtool is in it)"
        ),
    }
}

/// One parsed sample line: the metric name and its label names.
fn series(text: &str) -> Vec<(String, BTreeSet<String>)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let end = l.find(['{', ' ']).unwrap_or(l.len());
            let labels = if l[end..].starts_with('{') {
                matchers(&l[end + 1..]).0.into_iter().collect()
            } else {
                BTreeSet::new()
            };
            (l[..end].to_string(), labels)
        })
        .collect()
}

/// The label names of a `{...}` body (a sample's labels or a PromQL selector), from just
/// after `{`; and how many bytes the body took, closing `}` included. Quoted values may hold
/// any character.
fn matchers(s: &str) -> (Vec<String>, usize) {
    let b = s.as_bytes();
    let (mut names, mut i) = (Vec::new(), 0);
    let mut name = String::new();
    while i < b.len() {
        match b[i] {
            b'}' => return (names, i + 1),
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                if !name.is_empty() {
                    names.push(std::mem::take(&mut name));
                }
            }
            c if c.is_ascii_alphanumeric() || c == b'_' => name.push(c as char),
            // Operators and blanks between a name and its value.
            b'=' | b'!' | b'~' | b' ' | b'\t' | b'\n' => {}
            _ => name.clear(),
        }
        i += 1;
    }
    (names, i)
}

/// Families a scrape declares (`# TYPE name kind`), with their kinds.
fn declared(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, k)| (n.to_string(), k.trim().to_string()))
        .collect()
}

/// The family a sample name belongs to: histogram samples carry _bucket, _sum, _count.
fn family_of(name: &str, families: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && families.get(base).is_some_and(|k| k == "histogram")
        {
            return base.to_string();
        }
    }
    name.to_string()
}

#[test]
fn promtool_accepts_a_scrape_with_every_family() {
    let mut promtool = promtool();
    let busy = busy();
    let text = busy.agent.scrape();
    let families = declared(&text);
    // Every family has samples here, so promtool sees each with real series.
    let with_series: BTreeSet<String> =
        series(&text).into_iter().map(|(n, _)| family_of(&n, &families)).collect();
    let empty: Vec<&String> = families.keys().filter(|f| !with_series.contains(*f)).collect();
    assert!(empty.is_empty(), "families without series: {empty:?}\n{text}");
    assert!(families.len() >= 20, "{families:?}");
    for (id, family) in [
        (&busy.loss, "faultline_experiment_packets_matched_total"),
        (&busy.pause, "faultline_experiment_frozen_processes"),
        (&busy.cpu, "faultline_experiment_cpu_seconds_total"),
        (&busy.reject, "faultline_experiment_calls_seen_total"),
    ] {
        let sel = format!("id=\"{id}\"");
        assert!(busy.agent.metric(&text, family, &sel).is_some(), "no {family}{{{sel}}}:\n{text}");
    }
    let sel = format!("id=\"{}\"", busy.loss);
    let dropped = busy.agent.metric(&text, "faultline_experiment_packets_dropped_total", &sel);
    assert!(dropped.unwrap() > 0.0, "nothing dropped:\n{text}");
    let sel = format!("id=\"{}\"", busy.reject);
    assert_eq!(busy.agent.metric(&text, "faultline_experiment_active", &sel), Some(0.0));
    assert!(text.contains("code=\"InvalidArgument\""), "{text}");

    let dir = TempDir::new("promtool");
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, &text).unwrap();
    let out = promtool
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!(
        "promtool check metrics: {} on {} lines, {} families: {:?}",
        out.status,
        text.lines().count(),
        families.len(),
        said.trim()
    );
    // Any output is a lint problem (promtool prints nothing for a clean exposition).
    assert!(out.status.success() && said.trim().is_empty(), "promtool: {said}\n{text}");
}

/// The dashboard's PromQL expressions: panel targets, nested row panels, query variables.
fn dashboard_exprs() -> Vec<(String, String)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/grafana/faultline-dashboard.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut out = Vec::new();
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                let expr = t["expr"].as_str().unwrap_or_else(|| panic!("no expr in {t}"));
                out.push((format!("{} {}", p["title"], t["refId"]), expr.to_string()));
            }
            walk(&p["panels"], out);
        }
    }
    walk(&dash["panels"], &mut out);
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let q = &v["query"];
        if let Some(q) = q["query"].as_str().or(q.as_str()).filter(|_| v["type"] == "query") {
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

/// What one expression uses: (metric name, label names in its selector, the function it is
/// the direct argument of), and the label names of its `by (...)` / `without (...)` clauses.
type Uses = (Vec<(String, Vec<String>, String)>, Vec<String>);

fn scan(expr: &str) -> Uses {
    let (mut metrics, mut grouping) = (Vec::new(), Vec::new());
    let b = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            // A string literal (a label value): skip it.
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            continue;
        }
        if !ident(b[i]) || (i > 0 && ident(b[i - 1])) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && ident(b[i]) {
            i += 1;
        }
        let word = &expr[start..i];
        let rest = expr[i..].trim_start();
        if word == "by" || word == "without" {
            if let Some(list) = rest.strip_prefix('(') {
                let list = &list[..list.find(')').unwrap()];
                grouping.extend(list.split(',').map(|l| l.trim().to_string()));
            }
        } else if word.starts_with("faultline_") {
            let labels = match rest.strip_prefix('{') {
                Some(body) => matchers(body).0,
                None => Vec::new(),
            };
            // The function whose argument this is: `rate(name`, `increase(name`.
            let before = expr[..start].trim_end();
            let func = before
                .strip_suffix('(')
                .map(|f| {
                    let f = f.trim_end();
                    let at = f.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
                    f[at.map_or(0, |a| a + 1)..].to_string()
                })
                .unwrap_or_default();
            metrics.push((word.to_string(), labels, func));
        }
    }
    (metrics, grouping)
}

#[test]
fn every_metric_the_dashboard_uses_exists() {
    let busy = busy();
    let text = busy.agent.scrape();
    let families = declared(&text);
    // The label names each family's series carry in this scrape (every family has series:
    // the promtool test checks that).
    let mut labels: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, l) in series(&text) {
        labels.entry(family_of(&name, &families)).or_default().extend(l);
    }
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 10, "{exprs:?}");
    let mut used = BTreeSet::new();
    let mut problems = Vec::new();
    for (what, expr) in &exprs {
        let (metrics, grouping) = scan(expr);
        let mut expr_labels: BTreeSet<String> =
            SCRAPE_LABELS.iter().map(|l| l.to_string()).collect();
        for (name, selector, func) in &metrics {
            let family = family_of(name, &families);
            let Some(kind) = families.get(&family) else {
                problems.push(format!("{what}: {name} is not declared by the agent"));
                continue;
            };
            used.insert(family.clone());
            let has = labels.get(&family).cloned().unwrap_or_default();
            for l in selector {
                if !has.contains(l) && !SCRAPE_LABELS.contains(&l.as_str()) {
                    problems.push(format!("{what}: {name} has no label {l} (has {has:?})"));
                }
            }
            expr_labels.extend(has);
            // rate() and increase() over a gauge are mistakes; so is a quantile over
            // anything but a histogram's buckets.
            let counter_like = kind == "counter" || (kind == "histogram" && name != &family);
            if matches!(func.as_str(), "rate" | "increase" | "irate") && !counter_like {
                problems.push(format!("{what}: {func}() over {name}, a {kind}"));
            }
            if kind == "histogram" && !name.ends_with("_bucket") && expr.contains("quantile") {
                problems.push(format!("{what}: quantile over {name}, not the buckets"));
            }
        }
        for l in &grouping {
            if !expr_labels.contains(l) {
                problems.push(format!("{what}: groups by {l}, which no series here has"));
            }
        }
        if metrics.is_empty() {
            problems.push(format!("{what}: no faultline metric in {expr:?}"));
        }
    }
    eprintln!("dashboard: {} expressions, families used: {used:?}", exprs.len());
    assert!(problems.is_empty(), "{}\nscrape:\n{text}", problems.join("\n"));
    for family in [
        "faultline_experiments",
        "faultline_experiment_remaining_seconds",
        "faultline_experiment_packets_dropped_total",
        "faultline_experiment_calls_failed_total",
        "faultline_experiment_cpu_seconds_total",
        "faultline_experiment_frozen_processes",
        "faultline_attached_programs",
        "faultline_grpc_requests_total",
        "faultline_grpc_request_duration_seconds",
        "faultline_build_info",
    ] {
        assert!(used.contains(family), "the dashboard shows nothing of {family}");
    }
}

#[test]
fn the_scanner_reads_selectors_groupings_and_functions() {
    let (m, g) = scan(
        "histogram_quantile(0.99, sum by (le, method) (rate(faultline_x_bucket{a=\"}b\", \
         c!~\"$node\"}[$__rate_interval]))) / faultline_y",
    );
    assert_eq!(g, ["le", "method"]);
    assert_eq!(m[0], ("faultline_x_bucket".into(), vec!["a".into(), "c".into()], "rate".into()));
    assert_eq!(m[1], ("faultline_y".into(), vec![], String::new()));
    let s = series("faultline_a{x=\"1,y=\\\"2\",z=\"\"} 3\nfaultline_b 1\n");
    assert_eq!(s[0].1.iter().collect::<Vec<_>>(), ["x", "z"]);
    assert_eq!(s[1], ("faultline_b".into(), BTreeSet::new()));
}
