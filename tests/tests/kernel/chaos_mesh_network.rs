//! Chaos Mesh's NetworkChaos and DNSChaos manifests, written from its API reference
//! (chaos-mesh.org/v1alpha1), run as they are with `faultline apply -f`, their effects
//! measured from outside the target as the other network tests do: loss with correlation,
//! delay and bandwidth (where the kernel has sch_fq; refused by name elsewhere), duplicate
//! and corrupt on a device of a test namespace, partition from external targets by
//! direction, DNS errors for the patterns; a refused field and a dry run apply nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    net::TcpListener,
    process::Output,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use faultline_tests::{
    Agent, Cgroup, Netns, NsTarget, TempDir,
    containers::{nest, random_hex, random_uid},
    net::{DnsServer, TcpSink, UdpEcho, UdpSink},
    one_line_error, probe, probe_in,
};

/// A manifest as Chaos Mesh's documentation writes them: `spec` indented by two spaces.
fn manifest(kind: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: chaos-mesh.org/v1alpha1\nkind: {kind}\nmetadata:\n  name: {name}\n  namespace: shop\nspec:\n{spec}"
    )
}

/// `faultline apply -f FILE ARGS...` with `text` in a file of `dir`.
fn apply(agent: &Agent, dir: &TempDir, text: &str, args: &[&str]) -> Output {
    static N: AtomicUsize = AtomicUsize::new(0);
    let file = dir.path().join(format!("chaos-{}.yaml", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&file, text).unwrap();
    let mut full = vec!["apply", "-f", file.to_str().unwrap()];
    full.extend_from_slice(args);
    agent.cli(&full)
}

/// `apply -o json`, which must succeed: the experiments applied.
fn apply_json(agent: &Agent, dir: &TempDir, text: &str, args: &[&str]) -> Vec<serde_json::Value> {
    let out = apply(agent, dir, text, &[&["-o", "json"][..], args].concat());
    assert!(
        out.status.success(),
        "apply failed: {}\nagent log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

fn cancel_resource(agent: &Agent, name: &str) {
    agent.cli_json(&["cancel", "--label", &format!("chaos-mesh.org/resource=shop/{name}")]);
}

fn nothing_active(agent: &Agent) {
    let ls = agent.cli_json(&["ls"]);
    let active: Vec<_> = ls.as_array().unwrap().iter().filter(|e| e["state"] == "active").collect();
    assert!(active.is_empty(), "nothing may be applied: {active:?}");
}

fn lost_seqs(cg: &Cgroup, sink: &UdpSink, n: u64) -> BTreeSet<u64> {
    probe(Some(cg), &["udp-send", &sink.addr().to_string(), &n.to_string()]);
    let got = sink.drain_seqs();
    (0..n).filter(|s| !got.contains(s)).collect()
}

/// Mean length of the runs of consecutive lost numbers.
fn mean_burst(lost: &BTreeSet<u64>) -> f64 {
    let mut runs = 0usize;
    let mut prev: Option<u64> = None;
    for &s in lost {
        if prev.is_none_or(|p| p + 1 != s) {
            runs += 1;
        }
        prev = Some(s);
    }
    lost.len() as f64 / runs.max(1) as f64
}

/// A NetworkChaos whose selector names its pod, resolved by the agent from kubelet log
/// directories laid out as the kubelet does; loss 30% with correlation 50 (Chaos Mesh's
/// netem draws) runs as 30% in bursts of 1/((1-0.5)(1-0.3)) = 2.86 packets on average, where
/// independent 30% loss has bursts of 1/(1-0.3) = 1.43.
#[test]
fn loss_with_correlation_on_a_pod_named_in_the_selector() {
    let dir = TempDir::new("cm-pods");
    let node = Cgroup::new("cm-node");
    let (uid, id) = (random_uid(), random_hex(32));
    let app = nest(&node, &format!("kubepods/burstable/pod{uid}/{id}"));
    let (pods, links) = (dir.path().join("log/pods"), dir.path().join("log/containers"));
    let pod_logs = pods.join(format!("shop_web-0_{uid}"));
    std::fs::create_dir_all(pod_logs.join("app")).unwrap();
    std::fs::create_dir_all(&links).unwrap();
    std::os::unix::fs::symlink(
        pod_logs.join("app/0.log"),
        links.join(format!("web-0_shop_app-{id}.log")),
    )
    .unwrap();
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, format!("pods_log_dir = \"{}\"\n", pods.display())).unwrap();
    let agent = Agent::start_with(&["--config", policy.to_str().unwrap()]);
    let sink = UdpSink::bind("127.0.0.1:0");
    let other = UdpSink::bind("[::1]:0");
    let text = manifest(
        "NetworkChaos",
        "web-loss",
        "  action: loss\n  mode: all\n  selector:\n    namespaces: [shop]\n    pods:\n      shop: [web-0]\n  loss:\n    loss: \"30\"\n    correlation: \"50\"\n  direction: to\n  externalTargets:\n    - 127.0.0.1\n  duration: \"60s\"\n",
    );
    let applied = apply_json(&agent, &dir, &text, &[]);
    assert_eq!(applied.len(), 1, "{applied:?}");
    let e = &applied[0];
    assert_eq!(e["fault"], "net_loss", "{e}");
    assert_eq!(e["target"]["pod"], "shop/web-0", "{e}");
    assert_eq!(e["resolved_cgroup"], app[1].rel, "the pod's cgroup: {e}");
    let n = 10_000;
    let lost = lost_seqs(&app[0], &sink, n);
    let pct = lost.len() as f64 * 100.0 / n as f64;
    let burst = mean_burst(&lost);
    eprintln!(
        "loss 30% correlation 50: lost {pct:.2}%, mean burst {burst:.2} (netem-equivalent 2.86)"
    );
    assert!((26.0..=34.0).contains(&pct), "asked 30%, measured {pct:.2}%");
    assert!((2.3..=3.5).contains(&burst), "mean burst {burst:.2}, expected about 2.86");
    // Peers not in externalTargets are left alone.
    assert!(lost_seqs(&app[0], &other, 500).is_empty(), "::1 is not an external target");
    cancel_resource(&agent, "web-loss");
    assert!(lost_seqs(&app[0], &sink, 500).is_empty(), "no loss after the cancel");
    nothing_active(&agent);
}

/// On kernels without sch_fq: apply fails with the agent's reason, and nothing is applied.
fn refused_without_fq(agent: &Agent, dir: &TempDir, t: &NsTarget, text: &str) -> bool {
    if agent.supports("sch_fq") {
        return false;
    }
    let out = apply(agent, dir, text, &["--cgroup", &t.cg.rel]);
    assert!(!out.status.success(), "applied without sch_fq");
    let err = one_line_error(&out);
    assert!(
        err.contains("document 1") && err.contains("FAILED_PRECONDITION") && err.contains("fq"),
        "{err}"
    );
    nothing_active(agent);
    assert_eq!(t.cg.programs(), 0);
    assert_eq!(t.ns.root_qdisc("lo"), "noqueue");
    eprintln!("no sch_fq here; refused as expected: {err}");
    true
}

fn ms(v: &serde_json::Value, key: &str) -> f64 {
    v[key].as_f64().unwrap()
}

/// delay: latency 100ms, jitter 20ms (uniform, netem's draw without a distribution table):
/// the median RTT grows by 100 ms and the p10-p90 spread by about 32 ms.
#[test]
fn delay_with_jitter_where_the_kernel_serves_it() {
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let dir = TempDir::new("cm-delay");
    let t = NsTarget::new("cmdelay");
    let text = manifest(
        "NetworkChaos",
        "delay",
        "  action: delay\n  mode: one\n  selector:\n    namespaces: [shop]\n  delay:\n    latency: 100ms\n    correlation: \"0\"\n    jitter: 20ms\n  duration: 60s\n",
    );
    if refused_without_fq(&agent, &dir, &t, &text) {
        return;
    }
    let echo = t.ns.run(|| UdpEcho::start("127.0.0.1:0"));
    let base = t.rtt(&echo, 40);
    let e = apply_json(&agent, &dir, &text, &["--cgroup", &t.cg.rel]);
    assert_eq!(e[0]["fault"], "net_delay");
    assert_eq!(t.ns.root_qdisc("lo"), "fq");
    let with = t.rtt(&echo, 80);
    let growth = ms(&with, "median_ms") - ms(&base, "median_ms");
    let spread = ms(&with, "p90_ms") - ms(&with, "p10_ms");
    eprintln!("delay 100ms jitter 20ms: median RTT +{growth:.2} ms, p10-p90 spread {spread:.2} ms");
    assert!((90.0..=112.0).contains(&growth), "asked +100 ms, measured +{growth:.2} ms");
    assert!(spread > 15.0, "20 ms of jitter should spread the RTTs: {with}");
    cancel_resource(&agent, "delay");
    assert_eq!(t.ns.root_qdisc("lo"), "noqueue");
    assert!(ms(&t.rtt(&echo, 20), "median_ms") < ms(&base, "median_ms") + 5.0);
}

/// bandwidth: rate "1mbps" is Chaos Mesh's bytes per second in powers of 1024, 1 048 576
/// bytes = 8.39 Mbit/s; buffer 10000 bytes is the burst; limit is Chaos Mesh's required
/// queue size.
#[test]
fn bandwidth_in_chaos_mesh_units_where_the_kernel_serves_it() {
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let dir = TempDir::new("cm-rate");
    let t = NsTarget::new("cmrate");
    let text = manifest(
        "NetworkChaos",
        "rate",
        "  action: bandwidth\n  mode: all\n  selector:\n    namespaces: [shop]\n  bandwidth:\n    rate: 1mbps\n    limit: 20971520\n    buffer: 10000\n  duration: 60s\n",
    );
    if refused_without_fq(&agent, &dir, &t, &text) {
        return;
    }
    let free = t.ns.run(|| TcpSink::start(TcpListener::bind("127.0.0.1:0").unwrap()));
    t.probe(&["tcp-send", &free.addr().to_string(), "1"]);
    let unlimited = free.rate_bps();
    let e = apply_json(&agent, &dir, &text, &["--cgroup", &t.cg.rel]);
    assert_eq!(e[0]["fault"], "net_bandwidth");
    let sink = t.ns.run(|| TcpSink::start(TcpListener::bind("127.0.0.1:0").unwrap()));
    t.probe(&["tcp-send", &sink.addr().to_string(), "4"]);
    std::thread::sleep(Duration::from_millis(300));
    let rate = sink.rate_bps();
    eprintln!(
        "TCP throughput: {:.1} Mbit/s unlimited, {:.2} Mbit/s with rate 1mbps (8.39 Mbit/s)",
        unlimited / 1e6,
        rate / 1e6
    );
    assert!(unlimited > 17e6, "the path must be faster than the cap: {unlimited}");
    assert!((7.55e6..=9.23e6).contains(&rate), "asked 8.39 Mbit/s, measured {:.2}", rate / 1e6);
    cancel_resource(&agent, "rate");
}

/// duplicate and corrupt on the device `device` names, in a namespace joined to another by
/// a veth pair; measured by the receiver there.
#[test]
fn duplicate_and_corrupt_on_the_device_named() {
    let agent = Agent::start();
    let dir = TempDir::new("cm-mangle");
    let t = NsTarget::new("cmmangle");
    let b = Netns::new("cmmangleb");
    let dev = t.ns.veth_to(&b, "10.77.22.1", "10.77.22.2");
    let sink = b.run(|| UdpSink::bind("10.77.22.2:0"));
    let to = sink.addr().to_string();
    let spec = |action: &str| {
        format!(
            "  action: {action}\n  mode: all\n  selector:\n    namespaces: [shop]\n  {action}:\n    {action}: \"100\"\n    correlation: \"0\"\n  device: {dev}\n  direction: to\n  externalTargets: [10.77.22.2]\n  duration: 60s\n"
        )
    };
    let e = apply_json(
        &agent,
        &dir,
        &manifest("NetworkChaos", "dup", &spec("duplicate")),
        &["--cgroup", &t.cg.rel],
    );
    assert_eq!(e[0]["fault"], "net_duplicate");
    t.probe(&["udp-send", &to, "500"]);
    let (intact, corrupted, total) = sink.drain_check();
    eprintln!("duplicate 100%: 500 sent, {total} arrived ({intact} distinct)");
    assert_eq!((intact, corrupted, total), (500, 0, 1000), "every datagram twice, unchanged");
    cancel_resource(&agent, "dup");
    t.probe(&["udp-send", &to, "100"]);
    assert_eq!(sink.drain_check(), (100, 0, 100));

    let e = apply_json(
        &agent,
        &dir,
        &manifest("NetworkChaos", "bad-bits", &spec("corrupt")),
        &["--cgroup", &t.cg.rel],
    );
    assert_eq!(e[0]["fault"], "net_corrupt");
    let before = b.udp_csum_errors();
    t.probe(&["udp-send", &to, "500"]);
    let (intact, corrupted, total) = sink.drain_check();
    let csum = b.udp_csum_errors() - before;
    eprintln!(
        "corrupt 100%: {total} arrived, {intact} intact, {corrupted} corrupted, {csum} checksum drops"
    );
    assert_eq!(intact, 0, "no datagram may arrive unchanged");
    assert_eq!(corrupted as u64 + csum, 500);
    cancel_resource(&agent, "bad-bits");
    t.probe(&["udp-send", &to, "100"]);
    assert_eq!(sink.drain_check(), (100, 0, 100));
    assert_eq!(faultline_tests::tc_programs(&t.ns, &dev), 0);
}

/// partition from an external target: `both` cuts the requests and the replies, `from`
/// only what comes back (the requests still reach the server), `to` only what goes out;
/// another peer is not touched.
#[test]
fn partition_from_external_targets_by_direction() {
    let agent = Agent::start();
    let dir = TempDir::new("cm-part");
    let cg = Cgroup::new("cmpart");
    let listed = UdpEcho::start("127.0.0.1:0");
    let other = UdpEcho::start("[::1]:0");
    let exchange = |echo: &UdpEcho| {
        let before = echo.requests.load(Ordering::Relaxed);
        let r = probe_in(Some(&cg), None, &["udp-echo-client", &echo.addr().to_string(), "50"]);
        (r["received"].as_u64().unwrap(), echo.requests.load(Ordering::Relaxed) - before)
    };
    assert_eq!(exchange(&listed), (50, 50));
    for (direction, fault, want) in [
        ("both", "net_partition", (0, 0)),
        ("from", "net_loss", (0, 50)),
        ("to", "net_loss", (0, 0)),
    ] {
        let name = format!("cut-{direction}");
        let text = manifest(
            "NetworkChaos",
            &name,
            &format!(
                "  action: partition\n  mode: all\n  selector:\n    namespaces: [shop]\n  direction: {direction}\n  externalTargets:\n    - 127.0.0.1/32\n  duration: 60s\n"
            ),
        );
        let e = apply_json(&agent, &dir, &text, &["--cgroup", &cg.rel]);
        assert_eq!(e[0]["fault"], fault, "{direction}: {}", e[0]);
        let got = exchange(&listed);
        eprintln!(
            "partition {direction}: {} replies, {} requests reached the server",
            got.0, got.1
        );
        assert_eq!(got, want, "{direction}: (replies, requests at the server)");
        assert_eq!(exchange(&other), (50, 50), "{direction}: ::1 is not a target");
        cancel_resource(&agent, &name);
        assert_eq!(exchange(&listed), (50, 50), "{direction}: after the cancel");
    }
    assert_eq!(cg.programs(), 0);
}

/// DNSChaos action error: SERVFAIL (what Chaos Mesh's CoreDNS plugin answers) for the names
/// the patterns match (exact, `?` one character, `*` at the end), the others resolve.
#[test]
fn dns_error_for_the_patterns() {
    let agent = Agent::start();
    let dir = TempDir::new("cm-dns");
    let t = NsTarget::new("cmdns");
    let server = t.ns.run(|| DnsServer::start("127.0.0.1:53"));
    let s = server.addr().to_string();
    let rcode = |name: &str| {
        let r = t.probe(&["dns-query", &s, name, "sendto"]);
        r["rcode"].as_u64().unwrap_or_else(|| panic!("{name}: {r}"))
    };
    assert_eq!(rcode("blocked.test"), 0, "resolves before the fault");
    let text = manifest(
        "DNSChaos",
        "dns-error",
        "  action: error\n  mode: all\n  patterns:\n    - blocked.test\n    - api-?.test\n    - github.*\n  selector:\n    namespaces: [shop]\n  duration: 60s\n",
    );
    let e = apply_json(&agent, &dir, &text, &["--cgroup", &t.cg.rel]);
    assert_eq!(e[0]["fault"], "net_dns");
    for (name, want) in [
        ("blocked.test", 2),
        ("api-1.test", 2),
        ("github.com", 2),
        ("GitHub.io", 2),
        ("www.blocked.test", 0),
        ("api-10.test", 0),
        ("ok.test", 0),
    ] {
        assert_eq!(rcode(name), want, "{name}");
    }
    cancel_resource(&agent, "dns-error");
    assert_eq!(rcode("blocked.test"), 0, "resolves after the fault");
    assert_eq!(t.cg.programs(), 0);
}

/// A field faultline cannot honour refuses the whole file with its path, before anything of
/// it is applied (the first document is valid).
#[test]
fn a_refused_field_applies_nothing_of_the_file() {
    let agent = Agent::start();
    let dir = TempDir::new("cm-refuse");
    let cg = Cgroup::new("cmrefuse");
    let sink = UdpSink::bind("127.0.0.1:0");
    let text = format!(
        "{}---\n{}",
        manifest(
            "NetworkChaos",
            "ok-loss",
            "  action: loss\n  mode: all\n  selector:\n    namespaces: [shop]\n  loss:\n    loss: \"100\"\n  duration: 60s\n"
        ),
        manifest(
            "NetworkChaos",
            "peaky",
            "  action: bandwidth\n  mode: all\n  selector:\n    namespaces: [shop]\n  bandwidth:\n    rate: 1mbps\n    limit: 20971520\n    buffer: 10000\n    peakrate: 2000000\n    minburst: 1500\n  duration: 60s\n"
        ),
    );
    let out = apply(&agent, &dir, &text, &["--cgroup", &cg.rel]);
    assert!(!out.status.success(), "applied with peakrate");
    let err = one_line_error(&out);
    eprintln!("refused: {err}");
    assert!(
        err.contains("document 2 (NetworkChaos shop/peaky)")
            && err.contains("spec.bandwidth.peakrate: faultline paces at one rate"),
        "{err}"
    );
    nothing_active(&agent);
    assert_eq!(cg.programs(), 0);
    probe(Some(&cg), &["udp-send", &sink.addr().to_string(), "100"]);
    assert_eq!(sink.drain(), 100, "nothing dropped");
}

/// `apply --dry-run` prints the plan (each document's experiment, checked by the agent) and
/// applies nothing.
#[test]
fn dry_run_prints_the_plan_and_applies_nothing() {
    let agent = Agent::start();
    let dir = TempDir::new("cm-dry");
    let cg = Cgroup::new("cmdry");
    let sink = UdpSink::bind("127.0.0.1:0");
    let text = manifest(
        "NetworkChaos",
        "netem",
        "  action: netem\n  mode: all\n  selector:\n    namespaces: [shop]\n  loss:\n    loss: \"100\"\n  corrupt:\n    corrupt: \"10\"\n  externalTargets: [127.0.0.1]\n  duration: 60s\n",
    );
    let out = apply(&agent, &dir, &text, &["--dry-run", "--cgroup", &cg.rel]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("{stdout}");
    let lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("document 1 NetworkChaos shop/netem -> "))
        .collect();
    assert_eq!(lines.len(), 2, "one experiment per netem block: {stdout}");
    let out = apply(&agent, &dir, &text, &["--dry-run", "-o", "json", "--cgroup", &cg.rel]);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let faults: Vec<_> = plan.as_array().unwrap().iter().map(|p| p["fault"].clone()).collect();
    assert_eq!(faults, ["net_loss", "net_corrupt"], "{plan}");
    nothing_active(&agent);
    assert_eq!(cg.programs(), 0);
    probe(Some(&cg), &["udp-send", &sink.addr().to_string(), "100"]);
    assert_eq!(sink.drain(), 100, "nothing dropped");
}
