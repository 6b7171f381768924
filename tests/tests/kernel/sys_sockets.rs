//! System-call faults on socket calls (cgroup hooks, on every kernel with cgroup v2): a real
//! program in the target makes the calls, the same program outside is unaffected.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    net::TcpListener,
    time::{Duration, Instant},
};

use faultline_tests::{Agent, Cgroup, Waiting, probe};

/// Accepts and drops connections until the test ends.
fn acceptor() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for c in l.incoming() {
            drop(c);
        }
    });
    addr
}

fn errnos(r: &serde_json::Value, errno: i32) -> u64 {
    r["errnos"][errno.to_string()].as_u64().unwrap_or(0)
}

/// Whether this kernel lets socket hooks fail a call with any errno (bpf_set_retval); without
/// it every socket fault fails with EPERM and another errno is refused.
fn any_errno(agent: &Agent) -> bool {
    agent.supports("sock_addr_set_retval")
}

/// The errno a call fails with here when `errno` is asked.
fn expected(agent: &Agent, errno: i32) -> i32 {
    if any_errno(agent) { errno } else { libc::EPERM }
}

/// Starts a fault; on a kernel without bpf_set_retval it asks for EPERM instead.
fn fail(agent: &Agent, target: &[&str], rest: &[&str]) -> serde_json::Value {
    let mut args = vec!["sys", "fail"];
    args.extend_from_slice(target);
    if any_errno(agent) {
        args.extend_from_slice(rest);
    } else {
        let mut skip = false;
        for a in rest {
            if std::mem::take(&mut skip) {
                continue;
            }
            skip = *a == "--errno";
            if !skip {
                args.push(a);
            }
        }
        args.extend_from_slice(&["--errno", "EPERM"]);
    }
    agent.cli_json(&args)
}

#[test]
fn connect_fails_with_econnrefused_at_100_then_30_percent_and_outsiders_connect() {
    let agent = Agent::start();
    let cg = Cgroup::new("sysconn");
    let addr = acceptor();
    let e = fail(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "connect", "--errno", "ECONNREFUSED", "--for", "60s"],
    );
    assert_eq!(e["backend"], "cgroup_sock", "{e}");
    let started = Instant::now();
    let inside = probe(Some(&cg), &["calls", "connect", &addr, "200"]);
    let per_call = started.elapsed().as_secs_f64() * 1000.0 / 200.0;
    let outside = probe(None, &["calls", "connect", &addr, "200"]);
    eprintln!(
        "connect 100%: inside {inside}, outside {outside}, {per_call:.3} ms per call (process start included)"
    );
    let refused = expected(&agent, libc::ECONNREFUSED);
    assert_eq!(errnos(&inside, refused), 200, "{inside}");
    assert_eq!(outside["ok"], 200, "{outside}");
    let got = agent.cli_json(&["get", e["id"].as_str().unwrap()]);
    assert_eq!(got["counters"]["calls_failed"], 200, "{got}");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert_eq!(probe(Some(&cg), &["calls", "connect", &addr, "20"])["ok"], 20);
    assert_eq!(cg.programs(), 0, "programs left after cancel");

    fail(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "connect", "--errno", "ECONNREFUSED", "--percent", "30", "--for", "60s"],
    );
    let r = probe(Some(&cg), &["calls", "connect", &addr, "2000"]);
    let share = 100.0 * errnos(&r, refused) as f64 / 2000.0;
    eprintln!("connect 30%: {share:.2}% of 2000 calls refused");
    assert!((25.0..=35.0).contains(&share), "asked 30%, got {share:.2}%: {r}");
    assert_eq!(r["ok"].as_u64().unwrap() + errnos(&r, refused), 2000);
}

#[test]
fn bind_socket_and_udp_sendmsg_fail_with_the_errno_asked() {
    let agent = Agent::start();
    let cases = [
        ("bind", "127.0.0.1:0", "EADDRINUSE", libc::EADDRINUSE),
        ("socket", "-", "EACCES", libc::EACCES),
        ("sendto", "127.0.0.1:9", "ENETUNREACH", libc::ENETUNREACH),
    ];
    for (call, arg, name, errno) in cases {
        let cg = Cgroup::new(call);
        let syscall = if call == "sendto" { "sendmsg" } else { call };
        let e = fail(
            &agent,
            &["--cgroup", &cg.rel],
            &["--syscall", syscall, "--errno", name, "--for", "60s"],
        );
        let inside = probe(Some(&cg), &["calls", call, arg, "100"]);
        let outside = probe(None, &["calls", call, arg, "100"]);
        eprintln!("{syscall} {name}: inside {inside}, outside {outside}");
        assert_eq!(errnos(&inside, expected(&agent, errno)), 100, "{syscall}: {inside}");
        assert_eq!(outside["ok"], 100, "{syscall} outside: {outside}");
        agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    }
}

#[test]
fn every_nth_fails_exactly_every_nth_call_and_max_hits_stops_after_n() {
    let agent = Agent::start();
    let cg = Cgroup::new("sysnth");
    let addr = acceptor();
    let e = fail(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "connect", "--every-nth", "3", "--for", "60s"],
    );
    let r = probe(Some(&cg), &["calls", "connect", &addr, "30"]);
    assert_eq!(r["seq"], "..x..x..x..x..x..x..x..x..x..x", "{r}");
    assert_eq!(errnos(&r, expected(&agent, libc::EIO)), 10, "the default errno is EIO: {r}");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);

    fail(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "connect", "--max-hits", "5", "--for", "60s"],
    );
    let r = probe(Some(&cg), &["calls", "connect", &addr, "12"]);
    assert_eq!(r["seq"], "xxxxx.......", "exactly 5 failures, then success: {r}");
}

#[test]
fn pid_target_fails_only_that_process_and_follows_children_when_asked() {
    let agent = Agent::start();
    let cg = Cgroup::new("syspid");
    let addr = acceptor();
    // Two processes in the same cgroup: only the pid targeted fails.
    let target = Waiting::start(&cg, &["calls", "connect", &addr, "20"]);
    let sibling = Waiting::start(&cg, &["calls", "connect", &addr, "20"]);
    let e = fail(&agent, &["--pid", &target.pid], &["--syscall", "connect", "--for", "60s"]);
    let eio = expected(&agent, libc::EIO);
    assert_eq!(errnos(&target.release(), eio), 20);
    assert_eq!(sibling.release()["ok"], 20, "a sibling in the same cgroup must not fail");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);

    // Children forked after the fault started: only with --follow-children.
    for follow in [false, true] {
        let parent = Waiting::start(&cg, &["spawn", "calls", "connect", &addr, "20"]);
        let mut rest = vec!["--syscall", "connect", "--for", "60s"];
        if follow {
            rest.push("--follow-children");
        }
        let e = fail(&agent, &["--pid", &parent.pid], &rest);
        let child = parent.release();
        eprintln!("follow {follow}: child saw {child}");
        if follow {
            assert_eq!(errnos(&child, eio), 20, "{child}");
        } else {
            assert_eq!(child["ok"], 20, "{child}");
        }
        agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    }
}

#[test]
fn the_kernel_ends_the_fault_while_the_agent_is_stopped_and_sigkill_removes_it() {
    // A 2 s window: a neighbour test starting an agent would take a guest's one vCPU.
    let _alone = faultline_tests::serial::alone();
    let mut agent = Agent::start();
    let cg = Cgroup::new("sysend");
    let addr = acceptor();
    // Asked before SIGSTOP: a stopped agent answers no capability query.
    let eio = expected(&agent, libc::EIO);
    fail(&agent, &["--cgroup", &cg.rel], &["--syscall", "connect", "--for", "2s"]);
    let at = Instant::now();
    agent.signal(libc::SIGSTOP);
    assert_eq!(errnos(&probe(Some(&cg), &["calls", "connect", &addr, "5"]), eio), 5);
    std::thread::sleep(Duration::from_millis(2300).saturating_sub(at.elapsed()));
    let r = probe(Some(&cg), &["calls", "connect", &addr, "5"]);
    agent.signal(libc::SIGCONT);
    assert_eq!(r["ok"], 5, "expired in the kernel while the agent was stopped: {r}");

    fail(&agent, &["--cgroup", &cg.rel], &["--syscall", "connect", "--for", "60s"]);
    assert_eq!(errnos(&probe(Some(&cg), &["calls", "connect", &addr, "5"]), eio), 5);
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5)).expect("agent did not die");
    assert_eq!(probe(Some(&cg), &["calls", "connect", &addr, "5"])["ok"], 5);
    assert_eq!(cg.programs(), 0);
}

#[test]
fn file_calls_work_or_are_refused_with_the_reason() {
    let agent = Agent::start();
    let cg = Cgroup::new("sysfile");
    let caps = agent.caps();
    let backend = caps["probes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "sys_file_backend")
        .cloned()
        .unwrap();
    let out =
        agent.cli(&["sys", "fail", "--cgroup", &cg.rel, "--syscall", "openat", "--for", "30s"]);
    if backend["supported"] == true {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    } else {
        let err = faultline_tests::one_line_error(&out);
        assert!(
            err.contains("FAILED_PRECONDITION")
                && err.contains("unsupported: ")
                && err.contains("LSM"),
            "{err}"
        );
        assert_eq!(
            agent.cli_json(&["ls"]).as_array().unwrap().len(),
            0,
            "a refusal leaves no record"
        );
        eprintln!("file calls refused here as expected: {err}");
    }
}

#[test]
fn another_errno_than_eperm_is_refused_where_the_kernel_cannot_set_it() {
    let agent = Agent::start();
    let cg = Cgroup::new("syseperm");
    let out = agent.cli(&[
        "sys",
        "fail",
        "--cgroup",
        &cg.rel,
        "--syscall",
        "connect",
        "--errno",
        "ECONNRESET",
        "--for",
        "30s",
    ]);
    if any_errno(&agent) {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        return;
    }
    let err = faultline_tests::one_line_error(&out);
    assert!(err.contains("FAILED_PRECONDITION") && err.contains("EPERM"), "{err}");
    assert_eq!(cg.programs(), 0, "nothing half-applied");
    eprintln!("refused here as expected: {err}");
}
