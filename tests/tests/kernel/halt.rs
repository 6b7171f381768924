//! The halt switch: `faultline halt` ends every active experiment of every family at once
//! (packets, held threads, frozen cgroups, workers, shifted clocks), refuses new Injects with
//! FAILED_PRECONDITION "halted: REASON" until `faultline resume`, and an agent restarted while
//! halted stays halted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use faultline_tests::{
    Agent, Cgroup,
    clock::ClockServer,
    containers::sleeper,
    net::{TcpEcho, UdpSink},
    one_line_error, probe, udp_loss,
};

fn through(cg: &Cgroup, sink: &UdpSink) -> usize {
    probe(Some(cg), &["udp-send", &sink.addr().to_string(), "50"]);
    sink.drain()
}

/// Whether a TCP connection from `cg` to `echo` goes through.
fn connects(cg: &Cgroup, echo: &TcpEcho) -> bool {
    probe(Some(cg), &["tcp-echo", &echo.addr().to_string(), "1000"])["ok"] == true
}

fn frozen(cg: &Cgroup) -> bool {
    std::fs::read_to_string(cg.fs.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
}

fn traced(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("TracerPid:") && l.split_whitespace().nth(1) != Some("0"))
}

#[test]
fn halt_ends_every_family_at_once_refuses_new_faults_and_survives_a_restart() {
    let mut agent = Agent::start();
    let net = Cgroup::new("halt-net");
    let paused = Cgroup::new("halt-pause");
    let stressed = Cgroup::new("halt-stress");
    let delayed = Cgroup::new("halt-delay");
    let rejected = Cgroup::new("halt-reject");
    let failed = Cgroup::new("halt-errno");
    let hungry = Cgroup::new("halt-mem");
    let skewed = Cgroup::new("halt-skew");
    let mut sleepers = vec![sleeper(&paused), sleeper(&delayed)];
    let echo = TcpEcho::start("127.0.0.1:0").unwrap();
    let mut clock = ClockServer::start(Some(&skewed));
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    agent.cli_json_args(&udp_loss(&["--cgroup", &net.rel], "100", &port, "5m"));
    agent.cli_json(&["process", "pause", "--cgroup", &paused.rel, "--for", "5m"]);
    agent.cli_json(&[
        "stress",
        "cpu",
        "--cgroup",
        &stressed.rel,
        "--load",
        "5",
        "--workers",
        "1",
        "--for",
        "5m",
    ]);
    agent.cli_json(&[
        "sys",
        "delay",
        "--cgroup",
        &delayed.rel,
        "--syscall",
        "fsync",
        "--latency",
        "10ms",
        "--for",
        "5m",
    ]);
    let echo_port = echo.addr().port().to_string();
    agent.cli_json(&[
        "net",
        "reject",
        "--cgroup",
        &rejected.rel,
        "--port",
        &echo_port,
        "--errno",
        "EPERM",
        "--for",
        "5m",
    ]);
    agent.cli_json(&[
        "sys",
        "fail",
        "--cgroup",
        &failed.rel,
        "--syscall",
        "connect",
        "--errno",
        "ECONNREFUSED",
        "--for",
        "5m",
    ]);
    agent.cli_json(&["stress", "mem", "--cgroup", &hungry.rel, "--size", "16mb", "--for", "5m"]);
    agent.cli_json(&["time", "skew", "--cgroup", &skewed.rel, "--offset", "+1h", "--for", "5m"]);
    let held = delayed.procs()[0];
    assert_eq!(through(&net, &sink), 0);
    assert!(frozen(&paused));
    assert!(!stressed.procs().is_empty());
    assert!(traced(held));
    assert!(!connects(&rejected, &echo));
    assert!(!connects(&failed, &echo));
    assert!(!hungry.procs().is_empty());
    let off = clock.read().vdso_ms;
    assert!((off - 3_600_000.0).abs() < 2_000.0, "clock {off} ms off, not +1h");

    let t0 = Instant::now();
    let out = agent.cli(&["halt", "--reason", "drill stop", "-o", "json"]);
    let took = t0.elapsed();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ended: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ended = ended.as_array().unwrap();
    assert_eq!(ended.len(), 8, "{ended:?}");
    for e in ended {
        assert_eq!(e["state"], "cancelled", "{e}");
        assert_eq!(e["reason"], "halted: drill stop", "{e}");
    }
    // Gone when the halt returns.
    eprintln!("halt ended 8 experiments of 8 families in {took:?}");
    assert_eq!(through(&net, &sink), 50);
    assert!(!frozen(&paused));
    assert!(stressed.procs().is_empty(), "workers left: {:?}", stressed.procs());
    assert!(hungry.procs().is_empty(), "workers left: {:?}", hungry.procs());
    assert!(!traced(held));
    assert!(connects(&rejected, &echo));
    assert!(connects(&failed, &echo));
    let off = clock.read().vdso_ms;
    assert!(off.abs() < 1_000.0, "clock still {off} ms off after the halt");
    for cg in [&net, &rejected, &failed] {
        assert_eq!(cg.programs(), 0, "{}", cg.rel);
    }

    // Refused until resumed, across a restart too, and nothing recorded meanwhile.
    let refused = |agent: &Agent| {
        let out = agent.cli(&["process", "pause", "--cgroup", &paused.rel, "--for", "1m"]);
        assert!(!out.status.success());
        let line = one_line_error(&out);
        assert!(
            line.contains("FAILED_PRECONDITION") && line.contains("halted: drill stop"),
            "{line}"
        );
        assert!(!frozen(&paused));
    };
    refused(&agent);
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5)).expect("agent did not die");
    agent.restart();
    refused(&agent);
    assert!(agent.log().contains("started halted"), "{}", agent.log());
    let r = agent.cli_json(&["resume"]);
    assert_eq!(r["was_halted"], true, "{r}");
    assert_eq!(r["reason"], "drill stop");
    let e = agent.cli_json(&["process", "pause", "--cgroup", &paused.rel, "--for", "1m"]);
    assert_eq!(e["state"], "active");
    assert!(frozen(&paused));
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    for s in &mut sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
}
