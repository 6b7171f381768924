//! Delay and pacing of received packets: the tc ingress program sets the departure time and
//! redirects the packet to an ifb whose fq holds it. Cgroup targets (the packet's socket
//! decides) and interface targets (every packet the device receives). Where the kernel
//! cannot (no bpf_skb_set_tstamp, ifb or sch_fq) Inject must fail with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{net::TcpListener, time::Duration};

use faultline_tests::{
    Agent, Netns, NsTarget,
    net::{TcpSource, UdpEcho},
    one_line_error, probe_in, tc_programs,
};

fn ms(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap()
}

/// On kernels that cannot delay at ingress: the clear refusal, and nothing left behind.
fn refused_here(agent: &Agent, ns: &Netns, args: &[&str]) -> bool {
    let caps = agent.caps();
    let delay = caps["faults"].as_array().unwrap().iter().find(|f| f["fault"] == "net_delay");
    let reason = delay.and_then(|d| d["reason"].as_str()).unwrap_or_default();
    if delay.is_some_and(|d| d["supported"] == true) && reason.is_empty() {
        return false;
    }
    let out = agent.cli(args);
    assert!(!out.status.success(), "{args:?} accepted although caps say: {reason}");
    let err = one_line_error(&out);
    assert!(err.contains("FAILED_PRECONDITION") && err.contains("unsupported: "), "{err}");
    assert!(ns.links_of_kind("ifb").is_empty(), "ifb left after a refusal");
    eprintln!("ingress delay refused as expected here: {err}");
    true
}

#[test]
fn ingress_delay_slows_only_what_the_cgroup_receives_and_the_ifb_goes_with_it() {
    // Latency and rate to a few percent: alone, so that no other test takes the CPU.
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let t = NsTarget::new("indelay");
    let args = [
        "net",
        "delay",
        "--cgroup",
        &t.cg.rel,
        "--latency",
        "100ms",
        "--direction",
        "ingress",
        "--protocol",
        "udp",
        "--for",
        "60s",
    ];
    if refused_here(&agent, &t.ns, &args) {
        return;
    }
    let echo = t.ns.run(|| UdpEcho::start("127.0.0.1:0"));
    let base = t.rtt(&echo, 30);
    let e = agent.cli_json(&args);
    assert_eq!(e["state"], "active", "{e}");
    assert_eq!(t.ns.links_of_kind("ifb").len(), 1, "one ifb in the target's namespace");
    let with = t.rtt(&echo, 30);
    // A process in the same namespace but outside the cgroup: its replies pass at once.
    let outsider = probe_in(None, Some(&t.ns), &["udp-rtt", &echo.addr().to_string(), "30"]);
    let growth = ms(&with, "median_ms") - ms(&base, "median_ms");
    eprintln!(
        "ingress delay 100 ms: cgroup median RTT {:.2} -> {:.2} ms (+{growth:.2}); outsider {:.2} ms",
        ms(&base, "median_ms"),
        ms(&with, "median_ms"),
        ms(&outsider, "median_ms")
    );
    assert!((95.0..=110.0).contains(&growth), "asked +100 ms, measured +{growth:.2} ms");
    assert_eq!(outsider["received"], 30);
    assert!(
        ms(&outsider, "median_ms") < ms(&base, "median_ms") + 5.0,
        "outsider slowed: {outsider}"
    );
    let got = agent.cli_json(&["get", e["id"].as_str().unwrap()]);
    assert!(got["counters"]["packets_delayed"].as_u64().unwrap() >= 30, "{got}");

    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert!(t.ns.links_of_kind("ifb").is_empty(), "the ifb must go with the last ingress fault");
    assert_eq!(tc_programs(&t.ns, "lo"), 0, "tc programs left on lo");
    assert_eq!(t.cg.programs(), 0);
    let after = t.rtt(&echo, 20);
    assert!(ms(&after, "median_ms") < ms(&base, "median_ms") + 5.0, "{after}");
}

#[test]
fn ingress_bandwidth_caps_what_the_cgroup_downloads() {
    // Latency and rate to a few percent: alone, so that no other test takes the CPU.
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let t = NsTarget::new("inrate");
    let args = [
        "net",
        "bandwidth",
        "--cgroup",
        &t.cg.rel,
        "--rate",
        "8mbit",
        "--direction",
        "ingress",
        "--for",
        "60s",
    ];
    if refused_here(&agent, &t.ns, &args) {
        return;
    }
    let source = t.ns.run(|| TcpSource::start(TcpListener::bind("127.0.0.1:0").unwrap()));
    let free = t.probe(&["tcp-recv", &source.addr().to_string(), "1"]);
    agent.cli_json(&args);
    let capped = t.probe(&["tcp-recv", &source.addr().to_string(), "4"]);
    let (free, capped) = (ms(&free, "rate_bps"), ms(&capped, "rate_bps"));
    eprintln!(
        "TCP download: {:.1} Mbit/s free, {:.2} Mbit/s with an 8 Mbit/s ingress cap",
        free / 1e6,
        capped / 1e6
    );
    assert!(free > 16e6, "the path must be faster than the cap to test it: {free}");
    assert!((7.2e6..=8.8e6).contains(&capped), "asked 8 Mbit/s, measured {:.2}", capped / 1e6);
}

#[test]
fn interface_ingress_delay_slows_what_arrives_on_the_device() {
    // Latency and rate to a few percent: alone, so that no other test takes the CPU.
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let (a, b) = (Netns::new("ifina"), Netns::new("ifinb"));
    let dev = a.veth_to(&b, "10.77.20.1", "10.77.20.2");
    let args = [
        "net",
        "delay",
        "--interface",
        &dev,
        "--netns",
        &a.name,
        "--latency",
        "100ms",
        "--direction",
        "ingress",
        "--for",
        "60s",
    ];
    if refused_here(&agent, &a, &args) {
        return;
    }
    let echo = b.run(|| UdpEcho::start("10.77.20.2:0"));
    let rtt = || probe_in(None, Some(&a), &["udp-rtt", &echo.addr().to_string(), "30"]);
    let base = rtt();
    let e = agent.cli_json(&args);
    assert_eq!(e["backend"], "tc", "{e}");
    let with = rtt();
    let growth = ms(&with, "median_ms") - ms(&base, "median_ms");
    eprintln!(
        "interface ingress delay 100 ms: median RTT {:.2} -> {:.2} ms",
        ms(&base, "median_ms"),
        ms(&with, "median_ms")
    );
    assert!((95.0..=110.0).contains(&growth), "asked +100 ms, measured +{growth:.2} ms");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert!(a.links_of_kind("ifb").is_empty());
    assert_eq!(tc_programs(&a, &dev), 0);
}

#[test]
fn the_ifb_is_deleted_after_expiry_and_after_sigkill_and_restart() {
    let mut agent = Agent::start_with(&["--no-resume"]);
    let t = NsTarget::new("inkill");
    let short = [
        "net",
        "delay",
        "--cgroup",
        &t.cg.rel,
        "--latency",
        "10ms",
        "--direction",
        "both",
        "--for",
        "2s",
    ];
    if refused_here(&agent, &t.ns, &short) {
        return;
    }
    agent.cli_json(&short);
    assert_eq!(t.ns.links_of_kind("ifb").len(), 1);
    std::thread::sleep(Duration::from_millis(2600));
    assert!(t.ns.links_of_kind("ifb").is_empty(), "ifb left after expiry");
    assert_eq!(t.ns.root_qdisc("lo"), "noqueue");

    let long = [
        "net",
        "delay",
        "--cgroup",
        &t.cg.rel,
        "--latency",
        "10ms",
        "--direction",
        "ingress",
        "--for",
        "60s",
    ];
    agent.cli_json(&long);
    assert_eq!(t.ns.links_of_kind("ifb").len(), 1);
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5)).expect("agent did not die");
    // A device outlives the agent's fds (as netlink tc filters do, inert by the heartbeat).
    assert_eq!(t.ns.links_of_kind("ifb").len(), 1);
    agent.restart();
    assert_eq!(tc_programs(&t.ns, "lo"), 0, "tc programs left after the restart");
    assert!(
        t.ns.links_of_kind("ifb").is_empty(),
        "the restarted agent must delete the journaled ifb"
    );
}
