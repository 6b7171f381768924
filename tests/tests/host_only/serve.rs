//! What `faultline serve` does around the faults: the socket's directory (left as it is, or
//! refused when another user could replace the socket, or created 0700), the policy it logs
//! and how a bad policy file is shown, pid targets in the root cgroup, and refusals that
//! leave no trace but the audit log.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use faultline_proto::v1 as pb;
use faultline_tests::{Agent, Cgroup, TempDir, Waiting, cgroup2_mount, wait_until};

/// A `faultline serve` on a socket path of the test's choosing (the harness's agents always
/// serve in a directory of their own).
struct Served {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
    _turn: faultline_tests::serial::Shared,
}

/// Starts an agent on `socket` (state and log under `dir`); Err(its exit and stderr) when it
/// stops before serving.
fn serve(dir: &Path, socket: &Path, extra: &[&str]) -> Result<Served, (Output, String)> {
    let turn = faultline_tests::serial::shared();
    let log = dir.join(format!("agent-{}.log", socket.file_name().unwrap().to_string_lossy()));
    let mut child = Command::new(faultline_tests::faultline_bin())
        .env("FAULTLINE_LOG", "info")
        .args(["serve", "--metrics-addr", "127.0.0.1:0", "--socket"])
        .arg(socket)
        .arg("--state-dir")
        .arg(dir.join(format!("state-{}", socket.file_name().unwrap().to_string_lossy())))
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(socket).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::fs::read_to_string(&log).unwrap_or_default();
            let out = Output { status, stdout: Vec::new(), stderr: stderr.clone().into_bytes() };
            return Err((out, stderr));
        }
        assert!(start.elapsed() < Duration::from_secs(30), "agent not serving on {socket:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Served { child, socket: socket.to_path_buf(), log, _turn: turn })
}

impl Served {
    fn cli(&self, args: &[&str]) -> Output {
        Command::new(faultline_tests::faultline_bin())
            .arg("--endpoint")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and the exit.
    fn stop(mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(20), "the agent did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

fn mkdir(p: &Path, mode: u32) {
    std::fs::create_dir(p).unwrap();
    // chmod after mkdir: the umask does not apply.
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_socket_directory_keeps_its_mode_is_refused_when_others_may_write_it_or_is_made_0700() {
    let dir = TempDir::new("sockdir");

    // An existing 0755 directory is left as it is, while serving and after.
    let plain = dir.path().join("plain");
    mkdir(&plain, 0o755);
    let agent =
        serve(dir.path(), &plain.join("fl.sock"), &[]).unwrap_or_else(|(_, e)| panic!("{e}"));
    assert_eq!(mode(&plain), 0o755);
    assert!(agent.cli(&["ls"]).status.success(), "{}", agent.log());
    assert_eq!(mode(&plain.join("fl.sock")), 0o600);
    agent.stop();
    assert_eq!(mode(&plain), 0o755, "the directory's mode was changed");

    // Sticky and world-writable, as /tmp: others cannot remove or rename root's socket.
    let sticky = dir.path().join("sticky");
    mkdir(&sticky, 0o1777);
    let agent =
        serve(dir.path(), &sticky.join("fl.sock"), &[]).unwrap_or_else(|(_, e)| panic!("{e}"));
    assert!(agent.cli(&["ls"]).status.success(), "{}", agent.log());
    assert_eq!(mode(&sticky), 0o1777);
    agent.stop();
    assert_eq!(mode(&sticky), 0o1777, "the directory's mode was changed");

    // World-writable without the sticky bit: anyone could replace the socket. Refused at
    // start, naming the directory, its mode and why, and nothing is created in it.
    let open = dir.path().join("open");
    mkdir(&open, 0o777);
    let Err((out, stderr)) = serve(dir.path(), &open.join("fl.sock"), &[]) else {
        panic!("an agent served in a 0777 directory");
    };
    assert!(!out.status.success());
    let last = stderr.lines().last().unwrap_or_default();
    eprintln!("refused: {last}");
    assert!(
        last.starts_with("error: ")
            && last.contains(&open.display().to_string())
            && last.contains("mode 0777")
            && last.contains("writable by its group and every other user without the sticky bit"),
        "{stderr}"
    );
    assert_eq!(mode(&open), 0o777);
    assert_eq!(std::fs::read_dir(&open).unwrap().count(), 0, "something was created in it");
    // Group-writable alone is refused too.
    let group = dir.path().join("group");
    mkdir(&group, 0o775);
    let Err((_, stderr)) = serve(dir.path(), &group.join("fl.sock"), &[]) else {
        panic!("an agent served in a 0775 directory");
    };
    assert!(stderr.contains("mode 0775") && stderr.contains("writable by its group"), "{stderr}");

    // A missing directory (and its missing parent) is the agent's own: 0700.
    let made = dir.path().join("made/sub");
    let agent =
        serve(dir.path(), &made.join("fl.sock"), &[]).unwrap_or_else(|(_, e)| panic!("{e}"));
    assert_eq!(mode(&made), 0o700);
    assert_eq!(mode(&dir.path().join("made")), 0o700);
    assert!(agent.log().contains("created the socket directory (0700)"), "{}", agent.log());
    assert!(agent.cli(&["ls"]).status.success(), "{}", agent.log());
    agent.stop();
}

/// The agent's start log line about its policy.
fn policy_line(log: &str) -> String {
    log.lines()
        .find(|l| l.contains("policy from "))
        .unwrap_or_else(|| panic!("no policy line in the log:\n{log}"))
        .to_string()
}

#[tokio::test]
async fn the_agent_logs_its_policy_and_shows_a_bad_policy_file_with_its_line() {
    let defaults = Agent::start();
    let line = policy_line(&defaults.log());
    assert!(
        line.contains("policy from built-in defaults: allow_host=false")
            && line.contains("max_duration=1h")
            && line.contains("protected_namespaces=[\"kube-system\"]"),
        "{line}"
    );
    drop(defaults);

    let dir = TempDir::new("policylog");
    let file = dir.path().join("policy.toml");
    std::fs::write(&file, "max_duration = \"30m\"\nmax_stress_memory = \"10%\"\n").unwrap();
    let agent = Agent::start_with(&["--config", file.to_str().unwrap()]);
    let line = policy_line(&agent.log());
    assert!(
        line.contains(&format!("policy from {}: ", file.display()))
            && line.contains("max_duration=30m")
            && line.contains("max_stress_memory=10% of the host's memory ("),
        "{line}"
    );
    // A zero duration is refused naming the limit in force: the policy's, not the agent's.
    let cg = Cgroup::new("policylog");
    let mut c = agent.client().await;
    let zero = pb::InjectRequest {
        target: Some(pb::Target { kind: Some(pb::target::Kind::CgroupPath(cg.rel.clone())) }),
        fault: Some(pb::Fault {
            kind: Some(pb::fault::Kind::NetLoss(pb::NetLoss {
                percent: 10.0,
                ..Default::default()
            })),
        }),
        duration: Some(prost_types::Duration { seconds: 0, nanos: 0 }),
        labels: Default::default(),
        lease: None,
        ..Default::default()
    };
    let err = c.inject(zero).await.unwrap_err();
    assert_eq!(
        err.message(),
        "duration: must be > 0 and at most 30m (the policy's max_duration), got 0s"
    );
    drop(agent);

    // A syntax or key error: the toml crate's rendering with the line and a caret, then the
    // one-line error naming the file, the line and the key.
    std::fs::write(&file, "allow_host = false\nmax_duraton = \"1h\"\n").unwrap();
    let Err((out, stderr)) =
        serve(dir.path(), &dir.path().join("c.sock"), &["--config", file.to_str().unwrap()])
    else {
        panic!("an agent started with a bad policy file");
    };
    assert!(!out.status.success());
    eprintln!("{stderr}");
    assert!(stderr.contains("2 | max_duraton = \"1h\"\n"), "{stderr}");
    assert!(stderr.contains("  | ^^^^^^^^^^^"), "{stderr}");
    let last = stderr.lines().last().unwrap();
    assert!(
        last.starts_with(&format!(
            "error: policy {}: line 2, column 1: unknown field `max_duraton`",
            file.display()
        )),
        "{last}"
    );
}

#[test]
fn a_pid_in_the_root_cgroup_is_a_target_for_syscall_faults_and_kill() {
    // Socket programs attached to the root cgroup see every test's connect(): alone.
    let _alone = faultline_tests::serial::alone();
    let agent = Agent::start();
    let root = cgroup2_mount();
    let cg = Cgroup::new("rootpid");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });

    // A process that sits in the root cgroup (as most do on hybrid hosts and in VMs).
    let target = Waiting::start(&cg, &["calls", "connect", &addr, "10"]);
    std::fs::write(root.join("cgroup.procs"), &target.pid).unwrap();
    let own = std::fs::read_to_string(format!("/proc/{}/cgroup", target.pid)).unwrap();
    assert!(own.lines().any(|l| l == "0::/"), "not moved to the root cgroup: {own}");

    let out = agent.cli(&[
        "-o",
        "json",
        "sys",
        "fail",
        "--pid",
        &target.pid,
        "--syscall",
        "connect",
        "--errno",
        "EPERM",
        "--for",
        "60s",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "refused: {stderr}");
    let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = target.release();
    assert_eq!(r["errnos"][libc::EPERM.to_string()], 10, "{r}");
    // Only that process: this one, in the root cgroup too, connects.
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);

    // A signal to that process alone.
    let mut sleeper = Reaped(Command::new("sleep").arg("60").spawn().unwrap());
    std::fs::write(root.join("cgroup.procs"), sleeper.0.id().to_string()).unwrap();
    let pid = sleeper.0.id().to_string();
    let k = agent.cli_json(&["process", "kill", "--pid", &pid, "--signal", "KILL", "--for", "5s"]);
    assert_eq!(k["state"], "active", "{k}");
    let status = sleeper.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt as _;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");

    // Faults on a pid's whole cgroup stay refused there: that cgroup is the whole host.
    let other = Reaped(Command::new("sleep").arg("60").spawn().unwrap());
    std::fs::write(root.join("cgroup.procs"), other.0.id().to_string()).unwrap();
    let pid = other.0.id().to_string();
    let out = agent.cli(&["net", "loss", "--pid", &pid, "--percent", "10", "--for", "5s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("policy protected_cgroups: process")
            && err.contains("sits in the root cgroup"),
        "{err}"
    );
    // And the agent itself is never a target.
    let me = agent.pid().to_string();
    let out = agent.cli(&["process", "kill", "--pid", &me, "--for", "5s"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the agent itself"));
}

/// Kills and reaps the child on drop.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_refusal_at_apply_time_leaves_no_record_no_metric_and_no_journal_entry() {
    let agent = Agent::start();
    let cg = Cgroup::new("refusal");
    // Refused on every kernel: no hook sits on fsync. Delay without sch_fq and file calls
    // without the bpf LSM or fmod_ret are refused where the kernel lacks them (this host);
    // where the kernel has them they are applied, and cancelled here.
    let always = ["sys", "fail", "--cgroup", &cg.rel, "--syscall", "fsync", "--for", "30s"];
    let delay = ["net", "delay", "--cgroup", &cg.rel, "--latency", "50ms", "--for", "30s"];
    let files = ["sys", "fail", "--cgroup", &cg.rel, "--syscall", "openat", "--for", "30s"];
    let mut refused = 0;
    for args in [&always[..], &delay[..], &files[..]] {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = agent.cli(&full);
        let err = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            assert_ne!(args, &always[..], "fsync was applied");
            let e: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            eprintln!("{args:?}: applied on this kernel");
            agent.cli_json(&["cancel", e["id"].as_str().unwrap()]);
            continue;
        }
        eprintln!("{args:?}: {}", err.trim());
        assert!(err.contains("FailedPrecondition") || err.contains("FAILED_PRECONDITION"), "{err}");
        refused += 1;
    }
    let listed = agent.cli_json(&["ls"]);
    let failed: Vec<_> =
        listed.as_array().unwrap().iter().filter(|e| e["state"] != "cancelled").collect();
    assert!(failed.is_empty(), "a refusal left a record: {failed:?}");
    let journal = agent.dir.path().join("state/experiments");
    let left: Vec<_> = std::fs::read_dir(&journal)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a refusal left journal entries: {left:?}");
    let metrics = agent.scrape();
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("faultline_experiment") && !l.contains("cancelled"))
        .filter(|l| l.contains("state=\"failed\"") || l.contains("state=\"pending\""))
        .collect();
    assert!(series.is_empty(), "a refusal shows in the metrics: {series:?}");
    if refused == 3 {
        // Nothing was ever applied: no experiment series at all.
        let any: Vec<&str> =
            metrics.lines().filter(|l| l.starts_with("faultline_experiment")).collect();
        assert!(any.is_empty(), "a refusal shows in the metrics: {any:?}");
    }
    // Still audited, each one.
    let audit = std::fs::read_to_string(agent.dir.path().join("state/audit.log")).unwrap();
    let audited = audit.lines().filter(|l| l.contains("FailedPrecondition")).count();
    assert_eq!(audited, refused, "{audit}");
    wait_until("nothing attached to the cgroup", || cg.programs() == 0);
}
