//! Faults on network devices: interface targets (every packet through the device), and the
//! tc programs that change or copy a cgroup's packets (corrupt, duplicate). Topologies are
//! two network namespaces joined by a veth pair.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faultline_tests::{
    Agent, Cgroup, Netns, NsTarget,
    net::{UdpEcho, UdpSink},
    one_line_error, probe_in, tc_programs, wait_until,
};

/// Namespaces a and b joined by a veth pair 10.77.N.1/24 <-> 10.77.N.2/24.
struct Pair {
    a: Netns,
    b: Netns,
    dev_a: String,
    addr_a: String,
    addr_b: String,
}

fn pair(tag: &str, n: u8) -> Pair {
    let a = Netns::new(&format!("{tag}a"));
    let b = Netns::new(&format!("{tag}b"));
    let (addr_a, addr_b) = (format!("10.77.{n}.1"), format!("10.77.{n}.2"));
    let dev_a = a.veth_to(&b, &addr_a, &addr_b);
    Pair { a, b, dev_a, addr_a, addr_b }
}

/// Partitions device a of the pair from every peer for 60 s.
fn partition_all(agent: &Agent, p: &Pair) -> serde_json::Value {
    agent.cli_json(&[
        "net",
        "partition",
        "--interface",
        &p.dev_a,
        "--netns",
        &p.a.name,
        "--for",
        "60s",
    ])
}

/// Replies from an echo server in `server_ns` to a client in `client_ns`; also returns how
/// many requests reached the server.
fn echo_between(client_ns: &Netns, server_ns: &Netns, server_addr: &str, n: usize) -> (u64, usize) {
    let bind = format!("{server_addr}:0");
    let echo = server_ns.run(move || UdpEcho::start(&bind));
    let r = probe_in(
        None,
        Some(client_ns),
        &["udp-echo-client", &echo.addr().to_string(), &n.to_string()],
    );
    (r["received"].as_u64().unwrap(), echo.requests.load(std::sync::atomic::Ordering::Relaxed))
}

#[test]
fn partition_between_two_namespaces_blocks_both_ways_until_it_ends() {
    let agent = Agent::start();
    let p = pair("part", 1);
    assert_eq!(
        echo_between(&p.a, &p.b, &p.addr_b, 100),
        (100, 100),
        "the path must work before the fault"
    );
    let e = agent.cli_json(&[
        "net",
        "partition",
        "--interface",
        &p.dev_a,
        "--netns",
        &p.a.name,
        "--cidr",
        &format!("{}/24", p.addr_b),
        "--for",
        "60s",
    ]);
    assert_eq!(e["backend"], "tc");
    assert!(tc_programs(&p.a, &p.dev_a) >= 2, "tc programs on the device");
    assert_eq!(echo_between(&p.a, &p.b, &p.addr_b, 100), (0, 0), "a -> b must be cut");
    assert_eq!(echo_between(&p.b, &p.a, &p.addr_a, 100), (0, 0), "b -> a must be cut");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert_eq!(echo_between(&p.a, &p.b, &p.addr_b, 100), (100, 100), "a -> b after the fault");
    assert_eq!(echo_between(&p.b, &p.a, &p.addr_a, 100), (100, 100), "b -> a after the fault");
    assert_eq!(tc_programs(&p.a, &p.dev_a), 0, "tc programs left on the device");
}

#[test]
fn interface_fault_ends_when_the_agent_is_killed_and_restart_cleans_up() {
    let mut agent = Agent::start_with(&["--no-resume"]);
    let p = pair("ikill", 2);
    partition_all(&agent, &p);
    assert_eq!(echo_between(&p.a, &p.b, &p.addr_b, 50).0, 0);
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5)).expect("agent did not die");
    // tcx links go with the agent at once; netlink filters stop acting when the heartbeat
    // goes stale (1.5 s).
    std::thread::sleep(Duration::from_millis(2000));
    assert_eq!(echo_between(&p.a, &p.b, &p.addr_b, 50), (50, 50), "the fault outlived the agent");
    agent.restart();
    assert_eq!(tc_programs(&p.a, &p.dev_a), 0, "the restarted agent must remove leftover filters");
}

#[test]
fn corrupt_100_percent_changes_every_datagram() {
    let agent = Agent::start();
    let t = NsTarget::new("corrupt");
    let b = Netns::new("corruptb");
    let dev = t.ns.veth_to(&b, "10.77.3.1", "10.77.3.2");
    let sink = b.run(|| UdpSink::bind("10.77.3.2:0"));
    let e = agent.cli_json(&[
        "net",
        "corrupt",
        "--cgroup",
        &t.cg.rel,
        "--percent",
        "100",
        "--protocol",
        "udp",
        "--cidr",
        "10.77.3.2",
        "--for",
        "60s",
    ]);
    assert_eq!(e["backend"], "tc");
    assert!(tc_programs(&t.ns, &dev) >= 2);
    t.probe(&["udp-send", &sink.addr().to_string(), "500"]);
    let (intact, corrupted, total) = sink.drain_check();
    let csum_drops = b.udp_csum_errors();
    eprintln!(
        "corrupt 100%: {total} arrived, {intact} intact, {corrupted} corrupted, {csum_drops} checksum drops"
    );
    assert_eq!(intact, 0, "no datagram may arrive unchanged");
    assert_eq!(
        corrupted as u64 + csum_drops,
        500,
        "every datagram arrives changed or is dropped on its checksum"
    );
    let got = agent.cli_json(&["get", e["id"].as_str().unwrap()]);
    assert_eq!(got["counters"]["packets_corrupted"], 500, "{got}");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    t.probe(&["udp-send", &sink.addr().to_string(), "100"]);
    assert_eq!(sink.drain_check(), (100, 0, 100));
    assert_eq!(tc_programs(&t.ns, &dev), 0);
}

#[test]
fn duplicate_100_percent_delivers_every_datagram_twice() {
    let agent = Agent::start();
    let t = NsTarget::new("dup");
    let b = Netns::new("dupb");
    let dev = t.ns.veth_to(&b, "10.77.4.1", "10.77.4.2");
    let sink = b.run(|| UdpSink::bind("10.77.4.2:0"));
    let e = agent.cli_json(&[
        "net",
        "duplicate",
        "--cgroup",
        &t.cg.rel,
        "--percent",
        "100",
        "--protocol",
        "udp",
        "--cidr",
        "10.77.4.2",
        "--for",
        "60s",
    ]);
    t.probe(&["udp-send", &sink.addr().to_string(), "500"]);
    let (intact, corrupted, total) = sink.drain_check();
    eprintln!("duplicate 100%: 500 sent, {total} arrived ({intact} distinct)");
    assert_eq!((intact, corrupted, total), (500, 0, 1000), "every datagram twice, unchanged");
    let got = agent.cli_json(&["get", e["id"].as_str().unwrap()]);
    assert_eq!(got["counters"]["packets_duplicated"], 500, "{got}");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert_eq!(tc_programs(&t.ns, &dev), 0);
}

#[test]
fn interface_loss_drops_the_share_asked() {
    let agent = Agent::start();
    let p = pair("iloss", 5);
    let sink = p.b.run(|| UdpSink::bind("10.77.5.2:0"));
    agent.cli_json(&[
        "net",
        "loss",
        "--interface",
        &p.dev_a,
        "--netns",
        &p.a.name,
        "--percent",
        "30",
        "--direction",
        "egress",
        "--protocol",
        "udp",
        "--for",
        "60s",
    ]);
    probe_in(None, Some(&p.a), &["udp-send", &sink.addr().to_string(), "5000"]);
    let got = sink.drain();
    let loss = 100.0 * (5000 - got) as f64 / 5000.0;
    eprintln!("interface loss 30%: measured {loss:.2}%");
    assert!((26.0..=34.0).contains(&loss), "asked 30%, measured {loss:.2}%");
}

#[test]
fn interface_delay_adds_latency_on_the_device() {
    // Latency to 5 ms: alone, so that no other test takes the CPU.
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let p = pair("idelay", 6);
    let args = [
        "net",
        "delay",
        "--interface",
        &p.dev_a,
        "--netns",
        &p.a.name,
        "--latency",
        "100ms",
        "--for",
        "60s",
    ];
    if !agent.supports("sch_fq") {
        let err = one_line_error(&agent.cli(&args));
        assert!(err.contains("unsupported: ") && err.contains("fq"), "{err}");
        return;
    }
    let echo = p.b.run(|| UdpEcho::start("10.77.6.2:0"));
    let rtt = |ns: &Netns| {
        probe_in(None, Some(ns), &["udp-rtt", &echo.addr().to_string(), "30"])["median_ms"]
            .as_f64()
            .unwrap()
    };
    let base = rtt(&p.a);
    agent.cli_json(&args);
    let with = rtt(&p.a);
    eprintln!("interface delay: median RTT {base:.2} -> {with:.2} ms");
    assert!((95.0..=105.0).contains(&(with - base)), "asked +100 ms, measured +{:.2}", with - base);
}

#[test]
fn interface_bad_input_names_the_field() {
    let agent = Agent::start();
    let p = pair("ibad", 7);
    let cases: [(&[&str], &str, &str); 3] = [
        (
            &[
                "net",
                "loss",
                "--interface",
                "nope0",
                "--netns",
                &p.a.name,
                "--percent",
                "5",
                "--for",
                "5s",
            ],
            "NOT_FOUND",
            "target.interface.name",
        ),
        (
            &[
                "net",
                "loss",
                "--interface",
                "lo",
                "--netns",
                "fl-no-such-ns",
                "--percent",
                "5",
                "--for",
                "5s",
            ],
            "NOT_FOUND",
            "target.interface.netns",
        ),
        // The agent refuses reject on a device (it acts on connect()): the command line does
        // not offer --interface there.
        (
            &["net", "reject", "--interface", &p.dev_a, "--netns", &p.a.name, "--for", "5s"],
            "unexpected argument",
            "'--interface'",
        ),
    ];
    for (args, code, field) in cases {
        let err = one_line_error(&agent.cli(args));
        assert!(err.contains(code) && err.contains(field), "{args:?}: {err}");
    }
    assert_eq!(tc_programs(&p.a, &p.dev_a), 0);
    assert_eq!(agent.cli_json(&["ls"]).as_array().unwrap().len(), 0);
}

/// The device goes away mid-fault (its pod's veth deleted): the experiment fails with
/// "target gone", and a device made again under the same name is left alone.
#[test]
fn interface_fault_fails_when_the_device_is_removed() {
    let agent = Agent::start();
    let p = pair("igone", 8);
    let e = partition_all(&agent, &p);
    let id = e["id"].as_str().unwrap();
    assert_eq!(echo_between(&p.a, &p.b, &p.addr_b, 20).0, 0, "the fault was not in effect");
    p.a.ip(&["link", "del", &p.dev_a]);
    // A new pair under the same name: a new device index.
    let peer = format!("{}q", p.dev_a);
    p.a.ip(&["link", "add", &p.dev_a, "type", "veth", "peer", "name", &peer, "netns", &p.b.name]);
    p.a.ip(&["addr", "add", &format!("{}/24", p.addr_a), "dev", &p.dev_a]);
    p.b.ip(&["addr", "add", &format!("{}/24", p.addr_b), "dev", &peer]);
    p.a.ip(&["link", "set", &p.dev_a, "up"]);
    p.b.ip(&["link", "set", &peer, "up"]);
    wait_until("the experiment to fail", || agent.cli_json(&["get", id])["state"] == "failed");
    let got = agent.cli_json(&["get", id]);
    let reason = got["reason"].as_str().unwrap();
    assert!(reason.starts_with("target gone: device ") && reason.contains("removed"), "{got}");
    assert_eq!(echo_between(&p.a, &p.b, &p.addr_b, 20), (20, 20), "the new device got the fault");
}

/// `lo` has index 1 in every namespace: while one namespace's `lo` carries a fault, another
/// namespace's is refused, with the true reason (the programs key devices by index alone,
/// whatever the kernel offers), and takes it once the first fault ends.
#[test]
fn same_index_in_another_namespace_is_refused_with_the_reason() {
    fn args(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let agent = Agent::start();
    let (a, b) = (Netns::new("idxa"), Netns::new("idxb"));
    let loss = |ns: &Netns| {
        vec![
            "net".to_string(),
            "loss".into(),
            "--interface".into(),
            "lo".into(),
            "--netns".into(),
            ns.name.clone(),
            "--percent".into(),
            "10".into(),
            "--for".into(),
            "60s".into(),
        ]
    };
    let first = agent.cli_json(&args(&loss(&a)));
    let err = one_line_error(&agent.cli(&args(&loss(&b))));
    assert!(
        (err.contains("FailedPrecondition") || err.contains("FAILED_PRECONDITION"))
            && err.contains("device index 1")
            && err.contains("by interface index alone")
            && !err.contains("on this kernel"),
        "{err}"
    );
    agent.cli_json(&["cancel", first["id"].as_str().unwrap()]);
    let second = agent.cli_json(&args(&loss(&b)));
    assert_eq!(second["state"], "active");
    agent.cli_json(&["cancel", second["id"].as_str().unwrap()]);
    assert_eq!(tc_programs(&a, "lo") + tc_programs(&b, "lo"), 0);
}

/// Corrupt and duplicate act on what a cgroup sends: another direction is bad input
/// (INVALID_ARGUMENT naming the field, in plain words), refused before anything is applied.
#[test]
fn corrupt_and_duplicate_on_a_cgroup_refuse_ingress_as_bad_input() {
    let agent = Agent::start();
    let cg = Cgroup::new("mangle-dir");
    for (kind, dir) in [("corrupt", "both"), ("duplicate", "ingress")] {
        let args =
            ["net", kind, "--cgroup", &cg.rel, "--percent", "1", "--direction", dir, "--for", "5s"];
        let err = one_line_error(&agent.cli(&args));
        assert!(
            (err.contains("InvalidArgument") || err.contains("INVALID_ARGUMENT"))
                && err.contains(&format!("fault.net_{kind}.filter.direction"))
                && err.contains("acts on the packets it sends only"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(agent.cli_json(&["ls"]).as_array().unwrap().len(), 0, "a refusal was recorded");
    assert_eq!(cg.programs(), 0);
}
