//! `faultline apply` as a whole, on a NetworkChaos loss manifest: read from a file or stdin,
//! several documents labelled by resource and ended by label, `--dry-run` applying nothing,
//! a refused document (its path named) applying nothing of the file, and a failure half-way
//! (the policy's max_concurrent) rolling back what was applied before it. The kinds' own
//! mappings and effects: chaos_mesh_network.rs and chaos_mesh_workloads.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{io::Write as _, process::Stdio};

use faultline_tests::{Agent, Cgroup, TempDir, faultline_bin, net::UdpSink, one_line_error, probe};

fn loss(name: &str, percent: u32) -> String {
    format!(
        "apiVersion: chaos-mesh.org/v1alpha1
kind: NetworkChaos
metadata:
  name: {name}
  namespace: shop
spec:
  action: loss
  mode: all
  selector:
    pods:
      shop: [checkout-0]
  loss:
    loss: '{percent}'
    correlation: '0'
  direction: to
  externalTargets: ['127.0.0.1']
  duration: 5m
"
    )
}

fn write(dir: &TempDir, text: &str) -> String {
    let f = dir.path().join("chaos.yaml");
    std::fs::write(&f, text).unwrap();
    f.display().to_string()
}

fn through(cg: &Cgroup, sink: &UdpSink, n: usize) -> usize {
    probe(Some(cg), &["udp-send", &sink.addr().to_string(), &n.to_string()]);
    sink.drain()
}

#[test]
fn a_plan_of_several_documents_runs_labelled_and_ends_by_label() {
    let agent = Agent::start();
    let cg = Cgroup::new("cm-plan");
    let dir = TempDir::new("cm-plan");
    let sink = UdpSink::bind("127.0.0.1:0");
    let file = write(&dir, &format!("{}---\n{}", loss("redis-down", 100), loss("flaky", 50)));

    // Dry run first: the plan, nothing applied.
    let out = agent.cli(&["apply", "--dry-run", "-f", &file, "--cgroup", &cg.rel]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("document 1 NetworkChaos shop/redis-down"), "{text}");
    assert!(text.contains("document 2 NetworkChaos shop/flaky"), "{text}");
    assert_eq!(text.matches("dry run: nothing applied").count(), 2, "{text}");
    assert_eq!(cg.programs(), 0);
    assert_eq!(agent.cli_json(&["ls"]), serde_json::json!([]));
    assert_eq!(through(&cg, &sink, 50), 50);

    let applied = agent.cli_json(&["apply", "-f", &file, "--cgroup", &cg.rel]);
    let applied = applied.as_array().unwrap();
    assert_eq!(applied.len(), 2, "{applied:?}");
    assert_eq!(applied[0]["labels"]["chaos-mesh.org/resource"], "shop/redis-down");
    assert_eq!(applied[0]["labels"]["chaos-mesh.org/kind"], "NetworkChaos");
    assert_eq!(applied[0]["duration_ms"], 300_000);
    assert_eq!(through(&cg, &sink, 100), 0, "the 100% loss document is in effect");

    // One resource by its label, then the rest.
    let one = agent.cli_json(&["ls", "--label", "chaos-mesh.org/resource=shop/redis-down"]);
    assert_eq!(one.as_array().unwrap().len(), 1, "{one}");
    let ended = agent.cli_json(&["cancel", "--label", "chaos-mesh.org/resource=shop/redis-down"]);
    assert_eq!(ended[0]["state"], "cancelled", "{ended}");
    let got = through(&cg, &sink, 400);
    assert!((120..=280).contains(&got), "50% loss left: {got} of 400 through");
    agent.cli_json(&["cancel", "--label", "chaos-mesh.org/kind=NetworkChaos"]);
    assert_eq!(through(&cg, &sink, 50), 50);
    assert_eq!(cg.programs(), 0);
}

#[test]
fn a_manifest_from_stdin() {
    let agent = Agent::start();
    let cg = Cgroup::new("cm-stdin");
    let sink = UdpSink::bind("127.0.0.1:0");
    let mut child = std::process::Command::new(faultline_bin())
        .args([
            "--endpoint",
            &agent.endpoint(),
            "-o",
            "json",
            "apply",
            "-f",
            "-",
            "--cgroup",
            &cg.rel,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(loss("from-stdin", 100).as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(through(&cg, &sink, 50), 0);
    agent.cli_json(&["cancel", "--label", "chaos-mesh.org/resource=shop/from-stdin"]);
}

#[test]
fn a_refused_document_applies_nothing_of_the_file() {
    let agent = Agent::start();
    let cg = Cgroup::new("cm-refused");
    let dir = TempDir::new("cm-refused");
    let good = loss("good", 100);
    let cases = [
        // A field faultline cannot honour, named by its path.
        (
            good.replace("  direction: to\n", "  direction: to\n  remoteCluster: east\n"),
            "document 2 (NetworkChaos shop/good): spec.remoteCluster: not supported",
        ),
        // A selector that needs the API server.
        (
            good.replace(
                "    pods:\n      shop: [checkout-0]\n",
                "    labelSelectors:\n      app: checkout\n",
            ),
            "spec.selector.labelSelectors: the node keeps no pod labels",
        ),
        // No end.
        (good.replace("  duration: 5m\n", ""), "spec.duration: required"),
        // Not Chaos Mesh.
        (
            good.replace("chaos-mesh.org/v1alpha1", "chaos-mesh.org/v1"),
            "apiVersion: must be chaos-mesh.org/v1alpha1",
        ),
    ];
    for (second, want) in cases {
        let file = write(&dir, &format!("{}---\n{second}", loss("first", 100)));
        let out = agent.cli(&["apply", "-f", &file]);
        assert!(!out.status.success());
        let line = one_line_error(&out);
        assert!(line.contains(want), "{line}");
        assert_eq!(agent.cli_json(&["ls"]), serde_json::json!([]), "{want}");
    }
    // Without a target on the command line, pods named in the selector must exist on the node.
    let file = write(&dir, &good);
    let line = one_line_error(&agent.cli(&["apply", "-f", &file]));
    assert!(
        line.contains("document 1 (NetworkChaos shop/good), pod shop/checkout-0")
            && line.contains("NOT_FOUND"),
        "{line}"
    );
    assert_eq!(cg.programs(), 0);
}

#[test]
fn a_failure_half_way_cancels_what_was_applied() {
    let dir = TempDir::new("cm-rollback");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, "max_concurrent = 1\n").unwrap();
    let agent = Agent::start_with(&["--config", policy.to_str().unwrap()]);
    let cg = Cgroup::new("cm-rollback");
    let sink = UdpSink::bind("127.0.0.1:0");
    // Each checks out alone; together they are one more than the policy allows.
    let file = write(&dir, &format!("{}---\n{}", loss("a", 100), loss("b", 50)));
    let out = agent.cli(&["apply", "-f", &file, "--cgroup", &cg.rel]);
    assert!(!out.status.success());
    let line = one_line_error(&out);
    assert!(
        line.contains("document 2")
            && line.contains("max_concurrent")
            && line.contains("1 applied before it cancelled"),
        "{line}"
    );
    let all = agent.cli_json(&["ls"]);
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["state"], "cancelled");
    assert_eq!(through(&cg, &sink, 50), 50);
    assert_eq!(cg.programs(), 0);
}
