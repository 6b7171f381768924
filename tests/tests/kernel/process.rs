//! Process faults, seen by the processes: kill (which processes died, or how many signals a
//! process counted itself) and pause (a counter the process advances stops, and starts again
//! at the end, on Cancel, when the agent exits or dies, and at the next start after a crash).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Child,
    time::{Duration, Instant},
};

use faultline_tests::{Agent, Cgroup, TempDir, containers::Counter, one_line_error, wait_until};

fn freeze_file(cg: &Cgroup) -> String {
    std::fs::read_to_string(cg.fs.join("cgroup.freeze")).unwrap().trim().to_string()
}

fn sleepers(cg: &Cgroup, n: usize) -> Vec<Child> {
    (0..n).map(|_| cg.command("sleep").arg("600").spawn().unwrap()).collect()
}

fn alive(c: &mut Child) -> bool {
    c.try_wait().unwrap().is_none()
}

#[test]
fn kill_signals_every_process_of_the_target_and_nothing_else() {
    let agent = Agent::start();
    let (target, outsider) = (Cgroup::new("kill-t"), Cgroup::new("kill-o"));
    let sub = target.child("sub");
    let mut inside = sleepers(&target, 2);
    inside.extend(sleepers(&sub, 1));
    let mut outside = sleepers(&outsider, 2);
    let e = agent.cli_json(&["process", "kill", "--cgroup", &target.rel]);
    assert_eq!(e["backend"], "pidfd_send_signal");
    assert_eq!(e["counters"]["processes_signalled"], 3);
    wait_until("the target's processes to die", || inside.iter_mut().all(|c| !alive(c)));
    for c in &mut inside {
        assert_eq!(std::os::unix::process::ExitStatusExt::signal(&c.wait().unwrap()), Some(9));
    }
    assert!(outside.iter_mut().all(alive), "a process outside the target was killed");
    for c in &mut outside {
        let _ = c.kill();
    }
}

#[test]
fn kill_random_one_takes_exactly_one() {
    let agent = Agent::start();
    let cg = Cgroup::new("kill-one");
    let mut procs = sleepers(&cg, 4);
    let e = agent.cli_json(&["process", "kill", "--cgroup", &cg.rel, "--mode", "random-one"]);
    assert_eq!(e["counters"]["processes_signalled"], 1);
    wait_until("one process to die", || {
        procs.iter_mut().map(|c| !alive(c)).filter(|d| *d).count() == 1
    });
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(procs.iter_mut().map(|c| !alive(c)).filter(|d| *d).count(), 1);
}

#[test]
fn kill_every_interval_repeats_until_the_end_and_a_pid_target_is_that_process() {
    let agent = Agent::start();
    let cg = Cgroup::new("kill-every");
    let dir = TempDir::new("kill-every");
    let file = dir.path().join("usr1");
    // Counts the SIGUSR1s it gets; a sibling in the same cgroup must get none.
    let script = format!(
        "n=0; trap 'n=$((n+1)); echo $n > {}' USR1; while :; do sleep 0.01; done",
        file.display()
    );
    let mut counter = cg.command("sh").args(["-c", &script]).spawn().unwrap();
    let mut sibling = sleepers(&cg, 1);
    let pid = counter.id().to_string();
    std::thread::sleep(Duration::from_millis(100));
    let e = agent.cli_json(&[
        "process", "kill", "--pid", &pid, "--signal", "USR1", "--every", "250ms", "--for", "1s",
    ]);
    let id = e["id"].as_str().unwrap().to_string();
    wait_until("expiry", || agent.cli_json(&["get", &id])["state"] == "expired");
    std::thread::sleep(Duration::from_millis(300));
    let got: u64 = std::fs::read_to_string(&file).unwrap().trim().parse().unwrap();
    let end = agent.cli_json(&["get", &id]);
    // At 0, 250, 500, 750 ms: four rounds (a fifth only if the deadline timer ran late).
    assert!((4..=5).contains(&got), "{got} signals in 1s every 250ms");
    assert_eq!(end["counters"]["processes_signalled"], got);
    assert!(alive(&mut counter) && alive(&mut sibling[0]));
    let _ = counter.kill();
}

/// A kill of a pid target did what it was asked once the process is gone: the experiment
/// ends then as expired, with the reason, not at the end of its `--for`. The test does not
/// reap its child at once: a zombie has exited too.
#[test]
fn kill_of_a_pid_ends_as_expired_once_the_process_is_gone() {
    let agent = Agent::start();
    let cg = Cgroup::new("kill-pid");
    let mut sleeper = sleepers(&cg, 1).remove(0);
    let pid = sleeper.id().to_string();
    let e = agent.cli_json(&["process", "kill", "--pid", &pid, "--for", "30s"]);
    let t0 = Instant::now();
    assert_eq!(e["counters"]["processes_signalled"], 1, "{e}");
    let id = e["id"].as_str().unwrap().to_string();
    let mut end = serde_json::Value::Null;
    wait_until("the kill to end", || {
        end = agent.cli_json(&["get", &id]);
        end["state"] != "active"
    });
    let took = t0.elapsed();
    eprintln!("kill --pid ended after {:.0} ms: {end}", took.as_secs_f64() * 1000.0);
    assert_eq!(end["state"], "expired", "{end}");
    assert_eq!(
        end["reason"].as_str(),
        Some(format!("target gone: process {pid} exited").as_str()),
        "{end}"
    );
    // The agent checks its targets every 100 ms; 2 s leaves room for a loaded machine.
    assert!(took < Duration::from_secs(2), "took {took:?} of its 30s");
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&sleeper.wait().unwrap()), Some(9));
}

#[test]
fn pause_freezes_the_target_only_and_thaws_at_the_end_and_on_cancel() {
    let agent = Agent::start();
    let dir = TempDir::new("pause");
    let (target, outsider) = (Cgroup::new("pause-t"), Cgroup::new("pause-o"));
    let sub = target.child("sub");
    let a = Counter::start(&sub, dir.path(), "a");
    let b = Counter::start(&outsider, dir.path(), "b");

    let e = agent.cli_json(&["process", "pause", "--cgroup", &target.rel, "--for", "60s"]);
    assert_eq!(e["backend"], "cgroup.freeze");
    // The shell, and its `sleep` when caught in one.
    let frozen = e["counters"]["processes_frozen"].as_u64().unwrap();
    assert!((1..=2).contains(&frozen), "{frozen} frozen");
    assert_eq!(a.moved_in(Duration::from_millis(500)), 0, "the target kept running");
    assert!(b.moves(), "the outsider was paused too");
    let c = agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert_eq!(c["state"], "cancelled");
    assert_eq!(freeze_file(&target), "0");
    assert!(a.moves(), "not thawed on cancel");

    let e = agent.cli_json(&["process", "pause", "--cgroup", &target.rel, "--for", "1s"]);
    assert_eq!(a.moved_in(Duration::from_millis(300)), 0);
    let id = e["id"].as_str().unwrap();
    wait_until("expiry", || agent.cli_json(&["get", id])["state"] == "expired");
    assert!(a.moves(), "not thawed at the deadline");
}

fn thaw_guards_of(agent_pid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat.rsplit(')').next().and_then(|r| r.split_whitespace().nth(1));
            let cmd = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            ppid == Some(&agent_pid.to_string()) && cmd.contains("__thaw-guard")
        })
        .collect()
}

#[test]
fn pause_ends_when_the_agent_stops_or_dies() {
    let mut agent = Agent::start_with(&["--no-resume"]);
    let dir = TempDir::new("pause-die");
    let cg = Cgroup::new("pause-die");
    let a = Counter::start(&cg, dir.path(), "a");

    // SIGTERM: the agent thaws on its way out.
    agent.cli_json(&["process", "pause", "--cgroup", &cg.rel, "--for", "60s"]);
    assert_eq!(freeze_file(&cg), "1");
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(10)).is_some());
    assert_eq!(freeze_file(&cg), "0");
    assert!(a.moves());

    // SIGKILL: the guard child learns of it at once and thaws.
    agent.restart();
    agent.cli_json(&["process", "pause", "--cgroup", &cg.rel, "--for", "60s"]);
    let guards = thaw_guards_of(agent.pid());
    assert_eq!(guards.len(), 1);
    // Named as users know it in ps, not /proc/self/exe.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", guards[0])).unwrap();
    assert!(
        cmdline.starts_with(b"faultline\0__thaw-guard\0"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    agent.signal(libc::SIGKILL);
    wait_until("the guard to thaw", || freeze_file(&cg) == "0");
    assert!(a.moves());

    // SIGKILL of the agent and its guard together (a killed pod): the next start thaws.
    agent.restart();
    agent.cli_json(&["process", "pause", "--cgroup", &cg.rel, "--for", "60s"]);
    let guards = thaw_guards_of(agent.pid());
    assert_eq!(guards.len(), 1);
    // SAFETY: stopping the agent's guard child first so it cannot thaw, then the agent.
    unsafe { libc::kill(guards[0], libc::SIGKILL) };
    agent.signal(libc::SIGKILL);
    assert!(agent.wait_exit(Duration::from_secs(10)).is_some());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(freeze_file(&cg), "1", "nothing should have thawed it yet");
    assert_eq!(a.moved_in(Duration::from_millis(200)), 0);
    agent.restart();
    assert_eq!(freeze_file(&cg), "0", "the restarted agent left it frozen");
    assert!(a.moves());
    assert!(agent.log().contains("thawing a cgroup an earlier agent froze"));
}

#[test]
fn bad_process_requests_are_refused_with_the_field() {
    let agent = Agent::start();
    let cg = Cgroup::new("proc-bad");
    let mut p = sleepers(&cg, 1);
    let pid = p[0].id().to_string();
    let refuse = |args: &[&str], field: &str| {
        let out = agent.cli(args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let line = one_line_error(&out);
        assert!(line.contains("INVALID_ARGUMENT") && line.contains(field), "{args:?}: {line}");
    };
    refuse(
        &["process", "kill", "--cgroup", &cg.rel, "--signal", "SIGNOPE"],
        "fault.process_kill.signal",
    );
    refuse(
        &["process", "kill", "--cgroup", &cg.rel, "--every", "10ms"],
        "fault.process_kill.interval",
    );
    // What the agent always refuses for pause (a pid's cgroup, the host), the command line
    // does not offer.
    for (flag, args) in [
        ("--pid", ["process", "pause", "--pid", &pid, "--for", "5s"].as_slice()),
        ("--host", ["process", "pause", "--host", "--for", "5s"].as_slice()),
    ] {
        let out = agent.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} was accepted");
        let line = one_line_error(&out);
        assert!(line.contains(&format!("unexpected argument '{flag}'")), "{args:?}: {line}");
    }
    assert!(alive(&mut p[0]));
    assert_eq!(freeze_file(&cg), "0");
    assert!(agent.cli_json(&["ls"]).as_array().unwrap().is_empty());
}
