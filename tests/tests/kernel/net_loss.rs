//! Packet loss for a cgroup, measured at receivers outside it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use faultline_tests::{
    Agent, Cgroup,
    net::{TcpEcho, UdpEcho, UdpSink},
    probe, udp_loss,
};

const N: usize = 5000;

fn loss_pct(sent: usize, received: usize) -> f64 {
    100.0 * (sent - received) as f64 / sent as f64
}

/// 30% asked: with 5000 datagrams the standard deviation is 0.65 points, so +/- 4 is > 6 sd.
fn udp_loss_30(bind: &str) {
    let agent = Agent::start();
    let cg = Cgroup::new("loss30");
    let sink = UdpSink::bind(bind);
    let port = sink.addr().port().to_string();
    let e = agent.cli_json(&[
        "net",
        "loss",
        "--cgroup",
        &cg.rel,
        "--percent",
        "30",
        "--protocol",
        "udp",
        "--port",
        &port,
        "--for",
        "60s",
    ]);
    assert_eq!(e["state"], "active");
    assert_eq!(e["backend"], "cgroup_skb");
    assert_eq!(cg.attached(0), 1);
    assert_eq!(cg.attached(1), 1);
    // Each attached hook type costs every socket on the host: a packet fault takes none.
    assert_eq!(cg.sock_programs(), 0, "a loss experiment attached sock_addr programs");

    let target = sink.addr().to_string();
    let sent = probe(Some(&cg), &["udp-send", &target, &N.to_string()]);
    assert_eq!(sent["errors"], 0, "loss must be silent to a UDP sender, as on a real network");
    let received = sink.drain();
    let loss = loss_pct(N, received);
    eprintln!("{bind}: {received}/{N} received, loss {loss:.2}%");
    assert!((26.0..=34.0).contains(&loss), "asked 30%, measured {loss:.2}%");

    // The kernel's own counters agree with what the receiver saw.
    let id = e["id"].as_str().unwrap();
    let got = agent.cli_json(&["get", id]);
    assert_eq!(got["counters"]["packets_matched"], N as u64);
    assert_eq!(got["counters"]["packets_dropped"], (N - received) as u64);

    // The same traffic from outside the cgroup is untouched.
    probe(None, &["udp-send", &target, &N.to_string()]);
    assert_eq!(sink.drain(), N, "traffic from outside the target cgroup lost packets");
}

#[test]
fn udp_loss_30_percent_ipv4() {
    udp_loss_30("127.0.0.1:0");
}

#[test]
fn udp_loss_30_percent_ipv6() {
    udp_loss_30("[::1]:0");
}

#[test]
fn ingress_loss_drops_replies() {
    let agent = Agent::start();
    let cg = Cgroup::new("ingress");
    let echo = UdpEcho::start("127.0.0.1:0");
    agent.cli_json(&[
        "net",
        "loss",
        "--cgroup",
        &cg.rel,
        "--percent",
        "30",
        "--direction",
        "ingress",
        "--protocol",
        "udp",
        "--cidr",
        "127.0.0.1/32",
        "--for",
        "60s",
    ]);
    let r = probe(Some(&cg), &["udp-echo-client", &echo.addr().to_string(), &N.to_string()]);
    let replies = r["received"].as_u64().unwrap() as usize;
    let requests = echo.requests.load(std::sync::atomic::Ordering::Relaxed);
    let loss = loss_pct(N, replies);
    eprintln!(
        "ingress: {requests} requests reached the server, {replies}/{N} replies, loss {loss:.2}%"
    );
    assert_eq!(requests, N, "egress must be untouched by an ingress-only fault");
    assert!((26.0..=34.0).contains(&loss), "asked 30% of replies, measured {loss:.2}%");
}

/// Binds 6379 when it is free (the Redis drill), else any port.
fn redis_like() -> TcpEcho {
    TcpEcho::start("127.0.0.1:6379").or_else(|_| TcpEcho::start("127.0.0.1:0")).unwrap()
}

#[test]
fn port_filter_blocks_only_that_port() {
    let agent = Agent::start();
    let cg = Cgroup::new("port");
    let redis = redis_like();
    let other = TcpEcho::start("127.0.0.1:0").unwrap();
    let port = redis.addr().port().to_string();
    agent.cli_json(&[
        "net",
        "loss",
        "--cgroup",
        &cg.rel,
        "--percent",
        "100",
        "--port",
        &port,
        "--for",
        "60s",
    ]);

    let blocked = probe(Some(&cg), &["tcp-echo", &redis.addr().to_string(), "1500"]);
    assert_eq!(blocked["ok"], false, "port {port} should be unreachable: {blocked}");
    let open = probe(Some(&cg), &["tcp-echo", &other.addr().to_string(), "1500"]);
    assert_eq!(open["ok"], true, "another port from the same cgroup must work: {open}");
    let outside = probe(None, &["tcp-echo", &redis.addr().to_string(), "1500"]);
    assert_eq!(outside["ok"], true, "port {port} from outside the cgroup must work: {outside}");
}

#[test]
fn cidr_filter_and_exclusion() {
    let agent = Agent::start();
    let cg = Cgroup::new("cidr");
    let v4 = UdpSink::bind("127.0.0.1:0");
    let v4b = UdpSink::bind("127.0.0.2:0");
    let v6 = UdpSink::bind("[::1]:0");
    // All of 127.0.0.0/8 except 127.0.0.2.
    agent.cli_json(&[
        "net",
        "loss",
        "--cgroup",
        &cg.rel,
        "--percent",
        "100",
        "--cidr",
        "127.0.0.0/8",
        "--exclude",
        "127.0.0.2",
        "--protocol",
        "udp",
        "--for",
        "60s",
    ]);
    for (sink, expect) in [(&v4, 0), (&v4b, 500), (&v6, 500)] {
        probe(Some(&cg), &["udp-send", &sink.addr().to_string(), "500"]);
        assert_eq!(sink.drain(), expect, "to {}", sink.addr());
    }
}

#[test]
fn pid_target_resolves_to_its_cgroup() {
    let agent = Agent::start();
    let cg = Cgroup::new("pid");
    let mut sleeper = cg.command("sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let sink = UdpSink::bind("127.0.0.1:0");
    let e = agent.cli_json(&[
        "net",
        "loss",
        "--pid",
        &pid,
        "--percent",
        "100",
        "--protocol",
        "udp",
        "--for",
        "60s",
    ]);
    assert_eq!(e["resolved_cgroup"], cg.rel.as_str());
    probe(Some(&cg), &["udp-send", &sink.addr().to_string(), "300"]);
    assert_eq!(sink.drain(), 0);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// Nested targets: each has its own cgroup_skb programs, and each rule applies once.
/// 50% on the parent and 50% on the child drop 75% of the child's packets; a rule applied
/// twice would drop 87.5%.
#[test]
fn nested_cgroups_apply_each_rule_once() {
    let agent = Agent::start();
    let parent = Cgroup::new("nest");
    let child = parent.child("leaf");
    let sink = UdpSink::bind("127.0.0.1:0");
    let target = sink.addr().to_string();
    let args = |rel: &str| {
        vec!["net", "loss", "--cgroup", rel, "--percent", "50", "--protocol", "udp", "--for", "60s"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let child_rel = child.rel.clone();
    let c = agent.cli_json(&args(&child_rel).iter().map(String::as_str).collect::<Vec<_>>());
    let p = agent.cli_json(&args(&parent.rel).iter().map(String::as_str).collect::<Vec<_>>());
    // Each target has its own cgroup_skb programs, which read their own cgroup's rules: a
    // packet of the child meets each rule once, in its own cgroup's program and the parent's.
    assert_eq!(parent.skb_programs(), 2);
    assert_eq!(child.skb_programs(), 2);

    probe(Some(&child), &["udp-send", &target, &N.to_string()]);
    let loss = loss_pct(N, sink.drain());
    eprintln!("nested 50%+50%: loss {loss:.2}%");
    assert!((71.0..=79.0).contains(&loss), "expected 75%, measured {loss:.2}%");

    // Cancelling the parent's experiment detaches its programs; the child's stay.
    agent.cli_json(&["cancel", p["id"].as_str().unwrap()]);
    assert_eq!(parent.programs(), 0);
    assert_eq!(child.skb_programs(), 2);
    probe(Some(&child), &["udp-send", &target, &N.to_string()]);
    let loss = loss_pct(N, sink.drain());
    eprintln!("child 50% alone: loss {loss:.2}%");
    assert!((46.0..=54.0).contains(&loss), "expected 50%, measured {loss:.2}%");
    agent.cli_json(&["cancel", c["id"].as_str().unwrap()]);
    assert_eq!(child.programs(), 0);
}

/// Nested targets measured at once: 30% on the parent (any UDP), 50% on the child for one
/// port only. While a process in the parent sends, one in the child sends to that port and
/// to another: the parent sees 30%, the child 65% (both rules) on the port and 30% (the
/// parent's rule alone: the child's filter passes it by) elsewhere.
#[test]
fn nested_targets_measured_at_once() {
    let agent = Agent::start();
    let parent = Cgroup::new("nest2");
    let child = parent.child("leaf");
    let (to_parent, to_port, to_other) =
        (UdpSink::bind("127.0.0.1:0"), UdpSink::bind("127.0.0.1:0"), UdpSink::bind("[::1]:0"));
    let port = to_port.addr().port().to_string();
    // The parent's rule takes any UDP port; the child's only this one.
    let parent_rule = ["net", "loss", "--cgroup", &parent.rel, "--percent", "30"];
    agent.cli_json(&[&parent_rule[..], &["--protocol", "udp", "--for", "60s"]].concat());
    let child_rule = udp_loss(&["--cgroup", &child.rel], "50", &port, "60s");
    agent.cli_json(&child_rule.iter().map(String::as_str).collect::<Vec<_>>());
    let n = N.to_string();
    std::thread::scope(|s| {
        let p = s.spawn(|| probe(Some(&parent), &["udp-send", &to_parent.addr().to_string(), &n]));
        probe(Some(&child), &["udp-send", &to_port.addr().to_string(), &n]);
        probe(Some(&child), &["udp-send", &to_other.addr().to_string(), &n]);
        p.join().unwrap();
    });
    let measured = [
        ("parent", loss_pct(N, to_parent.drain()), 30.0),
        ("child, the child rule's port", loss_pct(N, to_port.drain()), 65.0),
        ("child, another port (IPv6)", loss_pct(N, to_other.drain()), 30.0),
    ];
    for (who, loss, want) in measured {
        eprintln!("{who}: loss {loss:.2}% (expected {want}%)");
        assert!((loss - want).abs() <= 4.0, "{who}: expected {want}%, measured {loss:.2}%");
    }
}
