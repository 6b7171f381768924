//! The gRPC surface as a generic client sees it: health, reflection, capabilities, the
//! socket's permissions and the optional TCP listener.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt as _;

use faultline_proto::v1 as pb;
use faultline_tests::Agent;
use tokio_stream::StreamExt as _;

#[tokio::test]
async fn health_and_reflection_answer() {
    let agent = Agent::start();
    let ch = agent.channel().await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(ch.clone());
    let r = health
        .check(tonic_health::pb::HealthCheckRequest { service: "faultline.v1.FaultService".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let mut refl = ServerReflectionClient::new(ch.clone());
    let req = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut resp =
        refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        resp.next().await.unwrap().unwrap().message_response
    else {
        panic!("no service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.contains(&"faultline.v1.FaultService".to_string()), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health".to_string()), "{names:?}");

    // v1alpha too, what grpcui, Postman, Evans and grpcurl before 1.9 ask.
    use tonic_reflection::pb::v1alpha as alpha;
    let mut refl = alpha::server_reflection_client::ServerReflectionClient::new(ch);
    let req = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "faultline.v1.FaultService".into(),
            ),
        ),
    };
    let mut resp =
        refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        resp.next().await.unwrap().unwrap().message_response
    else {
        panic!("v1alpha: no file for faultline.v1.FaultService");
    };
    let names: Vec<String> = files
        .file_descriptor_proto
        .iter()
        .map(|b| <prost_types::FileDescriptorProto as prost::Message>::decode(&b[..]).unwrap())
        .filter_map(|f| f.name)
        .collect();
    assert!(names.iter().any(|n| n == "faultline/v1/service.proto"), "{names:?}");
}

#[test]
fn socket_is_private() {
    let agent = Agent::start();
    let mode = std::fs::metadata(&agent.socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // The harness made the directory: the agent leaves its mode alone, and serves in it
    // because no other user may write it (serve.rs has the directories it refuses).
    let dir =
        std::fs::metadata(agent.socket.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir & 0o022, 0, "{dir:o}");
}

#[test]
fn second_agent_on_the_same_socket_is_refused() {
    let agent = Agent::start();
    let out = std::process::Command::new(faultline_tests::faultline_bin())
        .args(["serve", "--socket"])
        .arg(&agent.socket)
        .arg("--state-dir")
        .arg(agent.dir.path().join("state2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another agent"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The first agent still serves.
    agent.cli_json(&["ls"]);
}

/// Found by the crash campaign: a killed agent's lock outlives it for a moment in a helper
/// it was forking (its copy of the descriptor closes at exec), and the restarted agent took
/// that for another agent. A lock held briefly is waited for; one held on is refused.
#[test]
fn a_state_lock_held_for_a_moment_is_waited_for() {
    let dir = faultline_tests::TempDir::new("lock");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let lock = state.join("agent.lock");
    std::fs::write(&lock, "").unwrap();
    // Held by this process for a second, as a dying agent's last child would hold it.
    let held = std::fs::File::open(&lock).unwrap();
    // SAFETY: flock on a descriptor this function owns.
    assert_eq!(unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) }, 0);
    let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let holder = {
        let released = released.clone();
        std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_secs(1));
            released.store(true, std::sync::atomic::Ordering::SeqCst);
            drop(held);
        })
    };
    let agent = Agent::builder().state_dir(&state).start();
    assert!(
        released.load(std::sync::atomic::Ordering::SeqCst),
        "the agent started while the lock was held"
    );
    holder.join().unwrap();
    agent.cli_json(&["ls"]);
}

#[test]
fn caps_report_net_loss_on_this_kernel() {
    let agent = Agent::start();
    let caps = agent.cli_json(&["caps"]);
    let faults = caps["faults"].as_array().unwrap();
    let loss = faults.iter().find(|f| f["fault"] == "net_loss").unwrap();
    assert_eq!(loss["supported"], true, "{caps}");
    let skb =
        caps["probes"].as_array().unwrap().iter().find(|p| p["name"] == "cgroup_skb").unwrap();
    assert_eq!(skb["supported"], true, "{caps}");
    assert!(caps["cgroup2_mount"].as_str().unwrap().starts_with('/'));
    // Every network fault is listed, supported exactly when what it needs was probed.
    let probe = |name: &str| {
        caps["probes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == name && p["supported"] == true)
    };
    let tc = probe("tcx") || probe("clsact_cls_bpf");
    let needs = [
        ("net_loss", true),
        ("net_partition", true),
        ("net_reject", probe("cgroup_sock_addr")),
        ("net_delay", probe("sch_fq")),
        ("net_bandwidth", probe("sch_fq")),
        ("net_corrupt", tc),
        ("net_duplicate", tc),
        ("net_dns", probe("cgroup_sock_addr")),
    ];
    for (name, expected) in needs {
        let f =
            faults.iter().find(|f| f["fault"] == name).unwrap_or_else(|| panic!("{name}: {caps}"));
        assert_eq!(f["supported"], expected, "{name}: {f}");
        if !expected {
            assert!(f["reason"].as_str().unwrap().starts_with("unsupported: "), "{f}");
        }
    }
    let delay = faults.iter().find(|f| f["fault"] == "net_delay").unwrap();
    let ingress = tc && probe("ifb_redirect") && probe("skb_set_tstamp") && probe("tc_sk_storage");
    assert_eq!(
        delay["reason"].as_str().unwrap().starts_with("egress only"),
        probe("sch_fq") && !ingress,
        "{delay}"
    );
    // The table form prints too.
    let out = agent.cli(&["caps"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("net_loss"));
}

#[test]
fn tcp_listener_serves_the_cli() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let agent = Agent::start_with(&["--tcp-listen", &addr, "--insecure-tcp"]);
    let out = std::process::Command::new(faultline_tests::faultline_bin())
        .args(["--endpoint", &format!("http://{addr}"), "-o", "json", "ls"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), agent.log());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v.as_array().unwrap().is_empty());
}

#[tokio::test]
async fn capabilities_over_grpc() {
    let agent = Agent::start();
    let mut c = agent.client().await;
    let caps = c.capabilities(pb::CapabilitiesRequest {}).await.unwrap().into_inner();
    assert!(!caps.kernel_release.is_empty());
    assert!(caps.faults.iter().any(|f| f.fault == "net_loss" && f.supported));
}
