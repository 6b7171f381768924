//! Dry runs (`--dry-run`, Inject's `dry_run`): checked as a real inject is (validation, the
//! halt, the target, the policy, the kernel's support) and answered with what would be
//! attached where, applying and recording nothing: no program on the target cgroup
//! (BPF_PROG_QUERY), no qdisc or tc program on a device, no worker in the cgroup, no process
//! frozen, stopped or traced, nothing in `ls` or in the state directory. Each check is shown
//! to see a real inject of the same fault, so it would fail if a plan applied one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Child,
};

use faultline_proto::v1 as pb;
use faultline_tests::{
    Agent, Cgroup, NsTarget, bpf, containers::sleeper, one_line_error, tc_programs,
};
use tonic::Code;

/// Every cgroup attach type faultline uses: inet ingress/egress (0, 1), sock_create (2),
/// bind4/6 (8, 9), connect4/6 (10, 11), sendmsg4/6 (14, 15), recvmsg4/6 (19, 20),
/// getpeername4/6 (29, 30), lsm_cgroup (43; 0 where the kernel has no such type).
fn cgroup_programs(cg: &Cgroup) -> u32 {
    use std::os::fd::AsRawFd as _;
    let dir = std::fs::File::open(&cg.fs).unwrap();
    [0, 1, 2, 8, 9, 10, 11, 14, 15, 19, 20, 29, 30, 43]
        .iter()
        .map(|&t| bpf::query(dir.as_raw_fd() as u32, t).unwrap_or(0))
        .sum()
}

/// Every file under the agent's state directory.
fn state_files(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            } else {
                out.insert(e.path());
            }
        }
    }
    out
}

/// A /proc/PID/status field ("State", "TracerPid").
fn status(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| Some(l.strip_prefix(field)?.strip_prefix(':')?.trim().to_string()))
        .unwrap_or_default()
}

/// What the host looks like before a dry run, to be found unchanged after it.
struct Before {
    procs: Vec<i32>,
    state: BTreeSet<PathBuf>,
}

impl Before {
    fn take(agent: &Agent, cg: &Cgroup) -> Before {
        Before { procs: cg.procs(), state: state_files(&agent.state_dir) }
    }

    /// Nothing applied or recorded; `what` names the dry run.
    fn unchanged(&self, agent: &Agent, cg: &Cgroup, what: &str) {
        assert_eq!(cgroup_programs(cg), 0, "{what}: programs attached to the target");
        assert_eq!(cg.procs(), self.procs, "{what}: the target's processes changed (workers?)");
        for &pid in &self.procs {
            let state = status(pid, "State");
            assert!(state.starts_with('S'), "{what}: process {pid} is {state}");
            assert_eq!(status(pid, "TracerPid"), "0", "{what}: process {pid} is traced");
        }
        let frozen = std::fs::read_to_string(cg.fs.join("cgroup.freeze")).unwrap();
        assert_eq!(frozen.trim(), "0", "{what}: the target is frozen");
        assert_eq!(state_files(&agent.state_dir), self.state, "{what}: the state dir changed");
        let list = agent.cli_json(&["ls"]);
        assert_eq!(list.as_array().unwrap().len(), 0, "{what}: an experiment is listed: {list}");
    }
}

/// `faultline -o json ARGS --dry-run`: the plan, or None where the kernel lacks what the
/// fault needs (FAILED_PRECONDITION "unsupported: ...", said).
fn dry(agent: &Agent, args: &[&str]) -> Option<serde_json::Value> {
    let mut full = vec!["-o", "json"];
    full.extend_from_slice(args);
    full.push("--dry-run");
    let out = agent.cli(&full);
    if !out.status.success() {
        let err = one_line_error(&out);
        assert!(
            err.contains("FAILED_PRECONDITION") && err.contains("unsupported"),
            "{args:?}: {err}\n{}",
            agent.log()
        );
        eprintln!("{args:?}: refused here: {err}");
        return None;
    }
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{args:?}: {plan:#}");
    assert_eq!(plan["dry_run"], true, "{plan}");
    Some(plan)
}

fn steps(plan: &serde_json::Value) -> Vec<(String, String)> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["action"].as_str().unwrap().into(), s["on"].as_str().unwrap().into()))
        .collect()
}

/// Whether some step's action has `action` and its "on" has `on`.
fn has_step(plan: &serde_json::Value, action: &str, on: &str) -> bool {
    steps(plan).iter().any(|(a, o)| a.contains(action) && o.contains(on))
}

fn cgroup_id(cg: &Cgroup) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(&cg.fs).unwrap().ino()
}

#[test]
fn net_loss_dry_run_through_the_cli_prints_the_plan_and_applies_nothing() {
    let agent = Agent::start();
    let cg = Cgroup::new("dry-loss");
    let _s = Sleeping::new(&cg, 1);
    let before = Before::take(&agent, &cg);
    let args = ["net", "loss", "--cgroup", &cg.rel, "--percent", "10", "--for", "30s"];

    let out = agent.cli(&[&args[..], &["--dry-run"]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert!(text.starts_with("dry run: nothing applied\n"), "{text}");
    let id = cgroup_id(&cg);
    assert!(text.contains(&format!("cgroup {} (id {id})", cg.rel)), "{text}");
    assert!(text.contains("backend  cgroup_skb"), "{text}");
    assert!(text.contains("attach cgroup_skb/egress program fl_skb_egress"), "{text}");
    assert!(text.contains("attach cgroup_skb/ingress program fl_skb_ingress"), "{text}");
    before.unchanged(&agent, &cg, "net loss --dry-run");

    let plan = dry(&agent, &args).expect("net loss is supported wherever the agent runs");
    assert_eq!(plan["backend"], "cgroup_skb");
    assert_eq!(plan["cgroup_id"], id);
    assert!(has_step(&plan, "write a drop rule to slot", &cg.rel), "{plan}");
    assert!(has_step(&plan, "attach cgroup_skb/egress", &format!("(id {id})")), "{plan}");
    before.unchanged(&agent, &cg, "net loss -o json --dry-run");

    // The same checks see a real inject: the dry run's "nothing" is not blindness.
    let e = agent.cli_json(&args);
    assert_eq!(cgroup_programs(&cg), 2, "a real net loss attaches ingress and egress");
    assert_ne!(state_files(&agent.state_dir), before.state, "a real inject is journaled");
    assert_eq!(agent.cli_json(&["ls"]).as_array().unwrap().len(), 1);
    // With it in place, a second dry run finds the programs there and attaches none.
    let again = dry(&agent, &args).unwrap();
    assert!(has_step(&again, "none to attach", &cg.rel), "{again}");
    assert_eq!(cgroup_programs(&cg), 2);
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert_eq!(cgroup_programs(&cg), 0);
}

/// Sleepers in a cgroup, killed on drop.
struct Sleeping(Vec<Child>);

impl Sleeping {
    fn new(cg: &Cgroup, n: usize) -> Sleeping {
        let s = Sleeping((0..n).map(|_| sleeper(cg)).collect());
        faultline_tests::wait_until("sleepers in the cgroup", || cg.procs().len() == n);
        // Asleep, not between fork and exec.
        faultline_tests::wait_until("sleepers asleep", || {
            cg.procs().iter().all(|&p| status(p, "State").starts_with('S'))
        });
        s
    }
}

impl Drop for Sleeping {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_dry_run_of_each_family_names_its_target_and_applies_nothing() {
    let agent = Agent::start();
    let cg = Cgroup::new("dry-families");
    let _s = Sleeping::new(&cg, 3);
    let pids = cg.procs();
    let before = Before::take(&agent, &cg);
    let id = format!("(id {})", cgroup_id(&cg));
    let c = cg.rel.as_str();
    let pid = pids[0].to_string();
    // (args, backends a plan may report, a step it must have: action, on)
    let cases: Vec<(Vec<&str>, &[&str], &str, String)> = vec![
        (
            vec!["net", "reject", "--cgroup", c, "--port", "9", "--for", "30s"],
            &["cgroup_sock_addr"],
            "attach cgroup/connect4 and connect6 programs",
            id.clone(),
        ),
        (
            vec!["sys", "fail", "--cgroup", c, "--syscall", "connect", "--for", "30s"],
            &["cgroup_sock"],
            "write a rule failing connect with",
            id.clone(),
        ),
        (
            vec!["sys", "fail", "--pid", &pid, "--syscall", "connect", "--for", "30s"],
            &["cgroup_sock"],
            "write a rule failing connect with",
            format!("pid {pid} of cgroup"),
        ),
        (
            vec![
                "sys",
                "delay",
                "--cgroup",
                c,
                "--syscall",
                "fsync",
                "--latency",
                "10ms",
                "--for",
                "30s",
            ],
            &["fexit+ptrace", "tp_btf+ptrace", "raw_tp+ptrace"],
            "seize every thread of each process with ptrace",
            format!("pids {}, {}, {}", pids[0], pids[1], pids[2]),
        ),
        (
            vec!["stress", "cpu", "--cgroup", c, "--load", "50", "--workers", "2", "--for", "30s"],
            &["workers:cgroup2", "workers:cgroup2+v1"],
            "start 2 cpu worker(s)",
            id.clone(),
        ),
        (
            vec!["stress", "mem", "--cgroup", c, "--size", "64mb", "--for", "30s"],
            &["workers:cgroup2", "workers:cgroup2+v1"],
            "start 1 memory worker(s) holding 64MiB each",
            id.clone(),
        ),
        (
            vec!["process", "pause", "--cgroup", c, "--for", "30s"],
            &["cgroup.freeze"],
            "write 1 to",
            format!("pids {}, {}, {}", pids[0], pids[1], pids[2]),
        ),
        (
            vec!["process", "kill", "--cgroup", c],
            &["pidfd_send_signal"],
            "send SIGKILL to each process",
            format!("pids {}, {}, {} of cgroup", pids[0], pids[1], pids[2]),
        ),
        (
            vec!["time", "skew", "--cgroup", c, "--offset", "-10m", "--for", "30s"],
            &["vdso_patch", "vdso_patch+fexit"],
            "start a time skewer",
            format!("pids {}, {}, {}", pids[0], pids[1], pids[2]),
        ),
    ];
    let mut planned = 0;
    for (args, backends, action, on) in &cases {
        let what = args[..2].join(" ");
        if let Some(plan) = dry(&agent, args) {
            planned += 1;
            let backend = plan["backend"].as_str().unwrap();
            assert!(backends.contains(&backend), "{what}: backend {backend}");
            assert!(plan["target"].as_str().unwrap().contains(c), "{what}: {plan}");
            assert!(has_step(&plan, action, on), "{what}: no step {action:?} on {on:?}: {plan}");
        }
        before.unchanged(&agent, &cg, &what);
    }
    assert!(planned >= 6, "most families plan on any kernel the agent supports");

    // The checks see the real thing: a pause freezes, and `unchanged` would say so.
    let e = agent.cli_json(&["process", "pause", "--cgroup", c, "--for", "30s"]);
    let frozen = std::fs::read_to_string(cg.fs.join("cgroup.freeze")).unwrap();
    assert_eq!(frozen.trim(), "1");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
}

#[test]
fn device_fault_dry_runs_leave_qdiscs_and_tc_programs_as_they_were() {
    let agent = Agent::start();
    let t = NsTarget::new("dry-dev");
    let qdiscs = || {
        let out = t.ns.command("tc").args(["qdisc", "show"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (qdiscs0, ifbs0) = (qdiscs(), t.ns.links_of_kind("ifb"));
    let c = t.cg.rel.as_str();
    let delay = ["net", "delay", "--cgroup", c, "--latency", "50ms", "--protocol", "udp"];
    let delay = [&delay[..], &["--for", "30s"]].concat();
    match dry(&agent, &delay) {
        Some(plan) => {
            assert!(agent.supports("sch_fq"), "planned a delay without sch_fq: {plan}");
            assert_eq!(plan["backend"], "cgroup_skb", "{plan}");
            assert!(has_step(&plan, "with fq (limit", "device lo (ifindex 1"), "{plan}");
        }
        None => {
            // The dry run refuses as the inject does, word for word.
            let dry_err = one_line_error(&agent.cli(&[&delay[..], &["--dry-run"]].concat()));
            let real_err = one_line_error(&agent.cli(&delay));
            assert_eq!(dry_err, real_err);
        }
    }
    let corrupt = ["net", "corrupt", "--cgroup", c, "--percent", "5", "--for", "30s"];
    if let Some(plan) = dry(&agent, &corrupt) {
        assert_eq!(plan["backend"], "tc", "{plan}");
        assert!(has_step(&plan, "attach tc programs fl_tc_egress", "device lo"), "{plan}");
    }
    assert_eq!(qdiscs(), qdiscs0, "a dry run changed a qdisc");
    assert_eq!(t.ns.links_of_kind("ifb"), ifbs0, "a dry run made an ifb");
    assert_eq!(tc_programs(&t.ns, "lo"), 0, "a dry run attached tc programs");
    assert_eq!(cgroup_programs(&t.cg), 0);
    assert_eq!(agent.cli_json(&["ls"]).as_array().unwrap().len(), 0);

    // The same checks see a real corrupt's tc programs.
    if agent.supports("tcx") || agent.supports("clsact_cls_bpf") {
        let e = agent.cli_json(&corrupt);
        assert!(tc_programs(&t.ns, "lo") > 0, "a real corrupt attaches tc programs");
        agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    }
}

#[test]
fn a_dry_run_refuses_what_an_inject_refuses() {
    let agent = Agent::start();
    let cg = Cgroup::new("dry-refused");
    let _s = Sleeping::new(&cg, 1);
    let before = Before::take(&agent, &cg);
    let c = cg.rel.as_str();
    let refused = |args: &[&str], code: &str, says: &str| {
        let out = agent.cli(&[args, &["--dry-run"]].concat());
        assert!(!out.status.success(), "{args:?} --dry-run was accepted");
        let err = one_line_error(&out);
        assert!(err.contains(code) && err.contains(says), "{args:?}: {err}");
        eprintln!("{args:?} --dry-run -> {err}");
        err
    };
    // Bad input, naming the field.
    refused(
        &["net", "loss", "--cgroup", c, "--percent", "0", "--for", "30s"],
        "INVALID_ARGUMENT",
        "fault.net_loss.percent",
    );
    // The policy: the default max_duration, and the root cgroup.
    refused(
        &["net", "loss", "--cgroup", c, "--percent", "5", "--for", "2h"],
        "PERMISSION_DENIED",
        "policy max_duration",
    );
    refused(
        &["net", "loss", "--cgroup", "/", "--percent", "5", "--for", "30s"],
        "PERMISSION_DENIED",
        "policy protected_cgroups",
    );
    // The target's state: a cgroup frozen by someone else, refused in the same words.
    std::fs::write(cg.fs.join("cgroup.freeze"), "1").unwrap();
    let pause = ["process", "pause", "--cgroup", c, "--for", "30s"];
    let dry_err = refused(&pause, "FAILED_PRECONDITION", "already frozen");
    assert_eq!(dry_err, one_line_error(&agent.cli(&pause)));
    std::fs::write(cg.fs.join("cgroup.freeze"), "0").unwrap();
    // A target that is not there.
    refused(
        &["net", "loss", "--cgroup", "/faultline-dry-missing", "--percent", "5", "--for", "30s"],
        "NOT_FOUND",
        "target.cgroup_path",
    );
    // Halted: refused until resumed, then planned again.
    let out = agent.cli(&["halt", "--reason", "drill stop"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let loss = ["net", "loss", "--cgroup", c, "--percent", "5", "--for", "30s"];
    refused(&loss, "FAILED_PRECONDITION", "halted: drill stop");
    agent.cli_json(&["resume"]);
    assert!(dry(&agent, &loss).is_some());
    before.unchanged(&agent, &cg, "refused dry runs");
}

fn request(cg: &Cgroup, kind: pb::fault::Kind, dry_run: bool) -> pb::InjectRequest {
    pb::InjectRequest {
        target: Some(pb::Target { kind: Some(pb::target::Kind::CgroupPath(cg.rel.clone())) }),
        fault: Some(pb::Fault { kind: Some(kind) }),
        duration: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
        dry_run,
        ..Default::default()
    }
}

#[tokio::test]
async fn inject_with_dry_run_answers_a_plan_over_grpc_and_applies_nothing() {
    let agent = Agent::start();
    let cg = Cgroup::new("dry-grpc");
    let _s = Sleeping::new(&cg, 1);
    let before = Before::take(&agent, &cg);
    let mut client = agent.client().await;
    let loss = pb::fault::Kind::NetLoss(pb::NetLoss { percent: 10.0, ..Default::default() });
    let r = client.inject(request(&cg, loss.clone(), true)).await.unwrap().into_inner();
    assert!(r.experiment.is_none(), "a dry run made an experiment: {r:?}");
    let plan = r.plan.expect("a dry run answers a plan");
    let target = plan.resolved_target.as_ref().unwrap();
    assert_eq!((target.cgroup_path.as_str(), target.cgroup_id), (cg.rel.as_str(), cgroup_id(&cg)));
    assert_eq!(plan.backend, "cgroup_skb");
    assert!(plan.steps.iter().any(|s| s.action.contains("fl_skb_egress")), "{plan:?}");
    let reject = pb::fault::Kind::NetReject(pb::NetReject::default());
    let r = client.inject(request(&cg, reject, true)).await.unwrap().into_inner();
    assert_eq!(r.plan.unwrap().backend, "cgroup_sock_addr");
    before.unchanged(&agent, &cg, "grpc dry runs");

    // Bad input is refused as it is without dry_run, naming the field.
    let bad = pb::fault::Kind::NetLoss(pb::NetLoss { percent: 0.0, ..Default::default() });
    for dry_run in [true, false] {
        let e = client.inject(request(&cg, bad.clone(), dry_run)).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("fault.net_loss.percent"), "{e:?}");
    }
    before.unchanged(&agent, &cg, "refused grpc requests");

    // Without dry_run the same request applies: the checks would have seen it.
    let r = client.inject(request(&cg, loss, false)).await.unwrap().into_inner();
    assert!(r.plan.is_none());
    assert_eq!(cgroup_programs(&cg), 2);
    let id = r.experiment.unwrap().id;
    client.cancel(pb::CancelRequest { id }).await.unwrap();
}
