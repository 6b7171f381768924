//! connect() to matching destinations fails at once with the chosen errno.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use faultline_tests::{Agent, Cgroup, net::TcpEcho, probe};

const ECONNREFUSED: u64 = 111;
const EHOSTUNREACH: u64 = 113;

fn refused_at_once(cg: &Cgroup, server: &TcpEcho, errno: u64) {
    let r = probe(Some(cg), &["tcp-echo", &server.addr().to_string(), "2000"]);
    assert_eq!(r["ok"], false, "{r}");
    assert_eq!(r["errno"], errno, "{r}");
    let ms = r["elapsed_ms"].as_f64().unwrap();
    eprintln!("{} refused with errno {errno} in {ms:.3} ms", server.addr());
    assert!(ms < 10.0, "connect() must fail at once, took {ms} ms");
}

#[test]
fn reject_refuses_connect_at_once_ipv4_and_ipv6() {
    // "At once" is under 10 ms: alone, so that no other test takes the CPU.
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let cg = Cgroup::new("reject");
    let v4 = TcpEcho::start("127.0.0.1:0").unwrap();
    let port = v4.addr().port();
    let v6 =
        TcpEcho::start(&format!("[::1]:{port}")).or_else(|_| TcpEcho::start("[::1]:0")).unwrap();
    let other = TcpEcho::start("127.0.0.1:0").unwrap();
    let mut args = vec![
        "net".to_string(),
        "reject".into(),
        "--cgroup".into(),
        cg.rel.clone(),
        "--for".into(),
        "60s".into(),
    ];
    for p in [port, v6.addr().port()] {
        args.push("--port".into());
        args.push(p.to_string());
    }
    // Where the kernel lacks bpf_set_retval (the probe says so), ECONNREFUSED is refused with
    // the reason and EPERM is what connect() can fail with.
    let expected = if agent.supports("sock_addr_set_retval") {
        ECONNREFUSED
    } else {
        let out = agent.cli(&args.iter().map(String::as_str).collect::<Vec<_>>());
        let err = faultline_tests::one_line_error(&out);
        assert!(err.contains("FAILED_PRECONDITION") && err.contains("bpf_set_retval"), "{err}");
        args.extend(["--errno".to_string(), "EPERM".to_string()]);
        1
    };
    let e = agent.cli_json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(e["fault"], "net_reject");
    assert_eq!(e["backend"], "cgroup_sock_addr");
    // Only connect4/connect6: no packet programs, no UDP message hooks.
    assert_eq!((cg.attached(10), cg.attached(11)), (1, 1));
    assert_eq!(
        (cg.skb_programs(), cg.sock_programs()),
        (0, 2),
        "reject attached more than connect"
    );
    refused_at_once(&cg, &v4, expected);
    refused_at_once(&cg, &v6, expected);
    assert_eq!(
        probe(Some(&cg), &["tcp-echo", &other.addr().to_string(), "2000"])["ok"],
        true,
        "other destinations connect"
    );
    assert_eq!(
        probe(None, &["tcp-echo", &v4.addr().to_string(), "2000"])["ok"],
        true,
        "outside the cgroup connects"
    );
    let got = agent.cli_json(&["get", e["id"].as_str().unwrap()]);
    assert_eq!(got["counters"]["calls_failed"], 2, "{got}");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert_eq!(probe(Some(&cg), &["tcp-echo", &v4.addr().to_string(), "2000"])["ok"], true);
    assert_eq!(cg.attached(10) + cg.attached(11), 0, "connect programs left attached");
}

/// Any errno where the kernel has bpf_set_retval; elsewhere the clear refusal.
#[test]
fn reject_with_another_errno_or_a_clear_refusal() {
    // "At once" is under 10 ms: alone, so that no other test takes the CPU.
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let cg = Cgroup::new("reject-errno");
    let server = TcpEcho::start("127.0.0.1:0").unwrap();
    let port = server.addr().port().to_string();
    let caps = agent.caps();
    let set_retval = caps["probes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == "sock_addr_set_retval" && p["supported"] == true);
    let args = [
        "net",
        "reject",
        "--cgroup",
        &cg.rel,
        "--port",
        &port,
        "--errno",
        "EHOSTUNREACH",
        "--for",
        "60s",
    ];
    if set_retval {
        agent.cli_json(&args);
        refused_at_once(&cg, &server, EHOSTUNREACH);
    } else {
        let out = agent.cli(&args);
        assert!(!out.status.success());
        let err = faultline_tests::one_line_error(&out);
        assert!(
            err.contains("FAILED_PRECONDITION")
                && err.contains("unsupported: ")
                && err.contains("bpf_set_retval"),
            "{err}"
        );
        // EPERM still works there.
        agent.cli_json(&[
            "net", "reject", "--cgroup", &cg.rel, "--port", &port, "--errno", "EPERM", "--for",
            "60s",
        ]);
        refused_at_once(&cg, &server, 1);
    }
}

#[test]
fn reject_bad_errno_is_refused() {
    let agent = Agent::start();
    let cg = Cgroup::new("reject-bad");
    for (errno, ok) in [("ENOTREAL", false), ("0", false), ("5000", false)] {
        let out =
            agent.cli(&["net", "reject", "--cgroup", &cg.rel, "--errno", errno, "--for", "5s"]);
        assert_eq!(out.status.success(), ok);
        let err = faultline_tests::one_line_error(&out);
        assert!(
            err.contains("INVALID_ARGUMENT") && err.contains("fault.net_reject.errno"),
            "{err}"
        );
    }
    assert_eq!(cg.programs(), 0);
}

/// A reject under a cgroup that only has a loss rule: the ancestor's attachment gains the
/// connect hooks (the child needs none of its own), and loses them when the reject ends.
#[test]
fn reject_under_a_loss_target_is_served_by_the_ancestor_attachment() {
    // "At once" is under 10 ms: alone, so that no other test takes the CPU.
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let parent = Cgroup::new("reject-nest");
    let child = parent.child("leaf");
    let server = TcpEcho::start("127.0.0.1:0").unwrap();
    let port = server.addr().port().to_string();
    agent.cli_json(&[
        "net",
        "loss",
        "--cgroup",
        &parent.rel,
        "--percent",
        "1",
        "--protocol",
        "udp",
        "--port",
        "9",
        "--for",
        "60s",
    ]);
    assert_eq!((parent.skb_programs(), parent.sock_programs()), (2, 0));
    let r = agent.cli_json(&[
        "net", "reject", "--cgroup", &child.rel, "--port", &port, "--errno", "EPERM", "--for",
        "60s",
    ]);
    assert_eq!((parent.skb_programs(), parent.sock_programs()), (2, 2), "connect hooks added");
    assert_eq!(child.programs(), 0, "the child is covered by its ancestor");
    refused_at_once(&child, &server, 1);
    assert_eq!(probe(Some(&parent), &["tcp-echo", &server.addr().to_string(), "2000"])["ok"], true);
    agent.cli_json(&["cancel", r["id"].as_str().unwrap()]);
    assert_eq!((parent.skb_programs(), parent.sock_programs()), (2, 0), "connect hooks removed");
    assert_eq!(probe(Some(&child), &["tcp-echo", &server.addr().to_string(), "2000"])["ok"], true);
}
