//! Targets as users name them (containers, pods, pids, the host) against real cgroups laid out
//! as each runtime lays them out; what happens when a target goes away; and the policy file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faultline_tests::{
    Agent, Cgroup, TempDir,
    containers::{nest, random_hex, random_uid, sleeper},
    events::Events,
    net::UdpSink,
    one_line_error, probe, udp_loss, wait_until,
};

#[test]
fn containers_and_pods_resolve_in_every_runtime_layout() {
    let agent = Agent::start();
    let node = Cgroup::new("node");
    let (uid, uid2) = (random_uid(), random_uid());
    let under = uid.replace('-', "_");
    let ids: Vec<String> = (0..5).map(|_| random_hex(32)).collect();
    let layouts = [
        ("docker", format!("docker/{}", ids[0])),
        ("docker", format!("system.slice/docker-{}.scope", ids[1])),
        ("containerd", format!("kubepods/burstable/pod{uid2}/{}", ids[2])),
        (
            "containerd",
            format!(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/cri-containerd-{}.scope",
                ids[3]
            ),
        ),
        ("cri-o", format!("kubepods/besteffort/pod{}/crio-{}", random_uid(), ids[4])),
    ];
    let mut keep = Vec::new();
    for (i, (runtime, rel)) in layouts.iter().enumerate() {
        // One node's tree each (several share /kubepods).
        let tree = node.child(&format!("node{i}"));
        let made = nest(&tree, rel);
        let mut proc_ = sleeper(&made[0]);
        // A unique 12-digit prefix, as `docker ps` and `crictl ps` print ids.
        let e =
            agent.cli_json(&["process", "kill", "--container", &ids[i][..12], "--signal", "TERM"]);
        assert_eq!(e["resolved_cgroup"], made[0].rel, "{runtime} {rel}");
        assert_eq!(e["container"]["runtime"], *runtime);
        assert_eq!(e["container"]["id"], ids[i]);
        assert_eq!(e["counters"]["processes_signalled"], 1);
        let st = proc_.wait().unwrap();
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&st), Some(15), "{rel}");
        keep.push((made, tree));
    }
    // A pod: all its containers (the pod cgroup), or one of them.
    // Innermost first: the container's cgroup, then its pod's.
    let pod_dir = keep[3].0[1].rel.clone();
    let sidecar = keep[3].0[1].child(&format!("cri-containerd-{}.scope", random_hex(32)));
    let mut a = sleeper(&keep[3].0[0]);
    let mut b = sleeper(&sidecar);
    let e = agent.cli_json(&["process", "kill", "--pod", &uid]);
    assert_eq!(e["resolved_cgroup"], pod_dir);
    assert_eq!(e["container"]["pod_uid"], uid);
    assert_eq!(e["counters"]["processes_signalled"], 2);
    a.wait().unwrap();
    b.wait().unwrap();
    let mut c = sleeper(&sidecar);
    let mut d = sleeper(&keep[3].0[0]);
    let e = agent.cli_json(&["process", "kill", "--pod", &uid, "--container", &ids[3][..16]]);
    assert_eq!(e["resolved_cgroup"], keep[3].0[0].rel);
    d.wait().unwrap();
    assert!(c.try_wait().unwrap().is_none(), "the pod's other container was killed");
    let _ = c.kill();
    let _ = c.wait();
    drop(sidecar);

    // Not found and ambiguous prefixes: one line each, naming the field.
    let out = agent.cli(&["process", "kill", "--container", "abcdef0123"]);
    let line = one_line_error(&out);
    assert!(line.contains("NOT_FOUND") && line.contains("target.container_id"), "{line}");
    let out = agent.cli(&["process", "kill", "--container", "xyz!"]);
    let line = one_line_error(&out);
    assert!(line.contains("INVALID_ARGUMENT") && line.contains("target.container_id"), "{line}");
}

/// A pod and a container by the names kubectl shows, resolved by the agent from kubelet log
/// directories the test lays out as the kubelet does (/var/log/pods/NS_NAME_UID/CONTAINER/,
/// /var/log/containers/NAME_NS_CONTAINER-ID.log links), against real cgroups and processes;
/// the names the node does not have refused with what it has.
#[test]
fn pods_and_containers_by_namespace_and_name() {
    let dir = TempDir::new("pod-names");
    let node = Cgroup::new("node-names");
    let (uid, app_id, sidecar_id, old_id) =
        (random_uid(), random_hex(32), random_hex(32), random_hex(32));
    let pod = format!("kubepods/burstable/pod{uid}");
    let app = nest(&node, &format!("{pod}/{app_id}"));
    let sidecar = app[1].child(&sidecar_id);
    let (pods, links) = (dir.path().join("log/pods"), dir.path().join("log/containers"));
    let pod_logs = pods.join(format!("shop_checkout-7d9_{uid}"));
    for d in [pod_logs.join("app"), pod_logs.join("envoy"), links.clone()] {
        std::fs::create_dir_all(d).unwrap();
    }
    // app restarted once: its first instance's link stays, its cgroup is gone.
    for (container, id) in [("app", &old_id), ("app", &app_id), ("envoy", &sidecar_id)] {
        std::os::unix::fs::symlink(
            pod_logs.join(container).join("0.log"),
            links.join(format!("checkout-7d9_shop_{container}-{id}.log")),
        )
        .unwrap();
    }
    let agent = policy_agent(&dir, &format!("pods_log_dir = \"{}\"\n", pods.display()));

    let (mut a, mut b) = (sleeper(&app[0]), sleeper(&sidecar));
    let e = agent.cli_json(&[
        "process",
        "kill",
        "--pod",
        "shop/checkout-7d9",
        "--container-name",
        "app",
    ]);
    assert_eq!(e["resolved_cgroup"], app[0].rel, "{e}");
    assert_eq!(e["container"]["id"], app_id.as_str());
    assert_eq!(e["container"]["pod_uid"], uid.as_str());
    assert_eq!(e["target"]["pod"], "shop/checkout-7d9");
    assert_eq!(e["target"]["container_name"], "app");
    a.wait().unwrap();
    assert!(b.try_wait().unwrap().is_none(), "the pod's other container was killed");
    // The whole pod: both containers.
    let mut a = sleeper(&app[0]);
    let e = agent.cli_json(&["process", "kill", "--pod", "shop/checkout-7d9"]);
    assert_eq!(e["resolved_cgroup"], app[1].rel, "{e}");
    assert_eq!(e["counters"]["processes_signalled"], 2);
    a.wait().unwrap();
    b.wait().unwrap();

    for (args, code, field, found) in [
        (vec!["--pod", "shop/cart"], "NOT_FOUND", "target.pod.name", "checkout-7d9"),
        (vec!["--pod", "payments/cart"], "NOT_FOUND", "target.pod.name", "namespaces here: shop"),
        (
            vec!["--pod", "shop/checkout-7d9", "--container-name", "db"],
            "NOT_FOUND",
            "target.pod.container_name",
            "app, envoy",
        ),
        (vec!["--pod", "shop/Checkout"], "INVALID_ARGUMENT", "target.pod.name", "lower-case"),
    ] {
        let out = agent.cli(&[&["process", "kill"][..], &args].concat());
        let line = one_line_error(&out);
        assert!(
            line.contains(code) && line.contains(field) && line.contains(found),
            "{args:?}: {line}"
        );
    }
    drop(sidecar);
}

#[test]
fn a_pid_target_resolves_to_its_own_cgroup() {
    let agent = Agent::start();
    let cg = Cgroup::new("pid-follow");
    let inner = cg.child("inner");
    let mut p = sleeper(&inner);
    let e = agent.cli_json(&[
        "net",
        "loss",
        "--pid",
        &p.id().to_string(),
        "--percent",
        "5",
        "--for",
        "30s",
    ]);
    assert_eq!(e["resolved_cgroup"], inner.rel);
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn a_target_that_goes_away_fails_the_experiment_and_its_successor_is_untouched() {
    let agent = Agent::start();
    let node = Cgroup::new("gone");
    let sink = UdpSink::bind("127.0.0.1:0");
    let dst = sink.addr().to_string();
    let port = sink.addr().port().to_string();
    let old_id = random_hex(32);
    let old = nest(&node, &format!("docker/{old_id}"));
    let mut p = sleeper(&old[0]);
    let e = agent.cli_json_args(&udp_loss(&["--container", &old_id[..12]], "100", &port, "60s"));
    let id = e["id"].as_str().unwrap().to_string();
    probe(Some(&old[0]), &["udp-send", &dst, "50"]);
    assert_eq!(sink.drain(), 0, "the fault was not in effect");
    // The container restarts: its cgroup goes, a new one (new id) comes.
    let _ = p.kill();
    let _ = p.wait();
    drop(old);
    let new = nest(&node, &format!("docker/{}", random_hex(32)));
    wait_until("the experiment to fail", || agent.cli_json(&["get", &id])["state"] == "failed");
    let got = agent.cli_json(&["get", &id]);
    assert!(got["reason"].as_str().unwrap().starts_with("target gone"), "{got}");
    probe(Some(&new[0]), &["udp-send", &dst, "50"]);
    assert_eq!(sink.drain(), 50, "the new container got the old one's fault");
}

fn as_refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn policy_agent(dir: &TempDir, policy: &str) -> Agent {
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, policy).unwrap();
    Agent::start_with(&["--config", file.to_str().unwrap()])
}

#[test]
fn the_policy_refuses_with_the_rule_named_and_applies_nothing() {
    let dir = TempDir::new("policy");
    let protected = Cgroup::new("protected");
    let free = Cgroup::new("free");
    let logs = dir.path().join("pods");
    let sys_uid = random_uid();
    std::fs::create_dir_all(logs.join(format!("kube-system_coredns-5d78c9869d-abcde_{sys_uid}")))
        .unwrap();
    let sys_pod = free.child(&format!("pod{sys_uid}"));
    let agent = policy_agent(
        &dir,
        &format!(
            "max_duration = \"1m\"\nmax_concurrent = 1\nmax_stress_memory = \"64MiB\"\n\
             protected_cgroups = [\"{}\"]\npods_log_dir = \"{}\"\n",
            protected.rel,
            logs.display()
        ),
    );
    let denied = |args: &[&str], code: &str, rule: &str| {
        let out = agent.cli(args);
        assert!(!out.status.success(), "{args:?} was allowed");
        let line = one_line_error(&out);
        assert!(
            line.contains(code) && line.contains(&format!("policy {rule}")),
            "{args:?}: {line}"
        );
    };
    let loss = |cg: &str, dur: &str| -> Vec<String> {
        ["net", "loss", "--cgroup", cg, "--percent", "10", "--for", dur].map(String::from).to_vec()
    };
    denied(&as_refs(&loss(&protected.rel, "10s")), "PERMISSION_DENIED", "protected_cgroups");
    denied(&as_refs(&loss(&sys_pod.rel, "10s")), "PERMISSION_DENIED", "protected_namespaces");
    // Its parent holds the kube-system pod.
    denied(&as_refs(&loss(&free.rel, "10s")), "PERMISSION_DENIED", "protected_namespaces");
    denied(
        &["net", "loss", "--host", "--percent", "10", "--for", "10s"],
        "PERMISSION_DENIED",
        "allow_host",
    );
    let other = Cgroup::new("free2");
    denied(&as_refs(&loss(&other.rel, "2m")), "PERMISSION_DENIED", "max_duration");
    denied(
        &["stress", "mem", "--cgroup", &other.rel, "--size", "128mb", "--for", "10s"],
        "PERMISSION_DENIED",
        "max_stress_memory",
    );
    assert_eq!(protected.programs() + other.programs() + free.programs(), 0);
    assert!(agent.cli_json(&["ls"]).as_array().unwrap().is_empty(), "a refusal left a record");
    agent.cli_json(&as_refs(&loss(&other.rel, "30s")));
    denied(&as_refs(&loss(&other.rel, "30s")), "RESOURCE_EXHAUSTED", "max_concurrent");
    assert_eq!(agent.cli_json(&["ls"]).as_array().unwrap().len(), 1);

    // A policy file with a mistake stops the agent from starting, naming the key.
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "max_duraton = \"1h\"\n").unwrap();
    let out = std::process::Command::new(faultline_tests::faultline_bin())
        .args(["serve", "--socket", dir.path().join("x.sock").to_str().unwrap()])
        .args([
            "--state-dir",
            dir.path().join("st").to_str().unwrap(),
            "--config",
            bad.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_duraton"));
}

#[test]
fn the_host_target_needs_the_policy_and_then_reaches_every_process() {
    // Attached to the root cgroup, the fault sees every test's packets: alone.
    let _alone = faultline_tests::serial::alone();
    let dir = TempDir::new("host");
    let sink = UdpSink::bind("127.0.0.1:0");
    let (dst, port) = (sink.addr().to_string(), sink.addr().port().to_string());
    let args = udp_loss(&["--host"], "100", &port, "30s");
    let agent = Agent::start();
    let line = one_line_error(&agent.cli(&as_refs(&args)));
    assert!(line.contains("PERMISSION_DENIED") && line.contains("policy allow_host"), "{line}");
    drop(agent);
    let agent = policy_agent(&dir, "allow_host = true\n");
    let e = agent.cli_json_args(&args);
    assert_eq!(e["resolved_cgroup"], "/");
    // From this test process, in no cgroup of ours.
    probe(None, &["udp-send", &dst, "100"]);
    assert_eq!(sink.drain(), 0, "a host-wide fault missed a process");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    probe(None, &["udp-send", &dst, "100"]);
    assert_eq!(sink.drain(), 100);
}

/// --follow on a pod's container, named as kubectl names it or by its id: the kubelet
/// restarts it as a new container (a new id, a new cgroup in the pod's, a new link in its log
/// directories) and the fault moves onto it, seen by a process in the new cgroup. Named by a
/// cgroup path, there is no container to follow: refused, naming the field.
#[test]
fn follow_moves_a_pods_fault_onto_its_restarted_container() {
    let dir = TempDir::new("follow");
    let node = Cgroup::new("node-follow");
    let (uid, old_id, new_id) = (random_uid(), random_hex(32), random_hex(32));
    let mut app = nest(&node, &format!("kubepods/burstable/pod{uid}/{old_id}"));
    let (pods, links) = (dir.path().join("log/pods"), dir.path().join("log/containers"));
    let pod_logs = pods.join(format!("shop_checkout-7d9_{uid}"));
    for d in [pod_logs.join("app"), links.clone()] {
        std::fs::create_dir_all(d).unwrap();
    }
    let link = |id: &str| {
        std::os::unix::fs::symlink(
            pod_logs.join("app/0.log"),
            links.join(format!("checkout-7d9_shop_app-{id}.log")),
        )
        .unwrap();
    };
    link(&old_id);
    let agent = policy_agent(&dir, &format!("pods_log_dir = \"{}\"\n", pods.display()));
    // One experiment per way of naming it, each on its own port.
    let (by_name, by_id) = (UdpSink::bind("127.0.0.1:0"), UdpSink::bind("127.0.0.1:0"));
    let inject = |sink: &UdpSink, target: &[&str]| {
        let port = sink.addr().port().to_string();
        let mut args = udp_loss(target, "100", &port, "120s");
        args.push("--follow".into());
        let e = agent.cli_json_args(&args);
        assert_eq!(e["container"]["name"], "app", "{e}");
        e["id"].as_str().unwrap().to_string()
    };
    let ids = [
        inject(&by_name, &["--pod", "shop/checkout-7d9", "--container-name", "app"]),
        inject(&by_id, &["--container", &old_id[..12]]),
    ];
    let events: Vec<Events> = ids.iter().map(|id| Events::of(&agent, id)).collect();
    let sent = |cg: &Cgroup| {
        for sink in [&by_name, &by_id] {
            probe(Some(cg), &["udp-send", &sink.addr().to_string(), "50"]);
        }
        (by_name.drain(), by_id.drain())
    };
    assert_eq!(sent(&app[0]), (0, 0), "the faults were not in effect");

    // The kubelet restarts it: the old container's cgroup goes (its link stays), the new
    // one's cgroup comes in the pod's, then its link.
    drop(app.remove(0));
    let new = app[0].child(&new_id);
    link(&new_id);
    for (id, ev) in ids.iter().zip(&events) {
        let (_, e) = ev.wait("FOLLOWED", Duration::from_secs(10));
        assert_eq!(e["followed"], 1, "{e}");
        let got = agent.cli_json(&["get", id]);
        assert_eq!(got["state"], "active", "{got}");
        assert_eq!(got["resolved_cgroup"], new.rel, "{got}");
        assert_eq!(got["container"]["id"], new_id.as_str(), "{got}");
    }
    assert_eq!(sent(&new), (0, 0), "the restarted container escaped a followed fault");
    for id in &ids {
        agent.cli_json(&["cancel", id]);
    }
    assert_eq!(sent(&new), (50, 50), "a fault stayed after the cancel");

    let out = agent.cli(&[
        "net",
        "loss",
        "--cgroup",
        &new.rel,
        "--percent",
        "5",
        "--for",
        "10s",
        "--follow",
    ]);
    let line = one_line_error(&out);
    assert!(line.contains("INVALID_ARGUMENT") && line.contains("follow"), "{line}");
}
