//! System-call faults on file calls: BPF LSM hooks where the bpf LSM is active (Debian 6.1,
//! 6.12), fmod_ret on the security_* functions where it is built but not active (Debian
//! 5.10, or a kernel booted without bpf in `lsm=`). Where neither works (this host), Inject
//! must fail with the reason: that is checked here and the effects in the VM tier.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{path::Path, process::Command};

use faultline_tests::{Agent, Cgroup, TempDir, Tmpfs, Waiting, one_line_error, probe};

fn errnos(r: &serde_json::Value, errno: i32) -> u64 {
    r["errnos"][errno.to_string()].as_u64().unwrap_or(0)
}

/// The backend the agent picked for file calls, or None after checking that Inject refuses
/// them with the reason.
fn backend_or_refused(agent: &Agent, cg: &Cgroup) -> Option<String> {
    let caps = agent.caps();
    let probe = caps["probes"].as_array().unwrap().iter().find(|p| p["name"] == "sys_file_backend");
    let probe = probe.cloned().unwrap();
    if probe["supported"] == true {
        let fault =
            caps["faults"].as_array().unwrap().iter().find(|f| f["fault"] == "syscall_errno");
        return Some(fault.unwrap()["backend"].as_str().unwrap().to_string());
    }
    // Where the bpf LSM is active (the Debian 6.1 and 6.12 guests) the programs must load:
    // a refusal there (a verifier limit, say) is a failure, not a skip.
    let lsms = std::fs::read_to_string("/sys/kernel/security/lsm").unwrap_or_default();
    assert!(!lsms.split(',').any(|l| l == "bpf"), "the bpf LSM is active ({lsms}): {probe}");
    let out =
        agent.cli(&["sys", "fail", "--cgroup", &cg.rel, "--syscall", "openat", "--for", "30s"]);
    let err = one_line_error(&out);
    assert!(err.contains("FAILED_PRECONDITION") && err.contains("LSM"), "{err}");
    eprintln!("file calls refused here, as caps say: {err}");
    None
}

fn fail(agent: &Agent, cg: &Cgroup, rest: &[&str]) -> serde_json::Value {
    let mut args = vec!["sys", "fail", "--cgroup", &cg.rel];
    args.extend_from_slice(rest);
    agent.cli_json(&args)
}

#[test]
fn openat_fails_with_eio_only_under_the_path_prefix_and_cat_reports_it() {
    let agent = Agent::start();
    let cg = Cgroup::new("sysopen");
    let Some(backend) = backend_or_refused(&agent, &cg) else { return };
    let dir = TempDir::new("open");
    let d = dir.path().display().to_string();
    for sub in ["data", "data2", "other"] {
        std::fs::create_dir(format!("{d}/{sub}")).unwrap();
        std::fs::write(format!("{d}/{sub}/f"), b"hello\n").unwrap();
    }
    let prefix = format!("{d}/data");
    let e = fail(
        &agent,
        &cg,
        &["--syscall", "openat", "--errno", "EIO", "--path", &prefix, "--for", "60s"],
    );
    assert!(e["backend"].as_str().unwrap().starts_with(backend.split('+').next().unwrap()), "{e}");
    let under = probe(Some(&cg), &["calls", "open", &format!("{prefix}/f"), "100"]);
    let sibling = probe(Some(&cg), &["calls", "open", &format!("{d}/data2/f"), "100"]);
    let other = probe(Some(&cg), &["calls", "open", &format!("{d}/other/f"), "100"]);
    let outside = probe(None, &["calls", "open", &format!("{prefix}/f"), "100"]);
    eprintln!(
        "openat EIO under {prefix} ({}): under {under} data2 {sibling} other {other} outside {outside}",
        e["backend"]
    );
    assert_eq!(errnos(&under, libc::EIO), 100, "{under}");
    assert_eq!(sibling["ok"], 100, "/data must not match /data2: {sibling}");
    assert_eq!(other["ok"], 100, "{other}");
    assert_eq!(outside["ok"], 100, "{outside}");
    // A real program sees it.
    let out = cg.command("cat").arg(format!("{prefix}/f")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("cat in the target: {:?}, stderr {stderr:?}", out.status);
    assert!(!out.status.success());
    assert!(stderr.contains("I/O error") || stderr.contains("Input/output error"), "{stderr}");
    let ok = Command::new("cat").arg(format!("{prefix}/f")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&ok.stdout), "hello\n", "cat outside the target");

    // The program reads the names above a file before it builds the path (d_path only when
    // one of them ends a rule's prefix): a file on another file system mounted under the
    // prefix still matches (the walk crosses the mount); a directory of the prefix's name
    // elsewhere is a candidate that the path then refuses; a name sharing the first 8 bytes
    // of the last component (all the walk compares) is told apart by the path.
    std::fs::create_dir(format!("{prefix}/m")).unwrap();
    let _mounted = Tmpfs::at(Path::new(&format!("{prefix}/m")), "1m");
    std::fs::write(format!("{prefix}/m/f"), b"x").unwrap();
    std::fs::create_dir(format!("{d}/other/data")).unwrap();
    std::fs::write(format!("{d}/other/data/f"), b"x").unwrap();
    for sub in ["abcdefgh-1", "abcdefgh-2"] {
        std::fs::create_dir(format!("{d}/{sub}")).unwrap();
        std::fs::write(format!("{d}/{sub}/f"), b"x").unwrap();
    }
    let long = format!("{d}/abcdefgh-1");
    fail(
        &agent,
        &cg,
        &["--syscall", "openat", "--errno", "EACCES", "--path", &long, "--for", "60s"],
    );
    let opens = |f: &str| probe(Some(&cg), &["calls", "open", &format!("{d}/{f}"), "20"]);
    let (mounted, named, long_in, long_out) =
        (opens("data/m/f"), opens("other/data/f"), opens("abcdefgh-1/f"), opens("abcdefgh-2/f"));
    eprintln!("mounted {mounted} other/data {named} long {long_in} long-other {long_out}");
    assert_eq!(errnos(&mounted, libc::EIO), 20, "under the prefix, across a mount: {mounted}");
    assert_eq!(named["ok"], 20, "a directory named data elsewhere: {named}");
    assert_eq!(errnos(&long_in, libc::EACCES), 20, "{long_in}");
    assert_eq!(long_out["ok"], 20, "same first 8 bytes, another name: {long_out}");
}

#[test]
fn write_fails_with_enospc_on_exactly_every_third_call() {
    let agent = Agent::start();
    let cg = Cgroup::new("syswrite");
    if backend_or_refused(&agent, &cg).is_none() {
        return;
    }
    let dir = TempDir::new("write");
    let file = format!("{}/out", dir.path().display());
    fail(
        &agent,
        &cg,
        &[
            "--syscall",
            "write",
            "--errno",
            "ENOSPC",
            "--every-nth",
            "3",
            "--path",
            &dir.path().display().to_string(),
            "--for",
            "60s",
        ],
    );
    let r = probe(Some(&cg), &["calls", "write", &file, "30"]);
    eprintln!("write every 3rd: {r}");
    assert_eq!(r["seq"], "..x..x..x..x..x..x..x..x..x..x", "{r}");
    assert_eq!(errnos(&r, libc::ENOSPC), 10);
    assert_eq!(std::fs::read(&file).unwrap().len(), 20, "the 20 writes that passed landed");
    // A shell redirect in the target reports it too (its 3rd write under the path fails).
    let out = cg
        .command("sh")
        .arg("-c")
        .arg(format!("for i in 1 2 3; do echo $i >> {file} || exit 7; done"))
        .output()
        .unwrap();
    eprintln!("sh: {:?} {}", out.status, String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn read_fails_with_eio_at_50_percent_and_max_hits_stops_after_n() {
    let agent = Agent::start();
    let cg = Cgroup::new("sysread");
    if backend_or_refused(&agent, &cg).is_none() {
        return;
    }
    let dir = TempDir::new("read");
    let file = format!("{}/in", dir.path().display());
    std::fs::write(&file, b"x").unwrap();
    let d = dir.path().display().to_string();
    let e =
        fail(&agent, &cg, &["--syscall", "read", "--percent", "50", "--path", &d, "--for", "60s"]);
    let r = probe(Some(&cg), &["calls", "read", &file, "2000"]);
    let share = 100.0 * errnos(&r, libc::EIO) as f64 / 2000.0;
    eprintln!("read 50%: {share:.2}% of 2000 failed");
    assert!((45.0..=55.0).contains(&share), "asked 50%, got {share:.2}%: {r}");
    let got = agent.cli_json(&["get", e["id"].as_str().unwrap()]);
    assert_eq!(got["counters"]["calls_seen"], 2000, "{got}");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);

    fail(&agent, &cg, &["--syscall", "openat", "--max-hits", "3", "--path", &d, "--for", "60s"]);
    let r = probe(Some(&cg), &["calls", "open", &file, "10"]);
    assert_eq!(r["seq"], "xxx.......", "exactly 3 failures, then success: {r}");
}

#[test]
fn fsync_is_refused_with_what_it_needs() {
    let agent = Agent::start();
    let cg = Cgroup::new("sysfsync");
    let out =
        agent.cli(&["sys", "fail", "--cgroup", &cg.rel, "--syscall", "fsync", "--for", "30s"]);
    let err = one_line_error(&out);
    assert!(
        err.contains("FAILED_PRECONDITION")
            && err.contains("fsync")
            && err.contains("FUNCTION_ERROR_INJECTION"),
        "{err}"
    );
    assert_eq!(cg.programs(), 0);
}

#[test]
fn unlink_mkdir_rename_exec_and_fork_fail_in_the_target_only() {
    let agent = Agent::start();
    let cg = Cgroup::new("sysmisc");
    if backend_or_refused(&agent, &cg).is_none() {
        return;
    }
    let dir = TempDir::new("misc");
    let d = dir.path().display().to_string();
    let cases = [
        ("unlink", "unlink", d.as_str(), "EACCES", libc::EACCES),
        ("mkdir", "mkdir", d.as_str(), "EROFS", libc::EROFS),
        ("rename", "rename", d.as_str(), "EXDEV", libc::EXDEV),
        ("execve", "exec", "/bin/true", "EACCES", libc::EACCES),
        ("clone", "fork", "-", "EAGAIN", libc::EAGAIN),
    ];
    for (syscall, op, arg, name, errno) in cases {
        // Started before the fault: an execve or clone fault would stop it from starting.
        let waiting = Waiting::start(&cg, &["calls", op, arg, "20"]);
        let e = fail(&agent, &cg, &["--syscall", syscall, "--errno", name, "--for", "60s"]);
        let inside = waiting.release();
        let outside = probe(None, &["calls", op, arg, "20"]);
        eprintln!("{syscall} {name} ({}): inside {inside} outside {outside}", e["backend"]);
        assert_eq!(errnos(&inside, errno), 20, "{syscall}: {inside}");
        assert_eq!(outside["ok"], 20, "{syscall} outside: {outside}");
        agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    }
    assert_eq!(cg.programs(), 0);
}

/// Tracing links the agent holds (host-wide LSM programs are such links), from its fdinfo.
fn tracing_links(agent: &Agent) -> usize {
    std::fs::read_dir(format!("/proc/{}/fdinfo", agent.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .filter(|t| t.lines().any(|l| l.starts_with("link_type:") && l.ends_with("tracing")))
        .count()
}

/// Where the kernel has BPF_LSM_CGROUP (6.0+) and the bpf LSM is active: an open rule on a
/// cgroup puts the open program on that cgroup alone (tasks elsewhere run none); a rule on a
/// process, whose cgroup may hold other tasks, takes the host-wide program, and the cgroup
/// attachment comes back when that rule ends. Opens fail as asked all along.
#[test]
fn open_rules_on_cgroups_attach_to_the_cgroup_not_the_host() {
    const BPF_LSM_CGROUP: u32 = 43;
    let agent = Agent::start();
    let cg = Cgroup::new("sysopencg");
    let Some(backend) = backend_or_refused(&agent, &cg) else { return };
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let major: u32 = release.split('.').next().unwrap().parse().unwrap();
    if !backend.starts_with("lsm") || major < 6 {
        eprintln!("backend {backend} on {}: host-wide programs only", release.trim());
        return;
    }
    let dir = TempDir::new("opencg");
    let d = dir.path().display().to_string();
    std::fs::create_dir(format!("{d}/data")).unwrap();
    std::fs::write(format!("{d}/data/f"), b"x").unwrap();
    let f = format!("{d}/data/f");
    let opens = |cg: Option<&Cgroup>| probe(cg, &["calls", "open", &f, "20"]);
    let e = fail(
        &agent,
        &cg,
        &["--syscall", "openat", "--errno", "EIO", "--path", &format!("{d}/data"), "--for", "60s"],
    );
    let (on_cgroup, host_wide) = (cg.attached(BPF_LSM_CGROUP), tracing_links(&agent));
    eprintln!(
        "cgroup rule: lsm_cgroup programs on the cgroup {on_cgroup}, tracing links {host_wide}"
    );
    assert_eq!((on_cgroup, host_wide), (1, 0), "{e}");
    assert_eq!(errnos(&opens(Some(&cg)), libc::EIO), 20);
    assert_eq!(opens(None)["ok"], 20);

    // A process target elsewhere: the host-wide program takes over, for both rules.
    let other = Cgroup::new("sysopencg-pid");
    let w = Waiting::start(&other, &["calls", "open", &f, "20"]);
    let p = agent.cli_json(&[
        "sys",
        "fail",
        "--pid",
        &w.pid,
        "--syscall",
        "openat",
        "--errno",
        "EACCES",
        "--for",
        "60s",
    ]);
    let (on_cgroup, host_wide) = (cg.attached(BPF_LSM_CGROUP), tracing_links(&agent));
    eprintln!("and a pid rule: on the cgroup {on_cgroup}, tracing links {host_wide}");
    assert_eq!((on_cgroup, host_wide), (0, 1));
    assert_eq!(errnos(&w.release(), libc::EACCES), 20);
    assert_eq!(errnos(&opens(Some(&cg)), libc::EIO), 20);
    agent.cli_json(&["cancel", p["id"].as_str().unwrap()]);
    assert_eq!((cg.attached(BPF_LSM_CGROUP), tracing_links(&agent)), (1, 0), "back on the cgroup");
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
    assert_eq!((cg.attached(BPF_LSM_CGROUP), tracing_links(&agent)), (0, 0), "all gone");
    assert_eq!(opens(Some(&cg))["ok"], 20);
}

/// Nested targets, measured at once: a rule on a cgroup (EIO under `a`) and one on its child
/// (EACCES under `b`). A task of the child meets both, a task of the parent the parent's
/// alone, each failure counted once; once the child's rule ends, the parent's still applies
/// to the child's tasks. Where the open program is attached by cgroup, each target holds its
/// own attachment (with one attachment left, its rules are read from the config).
#[test]
fn nested_targets_each_apply_their_rules_measured_at_once() {
    const BPF_LSM_CGROUP: u32 = 43;
    let agent = Agent::start();
    let parent = Cgroup::new("sysnest");
    let Some(backend) = backend_or_refused(&agent, &parent) else { return };
    let child = parent.child("inner");
    let dir = TempDir::new("nest");
    let d = dir.path().display().to_string();
    for sub in ["a", "b"] {
        std::fs::create_dir(format!("{d}/{sub}")).unwrap();
        std::fs::write(format!("{d}/{sub}/f"), b"x").unwrap();
    }
    let (fa, fb) = (format!("{d}/a/f"), format!("{d}/b/f"));
    let outer = fail(
        &agent,
        &parent,
        &["--syscall", "openat", "--errno", "EIO", "--path", &format!("{d}/a"), "--for", "60s"],
    );
    let inner = fail(
        &agent,
        &child,
        &["--syscall", "openat", "--errno", "EACCES", "--path", &format!("{d}/b"), "--for", "60s"],
    );
    let lsm_cgroup = (parent.attached(BPF_LSM_CGROUP), child.attached(BPF_LSM_CGROUP));
    eprintln!("backend {backend}; open programs on the parent and the child: {lsm_cgroup:?}");
    if lsm_cgroup != (0, 0) {
        assert_eq!(lsm_cgroup, (1, 1), "each target its own attachment");
    }
    let opens = |cg: &Cgroup, f: &str| probe(Some(cg), &["calls", "open", f, "20"]);
    let (ca, cb) = (opens(&child, &fa), opens(&child, &fb));
    let (pa, pb) = (opens(&parent, &fa), opens(&parent, &fb));
    let outside = probe(None, &["calls", "open", &fa, "20"]);
    eprintln!("child: a {ca} b {cb}; parent: a {pa} b {pb}; outside {outside}");
    assert_eq!(errnos(&ca, libc::EIO), 20, "the parent's rule, for the child's task: {ca}");
    assert_eq!(errnos(&cb, libc::EACCES), 20, "{cb}");
    assert_eq!(errnos(&pa, libc::EIO), 20, "{pa}");
    assert_eq!(pb["ok"], 20, "the child's rule is not the parent's: {pb}");
    assert_eq!(outside["ok"], 20, "{outside}");
    let failed = |e: &serde_json::Value| {
        let got = agent.cli_json(&["get", e["id"].as_str().unwrap()]);
        got["counters"]["calls_failed"].as_u64().unwrap()
    };
    assert_eq!((failed(&outer), failed(&inner)), (40, 20), "each failure counted once");
    // The child's rule ends: the parent's goes on for the child's tasks too.
    agent.cli_json(&["cancel", inner["id"].as_str().unwrap()]);
    let (ca, cb) = (opens(&child, &fa), opens(&child, &fb));
    eprintln!("after the child's rule: child a {ca} b {cb}");
    assert_eq!((errnos(&ca, libc::EIO), cb["ok"].as_u64()), (20, Some(20)), "{ca} {cb}");
    agent.cli_json(&["cancel", outer["id"].as_str().unwrap()]);
    assert_eq!((parent.attached(BPF_LSM_CGROUP), child.attached(BPF_LSM_CGROUP)), (0, 0));
    assert_eq!(opens(&child, &fa)["ok"], 20);
}
