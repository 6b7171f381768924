//! Loss models beyond plain percent, and partitions, measured on the sequence numbers that
//! reach a receiver outside the target cgroup.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use faultline_tests::{
    Agent, Cgroup,
    net::{TcpEcho, UdpEcho, UdpSink},
    probe,
};

/// Sends `n` numbered datagrams from `cg` and returns the numbers that did not arrive.
fn lost_seqs(cg: &Cgroup, sink: &UdpSink, n: u64) -> BTreeSet<u64> {
    probe(Some(cg), &["udp-send", &sink.addr().to_string(), &n.to_string()]);
    let got = sink.drain_seqs();
    (0..n).filter(|s| !got.contains(s)).collect()
}

/// Lengths of the runs of consecutive lost sequence numbers.
fn bursts(lost: &BTreeSet<u64>) -> Vec<u64> {
    let mut runs = Vec::new();
    let mut prev: Option<u64> = None;
    for &s in lost {
        match (prev, runs.last_mut()) {
            (Some(p), Some(len)) if p + 1 == s => *len += 1,
            _ => runs.push(1),
        }
        prev = Some(s);
    }
    runs
}

fn loss_args<'a>(cg: &'a Cgroup, port: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "net",
        "loss",
        "--cgroup",
        &cg.rel,
        "--protocol",
        "udp",
        "--port",
        port,
        "--for",
        "60s",
    ];
    v.extend_from_slice(extra);
    v
}

/// 20% in bursts of 5: about 800 bursts in 20000 packets, so the mean burst length has a
/// standard deviation near 0.16; +/- 20% (1.0) is over 6 of them.
#[test]
fn gilbert_elliott_loss_comes_in_bursts() {
    let agent = Agent::start();
    let cg = Cgroup::new("ge");
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    agent.cli_json(&loss_args(&cg, &port, &["--percent", "20", "--burst", "5"]));
    let n = 20_000;
    let lost = lost_seqs(&cg, &sink, n);
    let runs = bursts(&lost);
    let mean = lost.len() as f64 / runs.len() as f64;
    let pct = 100.0 * lost.len() as f64 / n as f64;
    eprintln!("GE 20%/5: lost {pct:.2}% in {} bursts, mean burst {mean:.2}", runs.len());
    assert!((4.0..=6.0).contains(&mean), "mean burst length {mean:.2}, asked 5");
    assert!((16.0..=24.0).contains(&pct), "long-run loss {pct:.2}%, asked 20%");

    // Plain random loss at the same rate has short bursts (mean 1/(1-p) = 1.25).
    let sink2 = UdpSink::bind("127.0.0.1:0");
    let port2 = sink2.addr().port().to_string();
    agent.cli_json(&loss_args(&cg, &port2, &["--percent", "20"]));
    let lost2 = lost_seqs(&cg, &sink2, n);
    let mean2 = lost2.len() as f64 / bursts(&lost2).len() as f64;
    eprintln!("random 20%: mean burst {mean2:.2}");
    assert!(mean2 < 1.6, "random loss should not burst: {mean2:.2}");
}

#[test]
fn every_nth_drops_exactly_every_nth_packet() {
    let agent = Agent::start();
    let cg = Cgroup::new("nth");
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    let e = agent.cli_json(&loss_args(&cg, &port, &["--every-nth", "4"]));
    let lost = lost_seqs(&cg, &sink, 1000);
    let expected: BTreeSet<u64> = (0..1000).filter(|s| (s + 1) % 4 == 0).collect();
    assert_eq!(lost, expected, "every 4th packet, exactly");
    let got = agent.cli_json(&["get", e["id"].as_str().unwrap()]);
    assert_eq!(got["counters"]["packets_dropped"], 250);
}

#[test]
fn the_same_seed_drops_the_same_packets() {
    let agent = Agent::start();
    let cg = Cgroup::new("seed");
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    let run = |seed: &str| {
        let e = agent.cli_json(&loss_args(&cg, &port, &["--percent", "30", "--seed", seed]));
        let l = lost_seqs(&cg, &sink, 1000);
        agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
        l
    };
    let a = run("12345");
    let b = run("12345");
    let c = run("54321");
    eprintln!("seeded 30%: {} lost, identical on replay: {}", a.len(), a == b);
    assert!((240..=360).contains(&a.len()), "30% of 1000, got {}", a.len());
    assert_eq!(a, b, "the same seed must drop the same packets");
    assert_ne!(a, c, "another seed should drop other packets");
}

/// `blackhole --port` drops both ways: requests never reach the server, and replies from
/// that port never reach the target.
#[test]
fn blackhole_port_drops_both_directions() {
    let agent = Agent::start();
    let cg = Cgroup::new("blackhole");
    let echo = UdpEcho::start("127.0.0.1:0");
    let tcp = TcpEcho::start("127.0.0.1:0").unwrap();
    let other = TcpEcho::start("127.0.0.1:0").unwrap();
    let port = echo.addr().port().to_string();
    let tport = tcp.addr().port().to_string();
    let e = agent.cli_json(&[
        "net",
        "blackhole",
        "--cgroup",
        &cg.rel,
        "--port",
        &port,
        "--port",
        &tport,
        "--for",
        "60s",
    ]);
    assert_eq!(e["fault"], "net_partition");
    let r = probe(Some(&cg), &["udp-echo-client", &echo.addr().to_string(), "200"]);
    assert_eq!(r["received"], 0);
    assert_eq!(
        echo.requests.load(std::sync::atomic::Ordering::Relaxed),
        0,
        "egress must be dropped too"
    );
    assert_eq!(probe(Some(&cg), &["tcp-echo", &tcp.addr().to_string(), "1000"])["ok"], false);
    assert_eq!(probe(Some(&cg), &["tcp-echo", &other.addr().to_string(), "1000"])["ok"], true);
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    let r = probe(Some(&cg), &["udp-echo-client", &echo.addr().to_string(), "200"]);
    assert_eq!(r["received"], 200);
}
