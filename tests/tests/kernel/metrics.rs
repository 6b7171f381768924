//! Observability from outside: the Prometheus endpoint (scraped over HTTP as Prometheus
//! would), the Watch stream's first-hit and snapshot events, and JSON logs that name the
//! experiment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faultline_proto::v1 as pb;
use faultline_tests::{Agent, Cgroup, net::UdpSink, probe, udp_loss, wait_until};
use tokio_stream::StreamExt as _;

const N: usize = 5000;

fn loss_args(cg: &Cgroup, port: &str, dur: &str) -> Vec<String> {
    udp_loss(&["--cgroup", &cg.rel], "30", port, dur)
}

#[test]
fn scraped_drop_counter_agrees_with_the_receiver() {
    let agent = Agent::start();
    let cg = Cgroup::new("metrics-loss");
    let sink = UdpSink::bind("127.0.0.1:0");
    let port = sink.addr().port().to_string();
    let e = agent.cli_json_args(&loss_args(&cg, &port, "60s"));
    let id = e["id"].as_str().unwrap();
    probe(Some(&cg), &["udp-send", &sink.addr().to_string(), &N.to_string()]);
    let lost = (N - sink.drain()) as f64;
    let text = agent.scrape();
    let sel = format!("id=\"{id}\"");
    let dropped = agent.metric(&text, "faultline_experiment_packets_dropped_total", &sel).unwrap();
    let matched = agent.metric(&text, "faultline_experiment_packets_matched_total", &sel).unwrap();
    eprintln!("receiver lost {lost}, scraped dropped {dropped} of {matched}");
    assert!((dropped - lost).abs() <= lost * 0.01, "scraped {dropped}, receiver lost {lost}");
    assert_eq!(matched, N as f64);
    assert!(text.contains(&format!("kind=\"net_loss\",target=\"{}\"", cg.rel)));
    assert_eq!(
        agent.metric(&text, "faultline_experiments", "state=\"active\",kind=\"net_loss\""),
        Some(1.0)
    );
    // The cgroup programs, through their bpf links.
    assert!(
        agent
            .metric(&text, "faultline_attached_programs", "attach_type=\"cgroup_inet_egress\"")
            .unwrap()
            >= 1.0
    );
    assert!(agent.metric(&text, "faultline_build_info", "version=").is_some());
    // The CLI's own calls were counted, by method and code.
    let bad = agent.cli(&["net", "loss", "--cgroup", &cg.rel, "--percent", "0", "--for", "5s"]);
    assert!(!bad.status.success());
    let text = agent.scrape();
    let inject = "method=\"/faultline.v1.FaultService/Inject\"";
    assert!(
        agent
            .metric(&text, "faultline_grpc_requests_total", &format!("{inject},code=\"OK\""))
            .unwrap()
            >= 1.0
    );
    assert_eq!(
        agent.metric(
            &text,
            "faultline_grpc_requests_total",
            &format!("{inject},code=\"InvalidArgument\"")
        ),
        Some(1.0)
    );
    assert_eq!(
        agent.metric(&text, "faultline_grpc_request_duration_seconds_count", inject),
        Some(2.0)
    );
}

#[test]
fn an_ended_experiment_leaves_the_metrics_after_the_grace_period() {
    let agent = Agent::start_with(&["--metrics-grace", "1s"]);
    let cg = Cgroup::new("metrics-grace");
    let e = agent.cli_json_args(&loss_args(&cg, "9", "60s"));
    let id = e["id"].as_str().unwrap();
    let sel = format!("id=\"{id}\"");
    assert_eq!(agent.metric(&agent.scrape(), "faultline_experiment_active", &sel), Some(1.0));
    agent.cli_json(&["cancel", id]);
    // Right after: the final counters, marked inactive.
    let text = agent.scrape();
    assert_eq!(agent.metric(&text, "faultline_experiment_active", &sel), Some(0.0));
    assert!(agent.metric(&text, "faultline_experiment_packets_dropped_total", &sel).is_some());
    wait_until("the series to go", || !agent.scrape().contains(&sel));
    let text = agent.scrape();
    assert_eq!(agent.metric(&text, "faultline_experiments", "state=\"cancelled\""), Some(1.0));
    assert!(!text.contains(id));
}

#[tokio::test]
async fn watch_reports_the_first_hit_and_snapshots() {
    let agent = Agent::start();
    let cg = Cgroup::new("first-hit");
    let sink = UdpSink::bind("127.0.0.1:0");
    let mut c = agent.client().await;
    let mut stream = c
        .watch(pb::WatchRequest {
            snapshot_interval: Some(prost_types::Duration { seconds: 0, nanos: 200_000_000 }),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let port = sink.addr().port().to_string();
    let e = agent.cli_json_args(&loss_args(&cg, &port, "30s"));
    let id = e["id"].as_str().unwrap().to_string();
    assert!(e["first_hit_at"].is_null(), "no packet yet, no hit: {e}");
    let mut snapshots = 0;
    let mut hit: Option<pb::Experiment> = None;
    let dst = sink.addr().to_string();
    let sender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        probe(Some(&cg), &["udp-send", &dst, "200"]);
        cg
    });
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        let ev = ev.unwrap();
        let x = ev.experiment.unwrap();
        assert_eq!(x.id, id);
        match pb::EventType::try_from(ev.r#type).unwrap() {
            pb::EventType::Snapshot => snapshots += 1,
            pb::EventType::FirstHit => {
                assert!(hit.is_none(), "a second first hit");
                hit = Some(x);
            }
            _ => {}
        }
        if hit.is_some() && snapshots >= 3 {
            break;
        }
    }
    let _cg = sender.join().unwrap();
    let hit = hit.expect("no first-hit event");
    assert!(hit.counters.unwrap().packets_dropped > 0);
    assert!(hit.first_hit_at.is_some());
    assert!(snapshots >= 3);
    let bad = c
        .watch(pb::WatchRequest {
            snapshot_interval: Some(prost_types::Duration { seconds: 0, nanos: 1_000_000 }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
    assert!(bad.message().contains("snapshot_interval"));
}

#[test]
fn json_logs_carry_the_experiment_id() {
    let agent = Agent::start_with(&["--log-format", "json"]);
    let cg = Cgroup::new("json-log");
    let mut p = cg.command("sleep").arg("60").spawn().unwrap();
    let e = agent.cli_json(&["process", "pause", "--cgroup", &cg.rel, "--for", "30s"]);
    let id = e["id"].as_str().unwrap();
    agent.cli_json(&["cancel", id]);
    let _ = p.kill();
    let _ = p.wait();
    let lines: Vec<serde_json::Value> =
        agent.log().lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "no JSON log lines:\n{}", agent.log());
    // The driver's own line, inside the experiment's span.
    let frozen = lines
        .iter()
        .find(|l| l["fields"]["message"] == "frozen")
        .unwrap_or_else(|| panic!("no 'frozen' line:\n{}", agent.log()));
    assert_eq!(frozen["span"]["id"], id, "{frozen}");
    let ended = lines.iter().find(|l| l["fields"]["message"] == "experiment ended").unwrap();
    assert_eq!(ended["fields"]["experiment"], id);
}
