//! Bad input: a clear error naming the field (gRPC status and a one-line CLI message with a
//! non-zero exit), nothing attached or recorded, and the agent keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use faultline_proto::v1 as pb;
use faultline_tests::{Agent, Cgroup, one_line_error};
use tonic::Code;

/// Checks that nothing was applied and the agent still answers.
fn nothing_applied(agent: &Agent, cg: &Cgroup) {
    assert_eq!(cg.programs(), 0, "programs attached by a refused request");
    let list = agent.cli_json(&["ls"]);
    assert_eq!(list.as_array().unwrap().len(), 0, "a refused request left an experiment: {list}");
}

/// Runs `net loss` with `args` replacing the defaults they name, expects a one-line error.
fn cli_refuses(args: &[&str], code: &str, field: &str) {
    let agent = Agent::start();
    let cg = Cgroup::new("bad");
    let mut full: Vec<&str> = vec!["net", "loss"];
    let has = |flag: &str| args.contains(&flag);
    if !has("--cgroup") && !has("--pid") {
        full.extend(["--cgroup", &cg.rel]);
    }
    if !has("--percent") {
        full.extend(["--percent", "10"]);
    }
    if !has("--for") {
        full.extend(["--for", "30s"]);
    }
    full.extend_from_slice(args);
    let out = agent.cli(&full);
    assert!(!out.status.success(), "{full:?} was accepted");
    let line = one_line_error(&out);
    assert!(line.contains(code), "{full:?}: expected {code} in {line:?}");
    assert!(line.contains(field), "{full:?}: expected field {field} in {line:?}");
    eprintln!("{full:?} -> {line}");
    nothing_applied(&agent, &cg);
}

#[test]
fn missing_cgroup_is_not_found() {
    cli_refuses(&["--cgroup", "/faultline-it-does-not-exist"], "NOT_FOUND", "target.cgroup_path");
}

#[test]
fn nonexistent_pid_is_not_found() {
    // Pid numbers above pid_max never exist.
    cli_refuses(&["--pid", "2147483000"], "NOT_FOUND", "target.pid");
}

#[test]
fn percent_zero_is_refused() {
    cli_refuses(&["--percent", "0"], "INVALID_ARGUMENT", "fault.net_loss.percent");
}

#[test]
fn percent_over_100_is_refused() {
    cli_refuses(&["--percent", "100.5"], "INVALID_ARGUMENT", "fault.net_loss.percent");
}

#[test]
fn malformed_cidr_is_refused() {
    cli_refuses(
        &["--cidr", "10.0.0.0/33"],
        "INVALID_ARGUMENT",
        "fault.net_loss.filter.remote_cidrs[0]",
    );
}

#[test]
fn port_zero_is_refused() {
    cli_refuses(
        &["--port", "0"],
        "INVALID_ARGUMENT",
        "fault.net_loss.filter.remote_ports[0].first",
    );
}

#[test]
fn reversed_port_range_is_refused() {
    cli_refuses(
        &["--port", "9000-8000"],
        "INVALID_ARGUMENT",
        "fault.net_loss.filter.remote_ports[0]",
    );
}

#[test]
fn zero_duration_is_refused() {
    cli_refuses(&["--for", "0s"], "INVALID_ARGUMENT", "duration");
}

#[test]
fn over_maximum_duration_is_refused_by_the_policy() {
    cli_refuses(&["--for", "2h"], "PERMISSION_DENIED", "policy max_duration (1h)");
}

#[test]
fn protected_targets_are_refused() {
    cli_refuses(&["--cgroup", "/"], "PERMISSION_DENIED", "policy protected_cgroups");
}

#[test]
fn unparseable_cli_value_is_one_line() {
    let agent = Agent::start();
    let out = agent.cli(&["net", "loss", "--cgroup", "/x", "--percent", "ten", "--for", "30s"]);
    assert_eq!(out.status.code(), Some(2));
    let line = one_line_error(&out);
    assert!(line.contains("--percent"), "{line}");
    let out = agent.cli(&["net", "loss", "--cgroup", "/x", "--percent", "10", "--for", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    let line = one_line_error(&out);
    assert!(line.contains("--for"), "{line}");
}

fn request(cg: &Cgroup, fault: Option<pb::fault::Kind>, seconds: i64) -> pb::InjectRequest {
    pb::InjectRequest {
        target: Some(pb::Target { kind: Some(pb::target::Kind::CgroupPath(cg.rel.clone())) }),
        fault: Some(pb::Fault { kind: fault }),
        duration: Some(prost_types::Duration { seconds, nanos: 0 }),
        labels: Default::default(),
        lease: None,
        ..Default::default()
    }
}

fn loss(percent: f64, filter: Option<pb::PacketFilter>) -> Option<pb::fault::Kind> {
    Some(pb::fault::Kind::NetLoss(pb::NetLoss { filter, percent, ..Default::default() }))
}

/// The same refusals over gRPC, with the status code and the field in the message.
#[tokio::test]
async fn grpc_refusals_name_the_field() {
    let agent = Agent::start();
    let cg = Cgroup::new("grpc-bad");
    let mut c = agent.client().await;
    let ports = |first, last| {
        Some(pb::PacketFilter {
            remote_ports: vec![pb::PortRange { first, last }],
            ..Default::default()
        })
    };
    let cases: Vec<(&str, pb::InjectRequest, Code, &str)> = vec![
        ("empty fault", request(&cg, None, 30), Code::InvalidArgument, "fault"),
        (
            "percent 0",
            request(&cg, loss(0.0, None), 30),
            Code::InvalidArgument,
            "fault.net_loss.percent",
        ),
        (
            "percent 101",
            request(&cg, loss(101.0, None), 30),
            Code::InvalidArgument,
            "fault.net_loss.percent",
        ),
        ("zero duration", request(&cg, loss(10.0, None), 0), Code::InvalidArgument, "duration"),
        (
            "nanos beyond a second",
            pb::InjectRequest {
                duration: dur(1, 1_500_000_000),
                ..request(&cg, loss(10.0, None), 1)
            },
            Code::InvalidArgument,
            "duration.nanos",
        ),
        (
            "NUL in a cgroup path",
            pb::InjectRequest {
                target: Some(pb::Target {
                    kind: Some(pb::target::Kind::CgroupPath(format!("{}\0x", cg.rel))),
                }),
                ..request(&cg, loss(10.0, None), 30)
            },
            Code::InvalidArgument,
            "target.cgroup_path",
        ),
        (
            "over the policy's max",
            request(&cg, loss(10.0, None), 3601),
            Code::PermissionDenied,
            "policy max_duration",
        ),
        (
            "beyond any duration",
            request(&cg, loss(10.0, None), 8 * 24 * 3600),
            Code::InvalidArgument,
            "duration",
        ),
        (
            "port 0",
            request(&cg, loss(10.0, ports(0, 0)), 30),
            Code::InvalidArgument,
            "remote_ports[0].first",
        ),
        (
            "port 70000",
            request(&cg, loss(10.0, ports(70000, 0)), 30),
            Code::InvalidArgument,
            "remote_ports[0].first",
        ),
        (
            "reversed",
            request(&cg, loss(10.0, ports(90, 10)), 30),
            Code::InvalidArgument,
            "remote_ports[0]",
        ),
        (
            "bad cidr",
            request(
                &cg,
                loss(
                    10.0,
                    Some(pb::PacketFilter {
                        remote_cidrs: vec!["nope".into()],
                        ..Default::default()
                    }),
                ),
                30,
            ),
            Code::InvalidArgument,
            "remote_cidrs[0]",
        ),
        (
            "no target",
            pb::InjectRequest { target: None, ..request(&cg, loss(10.0, None), 30) },
            Code::InvalidArgument,
            "target",
        ),
        (
            "missing cgroup",
            pb::InjectRequest {
                target: Some(pb::Target {
                    kind: Some(pb::target::Kind::CgroupPath("/faultline-it-nope".into())),
                }),
                ..request(&cg, loss(10.0, None), 30)
            },
            Code::NotFound,
            "target.cgroup_path",
        ),
        (
            "missing pid",
            pb::InjectRequest {
                target: Some(pb::Target { kind: Some(pb::target::Kind::Pid(2147483000)) }),
                ..request(&cg, loss(10.0, None), 30)
            },
            Code::NotFound,
            "target.pid",
        ),
        (
            "agent itself",
            pb::InjectRequest {
                target: Some(pb::Target { kind: Some(pb::target::Kind::Pid(agent.pid() as u32)) }),
                ..request(&cg, loss(10.0, None), 30)
            },
            Code::InvalidArgument,
            "target.pid",
        ),
    ];
    for (what, req, code, field) in cases {
        let err = c.inject(req).await.expect_err(what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(err.message().contains(field), "{what}: {:?} does not name {field}", err.message());
    }
    let err = c.get(pb::GetRequest { id: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c.cancel(pb::CancelRequest { id: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err =
        c.list(pb::ListRequest { states: vec![42], labels: Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    nothing_applied(&agent, &cg);
    // Still serving valid requests.
    c.inject(request(&cg, loss(10.0, None), 30)).await.unwrap();
}

fn dur(seconds: i64, nanos: i32) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds, nanos })
}

/// The other network faults' values, over gRPC: refused before anything is touched.
#[tokio::test]
async fn grpc_refuses_bad_network_fault_values() {
    use pb::fault::Kind;
    let agent = Agent::start();
    let cg = Cgroup::new("grpc-badnet");
    let mut c = agent.client().await;
    let delay = |latency, jitter, correlation| {
        Some(Kind::NetDelay(pb::NetDelay { latency, jitter, correlation, ..Default::default() }))
    };
    let ms = |n: i32| dur(0, n * 1_000_000);
    let cases: Vec<(&str, Option<Kind>, &str)> = vec![
        ("negative latency", delay(dur(-1, 0), None, 0.0), "fault.net_delay.latency"),
        ("no latency", delay(None, None, 0.0), "fault.net_delay.latency"),
        ("jitter above latency", delay(ms(10), ms(20), 0.0), "fault.net_delay.jitter"),
        ("latency beyond the maximum", delay(dur(3600, 0), None, 0.0), "fault.net_delay.latency"),
        ("correlation 150", delay(ms(10), ms(5), 150.0), "fault.net_delay.correlation"),
        (
            "unknown device",
            Some(Kind::NetDelay(pb::NetDelay {
                latency: ms(10),
                devices: vec!["".into()],
                ..Default::default()
            })),
            "fault.net_delay.devices[0]",
        ),
        (
            "rate 0",
            Some(Kind::NetBandwidth(pb::NetBandwidth { rate_bps: 0, ..Default::default() })),
            "fault.net_bandwidth.rate_bps",
        ),
        (
            "corrupt 0%",
            Some(Kind::NetCorrupt(pb::NetCorrupt { percent: 0.0, ..Default::default() })),
            "fault.net_corrupt.percent",
        ),
        (
            "duplicate 200%",
            Some(Kind::NetDuplicate(pb::NetDuplicate { percent: 200.0, ..Default::default() })),
            "fault.net_duplicate.percent",
        ),
        (
            "unknown errno",
            Some(Kind::NetReject(pb::NetReject { errno: "EFOO".into(), ..Default::default() })),
            "fault.net_reject.errno",
        ),
        (
            "dns without names",
            Some(Kind::NetDns(pb::NetDns { answer: 1, ..Default::default() })),
            "fault.net_dns.names",
        ),
    ];
    for (what, fault, field) in cases {
        let err = c.inject(request(&cg, fault, 30)).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains(field), "{what}: {:?} does not name {field}", err.message());
        eprintln!("{what} -> {}", err.message());
    }
    nothing_applied(&agent, &cg);
}

/// System-call faults: every bad value named, and the targets the agent never fails.
#[tokio::test]
async fn grpc_refuses_bad_syscall_fault_values_and_protected_targets() {
    let agent = Agent::start();
    let cg = Cgroup::new("grpc-badsys");
    let mut c = agent.client().await;
    let sys = |f: fn(&mut pb::SyscallErrno)| {
        let mut s = pb::SyscallErrno { syscalls: vec!["openat".into()], ..Default::default() };
        f(&mut s);
        Some(pb::fault::Kind::SyscallErrno(s))
    };
    let cases: Vec<(&str, Option<pb::fault::Kind>, &str)> = vec![
        ("no syscall", sys(|s| s.syscalls.clear()), "fault.syscall_errno.syscalls"),
        (
            "unknown syscall",
            sys(|s| s.syscalls.push("frobnicate".into())),
            "fault.syscall_errno.syscalls[1]",
        ),
        ("unknown errno", sys(|s| s.errno = "EWHATEVER".into()), "fault.syscall_errno.errno"),
        ("errno out of range", sys(|s| s.errno = "5000".into()), "fault.syscall_errno.errno"),
        ("errno 0", sys(|s| s.errno = "0".into()), "fault.syscall_errno.errno"),
        ("percent 0", sys(|s| s.percent = Some(0.0)), "fault.syscall_errno.percent"),
        ("percent 150", sys(|s| s.percent = Some(150.0)), "fault.syscall_errno.percent"),
        ("every-Nth 0", sys(|s| s.every_nth = Some(0)), "fault.syscall_errno.every_nth"),
        ("max hits 0", sys(|s| s.max_hits = Some(0)), "fault.syscall_errno.max_hits"),
        (
            "relative path",
            sys(|s| s.path_prefix = "data/x".into()),
            "fault.syscall_errno.path_prefix",
        ),
        (
            "path with ..",
            sys(|s| s.path_prefix = "/data/../etc".into()),
            "fault.syscall_errno.path_prefix",
        ),
        (
            "path on a call without one",
            sys(|s| {
                s.syscalls = vec!["connect".into()];
                s.path_prefix = "/data".into();
            }),
            "fault.syscall_errno.path_prefix",
        ),
        (
            "follow on a cgroup",
            sys(|s| s.follow_children = true),
            "fault.syscall_errno.follow_children",
        ),
    ];
    for (what, fault, field) in cases {
        let err = c.inject(request(&cg, fault, 30)).await.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
        assert!(err.message().contains(field), "{what}: {:?} does not name {field}", err.message());
        eprintln!("{what} -> {}", err.message());
    }
    let connect = sys(|s| s.syscalls = vec!["connect".into()]);
    let own_cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", agent.pid())).unwrap();
    let own_cgroup = own_cgroup.lines().find_map(|l| l.strip_prefix("0::")).unwrap().to_string();
    // The agent's pid is no target at all; the root and the agent's cgroup are the policy's.
    let targets = [
        (pb::target::Kind::Pid(agent.pid() as u32), Code::InvalidArgument, "target.pid"),
        (pb::target::Kind::CgroupPath("/".into()), Code::PermissionDenied, "protected_cgroups"),
        (
            pb::target::Kind::CgroupPath(own_cgroup.clone()),
            Code::PermissionDenied,
            "protected_cgroups",
        ),
    ];
    for (kind, code, field) in targets {
        let req = pb::InjectRequest {
            target: Some(pb::Target { kind: Some(kind.clone()) }),
            ..request(&cg, connect.clone(), 30)
        };
        let err = c.inject(req).await.expect_err("protected target");
        assert_eq!(err.code(), code, "{kind:?}: {err:?}");
        assert!(err.message().contains(field), "{kind:?}: {}", err.message());
    }
    nothing_applied(&agent, &cg);
    // The CLI says it in one line.
    let out = agent.cli(&[
        "sys",
        "fail",
        "--cgroup",
        &cg.rel,
        "--syscall",
        "openat",
        "--every-nth",
        "0",
        "--for",
        "5s",
    ]);
    assert!(!out.status.success());
    let line = one_line_error(&out);
    assert!(line.contains("INVALID_ARGUMENT") && line.contains("every_nth"), "{line}");
}
