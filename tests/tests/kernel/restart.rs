//! The experiment journal across an agent crash: SIGKILL mid-fault, then a restart resumes
//! the fault for its remaining time (or, with --no-resume, undoes it), records what expired
//! meanwhile, and starts even when an entry is damaged. Nothing is left behind either way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::PathBuf, time::Duration};

use faultline_tests::{Agent, Cgroup, net::UdpSink, probe, udp_loss, wait_for, wait_until};

/// Datagrams from the cgroup that arrive.
fn through(cg: &Cgroup, sink: &UdpSink) -> usize {
    probe(Some(cg), &["udp-send", &sink.addr().to_string(), "50"]);
    sink.drain()
}

fn block(agent: &Agent, cg: &Cgroup, sink: &UdpSink, dur: &str) -> serde_json::Value {
    let port = sink.addr().port().to_string();
    agent.cli_json_args(&udp_loss(&["--cgroup", &cg.rel], "100", &port, dur))
}

fn kill(agent: &mut Agent) {
    agent.signal(libc::SIGKILL);
    agent.wait_exit(Duration::from_secs(5)).expect("agent did not die");
}

fn journal_files(agent: &Agent) -> Vec<PathBuf> {
    std::fs::read_dir(agent.dir.path().join("state/experiments"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn a_fault_is_resumed_for_its_remaining_time_after_sigkill() {
    let mut agent = Agent::start();
    let cg = Cgroup::new("resume");
    let sink = UdpSink::bind("127.0.0.1:0");
    // Long enough for a restart under TCG in the VM tier (loading the programs takes seconds).
    let e = block(&agent, &cg, &sink, "20s");
    let id = e["id"].as_str().unwrap().to_string();
    assert_eq!(journal_files(&agent).len(), 1, "not journaled");
    kill(&mut agent);
    assert_eq!(through(&cg, &sink), 50, "the fault outlived the agent");
    agent.restart();
    let r = agent.cli_json(&["get", &id]);
    assert_eq!(r["state"], "active", "{r}");
    assert_eq!(r["deadline"], e["deadline"], "resumed with a new deadline");
    assert_eq!(through(&cg, &sink), 0, "resumed, but not in effect");
    assert!(agent.log().contains("resumed from the journal"));
    let deadline = Duration::from_secs(30);
    wait_for("the original deadline", deadline, || {
        agent.cli_json(&["get", &id])["state"] == "expired"
    });
    assert_eq!(through(&cg, &sink), 50);
    assert_eq!(cg.programs(), 0);
    assert!(journal_files(&agent).is_empty(), "{:?}", journal_files(&agent));
}

#[test]
fn without_resume_the_fault_is_undone_and_what_expired_is_recorded() {
    let mut agent = Agent::start_with(&["--no-resume"]);
    let cg = Cgroup::new("noresume");
    let sink = UdpSink::bind("127.0.0.1:0");
    let long = block(&agent, &cg, &sink, "60s");
    let short = block(&agent, &cg, &sink, "1s");
    kill(&mut agent);
    std::thread::sleep(Duration::from_millis(1500));
    agent.restart();
    let l = agent.cli_json(&["get", long["id"].as_str().unwrap()]);
    assert_eq!(
        (l["state"].as_str(), l["reason"].as_str()),
        (Some("cancelled"), Some("not resumed after a restart (--no-resume)"))
    );
    let s = agent.cli_json(&["get", short["id"].as_str().unwrap()]);
    assert_eq!(
        (s["state"].as_str(), s["reason"].as_str()),
        (Some("expired"), Some("expired while the agent was down"))
    );
    assert_eq!(through(&cg, &sink), 50);
    assert_eq!(cg.programs(), 0);
    assert!(journal_files(&agent).is_empty());
}

#[test]
fn a_paused_cgroup_is_frozen_again_on_resume_and_thawed_after() {
    let mut agent = Agent::start();
    let cg = Cgroup::new("resume-pause");
    let mut p = cg.command("sleep").arg("120").spawn().unwrap();
    let frozen = || std::fs::read_to_string(cg.fs.join("cgroup.freeze")).unwrap().trim() == "1";
    let e = agent.cli_json(&["process", "pause", "--cgroup", &cg.rel, "--for", "60s"]);
    kill(&mut agent);
    // The guard thawed it the moment the agent died.
    wait_until("the guard's thaw", || !frozen());
    agent.restart();
    assert!(frozen(), "not frozen again on resume");
    let id = e["id"].as_str().unwrap();
    assert_eq!(agent.cli_json(&["get", id])["state"], "active");
    agent.cli_json(&["cancel", id]);
    assert!(!frozen());
    assert!(journal_files(&agent).is_empty());
    let _ = p.kill();
    let _ = p.wait();
}

#[test]
fn a_damaged_journal_entry_is_reported_and_the_agent_starts() {
    let mut agent = Agent::start();
    let cg = Cgroup::new("truncated");
    let sink = UdpSink::bind("127.0.0.1:0");
    block(&agent, &cg, &sink, "60s");
    kill(&mut agent);
    let files = journal_files(&agent);
    assert_eq!(files.len(), 1);
    let len = std::fs::metadata(&files[0]).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&files[0]).unwrap().set_len(len / 2).unwrap();
    agent.restart();
    assert!(agent.log().contains("unreadable journal entry"), "{}", agent.log());
    assert!(files[0].with_extension("corrupt").exists(), "not moved aside");
    assert_eq!(through(&cg, &sink), 50, "a damaged entry was applied");
    // The agent works: a new fault goes in.
    block(&agent, &cg, &sink, "30s");
    assert_eq!(through(&cg, &sink), 0);
}

/// Found by the crash campaign: a time skew, then a pause, on one cgroup. Resumed in the
/// journal's key order (random ids) the pause could come first, and the skew then failed:
/// frozen threads take no ptrace stop. Resumed in the order they were first applied, both are
/// active again.
#[test]
fn faults_are_resumed_in_the_order_they_were_applied() {
    let mut agent = Agent::start();
    let cg = Cgroup::new("resume-order");
    let mut sleeper = cg.command("sleep").arg("120").spawn().unwrap();
    let mut ids = Vec::new();
    // Several pairs, so that key order and apply order differ in some of them.
    for _ in 0..4 {
        let skew = agent
            .cli_json(&["time", "skew", "--cgroup", &cg.rel, "--offset", "+1h", "--for", "60s"]);
        let pause = agent.cli_json(&["process", "pause", "--cgroup", &cg.rel, "--for", "60s"]);
        ids.push(skew["id"].as_str().unwrap().to_string());
        ids.push(pause["id"].as_str().unwrap().to_string());
        agent.signal(libc::SIGKILL);
        agent.wait_exit(Duration::from_secs(5)).expect("agent did not die");
        agent.restart();
        for id in &ids {
            let e = agent.cli_json(&["get", id]);
            assert_eq!(e["state"], "active", "{e}");
        }
        for id in ids.drain(..) {
            agent.cli_json(&["cancel", &id]);
        }
    }
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// Found by the crash campaign: a killed agent's helpers (delay tracers, thaw guards, stress
/// workers) end by themselves once they see it gone, but an agent restarted at once raced
/// them (a resumed sys delay found its threads still held by the old tracer). A starting
/// agent now waits for them, and kills one that does not end: here a thaw guard that says
/// its agent was a process now gone, and that nothing signals.
#[test]
fn a_starting_agent_reaps_the_helpers_a_dead_agent_left() {
    let dir = faultline_tests::TempDir::new("orphan");
    let freeze = dir.path().join("cgroup.freeze");
    std::fs::write(&freeze, "1").unwrap();
    let mut dead = std::process::Command::new("true").spawn().unwrap();
    dead.wait().unwrap();
    let far = u64::MAX / 2;
    let mut guard = std::process::Command::new(faultline_tests::faultline_bin())
        .args(["__thaw-guard", freeze.to_str().unwrap(), &far.to_string()])
        .env("FAULTLINE_AGENT_PID", dead.id().to_string())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(guard.try_wait().unwrap().is_none(), "the guard did not wait");
    let _agent = Agent::start();
    // Serving means recovery is done: the orphan was killed by then (by this agent, or by
    // another test's starting at the same time).
    let status = guard.try_wait().unwrap().expect("the orphaned helper outlived the agent's start");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));
}
