//! Stop conditions (`--abort-if`) triggered for real: the target left with no process, an OOM
//! kill in it, a health URL that starts failing, CPU pressure from stress, each ending its
//! experiment as aborted with the condition and the value seen, while an experiment whose
//! condition never holds is left alone; the policy's node guard halting everything; and bad
//! conditions refused with the field named and nothing applied. The reaction times printed
//! are from the moment the test itself saw the condition hold to the agent's abort.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Command, Stdio},
    time::{Duration, SystemTime},
};

use faultline_tests::{
    Agent, Cgroup, TempDir,
    containers::sleeper,
    net::{HttpServer, UdpSink},
    one_line_error, serial,
    stress::Mem,
    udp_loss, wait_for,
};
use serde_json::Value;

fn time_of(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().unwrap_or_else(|| panic!("no time in {v}"))).unwrap()
}

/// How long after `t0` the agent aborted (its abort.at), and when the test saw the
/// experiment ended (polling `get`, whose round trip is in it).
fn reaction(e: &Value, t0: SystemTime) -> (Duration, Duration) {
    let at = time_of(&e["abort"]["at"]);
    let now = SystemTime::now();
    (at.duration_since(t0).unwrap_or_default(), now.duration_since(t0).unwrap_or_default())
}

fn loss_with(agent: &Agent, cg: &Cgroup, port: u16, conditions: &[&str]) -> Value {
    let mut args = udp_loss(&["--cgroup", &cg.rel], "100", &port.to_string(), "5m");
    for c in conditions {
        args.push("--abort-if".into());
        args.push(c.to_string());
    }
    let e = agent.cli_json_args(&args);
    assert_eq!(e["state"], "active", "{e}");
    e
}

#[test]
fn aborts_when_no_process_is_left_and_leaves_the_others_alone() {
    let agent = Agent::start();
    let watched = Cgroup::new("stop-empty");
    let other = Cgroup::new("stop-busy");
    let mut gone = sleeper(&watched);
    let mut stays = sleeper(&other);
    let sink = UdpSink::bind("127.0.0.1:0");
    let e = loss_with(&agent, &watched, sink.addr().port(), &["empty"]);
    let kept = loss_with(&agent, &other, sink.addr().port(), &["empty"]);
    assert_eq!(e["stop_conditions"], serde_json::json!(["empty"]));
    let id = e["id"].as_str().unwrap();
    // Evaluated for a while with a process in it: nothing happens.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(agent.cli_json(&["get", id])["state"], "active");

    gone.kill().unwrap();
    gone.wait().unwrap();
    let t0 = SystemTime::now();
    let e = agent.wait_ended(id, Duration::from_secs(5));
    assert_eq!(e["state"], "aborted", "{e}");
    assert_eq!(e["abort"]["condition"], "empty", "{e}");
    assert!(e["abort"]["value"].as_str().unwrap().contains("no process left"), "{e}");
    assert!(e["reason"].as_str().unwrap().starts_with("aborted: empty held"), "{e}");
    assert_eq!(watched.programs(), 0);
    let (seen, done) = reaction(&e, t0);
    eprintln!("empty: aborted {seen:?} after the last process exited, seen ended at {done:?}");

    let k = agent.cli_json(&["get", kept["id"].as_str().unwrap()]);
    assert_eq!(k["state"], "active", "{k}");
    assert!(k["abort"].is_null(), "{k}");
    let text = agent.scrape();
    assert_eq!(
        agent.metric(&text, "faultline_experiments", "state=\"aborted\",kind=\"net_loss\""),
        Some(1.0),
        "{text}"
    );
    // `get` in words names the condition and the value seen.
    let out = agent.cli(&["get", id]);
    let words = String::from_utf8_lossy(&out.stdout);
    assert!(words.contains("aborted by") && words.contains("no process left"), "{words}");
    agent.cli_json(&["cancel", kept["id"].as_str().unwrap()]);
    let _ = stays.kill();
    let _ = stays.wait();
}

#[test]
fn aborts_on_an_oom_kill_in_the_target() {
    let agent = Agent::start();
    let cg = Cgroup::new("stop-oom");
    let calm = Cgroup::new("stop-calm");
    let mem = Mem::new(&cg);
    mem.limit(64 << 20);
    let dirs: Vec<std::path::PathBuf> = match &mem {
        Mem::V2(d) => vec![d.clone()],
        Mem::V1(v) => vec![cg.fs.clone(), v.dir.clone()],
    };
    let in_target = |program: &str, args: &[&str]| {
        let mut cmd = Command::new(program);
        cmd.args(args).stdout(Stdio::null()).stderr(Stdio::null());
        faultline_host::cgroup::enter_before_exec(&mut cmd, &dirs).unwrap();
        cmd.spawn().unwrap()
    };
    let mut resident = in_target("sleep", &["600"]);
    let mut calm_sleeper = sleeper(&calm);
    let sink = UdpSink::bind("127.0.0.1:0");
    let e = loss_with(&agent, &cg, sink.addr().port(), &["oom"]);
    let kept = loss_with(&agent, &calm, sink.addr().port(), &["oom"]);
    let id = e["id"].as_str().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.cli_json(&["get", id])["state"], "active");

    let kills = || {
        let (f, key) = match &mem {
            Mem::V2(d) => (d.join("memory.events"), "oom_kill "),
            Mem::V1(v) => (v.dir.join("memory.oom_control"), "oom_kill "),
        };
        std::fs::read_to_string(f)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(key)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert_eq!(kills(), 0);
    // 512 MiB against a 64 MiB limit.
    let probe_bin = faultline_tests::probe_bin();
    let mut hog = in_target(probe_bin.to_str().unwrap(), &["alloc", "512"]);
    wait_for("the OOM kill", Duration::from_secs(30), || kills() > 0);
    let t0 = SystemTime::now();
    let e = agent.wait_ended(id, Duration::from_secs(5));
    assert_eq!(e["state"], "aborted", "{e}");
    assert_eq!(e["abort"]["condition"], "oom", "{e}");
    assert!(e["abort"]["value"].as_str().unwrap().starts_with("oom_kill 1"), "{e}");
    let (seen, done) = reaction(&e, t0);
    eprintln!("oom: aborted {seen:?} after the kill was counted, seen ended at {done:?}");
    assert_eq!(agent.cli_json(&["get", kept["id"].as_str().unwrap()])["state"], "active");
    agent.cli_json(&["cancel", kept["id"].as_str().unwrap()]);
    let _ = hog.wait();
    for c in [&mut resident, &mut calm_sleeper] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

#[test]
fn aborts_when_a_health_url_fails_three_times_in_a_row() {
    let agent = Agent::start();
    let cg = Cgroup::new("stop-http");
    let other = Cgroup::new("stop-http-ok");
    let (flaky, fine) = (HttpServer::loopback(), HttpServer::loopback());
    let (flaky_port, fine_port) = (flaky.addr().port(), fine.addr().port());
    let sink = UdpSink::bind("127.0.0.1:0");
    let url = format!("http://127.0.0.1:{flaky_port}/healthz timeout=500ms failures=3");
    let e = loss_with(&agent, &cg, sink.addr().port(), &[&url]);
    let kept = loss_with(
        &agent,
        &other,
        sink.addr().port(),
        &[&format!("http://127.0.0.1:{fine_port}/healthz")],
    );
    let id = e["id"].as_str().unwrap();
    assert_eq!(e["stop_conditions"][0], url.as_str(), "{e}");
    // Healthy answers for a second: it runs on.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(agent.cli_json(&["get", id])["state"], "active");

    flaky.fail();
    let t0 = SystemTime::now();
    let e = agent.wait_ended(id, Duration::from_secs(5));
    assert_eq!(e["state"], "aborted", "{e}");
    let value = e["abort"]["value"].as_str().unwrap();
    assert!(value.starts_with("3 failed in a row") && value.contains("503"), "{e}");
    let (seen, done) = reaction(&e, t0);
    eprintln!(
        "http: aborted {seen:?} after the URL began to fail (3 probes), seen ended at {done:?}"
    );
    assert_eq!(agent.cli_json(&["get", kept["id"].as_str().unwrap()])["state"], "active");
    agent.cli_json(&["cancel", kept["id"].as_str().unwrap()]);
}

/// "some avg10" of a PSI file, percent.
fn psi_some_avg10(f: &std::path::Path) -> f64 {
    let t = std::fs::read_to_string(f).unwrap();
    t.lines()
        .find(|l| l.starts_with("some "))
        .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("avg10=")))
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn cpu_stress_past_a_pressure_threshold_aborts_itself() {
    // The pressure is of the whole machine's CPUs.
    let _alone = serial::alone();
    let agent = Agent::start();
    let cg = Cgroup::new("stop-psi");
    let calm = Cgroup::new("stop-psi-calm");
    let pressure = cg.fs.join("cpu.pressure");
    if std::fs::read_to_string(&pressure).is_err() {
        // The kernel has no PSI: the condition is refused up front, saying why.
        let out = agent.cli(&[
            "stress",
            "cpu",
            "--cgroup",
            &cg.rel,
            "--load",
            "100",
            "--for",
            "1m",
            "--abort-if",
            "psi.cpu>30",
        ]);
        assert!(!out.status.success());
        let line = one_line_error(&out);
        assert!(line.contains("FAILED_PRECONDITION") && line.contains("PSI"), "{line}");
        return;
    }
    let mut calm_sleeper = sleeper(&calm);
    let sink = UdpSink::bind("127.0.0.1:0");
    let kept = loss_with(&agent, &calm, sink.addr().port(), &["psi.cpu>95"]);
    let workers = (2 * std::thread::available_parallelism().map_or(2, |n| n.get())).to_string();
    let e = agent.cli_json(&[
        "stress",
        "cpu",
        "--cgroup",
        &cg.rel,
        "--workers",
        &workers,
        "--load",
        "100",
        "--for",
        "2m",
        "--abort-if",
        "psi.cpu>30",
    ]);
    let id = e["id"].as_str().unwrap();
    // Twice as many workers as CPUs: half of them wait, and the cgroup's pressure climbs.
    let mut t0 = None;
    wait_for("cpu pressure above 30%", Duration::from_secs(60), || {
        if psi_some_avg10(&pressure) > 30.0 {
            t0 = Some(SystemTime::now());
        }
        t0.is_some()
    });
    let e = agent.wait_ended(id, Duration::from_secs(5));
    assert_eq!(e["state"], "aborted", "{e}");
    assert_eq!(e["abort"]["condition"], "psi.cpu>30", "{e}");
    assert!(e["abort"]["value"].as_str().unwrap().starts_with("cpu some avg10 "), "{e}");
    // The workers went with it.
    wait_for("the workers to go", Duration::from_secs(2), || cg.procs().is_empty());
    let (seen, done) = reaction(&e, t0.unwrap());
    eprintln!("psi.cpu: aborted {seen:?} after the test read avg10 > 30, seen ended at {done:?}");
    assert_eq!(agent.cli_json(&["get", kept["id"].as_str().unwrap()])["state"], "active");
    agent.cli_json(&["cancel", kept["id"].as_str().unwrap()]);
    let _ = calm_sleeper.kill();
    let _ = calm_sleeper.wait();
}

#[test]
fn a_node_guard_halts_everything_when_memory_runs_low() {
    // It takes up to 2 GiB of the machine's memory.
    let _alone = serial::alone();
    let avail = || {
        let t = std::fs::read_to_string("/proc/meminfo").unwrap();
        let kib: u64 = t
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))
            .and_then(|v| v.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        kib << 10
    };
    let before = avail();
    // Holds once an eighth of what is available (at most 512 MiB) more is taken; the hog
    // takes four times that, so other memory coming free meanwhile does not hide it.
    let margin = (before / 8).min(512 << 20);
    let floor = before - margin;
    let dir = TempDir::new("guard");
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, format!("[guards]\nmin_available_memory = \"{floor}\"\n")).unwrap();
    let agent = Agent::start_with(&["--config", policy.to_str().unwrap()]);
    assert!(agent.log().contains("node guards watched"), "{}", agent.log());
    let cg = Cgroup::new("guard");
    let sink = UdpSink::bind("127.0.0.1:0");
    let e = loss_with(&agent, &cg, sink.addr().port(), &[]);
    let id = e["id"].as_str().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(agent.cli_json(&["get", id])["state"], "active");

    // Four times the margin held by a process of the test (not in any target).
    let hog_cg = Cgroup::new("guard-hog");
    let mib = ((4 * margin) >> 20).to_string();
    let mut hog = hog_cg
        .command(faultline_tests::probe_bin())
        .args(["alloc", &mib])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut t0 = None;
    wait_for("available memory under the guard", Duration::from_secs(60), || {
        if avail() < floor {
            t0 = Some(SystemTime::now());
        }
        t0.is_some()
    });
    let e = agent.wait_ended(id, Duration::from_secs(5));
    let _ = hog.kill();
    let _ = hog.wait();
    drop(hog_cg);
    assert_eq!(e["state"], "cancelled", "{e}");
    let reason = e["reason"].as_str().unwrap();
    assert!(reason.starts_with("halted: guard available memory<"), "{e}");
    assert!(reason.contains("MemAvailable"), "{e}");
    let done = time_of(&e["ended_at"]).duration_since(t0.unwrap()).unwrap_or_default();
    eprintln!("guard: halted and reverted {done:?} after MemAvailable fell under the floor");
    assert_eq!(cg.programs(), 0);
    // Halted: refused until resumed.
    let out = agent.cli(
        &udp_loss(&["--cgroup", &cg.rel], "10", "9", "1m")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(!out.status.success());
    assert!(one_line_error(&out).contains("halted: guard"), "{}", one_line_error(&out));
    // (The guard watches again after this; the hog is gone, so it does not halt again.)
    assert_eq!(agent.cli_json(&["resume"])["was_halted"], true);
}

#[test]
fn bad_conditions_are_refused_naming_the_field_and_nothing_is_applied() {
    let agent = Agent::start();
    let cg = Cgroup::new("stop-bad");
    let base = udp_loss(&["--cgroup", &cg.rel], "50", "9", "1m");
    let refuse = |extra: &[&str]| {
        let mut args: Vec<&str> = base.iter().map(String::as_str).collect();
        args.extend_from_slice(extra);
        let out = agent.cli(&args);
        assert!(!out.status.success(), "{extra:?} was accepted");
        one_line_error(&out)
    };
    let line = refuse(&["--abort-if", "psi.disk>5"]);
    assert!(line.contains("no PSI resource \"disk\""), "{line}");
    let line = refuse(&["--abort-if", "psi.memory>100"]);
    assert!(
        line.contains("INVALID_ARGUMENT")
            && line.contains("stop_conditions[0].pressure.above_percent")
            && line.contains("below 100"),
        "{line}"
    );
    let line = refuse(&["--abort-if", "oom", "--abort-if", "https://127.0.0.1/healthz"]);
    assert!(line.contains("stop_conditions[1].http.url") && line.contains("http only"), "{line}");
    let line = refuse(&["--abort-if", "http://127.0.0.1:8080/ failures=1000"]);
    assert!(line.contains("stop_conditions[0].http.failures"), "{line}");
    let line = refuse(&["--expect-hit-within", "100ms"]);
    assert!(line.contains("expect_hit_within") && line.contains("1s to 1h"), "{line}");
    assert_eq!(cg.programs(), 0);
    assert_eq!(agent.cli_json(&["ls"]), serde_json::json!([]));
}

#[test]
fn stop_conditions_survive_an_agent_killed_and_restarted() {
    let mut agent = Agent::start();
    let cg = Cgroup::new("stop-restart");
    let mut gone = sleeper(&cg);
    let sink = UdpSink::bind("127.0.0.1:0");
    let e = loss_with(&agent, &cg, sink.addr().port(), &["empty"]);
    let id = e["id"].as_str().unwrap();
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5)).expect("agent did not die");
    agent.restart();
    let resumed = agent.cli_json(&["get", id]);
    assert_eq!(resumed["state"], "active", "{resumed}");
    assert_eq!(resumed["stop_conditions"], serde_json::json!(["empty"]), "{resumed}");
    gone.kill().unwrap();
    gone.wait().unwrap();
    let e = agent.wait_ended(id, Duration::from_secs(5));
    assert_eq!(e["state"], "aborted", "{e}");
    assert_eq!(cg.programs(), 0);
}
