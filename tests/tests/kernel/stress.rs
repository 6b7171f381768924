//! Stress workers, measured through the target cgroup's own files (never through the agent):
//! cgroup2's cpu.stat on both layouts; memory from memory.current (pure v2) or the v1 memory
//! cgroup's memory.usage_in_bytes (hybrid hosts such as this one).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::Command,
    time::{Duration, Instant},
};

use faultline_tests::{
    Agent, Cgroup, TempDir, one_line_error,
    stress::{Mem, SmallFs, V1, pure_v2, v1_mount},
};

/// The tests here measure CPU, memory and disk of the whole machine's share: each runs alone,
/// so that no other test's workers or traffic take the CPU or the device it measures.
fn serial() -> faultline_tests::serial::Alone {
    faultline_tests::serial::alone()
}

fn stress(agent: &Agent, cg: &Cgroup, args: &[&str]) -> serde_json::Value {
    let mut a = vec!["stress"];
    a.extend_from_slice(&args[..1]);
    a.extend_from_slice(&["--cgroup", &cg.rel]);
    a.extend_from_slice(&args[1..]);
    agent.cli_json(&a)
}

#[test]
fn cpu_50_percent_of_one_worker_for_5s_uses_2_5_cpu_seconds() {
    let _serial = serial();
    let agent = Agent::start();
    let cg = Cgroup::new("cpu50");
    let before = cg.cpu_usage_s();
    let e = stress(&agent, &cg, &["cpu", "--workers", "1", "--load", "50", "--for", "5s"]);
    assert_eq!(cg.procs().len(), 1, "one worker in the cgroup");
    std::thread::sleep(Duration::from_secs(5));
    let end = agent.wait_ended(e["id"].as_str().unwrap(), Duration::from_secs(15));
    let used = cg.cpu_usage_s() - before;
    eprintln!(
        "cpu 50% x 1 for 5 s: cgroup used {used:.3} s (asked 2.5); agent saw {}",
        end["counters"]
    );
    assert_eq!(end["state"], "expired", "{end}");
    assert!((2.25..=2.75).contains(&used), "asked 2.5 s of CPU, the cgroup used {used:.3} s");
    assert!(cg.procs().is_empty(), "workers left after the end: {:?}", cg.procs());
    if !pure_v2() {
        let alongside = v1_mount("cpu").join(cg.rel.trim_start_matches('/'));
        assert!(!alongside.exists(), "the v1 cgroup created alongside was not removed");
    }
}

#[test]
fn cpu_80_percent_under_a_half_cpu_quota_is_0_4_cpu() {
    let _serial = serial();
    let agent = Agent::start();
    let cg = Cgroup::new("cpuquota");
    let _v1 = if pure_v2() {
        std::fs::write(cg.fs.join("cpu.max"), "50000 100000").unwrap();
        None
    } else {
        let v1 = V1::new("cpu", &cg);
        std::fs::write(v1.dir.join("cpu.cfs_period_us"), "100000").unwrap();
        std::fs::write(v1.dir.join("cpu.cfs_quota_us"), "50000").unwrap();
        Some(v1)
    };
    let before = cg.cpu_usage_s();
    let e = stress(&agent, &cg, &["cpu", "--load", "80", "--for", "5s"]);
    std::thread::sleep(Duration::from_secs(5));
    agent.wait_ended(e["id"].as_str().unwrap(), Duration::from_secs(15));
    let cpus = (cg.cpu_usage_s() - before) / 5.0;
    eprintln!("cpu 80% with a 0.5 CPU quota: {cpus:.3} CPU (asked 0.4)");
    assert!((0.36..=0.44).contains(&cpus), "asked 0.4 CPU, got {cpus:.3}");
}

#[test]
fn memory_256mib_is_resident_in_the_cgroup_and_given_back() {
    let _serial = serial();
    let agent = Agent::start();
    let cg = Cgroup::new("mem");
    let mem = Mem::new(&cg);
    let before = mem.current();
    let e = stress(&agent, &cg, &["mem", "--size", "256mb", "--for", "60s"]);
    let id = e["id"].as_str().unwrap().to_string();
    let start = Instant::now();
    let mut grew = 0;
    // Generous: a TCG guest under load touches 256 MiB in 2 s or more. How fast is not the
    // point; that every page becomes resident in the target cgroup is.
    while start.elapsed() < Duration::from_secs(30) {
        grew = mem.current().saturating_sub(before);
        if grew >= 256 << 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = start.elapsed();
    let got = agent.cli_json(&["get", &id]);
    eprintln!(
        "memory 256 MiB: cgroup +{} MiB after {:.2} s; agent reports {} bytes resident",
        grew >> 20,
        took.as_secs_f64(),
        got["counters"]["bytes_resident"]
    );
    assert!(grew >= 256 << 20, "the cgroup grew by {} MiB only", grew >> 20);
    agent.cli_json(&["cancel", &id]);
    agent.wait_ended(&id, Duration::from_secs(10));
    let after = mem.current();
    eprintln!("after the end: {} MiB above the start", after.saturating_sub(before) >> 20);
    assert!(after < before + (16 << 20), "memory not given back: {after} vs {before}");
}

#[test]
fn on_a_hybrid_host_workers_join_the_v1_cgroups_of_the_targets_processes() {
    let _serial = serial();
    if pure_v2() {
        eprintln!("pure cgroup v2: there are no v1 hierarchies to join");
        return;
    }
    let agent = Agent::start();
    let cg = Cgroup::new("member");
    // A container's process: its v1 memory cgroup is not at the cgroup2 path.
    let elsewhere = V1 {
        dir: v1_mount("memory").join(format!("faultline-it-elsewhere-{}", std::process::id())),
    };
    std::fs::create_dir_all(&elsewhere.dir).unwrap();
    let mut member = cg.command("sleep").arg("30").spawn().unwrap();
    std::fs::write(elsewhere.dir.join("cgroup.procs"), member.id().to_string()).unwrap();
    let usage = || -> u64 {
        std::fs::read_to_string(elsewhere.dir.join("memory.usage_in_bytes"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = usage();
    let e = stress(&agent, &cg, &["mem", "--size", "64mb", "--for", "3s"]);
    let start = Instant::now();
    let mut grew = 0;
    while start.elapsed() < Duration::from_secs(2) && grew < 64 << 20 {
        std::thread::sleep(Duration::from_millis(50));
        grew = usage().saturating_sub(before);
    }
    eprintln!("the member's v1 memory cgroup grew by {} MiB", grew >> 20);
    let alongside = v1_mount("memory").join(cg.rel.trim_start_matches('/'));
    assert!(!alongside.exists(), "nothing is created alongside when a member shows the way");
    agent.wait_ended(e["id"].as_str().unwrap(), Duration::from_secs(10));
    let _ = member.kill();
    let _ = member.wait();
    assert!(grew >= 64 << 20, "the workers did not join the member's v1 memory cgroup");
}

/// Found by the crash campaign: two stress faults on one target whose processes have no v1
/// cgroups. The first makes the v1 cgroups the workers join; ended first, it cannot remove
/// them (the second's workers are in them); they went only at the agent's next start. The
/// last fault to end removes them now, and their journal record with them.
#[test]
fn v1_cgroups_made_for_one_stress_fault_go_with_the_last_fault_on_the_target() {
    let _serial = serial();
    if pure_v2() {
        eprintln!("pure cgroup v2: no v1 cgroups are made");
        return;
    }
    let agent = Agent::start();
    let cg = Cgroup::new("v1-shared");
    let made = v1_mount("memory").join(cg.rel.trim_start_matches('/'));
    let first = stress(&agent, &cg, &["cpu", "--load", "5", "--workers", "1", "--for", "60s"]);
    assert!(made.exists(), "no v1 cgroup was made for a target without v1 cgroups");
    let second = stress(&agent, &cg, &["mem", "--size", "16mb", "--for", "60s"]);
    let records = || std::fs::read_dir(agent.state_dir.join("stress")).map_or(0, |d| d.count());
    assert_eq!(records(), 1);
    agent.cli_json(&["cancel", first["id"].as_str().unwrap()]);
    assert!(made.exists(), "removed under the second fault's workers");
    agent.cli_json(&["cancel", second["id"].as_str().unwrap()]);
    assert!(!made.exists(), "the v1 cgroup outlived every fault on the target");
    assert_eq!(records(), 0, "its journal record outlived it");
}

#[test]
fn a_worker_killed_by_the_cgroup_oom_killer_fails_the_experiment() {
    let _serial = serial();
    let agent = Agent::start();
    let cg = Cgroup::new("oom");
    let mem = Mem::new(&cg);
    mem.limit(64 << 20);
    let e = stress(&agent, &cg, &["mem", "--size", "256mb", "--for", "30s"]);
    let end = agent.wait_ended(e["id"].as_str().unwrap(), Duration::from_secs(10));
    eprintln!("256 MiB under a 64 MiB limit: {} ({})", end["state"], end["reason"]);
    assert_eq!(end["state"], "failed", "{end}");
    assert_eq!(end["reason"], "oom-killed", "{end}");
    assert!(cg.procs().is_empty(), "workers left: {:?}", cg.procs());
    assert!(agent.cli(&["caps"]).status.success(), "the agent keeps serving");
}

#[test]
fn disk_fill_to_90_percent_and_the_space_comes_back() {
    let _serial = serial();
    let agent = Agent::start();
    let cg = Cgroup::new("fill");
    let fs = SmallFs::new();
    let before = fs.used_percent();
    let path = fs.dir.path().display().to_string();
    let e = stress(&agent, &cg, &["disk", "--path", &path, "--percent", "90", "--for", "3s"]);
    let start = Instant::now();
    let mut during = fs.used_percent();
    while during < 90.0 && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(50));
        during = fs.used_percent();
    }
    let df = Command::new("df").arg(&path).output().unwrap();
    let df = String::from_utf8_lossy(&df.stdout).lines().last().unwrap_or_default().to_string();
    eprintln!(
        "disk fill 90% ({}): used {before:.1}% -> {during:.1}%; df: {df}",
        if fs.image.is_some() { "ext4 on loop" } else { "tmpfs" }
    );
    assert!(during >= 90.0, "asked 90%, the filesystem is {during:.1}% used");
    agent.wait_ended(e["id"].as_str().unwrap(), Duration::from_secs(10));
    let after = fs.used_percent();
    eprintln!("after the end: {after:.1}%");
    assert!(after < before + 1.0, "space not given back: {after:.1}% (was {before:.1}%)");
    assert_eq!(
        std::fs::read_dir(fs.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".faultline"))
            })
            .count(),
        0,
        "no file left behind"
    );
}

/// Sectors read and written by the block device behind a mount point (None: not a block
/// device, such as a tmpfs).
fn device_bytes(mount: &std::path::Path) -> Option<(u64, u64)> {
    let mounts = faultline_host::mountinfo::read().ok()?;
    let source = &faultline_host::mountinfo::at(&mounts, mount)?.source;
    let dev = source.strip_prefix("/dev/")?;
    let stat = std::fs::read_to_string(format!("/sys/block/{dev}/stat")).ok()?;
    let f: Vec<u64> = stat.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    Some((f.get(2)? * 512, f.get(6)? * 512))
}

#[test]
fn io_workers_move_the_bytes_asked_and_the_device_sees_them() {
    let agent = Agent::start();
    let cg = Cgroup::new("io");
    let fs = SmallFs::new();
    let dir = fs.dir.path().display().to_string();
    for (mode, bytes) in [("write", 64u64 << 20), ("read", 32 << 20)] {
        let dev0 = device_bytes(fs.dir.path());
        let e = stress(
            &agent,
            &cg,
            &[
                "io",
                "--mode",
                mode,
                "--bytes",
                &bytes.to_string(),
                "--block-size",
                "1mb",
                "--direct",
                "--dir",
                &dir,
                "--for",
                "20s",
            ],
        );
        let id = e["id"].as_str().unwrap();
        // All bytes moved, the experiment ends on its own, long before its 20 s.
        let got = agent.wait_ended(id, Duration::from_secs(15));
        let c = &got["counters"];
        let dev =
            dev0.zip(device_bytes(fs.dir.path())).map(|((r0, w0), (r1, w1))| (r1 - r0, w1 - w0));
        eprintln!(
            "io {mode} {} MiB: {} ({}); agent reports written {} read {}; device saw {dev:?}",
            bytes >> 20,
            got["state"],
            got["reason"],
            c["bytes_written"],
            c["bytes_read"]
        );
        let (written, read) =
            (c["bytes_written"].as_u64().unwrap(), c["bytes_read"].as_u64().unwrap());
        // --bytes counts all that moved: a read worker's first pass writes the data it reads
        // (16 MiB, or half the bytes when fewer).
        let (want_w, want_r) =
            if mode == "write" { (bytes, 0) } else { (16 << 20, bytes - (16 << 20)) };
        assert_eq!((written, read), (want_w, want_r), "{mode}: {got}");
        assert_eq!(got["state"], "expired", "{mode}: {got}");
        let reason = if mode == "write" {
            format!("done: {}MiB written", bytes >> 20)
        } else {
            format!("done: {}MiB moved (16MiB written, {}MiB read)", bytes >> 20, want_r >> 20)
        };
        assert_eq!(got["reason"].as_str(), Some(reason.as_str()), "{got}");
        if let Some((dev_read, dev_written)) = dev {
            let (seen, moved) =
                if mode == "write" { (dev_written, written) } else { (dev_read, read) };
            assert!(seen >= moved, "{mode}: the device saw only {seen} bytes of {moved}");
        }
        assert!(cg.procs().is_empty(), "workers left after the end");
    }
    assert_eq!(
        std::fs::read_dir(fs.dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".faultline"))
            })
            .count(),
        0,
        "no file left behind"
    );
}

/// `--rate` holds for everything moved, the first pass that writes what mixed and read
/// workers read too: 5 MiB/s for 6 s is 30 MiB (give or take a block). The workers are named
/// as users know them in ps.
#[test]
fn io_at_a_rate_moves_rate_times_time_first_pass_included() {
    let agent = Agent::start();
    let cg = Cgroup::new("iorate");
    let dir = TempDir::new("iorate");
    let path = dir.path().display().to_string();
    let e = stress(
        &agent,
        &cg,
        &["io", "--mode", "mixed", "--rate", "5mb", "--dir", &path, "--for", "6s"],
    );
    let procs = cg.procs();
    assert_eq!(procs.len(), 1, "{procs:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", procs[0])).unwrap();
    assert!(
        cmdline.starts_with(b"faultline\0__stress-worker\0io\0"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    let got = agent.wait_ended(e["id"].as_str().unwrap(), Duration::from_secs(15));
    let c = &got["counters"];
    let (written, read) = (c["bytes_written"].as_u64().unwrap(), c["bytes_read"].as_u64().unwrap());
    let mib = (written + read) as f64 / (1 << 20) as f64;
    eprintln!(
        "io mixed 5mb/s for 6s: written {written} read {read}: {mib:.1} MiB; {}",
        got["state"]
    );
    assert_eq!(got["state"], "expired", "{got}");
    assert!((27.0..=33.0).contains(&mib), "asked 5 MiB/s for 6 s (30 MiB), moved {mib:.1} MiB");
    assert!(read > 0 && written > read, "mixed: the first pass writes, then both: {got}");
    assert!(cg.procs().is_empty(), "workers left after the end");
}

#[test]
fn cancel_stops_workers_at_once_and_sigkill_of_the_agent_within_1s() {
    let _serial = serial();
    let mut agent = Agent::start_with(&["--no-resume"]);
    let cg = Cgroup::new("stresskill");
    let e = stress(&agent, &cg, &["cpu", "--workers", "2", "--load", "20", "--for", "60s"]);
    assert_eq!(cg.procs().len(), 2);
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert!(cg.procs().is_empty(), "workers left after cancel returned: {:?}", cg.procs());

    stress(&agent, &cg, &["cpu", "--workers", "2", "--load", "20", "--for", "60s"]);
    stress(&agent, &cg, &["mem", "--size", "32mb", "--for", "60s"]);
    assert_eq!(cg.procs().len(), 3);
    agent.signal(libc::SIGKILL);
    let killed = Instant::now();
    while !cg.procs().is_empty() && killed.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "workers gone {:.0} ms after SIGKILL of the agent",
        killed.elapsed().as_secs_f64() * 1000.0
    );
    assert!(cg.procs().is_empty(), "workers outlived the agent by 1 s: {:?}", cg.procs());
    agent.wait_exit(Duration::from_secs(5));
    if !pure_v2() {
        // The v1 cgroups created alongside outlive a SIGKILL; the next start removes them.
        let alongside = v1_mount("memory").join(cg.rel.trim_start_matches('/'));
        assert!(alongside.exists(), "expected the v1 cgroup the killed agent made");
        agent.restart();
        assert!(!alongside.exists(), "the restarted agent left {}", alongside.display());
    }
}

#[test]
fn bad_stress_input_is_refused_with_the_field() {
    let _serial = serial();
    let agent = Agent::start();
    let cg = Cgroup::new("stressbad");
    let cases: &[(&[&str], &str)] = &[
        (&["cpu", "--load", "0"], "fault.cpu_stress.load_percent"),
        (&["cpu", "--load", "101"], "fault.cpu_stress.load_percent"),
        (&["mem", "--size", "0"], "fault.memory_stress.bytes"),
        (&["mem", "--size", "100000gb"], "fault.memory_stress.bytes"),
        (&["mem", "--percent", "150"], "fault.memory_stress.percent"),
        (&["disk", "--path", "/no/such/dir", "--size", "1mb"], "fault.disk_fill.path"),
        (&["disk", "--path", "/tmp", "--percent", "101"], "fault.disk_fill.percent"),
        (&["io", "--block-size", "1000"], "fault.io_stress.block_size"),
        (&["io", "--dir", "/no/such/dir"], "fault.io_stress.directory"),
    ];
    for (args, field) in cases {
        let mut a = vec!["stress", args[0], "--cgroup", &cg.rel];
        a.extend_from_slice(&args[1..]);
        a.extend_from_slice(&["--for", "10s"]);
        let out = agent.cli(&a);
        assert!(!out.status.success(), "{args:?} was accepted");
        let err = one_line_error(&out);
        eprintln!("{args:?} -> {err}");
        assert!(err.contains("INVALID_ARGUMENT") && err.contains(field), "{args:?}: {err}");
        assert!(cg.procs().is_empty(), "nothing started for {args:?}");
    }
    assert!(agent.cli_json(&["ls"]).as_array().unwrap().is_empty(), "nothing recorded");
}
