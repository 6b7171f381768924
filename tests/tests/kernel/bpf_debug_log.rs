//! `serve --debug-bpf`: the kernel programs' debug log lines (a rule matched, its action)
//! reach the agent's log; without the flag none do, even with the agent logging at debug.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faultline_tests::{
    Agent, Cgroup,
    net::{TcpEcho, UdpSink},
    probe, udp_loss, wait_for,
};

/// The target the forwarded lines carry (the kernel programs' modules); aya_obj's own debug
/// lines name the mangled symbols of the object, "14faultline_ebpf", not this.
const TARGET: &str = " faultline_ebpf::";

/// A reject on a TCP port and a UDP loss, with traffic for both from the cgroup. Returns the
/// TCP and UDP ports.
fn reject_and_loss(agent: &Agent, cg: &Cgroup, server: &TcpEcho, sink: &UdpSink) -> (u16, u16) {
    let (tcp, udp) = (server.addr().port(), sink.addr().port());
    let tcp_s = tcp.to_string();
    let mut reject = vec!["net", "reject", "--cgroup", &cg.rel, "--port", &tcp_s, "--for", "60s"];
    if !agent.supports("sock_addr_set_retval") {
        reject.extend(["--errno", "EPERM"]);
    }
    agent.cli_json(&reject);
    let r = probe(Some(cg), &["tcp-echo", &server.addr().to_string(), "2000"]);
    assert_eq!(r["ok"], false, "connect not rejected: {r}");
    let loss = udp_loss(&["--cgroup", &cg.rel], "100", &udp.to_string(), "60s");
    agent.cli_json_args(&loss);
    probe(Some(cg), &["udp-send", &sink.addr().to_string(), "5"]);
    assert_eq!(sink.drain(), 0, "the loss dropped nothing");
    (tcp, udp)
}

#[test]
fn debug_bpf_forwards_the_programs_log_lines() {
    let agent = Agent::start_with(&["--debug-bpf"]);
    let cg = Cgroup::new("bpflog");
    let server = TcpEcho::start("127.0.0.1:0").unwrap();
    let sink = UdpSink::bind("127.0.0.1:0");
    let (tcp, _) = reject_and_loss(&agent, &cg, &server, &sink);
    // And a system call failed (the sys object, loaded on its own).
    let sys_cg = Cgroup::new("bpflog-sys");
    agent.cli_json(&[
        "sys",
        "fail",
        "--cgroup",
        &sys_cg.rel,
        "--syscall",
        "connect",
        "--errno",
        "EPERM",
        "--for",
        "60s",
    ]);
    let r = probe(Some(&sys_cg), &["calls", "connect", &server.addr().to_string(), "3"]);
    eprintln!("connect from the sys cgroup: {r}");
    let rejected = format!("connect to port {tcp} rejected with errno");
    let dropped = "cgroup_skb egress: rule";
    let failed = "the call fails with errno 1";
    wait_for("the programs' log lines in the agent's log", Duration::from_secs(10), || {
        let log = agent.log();
        let has = |f: &dyn Fn(&str) -> bool| log.lines().any(|l| l.contains(TARGET) && f(l));
        has(&|l| l.contains(&rejected))
            && has(&|l| l.contains(dropped) && l.contains("loss"))
            && has(&|l| l.contains("sys: rule") && l.contains(failed))
    });
    let log = agent.log();
    for l in log.lines().filter(|l| l.contains(TARGET)).take(4) {
        eprintln!("{l}");
    }
    assert!(
        log.lines().filter(|l| l.contains(TARGET)).all(|l| l.contains("DEBUG")),
        "the programs' lines are at debug level:\n{log}"
    );
    // Both objects loaded with the flag on (the verifier took the log calls).
    assert!(!log.contains("faults unavailable"), "a driver failed to load:\n{log}");
}

#[test]
fn without_debug_bpf_the_programs_write_no_log_lines() {
    // The agent logs at debug (the harness sets FAULTLINE_LOG=debug): any line the programs
    // wrote would show.
    let agent = Agent::start();
    let cg = Cgroup::new("bpflog-off");
    let server = TcpEcho::start("127.0.0.1:0").unwrap();
    let sink = UdpSink::bind("127.0.0.1:0");
    reject_and_loss(&agent, &cg, &server, &sink);
    std::thread::sleep(Duration::from_millis(500));
    let log = agent.log();
    assert!(!log.contains(TARGET), "program log lines without --debug-bpf:\n{log}");
    assert!(!log.contains("debug log"), "log forwarding started without --debug-bpf:\n{log}");
}
