//! The state directory failing: full (a size-limited tmpfs filled to ENOSPC), read-only, or
//! missing with its parent. Every fault is journaled there before it is applied, so a full
//! one refuses new faults and applies nothing, while the running faults go on and Cancel
//! works; one that cannot be written at start stops the agent with one line.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use faultline_tests::{
    Agent, Cgroup, TempDir, Tmpfs, faultline_bin, net::UdpSink, one_line_error, probe, udp_loss,
};

fn received(cg: &Cgroup, sink: &UdpSink) -> usize {
    probe(Some(cg), &["udp-send", &sink.addr().to_string(), "100"]);
    sink.drain()
}

#[test]
fn a_full_state_dir_refuses_new_faults_and_keeps_the_running_ones_and_cancel() {
    let dir = TempDir::new("state-full");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let fs = Tmpfs::at(&state, "256k");
    let agent = Agent::builder().state_dir(&state).start();
    let (a, b) = (Cgroup::new("full-a"), Cgroup::new("full-b"));
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    let running = agent.cli_json_args(&udp_loss(&["--cgroup", &a.rel], "100", &port, "2m"));
    let id = running["id"].as_str().unwrap().to_string();
    assert_eq!(received(&a, &sink), 0, "the fault did not take effect");

    let fill = fs.fill();
    for args in [
        udp_loss(&["--cgroup", &b.rel], "100", &port, "1m"),
        ["process", "pause", "--cgroup", &b.rel, "--for", "1m"].map(String::from).to_vec(),
        ["stress", "cpu", "--cgroup", &b.rel, "--load", "20", "--for", "1m"]
            .map(String::from)
            .to_vec(),
    ] {
        let out = agent.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(!out.status.success(), "{args:?} was applied on a full state directory");
        let line = one_line_error(&out);
        assert!(
            line.contains("RESOURCE_EXHAUSTED") && line.contains("state directory is full"),
            "{args:?}: {line}"
        );
    }
    // Nothing applied, nothing recorded.
    assert_eq!(b.programs(), 0);
    assert!(b.procs().is_empty(), "a stress worker was left: {:?}", b.procs());
    assert_eq!(std::fs::read_to_string(b.fs.join("cgroup.freeze")).unwrap().trim(), "0");
    let all = agent.cli_json(&["ls"]);
    assert_eq!(all.as_array().unwrap().len(), 1, "{all}");
    // The running fault still acts, and Cancel ends it.
    assert_eq!(received(&a, &sink), 0, "the running fault stopped acting");
    let e = agent.cli_json(&["cancel", &id]);
    assert_eq!(e["state"], "cancelled", "{e}");
    assert_eq!(a.programs(), 0);
    assert_eq!(received(&a, &sink), 100);

    // Room again: faults are taken again.
    std::fs::remove_file(fill).unwrap();
    let e = agent.cli_json_args(&udp_loss(&["--cgroup", &b.rel], "100", &port, "1m"));
    assert_eq!(e["state"], "active", "{e}");
    assert_eq!(received(&b, &sink), 0);
}

/// `faultline serve` with this state directory: exits non-zero with one line on stderr.
fn refused_at_start(state: &std::path::Path, dir: &TempDir) -> String {
    let out = Command::new(faultline_bin())
        .args(["serve", "--no-metrics", "--socket"])
        .arg(dir.path().join("s.sock"))
        .arg("--state-dir")
        .arg(state)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the agent started on {}", state.display());
    one_line_error(&out)
}

#[test]
fn a_read_only_or_missing_state_dir_stops_the_agent_with_one_line() {
    let dir = TempDir::new("state-ro");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let fs = Tmpfs::at(&state, "64k");
    fs.read_only();
    let line = refused_at_start(&state, &dir);
    assert!(line.contains("is read-only") && line.contains(state.to_str().unwrap()), "{line}");
    let gone = dir.path().join("volume/state");
    let line = refused_at_start(&gone, &dir);
    assert!(line.contains("is missing") && line.contains("volume"), "{line}");
    assert!(!gone.exists());
    assert!(!dir.path().join("s.sock").exists(), "a socket was left");
}
