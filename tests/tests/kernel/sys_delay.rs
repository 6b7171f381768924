//! `faultline sys delay` end to end: the CLI against a real agent, real programs in the
//! target (fl-probe `threads-timed`: thread A reads /dev/zero and sleeps 1 ms, timing each
//! round; thread B counts getppid calls per ms), the effect measured from the programs'
//! own clocks. After every case: no thread of the target stopped (T or t) or traced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use faultline_tests::{
    Agent, Cgroup, TempDir, Tmpfs, Waiting, one_line_error, probe_bin, serial,
    threads::{TRACER_COMM, TimedThreads, Traced, assert_untraced, state, tids, tracer_of},
    wait_for,
};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Whether this kernel can delay system calls (caps); if not, Inject must refuse with the
/// reason caps give.
fn supported(agent: &Agent, cg: &Cgroup) -> bool {
    let caps = agent.caps();
    let row = caps["faults"].as_array().unwrap().iter().find(|f| f["fault"] == "syscall_delay");
    let row = row.cloned().unwrap();
    eprintln!("caps: {row}");
    if row["supported"] == true {
        return true;
    }
    let out = agent.cli(&[
        "sys",
        "delay",
        "--cgroup",
        &cg.rel,
        "--syscall",
        "read",
        "--latency",
        "10ms",
        "--for",
        "30s",
    ]);
    let err = one_line_error(&out);
    assert!(err.contains("FAILED_PRECONDITION"), "{err}");
    false
}

/// The probe's timed threads in a cgroup (`TimedThreads`).
struct Timed;

impl Timed {
    fn start(cg: &Cgroup, seconds: f64) -> TimedThreads {
        TimedThreads::start(cg.command(probe_bin()), seconds, &[])
    }

    /// With `files` = [IN, OUT]: A's calls on both files, each timed.
    fn start_with(cg: &Cgroup, seconds: f64, files: &[&str]) -> TimedThreads {
        TimedThreads::start(cg.command(probe_bin()), seconds, files)
    }

    /// How much longer than A's median round each round that held a hold was, in ms: those
    /// over 50 ms.
    fn extras(v: &serde_json::Value) -> Vec<f64> {
        Timed::extras_over(v, v["median_ms"].as_f64().unwrap())
    }

    /// As `extras`, over a round of `median` ms (where most rounds are delayed, A's own
    /// median is a delayed one: an undelayed run's median is the baseline).
    fn extras_over(v: &serde_json::Value, median: f64) -> Vec<f64> {
        TimedThreads::extras_over(v, median, 50.0)
    }
}

fn delay(agent: &Agent, target: &[&str], rest: &[&str]) -> serde_json::Value {
    let mut args = vec!["sys", "delay"];
    args.extend_from_slice(target);
    args.extend_from_slice(rest);
    agent.cli_json(&args)
}

fn counter(e: &serde_json::Value, name: &str) -> u64 {
    e["counters"][name].as_u64().unwrap_or_else(|| panic!("no counter {name}: {e}"))
}

/// Waits until the agent's tracer has taken a process that entered the target: its
/// TracerPid shows the seize, and the agent logs the tracer's answer, which comes once the
/// datapath may arm the process's calls (a map write just after PTRACE_SEIZE; on a loaded
/// VM the tracer can be descheduled between the two).
fn wait_seized(agent: &Agent, pid: i32) {
    wait_for("the newcomer to be seized", Duration::from_secs(2), || tracer_of(pid, pid) != 0);
    let line = format!("seized a process that entered the target pid={pid} ");
    wait_for("the tracer's answer", Duration::from_secs(2), || agent.log().contains(&line));
}

fn ms_list(v: &serde_json::Value) -> Vec<f64> {
    v["ms"].as_array().unwrap().iter().map(|m| m.as_f64().unwrap()).collect()
}

/// Half of thread A's reads take 100 ms +- 10 ms longer (median of the delayed ones); B,
/// making other calls in the same process, runs on meanwhile; a process in a sibling cgroup
/// doing the same sees nothing and is not traced. Counters: calls seen, calls delayed,
/// delay added; the first hit is recorded.
#[test]
fn half_of_one_threads_reads_take_100ms_longer() {
    let _alone = serial::alone();
    let agent = Agent::start();
    let cg = Cgroup::new("sdelay");
    let sibling = Cgroup::new("sdelay-sib");
    if !supported(&agent, &cg) {
        return;
    }
    let mut p = Timed::start(&cg, 4.0);
    let mut s = Timed::start(&sibling, 4.0);
    let e = delay(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "read", "--latency", "100ms", "--percent", "50", "--for", "60s"],
    );
    let id = e["id"].as_str().unwrap().to_string();
    eprintln!("{}: backend {} summary {}", id, e["backend"], e["summary"]);
    assert!(e["backend"].as_str().unwrap().ends_with("+ptrace"), "{e}");
    assert!(p.traced(), "the target's threads are seized when Inject returns");
    assert!(!s.traced(), "the sibling is not traced");
    p.go();
    s.go();
    let v = p.finish();
    let w = s.finish();
    eprintln!("target: {v}\nsibling: {w}");
    let extras = Timed::extras_over(&v, w["median_ms"].as_f64().unwrap());
    let rounds = v["rounds"].as_u64().unwrap();
    let share = extras.len() as f64 / rounds as f64;
    let m = median(extras.clone());
    eprintln!(
        "{} of {rounds} rounds delayed ({:.0}%), median added {m:.1} ms",
        extras.len(),
        share * 100.0
    );
    assert!((0.3..=0.7).contains(&share), "{} of {rounds} delayed", extras.len());
    assert!((90.0..=110.0).contains(&m), "median added {m} ms");
    let (inside, outside) = (v["b_inside"].as_f64().unwrap(), v["b_outside"].as_f64().unwrap());
    eprintln!("B: {inside} calls/ms while A was held, {outside} otherwise");
    assert!(v["b_inside_ms"].as_u64().unwrap() > 1000, "{v}");
    // A loaded host stretches B's milliseconds too; a held B would run at 0.
    assert!(inside >= 0.5 * outside, "B ran {inside} calls/ms during holds, {outside} outside");
    assert_eq!(Timed::extras(&w), Vec::<f64>::new(), "the sibling was delayed: {w}");
    // The watcher reads the held time every 250 ms.
    std::thread::sleep(Duration::from_millis(600));
    let got = agent.cli_json(&["get", &id]);
    let (seen, delayed) = (counter(&got, "calls_seen"), counter(&got, "calls_delayed"));
    let added = counter(&got, "delay_added_usec");
    eprintln!("counters: seen {seen} delayed {delayed} added {added} us");
    assert!(seen >= rounds, "{got}");
    // A's holds, and maybe the main thread's read of the go line (and a loaded host's long
    // round or two that held no hold).
    assert!(delayed.abs_diff(extras.len() as u64) <= 3, "{} long rounds: {got}", extras.len());
    let per = added as f64 / delayed as f64 / 1000.0;
    assert!((99.0..=115.0).contains(&per), "{per} ms held per delayed call: {got}");
    assert!(got["first_hit_at"].as_str().is_some_and(|t| !t.is_empty()), "{got}");
    let text = agent.scrape();
    for (family, want) in [
        ("faultline_experiment_calls_seen_total", seen as f64),
        ("faultline_experiment_calls_delayed_total", delayed as f64),
        ("faultline_experiment_delay_added_seconds_total", added as f64 / 1e6),
    ] {
        let v = agent.metric(&text, family, &id).unwrap_or_else(|| panic!("no {family}: {text}"));
        assert!((v - want).abs() <= want * 0.05 + 1.0, "{family} {v}, get says {want}");
    }
    let c = agent.cli_json(&["cancel", &id]);
    assert_eq!(c["state"], "cancelled");
}

/// fsync of a file in the target takes 500 ms more; the process entered the cgroup after
/// the fault began (the watcher seizes it within 250 ms).
#[test]
fn fsync_takes_500ms_longer_for_a_process_that_entered_later() {
    let _alone = serial::alone();
    let agent = Agent::start();
    let cg = Cgroup::new("sdfsync");
    if !supported(&agent, &cg) {
        return;
    }
    let dir = TempDir::new("fsync");
    let file = dir.path().join("f").display().to_string();
    let e = delay(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "fsync,fdatasync", "--latency", "500ms", "--for", "60s"],
    );
    let id = e["id"].as_str().unwrap().to_string();
    let w = Waiting::start(&cg, &["calls", "fsync", &file, "4"]);
    let pid: i32 = w.pid.parse().unwrap();
    let t0 = Instant::now();
    wait_seized(&agent, pid);
    eprintln!("seized {:?} after it started", t0.elapsed());
    let v = w.release();
    let ms = ms_list(&v);
    eprintln!("fsync ms: {ms:?}");
    assert_eq!(ms.len(), 4, "{v}");
    for m in &ms {
        assert!((500.0..=600.0).contains(m), "an fsync took {m} ms: {v}");
    }
    // A process outside the target: fsync as fast as ever.
    let out = Command::new(probe_bin()).args(["calls", "fsync", &file, "4"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(ms_list(&v).iter().all(|m| *m < 200.0), "outside: {v}");
    let got = agent.cli_json(&["get", &id]);
    assert_eq!((counter(&got, "calls_seen"), counter(&got, "calls_delayed")), (4, 4), "{got}");
}

/// Cancel while thread A is held for 5 s (a pid target): A runs again by the time Cancel
/// answers, nothing is left stopped or traced.
#[test]
fn cancel_mid_delay_resumes_the_held_thread_at_once() {
    let _alone = serial::alone();
    let agent = Agent::start();
    let cg = Cgroup::new("sdcancel");
    if !supported(&agent, &cg) {
        return;
    }
    let mut p = Timed::start(&cg, 2.0);
    let e = delay(
        &agent,
        &["--pid", &p.pid.to_string()],
        &["--syscall", "read", "--latency", "5s", "--every-nth", "5", "--for", "60s"],
    );
    let id = e["id"].as_str().unwrap().to_string();
    p.go();
    wait_for("A held", Duration::from_secs(3), || state(p.pid, p.tid_a) == Some('t'));
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(state(p.pid, p.tid_a), Some('t'), "A is held");
    assert!(!matches!(state(p.pid, p.tid_b), Some('t' | 'T')), "B is not held");
    let t0 = Instant::now();
    let c = agent.cli_json(&["cancel", &id]);
    let took = t0.elapsed();
    assert_eq!(c["state"], "cancelled");
    assert_untraced(p.pid);
    eprintln!("cancel answered in {took:?}, A already running");
    let v = p.finish();
    // Only the long hold: a loaded host has rounds of tens of ms now and then.
    let extras: Vec<f64> = Timed::extras(&v).into_iter().filter(|e| *e > 150.0).collect();
    assert_eq!(extras.len(), 1, "{v}");
    assert!(extras[0] < 2000.0, "A held {} ms of 5 s after a cancel: {v}", extras[0]);
}

/// An agent whose delay fault holds thread A of a process in cgroup `tag` for 5 s (None where
/// the kernel cannot delay calls).
fn held_for_5s(tag: &str) -> Option<(Agent, Cgroup, TimedThreads)> {
    let agent = Agent::start();
    let cg = Cgroup::new(tag);
    if !supported(&agent, &cg) {
        return None;
    }
    let mut p = Timed::start(&cg, 2.0);
    delay(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "read", "--latency", "5s", "--every-nth", "5", "--for", "60s"],
    );
    p.go();
    wait_for("A held", Duration::from_secs(3), || state(p.pid, p.tid_a) == Some('t'));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(state(p.pid, p.tid_a), Some('t'), "A is held");
    Some((agent, cg, p))
}

/// SIGKILL of the agent during a 5 s hold: the thread runs again within 100 ms, untraced.
#[test]
fn agent_killed_during_a_hold_releases_the_thread() {
    let _alone = serial::alone();
    let Some((mut agent, _cg, mut p)) = held_for_5s("sdkill") else { return };
    agent.signal(libc::SIGKILL);
    let t0 = Instant::now();
    while state(p.pid, p.tid_a) == Some('t') || tracer_of(p.pid, p.tid_a) != 0 {
        assert!(t0.elapsed() < Duration::from_secs(2), "A still held or traced");
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = t0.elapsed();
    eprintln!("A released {took:?} after the agent's SIGKILL");
    assert!(took < Duration::from_millis(100), "released {took:?} after the kill");
    // The tracer detaches the other threads as they stop for it, then exits.
    let untraced = |pid: i32| tids(pid).iter().all(|t| tracer_of(pid, *t) == 0);
    wait_for("every thread untraced", Duration::from_secs(1), || untraced(p.pid));
    eprintln!("every thread untraced {:?} after the kill", t0.elapsed());
    assert_untraced(p.pid);
    let _ = agent.wait_exit(Duration::from_secs(5));
    let v = p.finish();
    assert_eq!(Timed::extras(&v).iter().filter(|e| **e > 150.0).count(), 1, "{v}");
}

/// A process held by a tracer in the target (a debugger's way: PTRACE_SEIZE; the tracer is
/// the test's own, as the VM guests have no strace): refused, naming it and its tracer's pid
/// and comm, with nothing applied (the tracer keeps its tracee, no experiment is recorded);
/// the same for a pid target.
#[test]
fn a_traced_process_is_refused_naming_its_tracer() {
    let agent = Agent::start();
    let cg = Cgroup::new("sdstrace");
    if !supported(&agent, &cg) {
        return;
    }
    let traced = Traced::start(Some(&cg));
    let (sleeper, tpid) = (traced.pid, traced.tracer);
    for target in [["--cgroup", cg.rel.as_str()], ["--pid", &sleeper.to_string()]] {
        let mut args = vec!["sys", "delay"];
        args.extend_from_slice(&target);
        args.extend(["--syscall", "read", "--latency", "10ms", "--for", "30s"]);
        let out = agent.cli(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = one_line_error(&out);
        eprintln!("{target:?} -> {err}");
        assert!(err.contains("FAILED_PRECONDITION"), "{err}");
        let want = format!("process {sleeper}: traced by {tpid} ({TRACER_COMM})");
        assert!(err.contains(&want), "{err}: expected {want}");
        assert_eq!(tracer_of(sleeper, sleeper), tpid, "the tracer keeps its tracee");
        assert_eq!(tracer_of(tpid, tpid), 0, "the tracer itself was let go");
        let list = agent.cli_json(&["ls"]);
        assert_eq!(list.as_array().unwrap().len(), 0, "a refused request left {list}");
    }
}

/// A child the target forks (and execs: fl-probe `spawn` runs another fl-probe) while the
/// fault lasts is delayed too.
#[test]
fn a_child_forked_during_the_fault_is_delayed() {
    let _alone = serial::alone();
    let agent = Agent::start();
    let cg = Cgroup::new("sdchild");
    if !supported(&agent, &cg) {
        return;
    }
    let dir = TempDir::new("child");
    let file = dir.path().join("f").display().to_string();
    let w = Waiting::start(&cg, &["spawn", "calls", "fsync", &file, "3"]);
    let pid: i32 = w.pid.parse().unwrap();
    delay(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "fsync", "--latency", "200ms", "--for", "60s"],
    );
    assert_ne!(tracer_of(pid, pid), 0, "seized at Inject");
    let v = w.release();
    let ms = ms_list(&v);
    eprintln!("the child's fsync ms: {ms:?}");
    assert_eq!(ms.len(), 3, "{v}");
    for m in &ms {
        assert!((200.0..=300.0).contains(m), "the child's fsync took {m} ms: {v}");
    }
}

/// Bad input: InvalidArgument naming the field (a path prefix: FailedPrecondition, not
/// served yet), nothing recorded.
#[test]
fn bad_input_is_refused_naming_the_field() {
    let agent = Agent::start();
    let cg = Cgroup::new("sdbad");
    let cases: &[(&[&str], &str, &str)] = &[
        (&["--latency", "0s"], "INVALID_ARGUMENT", "fault.syscall_delay.latency"),
        (
            &["--latency", "50s", "--jitter", "20s"],
            "INVALID_ARGUMENT",
            "fault.syscall_delay.latency",
        ),
        (
            &["--latency", "10ms", "--jitter", "20ms"],
            "INVALID_ARGUMENT",
            "fault.syscall_delay.jitter",
        ),
        (&["--syscall", "getppid"], "INVALID_ARGUMENT", "fault.syscall_delay.syscalls[1]"),
        (&["--percent", "0"], "INVALID_ARGUMENT", "fault.syscall_delay.percent"),
        (&["--percent", "101"], "INVALID_ARGUMENT", "fault.syscall_delay.percent"),
        (&["--every-nth", "0"], "INVALID_ARGUMENT", "fault.syscall_delay.every_nth"),
        (&["--max-hits", "0"], "INVALID_ARGUMENT", "fault.syscall_delay.max_hits"),
        (&["--follow-children"], "INVALID_ARGUMENT", "fault.syscall_delay.follow_children"),
        (&["--path", "data"], "INVALID_ARGUMENT", "fault.syscall_delay.path_prefix"),
        // A prefix must exist (it is matched by identity); path applies to file calls.
        (&["--path", "/fl-no-such-dir"], "INVALID_ARGUMENT", "fault.syscall_delay.path_prefix"),
        (
            &["--syscall", "connect", "--path", "/tmp"],
            "INVALID_ARGUMENT",
            "fault.syscall_delay.path_prefix",
        ),
    ];
    for (extra, code, field) in cases {
        let mut args =
            vec!["sys", "delay", "--cgroup", &cg.rel, "--syscall", "read", "--for", "30s"];
        if !extra.contains(&"--latency") {
            args.extend(["--latency", "100ms"]);
        }
        args.extend_from_slice(extra);
        let out = agent.cli(&args);
        assert!(!out.status.success(), "{args:?} was accepted");
        let line = one_line_error(&out);
        eprintln!("{extra:?} -> {line}");
        assert!(line.contains(code) && line.contains(field), "{extra:?}: {line}");
    }
    let agent_pid = agent.pid().to_string();
    let out = agent.cli(&[
        "sys",
        "delay",
        "--pid",
        &agent_pid,
        "--syscall",
        "read",
        "--latency",
        "1ms",
        "--for",
        "5s",
    ]);
    let line = one_line_error(&out);
    eprintln!("the agent's pid -> {line}");
    assert!(line.contains("target.pid"), "{line}");
    let list = agent.cli_json(&["ls"]);
    assert_eq!(list.as_array().unwrap().len(), 0, "a refused request left {list}");
}

/// At the deadline a thread held for longer runs again (the 3 s count from the request:
/// loading the datapath in a slow guest takes part of them), and nothing of the target is left
/// stopped or traced; the experiment ends as expired. Holds also end on time while the
/// agent is SIGSTOPped (the tracer is its own process, out of the agent's group).
#[test]
fn the_deadline_ends_a_hold_and_a_stopped_agent_does_not_prolong_one() {
    let _alone = serial::alone();
    let agent = Agent::start();
    let cg = Cgroup::new("sddeadline");
    if !supported(&agent, &cg) {
        return;
    }
    let mut p = Timed::start(&cg, 4.5);
    let e = delay(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "read", "--latency", "30s", "--every-nth", "50", "--for", "3s"],
    );
    let id = e["id"].as_str().unwrap().to_string();
    p.go();
    wait_for("A held", Duration::from_secs(2), || state(p.pid, p.tid_a) == Some('t'));
    let v = p.finish();
    assert_untraced(p.pid);
    // Only the long hold: a loaded host has rounds of tens of ms now and then.
    let extras: Vec<f64> = Timed::extras(&v).into_iter().filter(|e| *e > 150.0).collect();
    eprintln!("held {extras:?} ms by a 30 s delay in a 3 s fault");
    assert_eq!(extras.len(), 1, "{v}");
    assert!(extras[0] < 3100.0, "held {} ms past the deadline: {v}", extras[0]);
    wait_for("the experiment to expire", Duration::from_secs(3), || {
        agent.cli_json(&["get", &id])["state"] == "expired"
    });

    let mut p = Timed::start(&cg, 1.5);
    delay(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "read", "--latency", "100ms", "--every-nth", "10", "--for", "60s"],
    );
    agent.signal(libc::SIGSTOP);
    p.go();
    let v = p.finish();
    agent.signal(libc::SIGCONT);
    let extras = Timed::extras(&v);
    eprintln!("with the agent stopped: holds of {extras:?} ms");
    assert!(extras.len() >= 3, "{v}");
    for x in &extras {
        // Stopped, the agent could not end a hold: one that ended is the tracer's doing (a
        // loaded host wakes it late by tens of ms, never by the next hold's 100).
        assert!((90.0..=400.0).contains(x), "a hold of {x} ms with the agent stopped: {v}");
    }
}

/// connect() to a listening socket takes 1 s more.
#[test]
fn connect_takes_a_second_longer() {
    let _alone = serial::alone();
    let agent = Agent::start();
    let cg = Cgroup::new("sdconnect");
    if !supported(&agent, &cg) {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    delay(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "connect", "--latency", "1s", "--for", "60s"],
    );
    let w = Waiting::start(&cg, &["calls", "connect", &addr, "2"]);
    let pid: i32 = w.pid.parse().unwrap();
    wait_seized(&agent, pid);
    let v = w.release();
    let ms = ms_list(&v);
    eprintln!("connect ms: {ms:?}");
    assert_eq!(v["ok"], 2, "{v}");
    for m in &ms {
        assert!((1000.0..=1100.0).contains(m), "a connect took {m} ms: {v}");
    }
    drop(listener);
}

/// The agent exiting (SIGTERM) ends the fault: a held thread runs again and nothing is left
/// traced.
#[test]
fn agent_exit_releases_a_held_thread() {
    let _alone = serial::alone();
    let Some((mut agent, _cg, mut p)) = held_for_5s("sdexit") else { return };
    let t0 = Instant::now();
    agent.signal(libc::SIGTERM);
    assert!(agent.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "exit");
    eprintln!("the agent exited {:?} after SIGTERM", t0.elapsed());
    assert_untraced(p.pid);
    let v = p.finish();
    let held: Vec<f64> = Timed::extras(&v).into_iter().filter(|e| *e > 150.0).collect();
    assert_eq!(held.len(), 1, "{v}");
    assert!(held[0] < 2000.0, "held {} ms of 5 s across the agent's exit: {v}", held[0]);
}

/// A pid target with --follow-children: the child it forks (and execs) while the fault lasts
/// is delayed; without the flag the child is not (it is still followed by the tracer, so it
/// shows a TracerPid, but no rule covers it).
#[test]
fn a_pid_target_follows_children_only_when_asked() {
    let _alone = serial::alone();
    let agent = Agent::start();
    let cg = Cgroup::new("sdfollow");
    if !supported(&agent, &cg) {
        return;
    }
    let dir = TempDir::new("follow");
    let file = dir.path().join("f").display().to_string();
    for (follow, delayed) in [(true, true), (false, false)] {
        let w = Waiting::start(&cg, &["spawn", "calls", "fsync", &file, "3"]);
        let mut rest = vec!["--syscall", "fsync", "--latency", "200ms", "--for", "60s"];
        if follow {
            rest.push("--follow-children");
        }
        let e = delay(&agent, &["--pid", &w.pid], &rest);
        let v = w.release();
        let ms = ms_list(&v);
        eprintln!("follow {follow}: the child's fsync ms {ms:?}");
        assert_eq!(ms.len(), 3, "{v}");
        for m in &ms {
            assert_eq!(*m >= 200.0, delayed, "follow {follow}: an fsync took {m} ms: {v}");
        }
        agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    }
}

/// A process that leaves a cgroup target is let go (untraced within a rescan or two); a
/// second delay fault on processes the first one holds is refused, saying so.
#[test]
fn a_process_that_leaves_is_let_go_and_a_second_fault_is_refused() {
    let agent = Agent::start();
    let cg = Cgroup::new("sdleave");
    let other = Cgroup::new("sdleave-other");
    if !supported(&agent, &cg) {
        return;
    }
    let p = Timed::start(&cg, 5.0);
    delay(
        &agent,
        &["--cgroup", &cg.rel],
        &["--syscall", "fsync", "--latency", "10ms", "--for", "60s"],
    );
    assert!(p.traced());
    let out = agent.cli(&[
        "sys",
        "delay",
        "--pid",
        &p.pid.to_string(),
        "--syscall",
        "read",
        "--latency",
        "10ms",
        "--for",
        "60s",
    ]);
    let err = one_line_error(&out);
    eprintln!("a second fault: {err}");
    assert!(err.contains("FAILED_PRECONDITION") && err.contains("another sys delay"), "{err}");
    std::fs::write(other.fs.join("cgroup.procs"), p.pid.to_string()).unwrap();
    let t0 = Instant::now();
    let untraced = || tids(p.pid).iter().all(|t| tracer_of(p.pid, *t) == 0);
    wait_for("the leaver to be let go", Duration::from_secs(2), untraced);
    eprintln!("let go {:?} after it left", t0.elapsed());
    assert_untraced(p.pid);
}

/// `--path`: half of thread A's opens of a file under the directory, and of its preads and
/// pwrites through a descriptor opened before the fault began, take 100 ms longer; the same
/// calls on a file outside it (in a directory whose name starts with the prefix's), and B's
/// calls, take no longer. The prefix is matched in the kernel by the directory's identity,
/// walking up from the descriptor's file.
#[test]
fn half_of_the_calls_under_a_path_take_100ms_longer_and_none_outside() {
    let _alone = serial::alone();
    let agent = Agent::start();
    let cg = Cgroup::new("sdpath");
    if !supported(&agent, &cg) {
        return;
    }
    let tmp = TempDir::new("sdpath");
    let (data, other) = (tmp.path().join("data"), tmp.path().join("database"));
    assert!(other.to_str().unwrap().starts_with(data.to_str().unwrap()));
    // The file under the prefix lies on another filesystem mounted below it: the walk
    // crosses the mount.
    let mnt = data.join("deep/er");
    std::fs::create_dir_all(&mnt).unwrap();
    std::fs::create_dir_all(&other).unwrap();
    let _tmpfs = Tmpfs::at(&mnt, "1m");
    std::fs::create_dir_all(mnt.join("d")).unwrap();
    let (inside, outside) = (mnt.join("d/f"), other.join("f"));
    for f in [&inside, &outside] {
        std::fs::write(f, [0u8; 4096]).unwrap();
    }
    let (inside, outside) = (inside.to_str().unwrap(), outside.to_str().unwrap());
    let mut p = Timed::start_with(&cg, 3.0, &[inside, outside]);
    let e = delay(
        &agent,
        &["--cgroup", &cg.rel],
        &[
            "--syscall",
            // open: a static musl build (the VM tier's) opens with open(2), glibc with openat.
            "open,openat,pread64,pwrite64",
            "--path",
            data.to_str().unwrap(),
            "--latency",
            "100ms",
            "--percent",
            "50",
            "--for",
            "60s",
        ],
    );
    let id = e["id"].as_str().unwrap().to_string();
    p.go();
    let v = p.finish();
    eprintln!("target: {v}");
    let long = v["long"].as_array().unwrap();
    let outside_long: Vec<_> = long.iter().filter(|r| r["file"] == "out").collect();
    assert!(outside_long.is_empty(), "calls outside the path were delayed: {outside_long:?}");
    // The calls' own median is an undelayed one (fewer than half of all calls are delayed).
    let base = v["median_ms"].as_f64().unwrap();
    let extras: Vec<f64> = long
        .iter()
        .filter(|r| r["file"] == "in")
        .map(|r| r["ms"].as_f64().unwrap() - base)
        .filter(|e| *e > 50.0)
        .collect();
    let calls_in = v["calls_in"].as_u64().unwrap();
    let share = extras.len() as f64 / calls_in as f64;
    let m = median(extras.clone());
    eprintln!(
        "{} of {calls_in} calls under the path delayed, median added {m:.1} ms",
        extras.len()
    );
    assert!(calls_in >= 20, "{v}");
    assert!((0.25..=0.75).contains(&share), "{} of {calls_in} delayed", extras.len());
    assert!((90.0..=110.0).contains(&m), "median added {m} ms");
    std::thread::sleep(Duration::from_millis(600));
    let got = agent.cli_json(&["get", &id]);
    let (seen, delayed) = (counter(&got, "calls_seen"), counter(&got, "calls_delayed"));
    eprintln!("counters: seen {seen} delayed {delayed}");
    // Only calls under the path are seen.
    assert!(seen.abs_diff(calls_in) <= 2, "seen {seen}, {calls_in} calls under the path: {got}");
    assert!(delayed.abs_diff(extras.len() as u64) <= 2, "{got}");
    agent.cli_json(&["cancel", &id]);
}
