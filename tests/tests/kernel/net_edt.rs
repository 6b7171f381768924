//! Delay and bandwidth (EDT + fq), each in a network namespace of its own so the fq the
//! agent installs on that namespace's `lo` is not shared with other tests. Where the kernel
//! has no sch_fq (the capability probe says so), Inject must fail with the named reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use faultline_tests::{
    Agent, NsTarget,
    net::{HttpServer, TcpSink, UdpEcho, UdpSink},
    one_line_error,
};

type Target = NsTarget;

fn ms(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap()
}

/// On kernels without sch_fq: the clear refusal, and nothing left behind.
fn refused_without_fq(agent: &Agent, t: &Target, args: &[&str]) -> bool {
    if agent.supports("sch_fq") {
        return false;
    }
    let out = agent.cli(args);
    assert!(!out.status.success(), "{args:?} accepted without sch_fq");
    let err = one_line_error(&out);
    assert!(
        err.contains("FAILED_PRECONDITION") && err.contains("unsupported: ") && err.contains("fq"),
        "{err}"
    );
    assert_eq!(t.cg.programs(), 0);
    assert_eq!(t.ns.root_qdisc("lo"), "noqueue");
    eprintln!("no sch_fq here; refused as expected: {err}");
    true
}

#[test]
fn delay_100ms_adds_100ms_to_the_median_rtt_and_puts_the_qdisc_back() {
    // Latency and rate to a few percent: alone, so that no other test takes the CPU (one vCPU in the guests).
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let t = Target::new("delay");
    let args = [
        "net",
        "delay",
        "--cgroup",
        &t.cg.rel,
        "--latency",
        "100ms",
        "--protocol",
        "udp",
        "--for",
        "60s",
    ];
    if refused_without_fq(&agent, &t, &args) {
        return;
    }
    let echo = t.ns.run(|| UdpEcho::start("127.0.0.1:0"));
    assert_eq!(t.ns.root_qdisc("lo"), "noqueue");
    let base = t.rtt(&echo, 40);
    let e = agent.cli_json(&args);
    assert_eq!(e["state"], "active");
    assert_eq!(t.ns.root_qdisc("lo"), "fq", "fq must be installed on the egress device");
    let with = t.rtt(&echo, 40);
    let growth = ms(&with, "median_ms") - ms(&base, "median_ms");
    eprintln!(
        "median RTT {:.2} ms -> {:.2} ms: +{growth:.2} ms",
        ms(&base, "median_ms"),
        ms(&with, "median_ms")
    );
    assert!((95.0..=105.0).contains(&growth), "asked +100 ms, measured +{growth:.2} ms");
    let got = agent.cli_json(&["get", e["id"].as_str().unwrap()]);
    assert!(got["counters"]["packets_delayed"].as_u64().unwrap() >= 40, "{got}");

    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert_eq!(t.ns.root_qdisc("lo"), "noqueue", "the original qdisc must be back after Cancel");
    let after = t.rtt(&echo, 20);
    assert!(ms(&after, "median_ms") < ms(&base, "median_ms") + 5.0, "{after}");
    assert_eq!(t.cg.programs(), 0);
}

#[test]
fn jitter_widens_the_spread() {
    // Latency and rate to a few percent: alone, so that no other test takes the CPU (one vCPU in the guests).
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let t = Target::new("jitter");
    let base = [
        "net",
        "delay",
        "--cgroup",
        &t.cg.rel,
        "--latency",
        "50ms",
        "--protocol",
        "udp",
        "--for",
        "60s",
    ];
    if refused_without_fq(&agent, &t, &base) {
        return;
    }
    let echo = t.ns.run(|| UdpEcho::start("127.0.0.1:0"));
    let e = agent.cli_json(&base);
    let steady = t.rtt(&echo, 60);
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    let mut jittered = base.to_vec();
    jittered.extend_from_slice(&["--jitter", "20ms"]);
    agent.cli_json(&jittered);
    let spread = t.rtt(&echo, 60);
    let s0 = ms(&steady, "p90_ms") - ms(&steady, "p10_ms");
    let s1 = ms(&spread, "p90_ms") - ms(&spread, "p10_ms");
    eprintln!(
        "p10-p90 spread: {s0:.2} ms without jitter, {s1:.2} ms with 20 ms jitter; median {:.2}",
        ms(&spread, "median_ms")
    );
    // A guest under TCG adds a few ms of scheduling noise of its own.
    assert!(s0 < 10.0, "without jitter the spread should be small: {steady}");
    // Uniform +/- 20 ms: p10..p90 covers about 32 ms.
    assert!(s1 > 15.0 && s1 > 2.0 * s0, "20 ms of jitter should widen the spread: {spread}");
    assert!((40.0..=60.0).contains(&ms(&spread, "median_ms")), "{spread}");
}

#[test]
fn http_request_response_slows_by_the_delay() {
    // Latency and rate to a few percent: alone, so that no other test takes the CPU (one vCPU in the guests).
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let t = Target::new("http");
    let args = [
        "net",
        "delay",
        "--cgroup",
        &t.cg.rel,
        "--latency",
        "100ms",
        "--protocol",
        "tcp",
        "--for",
        "60s",
    ];
    if refused_without_fq(&agent, &t, &args) {
        return;
    }
    let http = t.ns.run(|| HttpServer::start(TcpListener::bind("127.0.0.1:0").unwrap()));
    let base = t.probe(&["http-get", &http.addr().to_string(), "10"]);
    agent.cli_json(&args);
    let with = t.probe(&["http-get", &http.addr().to_string(), "10"]);
    let growth = ms(&with, "median_ms") - ms(&base, "median_ms");
    eprintln!(
        "HTTP request/response median {:.2} -> {:.2} ms",
        ms(&base, "median_ms"),
        ms(&with, "median_ms")
    );
    assert_eq!(with["received"], 10);
    assert!((95.0..=110.0).contains(&growth), "asked +100 ms, measured +{growth:.2} ms");
}

#[test]
fn bandwidth_8mbit_caps_tcp_throughput() {
    // Latency and rate to a few percent: alone, so that no other test takes the CPU (one vCPU in the guests).
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let t = Target::new("rate");
    let args = ["net", "bandwidth", "--cgroup", &t.cg.rel, "--rate", "8mbit", "--for", "60s"];
    if refused_without_fq(&agent, &t, &args) {
        return;
    }
    let free = t.ns.run(|| TcpSink::start(TcpListener::bind("127.0.0.1:0").unwrap()));
    t.probe(&["tcp-send", &free.addr().to_string(), "1"]);
    let unlimited = free.rate_bps();
    agent.cli_json(&args);
    let sink = t.ns.run(|| TcpSink::start(TcpListener::bind("127.0.0.1:0").unwrap()));
    t.probe(&["tcp-send", &sink.addr().to_string(), "4"]);
    std::thread::sleep(Duration::from_millis(300));
    let rate = sink.rate_bps();
    eprintln!(
        "TCP throughput: {:.1} Mbit/s unlimited, {:.2} Mbit/s with an 8 Mbit/s cap",
        unlimited / 1e6,
        rate / 1e6
    );
    assert!(unlimited > 16e6, "the path must be faster than the cap to test it: {unlimited}");
    assert!((7.2e6..=8.8e6).contains(&rate), "asked 8 Mbit/s, measured {:.2} Mbit/s", rate / 1e6);
}

#[test]
fn qdisc_is_restored_after_expiry_and_after_sigkill_and_restart() {
    let mut agent = Agent::start_with(&["--no-resume"]);
    let t = Target::new("restore");
    let args = ["net", "delay", "--cgroup", &t.cg.rel, "--latency", "10ms", "--for", "2s"];
    if refused_without_fq(&agent, &t, &args) {
        return;
    }
    agent.cli_json(&args);
    let at = Instant::now();
    assert_eq!(t.ns.root_qdisc("lo"), "fq");
    std::thread::sleep(Duration::from_millis(2600).saturating_sub(at.elapsed()));
    assert_eq!(t.ns.root_qdisc("lo"), "noqueue", "not restored after expiry");

    let long = ["net", "delay", "--cgroup", &t.cg.rel, "--latency", "10ms", "--for", "60s"];
    agent.cli_json(&long);
    assert_eq!(t.ns.root_qdisc("lo"), "fq");
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5)).expect("agent did not die");
    // The qdisc is kernel state beyond the agent's fds: it stays until the next start.
    assert_eq!(t.ns.root_qdisc("lo"), "fq");
    assert_eq!(t.cg.programs(), 0, "programs die with the agent");
    agent.restart();
    assert_eq!(
        t.ns.root_qdisc("lo"),
        "noqueue",
        "the restarted agent must put the journaled qdisc back"
    );
}

#[test]
fn unknown_device_is_refused_with_the_field() {
    let agent = Agent::start();
    let t = Target::new("nodev");
    let out = agent.cli(&[
        "net",
        "delay",
        "--cgroup",
        &t.cg.rel,
        "--latency",
        "10ms",
        "--device",
        "nope0",
        "--for",
        "5s",
    ]);
    assert!(!out.status.success());
    let err = one_line_error(&out);
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("fault.net_delay.devices[0]"),
        "{err}"
    );
    assert_eq!(t.cg.programs(), 0);
    assert_eq!(t.ns.root_qdisc("lo"), "noqueue");
}

/// Loss, delay and bandwidth on one target at once, each on its own traffic; cancelling one
/// leaves the others as they were.
#[test]
fn loss_delay_and_bandwidth_compose_and_cancel_one_at_a_time() {
    // Latency and rate to a few percent: alone, so that no other test takes the CPU (one vCPU in the guests).
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let t = Target::new("compose");
    let echo = t.ns.run(|| UdpEcho::start("127.0.0.1:0"));
    let sink = t.ns.run(|| UdpSink::bind("127.0.0.1:0"));
    let (echo_port, sink_port) = (echo.addr().port().to_string(), sink.addr().port().to_string());
    let delay = [
        "net",
        "delay",
        "--cgroup",
        &t.cg.rel,
        "--latency",
        "50ms",
        "--protocol",
        "udp",
        "--port",
        &echo_port,
        "--for",
        "120s",
    ];
    if refused_without_fq(&agent, &t, &delay) {
        return;
    }
    let base = t.rtt(&echo, 20);
    let d = agent.cli_json(&delay);
    let l = agent.cli_json(&[
        "net",
        "loss",
        "--cgroup",
        &t.cg.rel,
        "--percent",
        "30",
        "--protocol",
        "udp",
        "--port",
        &sink_port,
        "--seed",
        "7",
        "--for",
        "120s",
    ]);
    agent.cli_json(&[
        "net",
        "bandwidth",
        "--cgroup",
        &t.cg.rel,
        "--rate",
        "8mbit",
        "--protocol",
        "tcp",
        "--for",
        "120s",
    ]);
    let measure = |label: &str| {
        let rtt = ms(&t.rtt(&echo, 20), "median_ms") - ms(&base, "median_ms");
        t.probe(&["udp-send", &sink.addr().to_string(), "1000"]);
        let delivered = sink.drain();
        let tcp = t.ns.run(|| TcpSink::start(TcpListener::bind("127.0.0.1:0").unwrap()));
        t.probe(&["tcp-send", &tcp.addr().to_string(), "3"]);
        std::thread::sleep(Duration::from_millis(300));
        let rate = tcp.rate_bps() / 1e6;
        eprintln!(
            "{label}: RTT +{rtt:.1} ms, {delivered}/1000 datagrams delivered, TCP {rate:.2} Mbit/s"
        );
        (rtt, delivered, rate)
    };
    let (rtt, delivered, rate) = measure("all three");
    assert!((45.0..=60.0).contains(&rtt), "delay: +{rtt:.1} ms");
    assert!((620..=780).contains(&delivered), "loss: {delivered}/1000 delivered");
    assert!((7.2..=8.8).contains(&rate), "bandwidth: {rate:.2} Mbit/s");

    agent.cli_json(&["cancel", d["id"].as_str().unwrap()]);
    let (rtt, delivered, rate) = measure("delay cancelled");
    assert!(rtt < 5.0, "the delay must be gone: +{rtt:.1} ms");
    assert!((620..=780).contains(&delivered), "loss must stay: {delivered}/1000 delivered");
    assert!((7.2..=8.8).contains(&rate), "bandwidth must stay: {rate:.2} Mbit/s");

    agent.cli_json(&["cancel", l["id"].as_str().unwrap()]);
    let (_, delivered, rate) = measure("loss cancelled");
    assert_eq!(delivered, 1000, "the loss must be gone");
    assert!((7.2..=8.8).contains(&rate), "bandwidth must stay: {rate:.2} Mbit/s");
}
