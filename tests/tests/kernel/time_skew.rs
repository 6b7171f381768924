//! `faultline time skew`: the clock of a target's processes reads the offset through every
//! vDSO path (clock_gettime, gettimeofday, time), in processes running before the fault and in
//! programs they exec or fork during it; a process outside reads true time; at Cancel, at the
//! deadline and when the agent is SIGKILLed, true time comes back and nothing stays traced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use faultline_tests::{Agent, Cgroup, clock::ClockServer, one_line_error, threads::Traced};

const TEN_MIN_BEHIND: f64 = -600_000.0;

fn tracer_of(pid: i32) -> i32 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix("TracerPid:")).unwrap().trim().parse().unwrap()
}

fn skew(agent: &Agent, target: &[&str], rest: &[&str]) -> serde_json::Value {
    let mut args = vec!["time", "skew"];
    args.extend_from_slice(target);
    args.extend_from_slice(rest);
    agent.cli_json(&args)
}

/// Reads until the clock is back to true time, or panics after `within`.
fn true_time_within(c: &mut ClockServer, within: Duration, what: &str) -> Duration {
    let t0 = Instant::now();
    loop {
        let r = c.read();
        let tol = 50.0 + r.rtt_ms / 2.0;
        if [r.vdso_ms, r.gettimeofday_ms, r.raw_ms, r.raw_gettimeofday_ms]
            .iter()
            .all(|v| v.abs() < tol)
        {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < within, "{what}: still {:.0} ms off after {within:?}", r.vdso_ms);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The offset the raw system calls read: the experiment's, where the kernel lets the
/// programs write a call's result (caps row time_raw_syscall; refused under lockdown) once
/// they are attached (the backend says so: the first experiment loads them, seconds under
/// emulation), else none.
fn raw_offset(agent: &Agent, id: &str, offset_ms: f64) -> f64 {
    if !agent.supports("time_raw_syscall") {
        let got = agent.cli_json(&["get", id]);
        assert_eq!(got["backend"], "vdso_patch", "{got}");
        return 0.0;
    }
    let t0 = Instant::now();
    loop {
        let got = agent.cli_json(&["get", id]);
        if got["backend"] == "vdso_patch+fexit" {
            eprintln!("raw clock calls shifted {:?} after the fault started", t0.elapsed());
            return offset_ms;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "raw path never attached: {got}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The id of the one active experiment.
fn active_id(agent: &Agent) -> String {
    let list = agent.cli_json(&["ls"]);
    let active: Vec<&serde_json::Value> =
        list.as_array().unwrap().iter().filter(|e| e["state"] == "active").collect();
    assert_eq!(active.len(), 1, "one active experiment: {list}");
    active[0]["id"].as_str().unwrap().to_string()
}

fn untraced_within(pid: i32, within: Duration, what: &str) {
    let t0 = Instant::now();
    while tracer_of(pid) != 0 {
        assert!(t0.elapsed() < within, "{what}: still traced after {within:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn running_processes_read_ten_minutes_behind_and_true_time_after_cancel() {
    let agent = Agent::start();
    let cg = Cgroup::new("skew");
    let mut inside = ClockServer::start(Some(&cg));
    let mut outside = ClockServer::start(None);
    inside.read().assert_off_by(0.0, "before the fault");
    let e = skew(&agent, &["--cgroup", &cg.rel], &["--offset", "-10m", "--for", "60s"]);
    let id = e["id"].as_str().unwrap();
    let r = inside.read();
    eprintln!("inside: {r:?}");
    r.assert_off_by(TEN_MIN_BEHIND, "a process running before the fault");
    let raw_off = raw_offset(&agent, id, TEN_MIN_BEHIND);
    let r = inside.read();
    r.assert_raw_off_by(raw_off, "raw clock calls of a process running before the fault");
    let o = outside.read();
    o.assert_off_by(0.0, "a process outside the target");
    o.assert_raw_off_by(0.0, "raw clock calls of a process outside the target");
    // A program exec'd in the target and a child it forks and execs read the offset too.
    let c = inside.child_reads();
    c.assert_off_by(TEN_MIN_BEHIND, "a child forked and exec'd in the target");
    c.assert_raw_off_by(raw_off, "raw clock calls of a child forked and exec'd in the target");
    let x = inside.exec_then_read();
    x.assert_off_by(TEN_MIN_BEHIND, "a program exec'd in the target");
    x.assert_raw_off_by(raw_off, "raw clock calls of a program exec'd in the target");
    assert_ne!(tracer_of(inside.pid), 0, "the skewer follows the process");
    // The counters are read from the skewer every 250 ms.
    let t0 = Instant::now();
    let got = loop {
        let got = agent.cli_json(&["get", id, "-o", "json"]);
        if got["counters"]["skewed_reads"] == 1 && got["counters"]["processes_skewed"] == 2
            || t0.elapsed() > Duration::from_secs(2)
        {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("counters: {}", got["counters"]);
    assert!(got["counters"]["processes_skewed"].as_u64().unwrap() >= 2, "{got}");
    assert_eq!(got["counters"]["skewed_reads"], 1, "{got}");
    assert!(got["first_hit_at"].is_string(), "{got}");
    agent.cli(&["cancel", id]);
    let r = inside.read();
    r.assert_off_by(0.0, "after Cancel");
    r.assert_raw_off_by(0.0, "raw clock calls after Cancel");
    assert_eq!(tracer_of(inside.pid), 0, "still traced after Cancel");
    outside.read().assert_off_by(0.0, "outside, after Cancel");
}

/// A static Go program (its runtime calls the vDSO from its own stack switch, on several
/// threads) reads the offset through time.Now, syscall.Gettimeofday and syscall.Time, and
/// through the raw calls where the kernel allows.
#[test]
fn a_go_program_reads_the_offset_and_true_time_after_cancel() {
    let agent = Agent::start();
    let cg = Cgroup::new("skewgo");
    let mut go = ClockServer::start_go(Some(&cg));
    go.read().assert_off_by(0.0, "Go, before the fault");
    let e = skew(&agent, &["--cgroup", &cg.rel], &["--offset", "-10m", "--for", "60s"]);
    let raw_off = raw_offset(&agent, e["id"].as_str().unwrap(), TEN_MIN_BEHIND);
    for i in 0..20 {
        let r = go.read();
        r.assert_off_by(TEN_MIN_BEHIND, &format!("Go, read {i} during the fault"));
        r.assert_raw_off_by(raw_off, &format!("Go's raw clock calls, read {i}"));
    }
    agent.cli(&["cancel", e["id"].as_str().unwrap()]);
    let r = go.read();
    r.assert_off_by(0.0, "Go, after Cancel");
    r.assert_raw_off_by(0.0, "Go's raw clock calls, after Cancel");
    assert_eq!(tracer_of(go.pid), 0, "still traced after Cancel");
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill with integer arguments, to a child of this test.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
}

/// A process stopped by SIGSTOP when the fault starts, or when it is cancelled, stays
/// stopped (patching it does not run it, nor does letting it go); once continued it reads
/// the offset, and true time after the Cancel.
#[test]
fn a_stopped_process_stays_stopped_through_patch_and_cancel() {
    let agent = Agent::start();
    let cg = Cgroup::new("skewstop");
    let mut c = ClockServer::start(Some(&cg));
    signal(c.pid, libc::SIGSTOP);
    let asked = c.ask_later();
    assert!(!c.answers_within(Duration::from_millis(200)), "a stopped process answered");
    let e = skew(&agent, &["--cgroup", &cg.rel], &["--offset", "-10m", "--for", "60s"]);
    assert!(
        !c.answers_within(Duration::from_millis(500)),
        "the stopped process ran while it was being patched"
    );
    signal(c.pid, libc::SIGCONT);
    // Its reading was taken after SIGCONT: during the fault (the round trip spans the stop).
    c.answer(asked).assert_off_by(TEN_MIN_BEHIND, "continued after the patch");
    c.read().assert_off_by(TEN_MIN_BEHIND, "a stopped-then-continued process");

    signal(c.pid, libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(100));
    let asked = c.ask_later();
    agent.cli(&["cancel", e["id"].as_str().unwrap()]);
    assert!(
        !c.answers_within(Duration::from_millis(500)),
        "the stopped process ran when the skew was undone"
    );
    untraced_within(c.pid, Duration::from_secs(1), "stopped, after Cancel");
    signal(c.pid, libc::SIGCONT);
    c.answer(asked).assert_off_by(0.0, "continued after the Cancel");
}

/// The threads of a frozen cgroup take no ptrace stop (the patch needs one): the experiment
/// is refused at once, naming the freezer, and the processes run on untraced once thawed.
#[test]
fn a_frozen_target_is_refused_and_left_as_it_was() {
    let agent = Agent::start();
    let cg = Cgroup::new("skewfrozen");
    let mut c = ClockServer::start(Some(&cg));
    std::fs::write(cg.fs.join("cgroup.freeze"), "1").unwrap();
    let t0 = Instant::now();
    let out = agent.cli(&["time", "skew", "--cgroup", &cg.rel, "--offset", "-10m", "--for", "60s"]);
    let err = one_line_error(&out);
    let took = t0.elapsed();
    eprintln!("refused after {took:?}: {err}");
    assert!(err.contains("frozen") && err.contains("cgroup.freeze"), "{err}");
    assert!(took < Duration::from_secs(10), "refusal took {took:?}");
    assert_eq!(agent.cli_json(&["ls"]).as_array().unwrap().len(), 0, "nothing applied");
    std::fs::write(cg.fs.join("cgroup.freeze"), "0").unwrap();
    untraced_within(c.pid, Duration::from_secs(2), "thawed after the refusal");
    c.read().assert_off_by(0.0, "thawed after the refusal");
}

#[test]
fn a_pid_target_shifts_that_process_only_and_date_shows_it() {
    let agent = Agent::start();
    let cg = Cgroup::new("skewpid");
    let mut target = ClockServer::start(Some(&cg));
    let mut sibling = ClockServer::start(Some(&cg));
    let pid = target.pid.to_string();
    skew(&agent, &["--pid", &pid], &["--offset", "+2h", "--for", "60s"]);
    target.read().assert_off_by(7_200_000.0, "the pid target");
    sibling.read().assert_off_by(0.0, "another process of the same cgroup");
    // Without --follow-children a child keeps true time.
    target.child_reads().assert_off_by(0.0, "a child without --follow-children");
}

#[test]
fn the_deadline_and_a_killed_agent_bring_true_time_back() {
    let mut agent = Agent::start();
    let cg = Cgroup::new("skewend");
    let mut c = ClockServer::start(Some(&cg));
    skew(&agent, &["--cgroup", &cg.rel], &["--offset", "-10m", "--for", "2s"]);
    c.read().assert_off_by(TEN_MIN_BEHIND, "during a 2 s fault");
    let waited = true_time_within(&mut c, Duration::from_secs(5), "at the deadline");
    eprintln!("true time {waited:?} after the first read (deadline 2 s)");
    untraced_within(c.pid, Duration::from_millis(500), "after the deadline");

    skew(&agent, &["--cgroup", &cg.rel], &["--offset", "-10m", "--for", "60s"]);
    c.read().assert_off_by(TEN_MIN_BEHIND, "before the agent is killed");
    agent.signal(libc::SIGKILL);
    let back = true_time_within(&mut c, Duration::from_secs(1), "after SIGKILL of the agent");
    eprintln!("true time {back:?} after SIGKILL");
    untraced_within(c.pid, Duration::from_secs(1), "after the agent died");
    // The next start resumes the experiment for its remaining time, as every fault.
    agent.restart();
    c.read().assert_off_by(TEN_MIN_BEHIND, "resumed after the restart");
    // The 2 s experiment may be listed too (expired while the agent was down, if the kill
    // came before its end reached the journal): the active one is the resumed one.
    agent.cli(&["cancel", &active_id(&agent)]);
    c.read().assert_off_by(0.0, "after Cancel of the resumed experiment");
    assert_eq!(tracer_of(c.pid), 0, "still traced after Cancel");
}

#[test]
fn bad_offsets_clocks_and_traced_processes_are_refused() {
    let agent = Agent::start();
    let cg = Cgroup::new("skewbad");
    let _c = ClockServer::start(Some(&cg));
    for (args, code, field) in [
        (vec!["--offset", "0s"], "INVALID_ARGUMENT", "fault.time_skew.offset"),
        (vec!["--offset", "+11y"], "INVALID_ARGUMENT", "fault.time_skew.offset"),
        (
            vec!["--offset", "-1m", "--clocks", "monotonic"],
            "INVALID_ARGUMENT",
            "fault.time_skew.clocks",
        ),
    ] {
        let mut full = vec!["time", "skew", "--cgroup", &cg.rel];
        full.extend(&args);
        let out = agent.cli(&full);
        assert!(!out.status.success(), "{full:?} was accepted");
        let line = one_line_error(&out);
        assert!(line.contains(code) && line.contains(field), "{full:?}: {line}");
    }
    let own = agent.pid().to_string();
    let line = one_line_error(&agent.cli(&["time", "skew", "--pid", &own, "--offset", "-1m"]));
    assert!(line.contains("INVALID_ARGUMENT") || line.contains("PERMISSION_DENIED"), "{line}");
    let traced = Traced::start(Some(&cg));
    let line =
        one_line_error(&agent.cli(&["time", "skew", "--cgroup", &cg.rel, "--offset", "-1m"]));
    eprintln!("{line}");
    assert!(line.contains("FAILED_PRECONDITION") && line.contains("traced by"), "{line}");
    let list = agent.cli_json(&["ls"]);
    assert_eq!(list.as_array().unwrap().len(), 0, "a refused request left an experiment: {list}");
    drop(traced);
}

/// A process that joins a running experiment's cgroup but cannot be shifted (traced by
/// another tracer) keeps true time; the experiment goes on, counts it and says why.
#[test]
fn a_newcomer_that_cannot_be_shifted_is_counted_and_named() {
    let agent = Agent::start();
    let cg = Cgroup::new("skewnew");
    let mut c = ClockServer::start(Some(&cg));
    let e = skew(&agent, &["--cgroup", &cg.rel], &["--offset", "-10m", "--for", "60s"]);
    let id = e["id"].as_str().unwrap();
    let traced = Traced::start(Some(&cg));
    let t0 = Instant::now();
    let got = loop {
        let got = agent.cli_json(&["get", id]);
        if got["counters"]["processes_unskewed"] == 1 || t0.elapsed() > Duration::from_secs(10) {
            break got;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!("{got}");
    assert_eq!(got["counters"]["processes_unskewed"], 1, "{got}");
    let note = got["note"].as_str().unwrap_or_default();
    assert!(note.contains(&traced.pid.to_string()) && note.contains("traced by"), "{got}");
    assert_eq!(got["state"], "active", "{got}");
    c.read().assert_off_by(TEN_MIN_BEHIND, "a process shifted before the newcomer came");
    let text = String::from_utf8(agent.cli(&["get", id]).stdout).unwrap();
    assert!(text.contains("note") && text.contains("traced by"), "{text}");
    drop(traced);
}

/// Injects and cancels again and again while two threads read the clock as fast as they can:
/// every read is true time or the shifted one, and the reader never crashes (50 cycles;
/// FL_SKEW_CYCLES=1000 for the full run).
#[test]
fn many_inject_cancel_cycles_never_give_a_torn_or_wrong_read() {
    let agent = Agent::start();
    let cg = Cgroup::new("skewcycle");
    let cycles = std::env::var("FL_SKEW_CYCLES").ok().and_then(|c| c.parse().ok()).unwrap_or(50);
    let mut spin = cg
        .command(faultline_tests::probe_bin())
        .args(["clock-spin", "-600000"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let pid = spin.id().to_string();
    for _ in 0..cycles {
        let e = skew(&agent, &["--pid", &pid], &["--offset", "-10m", "--for", "60s"]);
        agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    }
    assert_eq!(tracer_of(spin.id() as i32), 0, "still traced after the last Cancel");
    use std::io::Write as _;
    spin.stdin.take().unwrap().write_all(b"stop\n").unwrap();
    let out = spin.wait_with_output().unwrap();
    assert!(out.status.success(), "the reader died: {out:?}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!("{cycles} inject/cancel cycles: {r}");
    assert_eq!(r["bad"], 0, "reads neither true nor shifted: {r}");
    assert!(r["shifted"].as_u64().unwrap() > 0, "no read was shifted: {r}");
}

/// The skewer's pid: the agent's child running `__time-skew`.
fn skewer_of(agent: i32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let ppid: i32 = ppid.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == agent && cmd.windows(11).any(|w| w == b"__time-skew")).then_some(pid)
    })
}

/// Whether `pid`'s vDSO clock_gettime still starts with the skewer's jump.
fn entry_patched(pid: i32) -> bool {
    use std::os::unix::fs::FileExt as _;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let line = maps.lines().find(|l| l.ends_with("[vdso]")).unwrap();
    let (a, b) = line.split_whitespace().next().unwrap().split_once('-').unwrap();
    let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
    let mut image = vec![0u8; (b - a) as usize];
    std::fs::File::open(format!("/proc/{pid}/mem")).unwrap().read_exact_at(&mut image, a).unwrap();
    // The jump: `movabs rax, imm64; jmp rax` (48 b8 .. ff e0), which no vDSO has itself.
    image.windows(12).any(|w| w[0] == 0x48 && w[1] == 0xb8 && w[10] == 0xff && w[11] == 0xe0)
}

/// Agent and skewer killed together (the agent stopped first, so that nothing of it reacts):
/// the lease runs out, true time within 1 s; the next start resumes the experiment by taking
/// over the mapping left in the process, and its Cancel writes the vDSO back. Alone: any
/// agent's start writes back what it finds left on the host, this test's process included.
#[test]
fn a_killed_skewer_leaves_true_time_and_the_next_start_takes_over() {
    let _alone = faultline_tests::serial::alone();
    let mut agent = Agent::start();
    let cg = Cgroup::new("skewkill");
    let mut c = ClockServer::start(Some(&cg));
    skew(&agent, &["--cgroup", &cg.rel], &["--offset", "-10m", "--for", "60s"]);
    c.read().assert_off_by(TEN_MIN_BEHIND, "before the kill");
    let skewer = skewer_of(agent.pid()).expect("the skewer process");
    agent.signal(libc::SIGSTOP);
    // SAFETY: signalling the agent's child, a process of this test.
    unsafe { libc::kill(skewer, libc::SIGKILL) };
    agent.signal(libc::SIGKILL);
    let back = true_time_within(&mut c, Duration::from_secs(1), "after the skewer was killed");
    eprintln!("true time {back:?} after SIGKILL of the skewer (lease 750 ms)");
    assert!(entry_patched(c.pid), "the jump stays (inert) until a skewer comes back");
    untraced_within(c.pid, Duration::from_secs(1), "after the skewer died");
    agent.restart();
    c.read().assert_off_by(TEN_MIN_BEHIND, "resumed, the mapping taken over");
    agent.cli(&["cancel", &active_id(&agent)]);
    c.read().assert_off_by(0.0, "after Cancel");
    assert!(!entry_patched(c.pid), "the vDSO is written back at Cancel");

    // Killed the same way, but the experiment ends while no agent runs: the next start finds
    // the jump left in the process and writes the vDSO back.
    skew(&agent, &["--cgroup", &cg.rel], &["--offset", "-10m", "--for", "2s"]);
    c.read().assert_off_by(TEN_MIN_BEHIND, "a 2 s fault");
    let skewer = skewer_of(agent.pid()).expect("the skewer process");
    agent.signal(libc::SIGSTOP);
    // SAFETY: as above.
    unsafe { libc::kill(skewer, libc::SIGKILL) };
    agent.signal(libc::SIGKILL);
    std::thread::sleep(Duration::from_millis(2500));
    assert!(entry_patched(c.pid), "left behind by the killed skewer");
    agent.restart();
    assert!(!entry_patched(c.pid), "the next start writes the vDSO back");
    c.read().assert_off_by(0.0, "after the repair");
    assert_eq!(tracer_of(c.pid), 0, "traced after the repair");
}
