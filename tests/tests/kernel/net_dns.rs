//! DNS faults: a resolver the test starts on port 53 inside the target's own network
//! namespace; the target's queries for matching names get the fault, the rest resolve, and
//! every reply seems to come from that resolver.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use faultline_tests::{Agent, NsTarget, net::DnsServer, one_line_error};

fn query(t: &NsTarget, server: &str, name: &str, mode: &str) -> serde_json::Value {
    t.probe(&["dns-query", server, name, mode])
}

#[test]
fn nxdomain_for_matching_names_while_others_resolve() {
    let agent = Agent::start();
    let t = NsTarget::new("dns");
    let v4 = t.ns.run(|| DnsServer::start("127.0.0.1:53"));
    let v6 = t.ns.run(|| DnsServer::start("[::1]:53"));
    let (s4, s6) = (v4.addr().to_string(), v6.addr().to_string());
    assert_eq!(query(&t, &s4, "x.blocked.test", "sendto")["rcode"], 0, "resolves before the fault");
    let e = agent.cli_json(&[
        "net",
        "dns",
        "--cgroup",
        &t.cg.rel,
        "--name",
        "*.blocked.test",
        "--name",
        "db.example.test",
        "--for",
        "60s",
    ]);
    assert_eq!(e["fault"], "net_dns");
    assert_eq!(e["backend"], "cgroup_sock_addr+responder");
    // The sock_addr hooks (connect, sendmsg, recvmsg, getpeername: 4 and 6 each) and the
    // cgroup_skb egress program that notes each steered query's source; nothing at ingress.
    assert_eq!((t.cg.attached(0), t.cg.attached(1), t.cg.sock_programs()), (0, 1, 8));
    for server in [&s4, &s6] {
        for mode in ["sendto", "connect"] {
            for name in ["x.blocked.test", "a.b.blocked.test", "DB.example.test"] {
                let r = query(&t, server, name, mode);
                assert_eq!(r["rcode"], 3, "{name} via {server} ({mode}) must be NXDOMAIN: {r}");
                assert_eq!(r["answers"], 0, "{r}");
                assert_eq!(r["id_ok"], true, "{r}");
                if mode == "sendto" {
                    assert_eq!(
                        r["from"].as_str().unwrap(),
                        server.as_str(),
                        "the answer must seem to come from the resolver: {r}"
                    );
                } else {
                    assert_eq!(
                        r["peer"].as_str().unwrap(),
                        server.as_str(),
                        "getpeername must show the resolver: {r}"
                    );
                }
            }
            let ok = query(&t, server, "ok.example.test", mode);
            assert_eq!(
                (ok["rcode"].as_u64(), ok["answers"].as_u64()),
                (Some(0), Some(1)),
                "other names resolve: {ok}"
            );
            assert_eq!(
                ok["from"].as_str().unwrap(),
                if mode == "sendto" { server.as_str() } else { ok["from"].as_str().unwrap() }
            );
        }
    }
    let got = agent.cli_json(&["get", e["id"].as_str().unwrap()]);
    eprintln!("dns counters: {}", got["counters"]);
    assert_eq!(got["counters"]["calls_failed"], 12, "{got}");
    assert_eq!(got["counters"]["calls_seen"], 16, "{got}");
    // Forwarded queries reached the real resolvers; failed ones did not.
    assert_eq!(
        v4.queries.load(std::sync::atomic::Ordering::Relaxed)
            + v6.queries.load(std::sync::atomic::Ordering::Relaxed),
        5
    );
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert_eq!(query(&t, &s4, "x.blocked.test", "connect")["rcode"], 0, "resolves after the fault");
    assert_eq!(t.cg.programs(), 0);
}

#[test]
fn servfail_and_no_answer() {
    let agent = Agent::start();
    let t = NsTarget::new("dns2");
    let server = t.ns.run(|| DnsServer::start("127.0.0.1:53"));
    let s = server.addr().to_string();
    let e = agent.cli_json(&[
        "net",
        "dns",
        "--cgroup",
        &t.cg.rel,
        "--name",
        "redis-?.prod.*",
        "--answer",
        "servfail",
        "--for",
        "60s",
    ]);
    assert_eq!(query(&t, &s, "redis-1.prod.internal", "connect")["rcode"], 2);
    assert_eq!(
        query(&t, &s, "redis-10.prod.internal", "connect")["rcode"],
        0,
        "the glob needs one character"
    );
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    agent.cli_json(&[
        "net", "dns", "--cgroup", &t.cg.rel, "--name", "api.test", "--answer", "drop", "--for",
        "60s",
    ]);
    assert_eq!(query(&t, &s, "api.test", "sendto")["timeout"], true, "dropped queries time out");
    assert_eq!(query(&t, &s, "web.test", "sendto")["rcode"], 0);
}

#[test]
fn bad_dns_input_names_the_field() {
    let agent = Agent::start();
    let t = NsTarget::new("dnsbad");
    for (args, field) in [
        (vec!["--name", "bad name"], "fault.net_dns.names[0]"),
        (vec!["--name", "a..b"], "fault.net_dns.names[0]"),
    ] {
        let mut full = vec!["net", "dns", "--cgroup", &t.cg.rel, "--for", "5s"];
        full.extend(args);
        let err = one_line_error(&agent.cli(&full));
        assert!(err.contains("INVALID_ARGUMENT") && err.contains(field), "{err}");
    }
    assert_eq!(t.cg.programs(), 0);
}
