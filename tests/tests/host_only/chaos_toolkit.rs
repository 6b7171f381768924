//! Chaos Toolkit (`chaos run`, pinned in clients/python/requirements.txt) runs the experiments
//! of clients/python/experiments with the chaosfaultline extension against real agents, and a
//! real HTTP service (python -m http.server) in a cgroup of the test's. The journal must show
//! the steady state met before the fault, deviating while it lasts, and the rollback
//! cancelling it; from outside, the agents list the experiments cancelled, nothing is left
//! attached, and the service answers again. A third test calls every inject_* action of the
//! extension as Chaos Toolkit does. Host only, like python_client: the VM guests have no
//! Python.
//!
//! The faultline package is built from this checkout into a directory of the test's own
//! (`pip install --target`, once per test binary) and put first on PYTHONPATH, so the test
//! always runs this checkout's client, extension and protos, even when target/py's own copy
//! (installed by `cargo xtask setup`) is older.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use faultline_tests::{
    Agent, Cgroup, TempDir,
    pki::{ca, leaf},
};
use serde_json::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn venv_bin(name: &str) -> PathBuf {
    let p = repo_root().join("target/py/bin").join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo xtask setup` (it installs chaostoolkit from \
         clients/python/requirements.txt into target/py)",
        p.display()
    );
    p
}

/// The faultline distribution built from clients/python (stubs compiled from proto/ by its
/// build hook), installed into a directory of this test binary's own; its path.
fn package_dir() -> &'static Path {
    static DIR: OnceLock<(TempDir, PathBuf)> = OnceLock::new();
    &DIR.get_or_init(|| {
        let tmp = TempDir::new("pypkg");
        let site = tmp.path().join("site");
        let out = Command::new(venv_bin("python"))
            .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check"])
            .args(["--no-deps", "--no-build-isolation", "--target"])
            .arg(&site)
            .arg(repo_root().join("clients/python"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pip install clients/python failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (tmp, site)
    })
    .1
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether an HTTP GET of / on 127.0.0.1:port answers 200 within a second.
fn answers(port: u16) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    if s.write_all(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.0 200")
}

/// Whether the service answers a GET from a process inside `cg` (the fault's target).
fn answers_from(cg: &Cgroup, url: &str) -> bool {
    cg.command(venv_bin("python"))
        .args(["-c", "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)"])
        .arg(url)
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// `python -m http.server` on 127.0.0.1:port inside a cgroup of its own.
struct Service {
    cg: Cgroup,
    port: u16,
    child: std::process::Child,
    /// What it serves (index.html).
    _root: TempDir,
}

impl Service {
    fn start(tag: &str) -> Service {
        let cg = Cgroup::new(tag);
        let port = free_port();
        let dir = TempDir::new(tag);
        std::fs::write(dir.path().join("index.html"), "ok\n").unwrap();
        let child = cg
            .command(venv_bin("python"))
            .args(["-m", "http.server", &port.to_string(), "--bind", "127.0.0.1"])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !answers(port) {
            assert!(t0.elapsed() < Duration::from_secs(20), "http.server on {port} never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        Service { cg, port, child, _root: dir }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Run {
    code: Option<i32>,
    journal: Value,
    log: String,
}

/// `chaos run EXPERIMENT` with `env` (in `cgroup` when given); its exit code and journal.
fn chaos_run(experiment: &str, env: &[(&str, String)], cgroup: Option<&Cgroup>) -> Run {
    let dir = TempDir::new("chaos");
    let journal = dir.path().join("journal.json");
    let chaos = venv_bin("chaos");
    let mut cmd = match cgroup {
        Some(cg) => cg.command(&chaos),
        None => Command::new(&chaos),
    };
    let log = dir.path().join("chaos.log");
    cmd.current_dir(dir.path())
        // No user settings (~/.chaostoolkit), no log file in the working directory.
        .arg("--settings")
        .arg(dir.path().join("settings.yaml"))
        .args(["--no-log-file", "run", "--journal-path"])
        .arg(&journal)
        .arg(repo_root().join("clients/python/experiments").join(experiment))
        .env("PYTHONPATH", package_dir())
        .env_remove("FAULTLINE_ENDPOINT")
        .env_remove("FAULTLINE_TOKEN")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let t0 = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(180) {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    let text = std::fs::read_to_string(&journal)
        .unwrap_or_else(|e| panic!("no journal ({e}); chaos said:\n{log}"));
    eprintln!("chaos run {experiment}: exit {:?} after {:?}", status.code(), t0.elapsed());
    Run { code: status.code(), journal: serde_json::from_str(&text).unwrap(), log }
}

/// The journal's record of the method activity or rollback named `name`.
fn activity<'a>(records: &'a Value, name: &str) -> &'a Value {
    records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["activity"]["name"] == name)
        .unwrap_or_else(|| panic!("no activity {name} in {records:#}"))
}

/// The hypothesis checks during the method: (met, when the check started).
fn during(journal: &Value) -> Vec<(bool, String)> {
    journal["steady_states"]["during"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let start = s["probes"][0]["start"].as_str().unwrap_or_default().to_string();
            (s["steady_state_met"] == true, start)
        })
        .collect()
}

fn ensure_no_token_in(log: &str, token: &str) {
    assert!(!log.contains(token), "chaos printed a token");
}

/// Experiment (a): the client cgroup, where chaos itself runs, loses the service's port; the
/// steady state deviates during the fault; the rollback cancels by label.
#[test]
fn chaos_toolkit_blackholes_a_service_port_and_the_rollback_cancels_it() {
    let agent = Agent::start();
    let service = Service::start("ctk-svc");
    let client = Cgroup::new("ctk-client");
    let label = format!("ctk-a-{}", std::process::id());
    assert!(answers_from(&client, &service.url()), "the client cannot reach the service");
    let run = chaos_run(
        "blackhole-http.json",
        &[
            ("FAULTLINE_ENDPOINT", format!("unix://{}", agent.socket.display())),
            ("FAULTLINE_TARGET_CGROUP", client.rel.clone()),
            ("SERVICE_URL", service.url()),
            ("SERVICE_PORT", service.port.to_string()),
            ("CHAOS_RUN_LABEL", label.clone()),
        ],
        Some(&client),
    );
    let j = &run.journal;
    let ctx = format!("journal:\n{j:#}\nchaos log:\n{}", run.log);

    // Deviated: chaos exits 1; the last check (after the method, before the rollbacks)
    // could not reach the service, which Chaos Toolkit records as status "failed".
    assert_eq!(run.code, Some(1), "{ctx}");
    assert_eq!(j["deviated"], true, "{ctx}");
    assert_eq!(j["status"], "failed", "{ctx}");
    assert_eq!(j["steady_states"]["before"]["steady_state_met"], true, "{ctx}");
    assert_eq!(j["steady_states"]["after"]["steady_state_met"], false, "{ctx}");

    let inject = activity(&j["run"], "blackhole-the-service-port");
    assert_eq!(inject["status"], "succeeded", "{ctx}");
    let e = &inject["output"];
    let id = e["id"].as_str().unwrap().to_string();
    assert_eq!(e["state"], "active", "{ctx}");
    assert_eq!(e["fault_kind"], "net_partition");
    assert_eq!(e["cgroup_path"], client.rel.as_str());
    assert_eq!(e["labels"]["chaos-run"], label.as_str());
    assert_eq!(e["fault"]["filter"]["remote_ports"][0]["first"], service.port);
    assert_eq!(e["fault"]["filter"]["protocol"], "PROTOCOL_TCP");

    // The checks during the method: every one that started after the fault was in effect
    // failed, and there was at least one.
    let injected_at = inject["end"].as_str().unwrap().to_string();
    let checks = during(j);
    let under_fault: Vec<bool> =
        checks.iter().filter(|(_, start)| *start > injected_at).map(|(met, _)| *met).collect();
    assert!(!under_fault.is_empty(), "no hypothesis check during the fault: {ctx}");
    assert!(under_fault.iter().all(|met| !met), "the service answered under the fault: {ctx}");
    let probe = &j["steady_states"]["after"]["probes"][0];
    assert_eq!(probe["status"], "failed", "{ctx}");
    assert!(probe["exception"].to_string().contains("timed out"), "{ctx}");

    // The extension's counters probe: the kernel dropped the client's packets to the port.
    let counters = &activity(&j["run"], "fault-counters")["output"];
    assert_eq!(counters["experiments"], 1, "{ctx}");
    assert_eq!(counters["states"]["active"], 1, "{ctx}");
    assert!(counters["packets_dropped"].as_u64().unwrap() >= 1, "{ctx}");
    eprintln!(
        "journal: status {} deviated {}; checks during the method (met?): {:?}, {} under the \
         fault; packets dropped by the probe's time: {}",
        j["status"],
        j["deviated"],
        checks.iter().map(|(met, _)| *met).collect::<Vec<_>>(),
        under_fault.len(),
        counters["packets_dropped"]
    );

    // The rollback cancelled exactly that experiment.
    let rollback = activity(&j["rollbacks"], "cancel-the-run");
    assert_eq!(rollback["status"], "succeeded", "{ctx}");
    let cancelled = rollback["output"].as_array().unwrap();
    assert_eq!(cancelled.len(), 1, "{ctx}");
    assert_eq!(cancelled[0]["id"], id.as_str());
    assert_eq!(cancelled[0]["state"], "cancelled");

    // From outside: cancelled, its counters kept, nothing attached, the service answers.
    let got = agent.cli_json(&["get", &id]);
    assert_eq!(got["state"], "cancelled", "{got}");
    let listed = agent.cli_json(&["ls"]);
    let mine: Vec<&Value> =
        listed.as_array().unwrap().iter().filter(|x| x["labels"]["chaos-run"] == *label).collect();
    assert_eq!(mine.len(), 1, "{listed}");
    assert_eq!(mine[0]["state"], "cancelled");
    assert_eq!(client.programs(), 0, "programs left on the client cgroup");
    assert_eq!(service.cg.programs(), 0);
    assert!(answers_from(&client, &service.url()), "the client still cut off after the rollback");
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// An agent serving https on its own port with mutual TLS and its own token, standing for a
/// node; its endpoint.
fn tls_agent(dir: &Path, node: &str, ca_file: &str, cert: &str, key: &str) -> (Agent, String) {
    let port = free_port();
    let token = write(dir, &format!("{node}.token"), &token_of(node));
    let agent = Agent::start_with(&[
        "--tcp-listen",
        &format!("127.0.0.1:{port}"),
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--tls-client-ca",
        ca_file,
        "--token-file",
        &token,
    ]);
    (agent, format!("https://127.0.0.1:{port}"))
}

fn token_of(node: &str) -> String {
    format!("token-of-node-{node}-{}-0123456789abcdef", std::process::id())
}

/// Experiment (b): two agents (two nodes) over https with mutual TLS, each with its own token
/// in its own secrets scope, each blackholing the service on its node; the rollbacks cancel
/// on both.
#[test]
fn chaos_toolkit_drives_two_agents_over_mutual_tls() {
    let dir = TempDir::new("ctk-pki");
    let root = ca("faultline test CA");
    let (srv_cert, srv_key) = leaf("agent", &["localhost", "127.0.0.1"], &root);
    let (cli_cert, cli_key) = leaf("chaos-toolkit", &[], &root);
    let ca_file = write(dir.path(), "ca.crt", &root.0.pem());
    let (cert, key) =
        (write(dir.path(), "srv.crt", &srv_cert), write(dir.path(), "srv.key", &srv_key));
    let (agent_a, endpoint_a) = tls_agent(dir.path(), "a", &ca_file, &cert, &key);
    let (agent_b, endpoint_b) = tls_agent(dir.path(), "b", &ca_file, &cert, &key);
    let (svc_a, svc_b) = (Service::start("ctk-svc-a"), Service::start("ctk-svc-b"));
    let label = format!("ctk-b-{}", std::process::id());
    let run = chaos_run(
        "two-agents.json",
        &[
            ("NODE_A_ENDPOINT", endpoint_a),
            ("NODE_B_ENDPOINT", endpoint_b),
            ("NODE_A_TOKEN", token_of("a")),
            ("NODE_B_TOKEN", token_of("b")),
            ("FAULTLINE_CA_CERT", ca_file.clone()),
            ("FAULTLINE_CLIENT_CERT", write(dir.path(), "client.crt", &cli_cert)),
            ("FAULTLINE_CLIENT_KEY", write(dir.path(), "client.key", &cli_key)),
            ("SERVICE_A_URL", svc_a.url()),
            ("SERVICE_B_URL", svc_b.url()),
            ("SERVICE_A_CGROUP", svc_a.cg.rel.clone()),
            ("SERVICE_B_CGROUP", svc_b.cg.rel.clone()),
            ("CHAOS_RUN_LABEL", label.clone()),
        ],
        None,
    );
    let j = &run.journal;
    let ctx = format!("journal:\n{j:#}\nchaos log:\n{}", run.log);
    ensure_no_token_in(&run.log, &token_of("a"));
    assert_eq!(run.code, Some(1), "{ctx}");
    assert_eq!(j["deviated"], true, "{ctx}");
    assert_eq!(j["steady_states"]["before"]["steady_state_met"], true, "{ctx}");
    // The hypothesis stops at its first failing probe: after the method, service a's.
    let after = &j["steady_states"]["after"]["probes"];
    assert_eq!(after[0]["activity"]["name"], "service-a-answers-200", "{ctx}");
    assert_eq!(after[0]["status"], "failed", "{ctx}");
    // While both faults lasted, the method's own probes found both services down.
    for node in ["a", "b"] {
        let probe = activity(&j["run"], &format!("service-{node}-during-the-fault"));
        assert_eq!(probe["status"], "failed", "service {node} answered under the fault: {ctx}");
    }

    let mut ids = Vec::new();
    for (node, agent, svc) in [("a", &agent_a, &svc_a), ("b", &agent_b, &svc_b)] {
        let inject = activity(&j["run"], &format!("blackhole-service-{node}-on-node-{node}"));
        assert_eq!(inject["status"], "succeeded", "{ctx}");
        let e = &inject["output"];
        assert_eq!(e["state"], "active", "{ctx}");
        assert_eq!(e["cgroup_path"], svc.cg.rel.as_str(), "{ctx}");
        assert_eq!(e["labels"]["node"], node);
        let id = e["id"].as_str().unwrap().to_string();
        let counters = &activity(&j["run"], &format!("node-{node}-counters"))["output"];
        assert_eq!(counters["ids"][0], id.as_str(), "node {node} reports its own only: {ctx}");
        assert_eq!(counters["experiments"], 1, "{ctx}");
        assert!(counters["packets_dropped"].as_u64().unwrap() >= 1, "{ctx}");
        eprintln!("node {node}: experiment {id}, packets dropped {}", counters["packets_dropped"]);
        let rollback = activity(&j["rollbacks"], &format!("cancel-the-run-on-node-{node}"));
        assert_eq!(rollback["status"], "succeeded", "{ctx}");
        assert_eq!(rollback["output"][0]["id"], id.as_str(), "{ctx}");
        assert_eq!(rollback["output"].as_array().unwrap().len(), 1, "{ctx}");

        // From outside, through the agent's Unix socket.
        let got = agent.cli_json(&["get", &id]);
        assert_eq!(got["state"], "cancelled", "{got}");
        let listed = agent.cli_json(&["ls"]);
        assert_eq!(listed.as_array().unwrap().len(), 1, "one experiment per node: {listed}");
        assert_eq!(svc.cg.programs(), 0, "programs left on node {node}'s service");
        assert!(answers(svc.port), "node {node}'s service does not answer after the rollback");
        // The audit log names the client certificate the extension presented.
        let audit = std::fs::read_to_string(agent.dir.path().join("state/audit.log")).unwrap();
        assert!(
            audit.lines().any(|l| l.contains("cert:CN=chaos-toolkit") && l.contains("inject")),
            "{audit}"
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1]);
}

/// Every inject_* action of the extension, called as Chaos Toolkit calls it, against a real
/// agent on a target in a network namespace of its own (so the qdiscs of delay, bandwidth,
/// corrupt and duplicate go on its lo only); each is cancelled by the rollback at once.
#[test]
fn chaos_toolkit_actions_inject_every_fault_family() {
    let agent = Agent::start();
    let target = faultline_tests::NsTarget::new("ctk-all");
    let label = format!("ctk-all-{}", std::process::id());
    let out = Command::new(venv_bin("python"))
        .arg(repo_root().join("tests/python/chaos_actions_every_family.py"))
        .arg(format!("unix://{}", agent.socket.display()))
        .arg(&target.cg.rel)
        .arg(&label)
        .env("PYTHONPATH", package_dir())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    let families = r["families"].as_array().unwrap();
    assert_eq!(families.len(), 17, "{r:#}");
    let mut active = Vec::new();
    for f in families {
        let name = f["family"].as_str().unwrap();
        // Capabilities lists the kernel-dependent families; the others (stress, process)
        // are always served.
        if r["supported"][name] != false {
            assert_eq!(f["state"], "active", "{name}: {f}");
            assert_eq!(f["fault_kind"], name, "{f}");
            assert_eq!(f["cancelled"], serde_json::json!(["cancelled"]), "{name}: {f}");
            active.push(name);
            // The agent kept it, cancelled.
            let got = agent.cli_json(&["get", f["id"].as_str().unwrap()]);
            assert_eq!(got["state"], "cancelled", "{got}");
        } else {
            // Refused with the agent's reason, nothing to cancel.
            assert_eq!(f["error"], "FAILED_PRECONDITION", "{name} unsupported: {f}");
            eprintln!("{name}: refused as the capabilities say: {}", f["message"]);
            assert_eq!(f["cancelled"], serde_json::json!([]), "{f}");
        }
    }
    eprintln!("families active then cancelled: {} of 17: {active:?}", active.len());
    assert_eq!(r["left_active"], 0, "{r:#}");
    assert_eq!(target.cg.programs(), 0, "programs left after the rollbacks");
}

#[test]
fn the_python_client_plans_aborts_and_halts() {
    let agent = Agent::start();
    let cg = Cgroup::new("py-drill");
    let mut sleeper = faultline_tests::containers::sleeper(&cg);
    let out = Command::new(venv_bin("python"))
        .arg(repo_root().join("tests/python/drill_control.py"))
        .arg(format!("unix://{}", agent.socket.display()))
        .arg(&cg.rel)
        .arg(sleeper.id().to_string())
        .env("PYTHONPATH", package_dir())
        .output()
        .unwrap();
    let _ = sleeper.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(r["plan_backend"], "cgroup_skb", "{r}");
    assert!(r["plan_steps"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(r["after_plan"], 0, "a dry run recorded something: {r}");
    assert_eq!(r["stop_conditions"], serde_json::json!([{"no_processes": {}}]), "{r}");
    assert_eq!(r["state"], "aborted", "{r}");
    assert_eq!(r["abort"]["condition"], "empty", "{r}");
    assert_eq!(r["halted"], true, "{r}");
    assert_eq!(r["refused_while_halted"], "FAILED_PRECONDITION", "{r}");
    assert_eq!(r["resumed"], true, "{r}");
    assert_eq!(cg.programs(), 0);
}
