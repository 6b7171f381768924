//! Leases, a dead-man's switch: a fault injected with `--lease` ends as failed ("lease
//! expired") unless renewed within each lease. `--wait` renews it while the CLI runs in the
//! foreground and cancels it on Ctrl-C; a client cut off (SIGKILL) ends it within the lease
//! and a second; a stalled agent (SIGSTOP) too, since the kernel's copy of the deadline
//! follows the lease.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use faultline_tests::{
    Agent, Cgroup, faultline_bin, net::UdpSink, one_line_error, probe, udp_loss, wait_for,
    wait_until,
};

/// Datagrams of 50 from the cgroup that arrive.
fn through(cg: &Cgroup, sink: &UdpSink) -> usize {
    probe(Some(cg), &["udp-send", &sink.addr().to_string(), "50"]);
    sink.drain()
}

/// `faultline net partition ... --lease LEASE --wait` cutting the cgroup off the sink's port,
/// in the background.
fn hold(agent: &Agent, cg: &Cgroup, sink: &UdpSink, lease: &str) -> Child {
    let port = sink.addr().port().to_string();
    Command::new(faultline_bin())
        .arg("--endpoint")
        .arg(&agent.socket)
        .args(["net", "partition", "--cgroup", &cg.rel, "--port", &port, "--for", "60s"])
        .args(["--lease", lease, "--wait", "--label", "lease=test"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn the_experiment(agent: &Agent) -> serde_json::Value {
    let all = agent.cli_json(&["ls"]);
    let mine: Vec<&serde_json::Value> =
        all.as_array().unwrap().iter().filter(|e| e["labels"]["lease"] == "test").collect();
    assert_eq!(mine.len(), 1, "{all}");
    mine[0].clone()
}

#[test]
fn a_client_cut_off_ends_its_leased_fault_within_the_lease_and_a_second() {
    let agent = Agent::start();
    let cg = Cgroup::new("lease-cut");
    let sink = UdpSink::bind("127.0.0.1:0");
    let mut cli = hold(&agent, &cg, &sink, "2s");
    wait_until("the leased fault to act", || through(&cg, &sink) == 0);
    // Renewed while the CLI holds it: it outlives its lease three times over.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(through(&cg, &sink), 0, "the lease was not renewed");
    assert_eq!(the_experiment(&agent)["state"], "active");
    cli.kill().unwrap();
    let cut = Instant::now();
    cli.wait().unwrap();
    wait_for("traffic to flow once the lease ran out", Duration::from_secs(3), || {
        through(&cg, &sink) == 50
    });
    eprintln!("the fault ended {:?} after its client was killed (lease 2 s)", cut.elapsed());
    let e = the_experiment(&agent);
    assert_eq!(e["state"], "failed", "{e}");
    assert!(e["reason"].as_str().unwrap().starts_with("lease expired"), "{e}");
    wait_until("the programs to go", || cg.programs() == 0);
}

#[test]
fn ctrl_c_on_a_waiting_cli_cancels_its_fault() {
    let agent = Agent::start();
    let cg = Cgroup::new("lease-int");
    let sink = UdpSink::bind("127.0.0.1:0");
    let cli = hold(&agent, &cg, &sink, "10s");
    wait_until("the leased fault to act", || through(&cg, &sink) == 0);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(cli.id() as i32, libc::SIGINT) };
    let out = cli.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SIGINT") && err.contains("cancelled"), "{err}");
    assert_eq!(the_experiment(&agent)["state"], "cancelled");
    assert_eq!(through(&cg, &sink), 50);
    assert_eq!(cg.programs(), 0);
}

#[test]
fn a_stalled_agent_ends_a_leased_fault_on_time_in_the_kernel() {
    let agent = Agent::start();
    let cg = Cgroup::new("lease-stall");
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    let mut args = udp_loss(&["--cgroup", &cg.rel], "100", &port, "60s");
    args.extend(["--lease", "2s", "--label", "lease=test"].map(String::from));
    let e = agent.cli_json_args(&args);
    assert!(e["lease_expires_at"].is_string(), "{e}");
    let renewed = agent.cli_json(&["renew", e["id"].as_str().unwrap()]);
    assert_eq!(renewed["state"], "active");
    assert_eq!(through(&cg, &sink), 0);
    agent.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    wait_for("the kernel to end the fault with the agent stopped", Duration::from_secs(4), || {
        through(&cg, &sink) == 50
    });
    eprintln!("traffic flowed {:?} after the agent stopped (lease 2 s)", stopped.elapsed());
    agent.signal(libc::SIGCONT);
    wait_until("the agent to record it", || the_experiment(&agent)["state"] == "failed");
    wait_until("the programs to go", || cg.programs() == 0);
}

#[test]
fn leases_out_of_range_or_on_faults_that_take_none_are_refused() {
    let agent = Agent::start();
    let cg = Cgroup::new("lease-bad");
    let refused = |args: &[&str], code: &str, needle: &str| {
        let out = agent.cli(args);
        assert!(!out.status.success(), "{args:?} was taken");
        let line = one_line_error(&out);
        assert!(line.contains(code) && line.contains(needle), "{args:?}: {line}");
    };
    let loss = ["net", "loss", "--cgroup", &cg.rel, "--percent", "10", "--for", "1m"];
    refused(
        &[&loss[..], &["--lease", "500ms"]].concat(),
        "INVALID_ARGUMENT",
        "lease: must be 1s to 1h",
    );
    refused(
        &[&loss[..], &["--lease", "2h"]].concat(),
        "INVALID_ARGUMENT",
        "lease: must be 1s to 1h",
    );
    refused(
        &["stress", "cpu", "--cgroup", &cg.rel, "--load", "5", "--for", "1m", "--lease", "5s"],
        "INVALID_ARGUMENT",
        "cpu_stress takes no lease",
    );
    assert!(agent.cli_json(&["ls"]).as_array().unwrap().is_empty(), "a refusal left a record");
    assert_eq!(cg.programs(), 0);
    let plain = agent.cli_json(&loss);
    refused(&["renew", plain["id"].as_str().unwrap()], "FAILED_PRECONDITION", "without a lease");
}
