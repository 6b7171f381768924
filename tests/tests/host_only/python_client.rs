//! The Python example client (examples/python/faultline_client.py), with stubs it generates
//! from proto/ at run time, against a real agent: it injects packet loss, lists, gets and
//! cancels; the CLI then checks from outside what it did. Host only: the VM guests have no
//! Python (xtask/src/vm/mod.rs leaves this binary out).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use faultline_tests::{Agent, Cgroup};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// target/py, made by `cargo xtask setup` from examples/python/requirements.txt.
pub fn venv_python() -> PathBuf {
    let python = repo_root().join("target/py/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup` (it makes the venv with grpcio and grpcio-tools \
         from examples/python/requirements.txt)",
        python.display()
    );
    python
}

#[test]
fn python_client_injects_lists_gets_and_cancels() {
    let python = venv_python();
    let agent = Agent::start();
    let cg = Cgroup::new("python");
    let run_label = format!("python-client-{}", std::process::id());
    let out = Command::new(&python)
        .arg(repo_root().join("examples/python/faultline_client.py"))
        .args(["--endpoint", &agent.endpoint(), "--cgroup", &cg.rel])
        .args(["--percent", "30", "--duration", "300"])
        .args(["--label", &format!("run={run_label}")])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "client failed ({}):\nstdout:\n{stdout}\nstderr:\n{}\nagent log:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        agent.log()
    );

    let steps: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let names: Vec<&str> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(names, ["health", "inject", "list", "get", "cancel"], "{stdout}");
    // The overall health ("") the Kubernetes probes ask for.
    assert_eq!(steps[0]["status"], "SERVING");

    let injected = &steps[1]["experiment"];
    let id = injected["id"].as_str().unwrap().to_string();
    assert_eq!(injected["state"], "STATE_ACTIVE", "{injected}");
    assert_eq!(injected["labels"]["run"], run_label.as_str());
    assert_eq!(injected["fault"]["net_loss"]["percent"], 30.0);
    assert_eq!(injected["resolved_target"]["cgroup_path"], cg.rel.as_str());
    // The client's own List showed it, active.
    let listed = steps[2]["experiments"].as_array().unwrap();
    let mine = listed.iter().find(|e| e["id"] == id.as_str()).expect("List lacks the experiment");
    assert_eq!(mine["state"], "STATE_ACTIVE");
    assert!(steps[2]["ids"].as_array().unwrap().iter().any(|i| i == id.as_str()));
    assert_eq!(steps[3]["experiment"]["id"], id.as_str());
    assert_eq!(steps[4]["experiment"]["state"], "STATE_CANCELLED");

    // From outside: the agent kept the experiment, cancelled, on that cgroup, and nothing is
    // left attached to the cgroup.
    let e = agent.cli_json(&["get", &id]);
    assert_eq!(e["state"], "cancelled", "{e}");
    assert_eq!(e["labels"]["run"], run_label.as_str(), "{e}");
    let all = agent.cli_json(&["ls"]);
    let found = all.as_array().unwrap().iter().find(|x| x["id"] == id.as_str());
    assert_eq!(found.expect("faultline ls lacks the experiment")["state"], "cancelled");
    assert_eq!(cg.programs(), 0, "programs left attached after Cancel");
}
