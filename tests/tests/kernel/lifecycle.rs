//! Every fault ends: at its deadline, on Cancel, when the agent stops or dies, and on time
//! even when the agent is frozen.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use faultline_proto::v1 as pb;
use faultline_tests::{Agent, Cgroup, net::UdpSink, probe, udp_loss};
use tokio_stream::StreamExt as _;

/// Injects 100% UDP loss to the sink's port and checks it bites.
fn block(agent: &Agent, cg: &Cgroup, sink: &UdpSink, dur: &str) -> (String, Instant) {
    let port = sink.addr().port().to_string();
    let e = agent.cli_json_args(&udp_loss(&["--cgroup", &cg.rel], "100", &port, dur));
    let at = Instant::now();
    assert_eq!(received(cg, sink), 0, "the fault did not take effect");
    (e["id"].as_str().unwrap().to_string(), at)
}

fn received(cg: &Cgroup, sink: &UdpSink) -> usize {
    probe(Some(cg), &["udp-send", &sink.addr().to_string(), "200"]);
    sink.drain()
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

#[test]
fn expires_without_cancel() {
    let agent = Agent::start();
    let cg = Cgroup::new("expire");
    let sink = UdpSink::bind("127.0.0.1:0");
    let (id, at) = block(&agent, &cg, &sink, "2s");
    sleep_until(at + Duration::from_millis(2500));
    assert_eq!(received(&cg, &sink), 200, "traffic must flow after the deadline");
    let e = agent.cli_json(&["get", &id]);
    assert_eq!(e["state"], "expired");
    assert!(e["counters"]["packets_dropped"].as_u64().unwrap() >= 200, "{e}");
    assert_eq!(cg.programs(), 0, "programs left attached after expiry");
}

#[test]
fn cancel_ends_it_early() {
    let agent = Agent::start();
    let cg = Cgroup::new("cancel");
    let sink = UdpSink::bind("127.0.0.1:0");
    let (id, _) = block(&agent, &cg, &sink, "60s");
    let e = agent.cli_json(&["cancel", &id]);
    assert_eq!(e["state"], "cancelled");
    assert_eq!(received(&cg, &sink), 200);
    assert_eq!(cg.programs(), 0);
    // Cancelling again is harmless and changes nothing.
    assert_eq!(agent.cli_json(&["cancel", &id])["state"], "cancelled");
}

#[test]
fn kernel_expiry_holds_while_agent_is_stopped() {
    let agent = Agent::start();
    let cg = Cgroup::new("sigstop");
    let sink = UdpSink::bind("127.0.0.1:0");
    let (id, at) = block(&agent, &cg, &sink, "2s");
    agent.signal(libc::SIGSTOP);
    assert_eq!(received(&cg, &sink), 0, "still within the deadline");
    sleep_until(at + Duration::from_millis(2500));
    // User space is frozen past the deadline: the rule's own expiry ends the loss.
    assert_eq!(
        received(&cg, &sink),
        200,
        "loss continued past the deadline with the agent stopped"
    );
    agent.signal(libc::SIGCONT);
    let start = Instant::now();
    loop {
        let e = agent.cli_json(&["get", &id]);
        if e["state"] == "expired" {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "not expired after SIGCONT: {e}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cg.programs(), 0);
}

#[test]
fn sigkill_of_agent_removes_the_fault() {
    let mut agent = Agent::start();
    let cg = Cgroup::new("sigkill");
    let sink = UdpSink::bind("127.0.0.1:0");
    block(&agent, &cg, &sink, "60s");
    assert_eq!(cg.skb_programs(), 2);
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5)).expect("agent did not die");
    assert_eq!(received(&cg, &sink), 200, "traffic must flow once the agent is gone");
    assert_eq!(cg.programs(), 0, "links must not outlive the agent");
}

#[test]
fn sigterm_removes_every_fault_and_exits_cleanly() {
    let mut agent = Agent::start();
    let cg = Cgroup::new("sigterm");
    let sink = UdpSink::bind("127.0.0.1:0");
    block(&agent, &cg, &sink, "60s");
    agent.signal(libc::SIGTERM);
    let status = agent.wait_exit(Duration::from_secs(10)).expect("agent did not exit on SIGTERM");
    assert!(status.success(), "exit status {status}");
    assert!(agent.log().contains("stopping"), "{}", agent.log());
    assert_eq!(received(&cg, &sink), 200);
    assert_eq!(cg.programs(), 0);
    assert!(!agent.socket.exists(), "socket file left behind");
}

#[test]
fn experiments_on_one_cgroup_are_independent() {
    let agent = Agent::start();
    let cg = Cgroup::new("multi");
    let a = UdpSink::bind("127.0.0.1:0");
    let b = UdpSink::bind("127.0.0.1:0");
    let (ida, _) = block(&agent, &cg, &a, "60s");
    let (idb, _) = block(&agent, &cg, &b, "60s");
    assert_eq!(cg.skb_programs(), 2, "one attachment serves both experiments");
    agent.cli_json(&["cancel", &ida]);
    assert_eq!(received(&cg, &a), 200, "cancelled experiment still dropping");
    assert_eq!(received(&cg, &b), 0, "cancelling one experiment ended the other");
    let active = agent.cli_json(&["ls", "--state", "active"]);
    let ids: Vec<&str> =
        active.as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![idb.as_str()]);
}

#[test]
fn list_filters_by_state_and_label() {
    let agent = Agent::start();
    let cg = Cgroup::new("labels");
    let common = ["--percent", "10", "--protocol", "udp", "--for", "60s"];
    let mut a = vec![
        "net",
        "loss",
        "--cgroup",
        &cg.rel,
        "--label",
        "team=checkout",
        "--label",
        "drill=redis",
    ];
    a.extend_from_slice(&common);
    let mut b = vec!["net", "loss", "--cgroup", &cg.rel, "--label", "team=search"];
    b.extend_from_slice(&common);
    let ea = agent.cli_json(&a);
    let eb = agent.cli_json(&b);
    assert_ne!(ea["id"], eb["id"], "ids must be unique");
    let checkout = agent.cli_json(&["ls", "--label", "team=checkout"]);
    assert_eq!(checkout.as_array().unwrap().len(), 1);
    assert_eq!(checkout[0]["id"], ea["id"]);
    assert_eq!(checkout[0]["labels"]["drill"], "redis");
    agent.cli_json(&["cancel", eb["id"].as_str().unwrap()]);
    let cancelled = agent.cli_json(&["ls", "--state", "cancelled"]);
    assert_eq!(cancelled.as_array().unwrap().len(), 1);
    assert_eq!(cancelled[0]["id"], eb["id"]);
    assert_eq!(agent.cli_json(&["ls"]).as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn watch_streams_state_changes() {
    let agent = Agent::start();
    let cg = Cgroup::new("watch");
    let mut c = agent.client().await;
    let mut stream = c
        .watch(pb::WatchRequest { id: String::new(), send_initial: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let req = pb::InjectRequest {
        target: Some(pb::Target { kind: Some(pb::target::Kind::CgroupPath(cg.rel.clone())) }),
        fault: Some(pb::Fault {
            kind: Some(pb::fault::Kind::NetLoss(pb::NetLoss {
                percent: 5.0,
                ..Default::default()
            })),
        }),
        duration: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        labels: Default::default(),
        lease: None,
        ..Default::default()
    };
    let id = c.inject(req).await.unwrap().into_inner().experiment.unwrap().id;
    let mut states = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
        let ev = ev.unwrap();
        assert_eq!(ev.r#type, pb::EventType::State as i32, "only state changes were asked for");
        let e = ev.experiment.unwrap();
        assert_eq!(e.id, id);
        states.push(pb::State::try_from(e.state).unwrap());
        if e.state == pb::State::Expired as i32 {
            break;
        }
    }
    assert_eq!(states, vec![pb::State::Pending, pb::State::Active, pb::State::Expired]);
}
