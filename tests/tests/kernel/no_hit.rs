//! Faults that hit nothing: a rule for a port nobody uses is marked after its
//! --expect-hit-within (a NO_HIT event, `no_hit` in get, "(no hit)" in ls, the metric at 1),
//! while a rule that matches traffic is not.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    time::Duration,
};

use faultline_tests::{Agent, Cgroup, faultline_bin, net::UdpSink, probe, udp_loss};

#[test]
fn a_rule_nobody_matches_is_marked_and_one_that_matches_is_not() {
    let agent = Agent::start();
    let idle = Cgroup::new("nohit-idle");
    let busy = Cgroup::new("nohit-busy");
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    // The event stream, from before the experiments.
    let mut events = std::process::Command::new(faultline_bin())
        .args(["--endpoint", &agent.endpoint(), "-o", "json", "events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = BufReader::new(events.stdout.take().unwrap());
    let reader =
        std::thread::spawn(move || lines.lines().map_while(Result::ok).collect::<Vec<String>>());
    std::thread::sleep(Duration::from_millis(300));
    let within = ["--expect-hit-within", "1s"];
    let mut args = udp_loss(&["--cgroup", &idle.rel], "50", "9", "1m");
    args.extend(within.map(String::from));
    let nobody = agent.cli_json_args(&args);
    let mut args = udp_loss(&["--cgroup", &busy.rel], "50", &port, "1m");
    args.extend(within.map(String::from));
    let matched = agent.cli_json_args(&args);
    assert_eq!(nobody["expect_hit_within_ms"], 1000);
    // Traffic through the busy one only (nothing in the idle cgroup sends to port 9).
    probe(Some(&busy), &["udp-send", &sink.addr().to_string(), "50"]);
    std::thread::sleep(Duration::from_millis(2000));

    let (n, m) = (nobody["id"].as_str().unwrap(), matched["id"].as_str().unwrap());
    let got = agent.cli_json(&["get", n]);
    assert_eq!(got["no_hit"], true, "{got}");
    assert_eq!(got["state"], "active");
    let got = agent.cli_json(&["get", m]);
    assert_eq!(got["no_hit"], false, "{got}");
    assert!(!got["first_hit_at"].is_null(), "{got}");
    let words = String::from_utf8_lossy(&agent.cli(&["get", n]).stdout).to_string();
    assert!(words.contains("nothing matched yet: check the target and filters"), "{words}");
    let ls = String::from_utf8_lossy(&agent.cli(&["ls"]).stdout).to_string();
    let row = |id: &str| ls.lines().find(|l| l.starts_with(id)).unwrap_or_default().to_string();
    assert!(row(n).contains("active (no hit)"), "{ls}");
    assert!(!row(m).contains("no hit"), "{ls}");
    let text = agent.scrape();
    let label = |id: &str| format!("id=\"{id}\",kind=\"net_loss\"");
    assert_eq!(agent.metric(&text, "faultline_experiment_no_hit", &label(n)), Some(1.0), "{text}");
    assert_eq!(agent.metric(&text, "faultline_experiment_no_hit", &label(m)), Some(0.0), "{text}");

    let _ = events.kill();
    let _ = events.wait();
    let lines = reader.join().unwrap();
    let of = |id: &str, kind: &str| {
        lines
            .iter()
            .filter(|l| l.contains(id) && l.contains(&format!("\"event\":\"{kind}\"")))
            .count()
    };
    assert_eq!(of(n, "NO_HIT"), 1, "{lines:#?}");
    assert_eq!(of(m, "NO_HIT"), 0, "{lines:#?}");
    assert_eq!(of(m, "FIRST_HIT"), 1, "{lines:#?}");
    for id in [n, m] {
        agent.cli_json(&["cancel", id]);
    }
}
