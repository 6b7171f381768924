//! Harness for the privileged integration tests: a real agent process, real cgroups, real
//! traffic from processes placed in them, and residue checks against the kernel.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod bpf;
pub mod clock;
pub mod containers;
pub mod events;
pub mod net;
#[cfg(feature = "grpc")]
pub mod pki;
pub mod runc;
pub mod serial;
pub mod stress;
pub mod threads;

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use faultline_host::{cgroup, netns};
#[cfg(feature = "grpc")]
use faultline_proto::v1::fault_service_client::FaultServiceClient;
#[cfg(feature = "grpc")]
use hyper_util::rt::TokioIo;
#[cfg(feature = "grpc")]
use tonic::transport::{Channel, Endpoint};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
}

/// The agent and fl-probe binaries, when a program other than a test (the bench) set them.
static BINARIES: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();

/// Makes `faultline_bin` and `probe_bin` these binaries (for a caller that is not a test
/// executable in target/<profile>/deps, such as xtask's bench). The first call wins.
pub fn use_binaries(faultline: PathBuf, probe: PathBuf) {
    let _ = BINARIES.set((faultline, probe));
}

/// The agent binary: $FAULTLINE_BIN, or target/<profile>/faultline next to this test.
pub fn faultline_bin() -> PathBuf {
    if let Some((p, _)) = BINARIES.get() {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("FAULTLINE_BIN") {
        return p.into();
    }
    sibling_bin("faultline")
}

/// The traffic probe: $FL_PROBE_BIN or target/<profile>/fl-probe.
pub fn probe_bin() -> PathBuf {
    if let Some((_, p)) = BINARIES.get() {
        return p.clone();
    }
    if let Some(p) = std::env::var_os("FL_PROBE_BIN") {
        return p.into();
    }
    sibling_bin("fl-probe")
}

fn sibling_bin(name: &str) -> PathBuf {
    // Test executables live in target/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    let p = dir.join(name);
    assert!(p.exists(), "{} not built (set FAULTLINE_BIN / FL_PROBE_BIN)", p.display());
    p
}

pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("faultline-it-{}", unique(tag)));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `faultline serve` process with its own socket and state dir.
pub struct Agent {
    child: Option<Child>,
    pub dir: TempDir,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    extra: Vec<String>,
    /// FAULTLINE_LOG for the process (None: inherited).
    log_level: Option<String>,
    /// The cgroup the process runs in, when it has one of its own (removed after it ends).
    cgroup: Option<Cgroup>,
    /// This test's turn on the host: tests that run alone wait for it (`serial`).
    _turn: serial::Shared,
    /// The capability table, asked once: each `caps` loads and attaches every kind of
    /// program again (seconds in an emulated guest), and the kernel does not change.
    caps: std::sync::OnceLock<serde_json::Value>,
}

/// How to start an agent: `Agent::builder()....start()`.
pub struct AgentBuilder {
    extra: Vec<String>,
    log_level: Option<String>,
    cgroup: Option<Cgroup>,
    state_dir: Option<PathBuf>,
}

impl AgentBuilder {
    /// More arguments of `faultline serve`.
    pub fn args(mut self, extra: &[&str]) -> Self {
        self.extra.extend(extra.iter().map(|s| s.to_string()));
        self
    }

    /// FAULTLINE_LOG ("debug" unless set; None: the caller's environment decides).
    pub fn log_level(mut self, level: Option<&str>) -> Self {
        self.log_level = level.map(str::to_string);
        self
    }

    /// Runs the agent in a cgroup of its own (so its CPU use is that cgroup's cpu.stat).
    pub fn in_cgroup(mut self, cg: Cgroup) -> Self {
        self.cgroup = Some(cg);
        self
    }

    /// The state directory (default: `state` in the agent's temporary directory).
    pub fn state_dir(mut self, dir: &Path) -> Self {
        self.state_dir = Some(dir.to_path_buf());
        self
    }

    /// Starts it and waits until it serves; the error holds its log.
    pub fn try_start(self) -> Result<Agent, String> {
        let dir = TempDir::new("agent");
        let socket = dir.path().join("faultline.sock");
        let mut agent = Agent {
            child: None,
            state_dir: self.state_dir.unwrap_or_else(|| dir.path().join("state")),
            dir,
            socket,
            extra: self.extra,
            log_level: self.log_level,
            cgroup: self.cgroup,
            _turn: serial::shared(),
            caps: std::sync::OnceLock::new(),
        };
        agent.spawn()?;
        Ok(agent)
    }

    pub fn start(self) -> Agent {
        self.try_start().unwrap_or_else(|e| panic!("{e}"))
    }
}

impl Agent {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> Self {
        Self::builder().args(extra).start()
    }

    pub fn builder() -> AgentBuilder {
        AgentBuilder {
            extra: Vec::new(),
            log_level: Some("debug".into()),
            cgroup: None,
            state_dir: None,
        }
    }

    /// The agent's own cgroup, when it was started in one.
    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// Starts the agent process again (after it exited or was killed), with the same socket
    /// and state dir, as a restarted DaemonSet pod would.
    pub fn restart(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.spawn().unwrap_or_else(|e| panic!("{e}"));
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("agent.log"))
            .map_err(|e| format!("agent.log: {e}"))?;
        let mut cmd = match &self.cgroup {
            Some(cg) => cg.command(faultline_bin()),
            None => Command::new(faultline_bin()),
        };
        if let Some(level) = &self.log_level {
            cmd.env("FAULTLINE_LOG", level);
        }
        let child = cmd
            .arg("serve")
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            // Agents of parallel tests each take a free port; metrics_addr() reads it back.
            .args(
                (!self.extra.iter().any(|a| a == "--metrics-addr" || a == "--no-metrics"))
                    .then_some(["--metrics-addr", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawning faultline serve: {e}"))?;
        self.child = Some(child);
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            let exited = match self.child.as_mut() {
                Some(c) => c.try_wait().map_err(|e| e.to_string())?,
                None => None,
            };
            if let Some(status) = exited {
                return Err(format!("agent exited with {status} before serving:\n{}", self.log()));
            }
            if start.elapsed() >= Duration::from_secs(30) {
                return Err(format!("agent not serving:\n{}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Where this agent serves metrics, from its log line (the latest start's).
    pub fn metrics_addr(&self) -> String {
        let log = self.log();
        let line = log
            .lines()
            .rev()
            .find(|l| l.contains("serving Prometheus metrics"))
            .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"));
        let at = line.find("http://").expect("metrics url") + "http://".len();
        line[at..].split('/').next().unwrap().to_string()
    }

    /// One scrape of /metrics: the exposition text.
    pub fn scrape(&self) -> String {
        use std::io::{Read as _, Write as _};
        let mut s = std::net::TcpStream::connect(self.metrics_addr()).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
        resp.split_once("\r\n\r\n").unwrap().1.to_string()
    }

    /// The value of the series `name{labels}` whose labels contain `label`, if present.
    pub fn metric(&self, text: &str, name: &str, label: &str) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    /// `faultline caps -o json`, asked of this agent once.
    pub fn caps(&self) -> &serde_json::Value {
        self.caps.get_or_init(|| self.cli_json(&["caps"]))
    }

    /// Whether the agent's capability probe reports `probe` as supported.
    pub fn supports(&self, probe: &str) -> bool {
        self.caps()["probes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == probe && p["supported"] == true)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the agent to exit; None on timeout.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        let child = self.child.as_mut()?;
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn endpoint(&self) -> String {
        self.socket.display().to_string()
    }

    /// Runs the CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(faultline_bin())
            .arg("--endpoint")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs the CLI with `-o json` and parses its output; panics with stderr on failure.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = self.cli(&full);
        assert!(
            out.status.success(),
            "faultline {args:?} failed: {}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `cli_json` with owned arguments (as `udp_loss` builds them).
    /// Polls `get` until the experiment is neither pending nor active; panics after `within`.
    pub fn wait_ended(&self, id: &str, within: Duration) -> serde_json::Value {
        let until = Instant::now() + within;
        loop {
            let e = self.cli_json(&["get", id]);
            if e["state"] != "active" && e["state"] != "pending" {
                return e;
            }
            assert!(Instant::now() < until, "still active after {within:?}: {e}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn cli_json_args(&self, args: &[String]) -> serde_json::Value {
        self.cli_json(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    #[cfg(feature = "grpc")]
    pub async fn client(&self) -> FaultServiceClient<Channel> {
        FaultServiceClient::new(self.channel().await)
    }

    #[cfg(feature = "grpc")]
    pub async fn channel(&self) -> Channel {
        let path = self.socket.clone();
        Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move { tokio::net::UnixStream::connect(path).await.map(TokioIo::new) }
            }))
            .await
            .unwrap()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- agent log ----\n{}", self.log());
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child; SIGCONT first in case a test stopped it.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGCONT);
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let start = Instant::now();
            while c.try_wait().ok().flatten().is_none() && start.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The cgroup2 mount point, from mountinfo.
pub fn cgroup2_mount() -> PathBuf {
    cgroup::cgroup2_mount().unwrap()
}

/// A fresh cgroup v2 directory, removed (with its processes killed) on drop.
pub struct Cgroup {
    pub fs: PathBuf,
    /// Path relative to the cgroup2 mount, as the API takes it.
    pub rel: String,
    /// v1 cgroups at the same path that processes started here join too (a CPU quota on a
    /// hybrid host); removed after the cgroup2 one.
    v1: Vec<PathBuf>,
}

impl Cgroup {
    pub fn new(tag: &str) -> Self {
        let name = format!("faultline-it-{}", unique(tag));
        let fs = cgroup2_mount().join(&name);
        cgroup::create(&fs).unwrap();
        Cgroup { fs, rel: format!("/{name}"), v1: Vec::new() }
    }

    /// A child cgroup of this one (removed before its parent, as fields drop in order).
    pub fn child(&self, name: &str) -> Cgroup {
        let fs = self.fs.join(name);
        cgroup::create(&fs).unwrap();
        Cgroup { rel: format!("{}/{name}", self.rel), fs, v1: Vec::new() }
    }

    /// A fresh cgroup limited to `cpus` CPUs: cpu.max where cgroup2 has the cpu controller,
    /// else cpu.cfs_quota_us in a v1 cpu cgroup at the same path, which the processes
    /// started here join as well.
    pub fn with_cpu_quota(tag: &str, cpus: f64) -> Self {
        let mut cg = Cgroup::new(tag);
        let quota = (cpus * 100_000.0) as u64;
        let _ = std::fs::write(cgroup2_mount().join("cgroup.subtree_control"), "+cpu");
        if std::fs::write(cg.fs.join("cpu.max"), format!("{quota} 100000")).is_err() {
            let v1 = cgroup::v1_mount("cpu").unwrap().expect("no cpu controller in cgroup2 or v1");
            let dir = cgroup::dir(&v1, &cg.rel);
            cgroup::create(&dir).unwrap();
            cg.v1.push(dir.clone());
            std::fs::write(dir.join("cpu.cfs_period_us"), "100000").unwrap();
            std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string()).unwrap();
        }
        cg
    }

    /// CPU seconds the cgroup has used (cgroup2's cpu.stat, there without controllers too).
    pub fn cpu_usage_s(&self) -> f64 {
        let s = std::fs::read_to_string(self.fs.join("cpu.stat")).unwrap();
        let usec: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
            .expect("usage_usec in cpu.stat");
        usec as f64 / 1e6
    }

    /// Number of programs attached directly to this cgroup for `attach_type`
    /// (0 = inet ingress, 1 = inet egress), straight from the kernel (BPF_PROG_QUERY).
    pub fn attached(&self, attach_type: u32) -> u32 {
        let dir = std::fs::File::open(&self.fs).unwrap();
        use std::os::fd::AsRawFd as _;
        bpf::query(dir.as_raw_fd() as u32, attach_type).expect("BPF_PROG_QUERY")
    }

    /// Programs attached to ingress + egress.
    pub fn skb_programs(&self) -> u32 {
        self.attached(0) + self.attached(1)
    }

    /// Programs attached to the sock_addr hooks: connect4/6 (10, 11), udp sendmsg4/6
    /// (14, 15), udp recvmsg4/6 (19, 20), getpeername4/6 (29, 30).
    pub fn sock_programs(&self) -> u32 {
        [10, 11, 14, 15, 19, 20, 29, 30].iter().map(|t| self.attached(*t)).sum()
    }

    /// Every program type faultline attaches to cgroups. The residue check after a fault ends.
    pub fn programs(&self) -> u32 {
        self.skb_programs() + self.sock_programs()
    }

    /// A command that starts inside this cgroup (moved there before exec).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        self.command_in(program, None)
    }

    /// A command that starts inside this cgroup and, when given, that network namespace.
    pub fn command_in(
        &self,
        program: impl AsRef<std::ffi::OsStr>,
        netns: Option<&Netns>,
    ) -> Command {
        let mut cmd = Command::new(program);
        // The namespace first: the hooks run in the order they were added.
        if let Some(ns) = netns {
            netns::enter_before_exec(&mut cmd, ns.file());
        }
        let dirs: Vec<PathBuf> = std::iter::once(self.fs.clone()).chain(self.v1.clone()).collect();
        cgroup::enter_before_exec(&mut cmd, &dirs).unwrap();
        cmd
    }

    pub fn procs(&self) -> Vec<i32> {
        cgroup::procs(&self.fs)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // Kills what is left of the test's processes in its own cgroup.
        if let Err(e) = cgroup::kill_and_remove(&self.fs, Duration::from_secs(2)) {
            eprintln!("warning: {e}");
        }
        for d in &self.v1 {
            let _ = cgroup::remove(d);
        }
    }
}

/// Runs fl-probe (in `cgroup`, or outside when None) and parses its JSON line.
pub fn probe(cgroup: Option<&Cgroup>, args: &[&str]) -> serde_json::Value {
    probe_in(cgroup, None, args)
}

/// Like `probe`, also inside a network namespace.
pub fn probe_in(
    cgroup: Option<&Cgroup>,
    netns: Option<&Netns>,
    args: &[&str],
) -> serde_json::Value {
    let mut cmd = match (cgroup, netns) {
        (Some(cg), ns) => cg.command_in(probe_bin(), ns),
        (None, Some(ns)) => ns.command(probe_bin()),
        (None, None) => Command::new(probe_bin()),
    };
    let out = cmd.args(args).output().unwrap();
    assert!(out.status.success(), "fl-probe {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("fl-probe {args:?} printed {:?}: {e}", String::from_utf8_lossy(&out.stdout))
    })
}

/// An fl-probe in a cgroup that has printed its pid and waits to be released (so that a
/// fault can be applied to it, or to its cgroup, after it started).
pub struct Waiting {
    child: std::process::Child,
    pub pid: String,
}

impl Waiting {
    pub fn start(cg: &Cgroup, args: &[&str]) -> Waiting {
        use std::io::BufRead as _;
        let mut child = cg
            .command(probe_bin())
            .arg("wait")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
        Waiting { child, pid: line.trim().to_string() }
    }

    /// Lets it run; returns what it printed.
    pub fn release(mut self) -> serde_json::Value {
        use std::io::Write as _;
        self.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let out = self.child.wait_with_output().unwrap();
        assert!(out.status.success(), "fl-probe: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

/// The CLI arguments of a UDP loss fault to `port` for `dur` on `target` (such as
/// `["--cgroup", "/x"]`): where many tests start.
pub fn udp_loss(target: &[&str], percent: &str, port: &str, dur: &str) -> Vec<String> {
    let mut v: Vec<String> = ["net", "loss"].iter().chain(target).map(|s| s.to_string()).collect();
    v.extend(
        ["--percent", percent, "--protocol", "udp", "--port", port, "--for", dur].map(String::from),
    );
    v
}

/// A tmpfs of `size` (mount(8)'s form: "1m") mounted for a test, lazily unmounted when
/// dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn at(dir: &Path, size: &str) -> Tmpfs {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "fl-test"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(ok.success(), "mounting a tmpfs at {}", dir.display());
        Tmpfs(dir.to_path_buf())
    }

    /// Remounts it read-only.
    pub fn read_only(&self) {
        let ok = Command::new("mount").args(["-o", "remount,ro"]).arg(&self.0).status().unwrap();
        assert!(ok.success(), "remounting {} read-only", self.0.display());
    }

    /// Fills it to ENOSPC with one file, `fill`; returns its path (removing it frees it).
    pub fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let path = self.0.join("fill");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 4096];
        loop {
            match f.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling {}: {e}", self.0.display()),
            }
        }
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Polls `f` until it holds; panics naming `what` after 10 s.
pub fn wait_until(what: &str, f: impl FnMut() -> bool) {
    wait_for(what, Duration::from_secs(10), f);
}

/// Polls `f` until it holds; panics naming `what` after `limit`.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Last line of stderr, and asserts stderr is exactly one line.
pub fn one_line_error(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got {err:?}");
    lines[0].to_string()
}

/// A network namespace of the test's own (`ip netns add`), with `lo` up; deleted on drop.
pub struct Netns {
    pub name: String,
}

fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip").args(args).output().expect("running ip (iproute2)");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

impl Netns {
    /// UDP datagrams this namespace dropped for a bad checksum (/proc/net/snmp InCsumErrors).
    pub fn udp_csum_errors(&self) -> u64 {
        self.run(|| {
            let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap();
            let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
            let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
            let i = names.split_whitespace().position(|n| n == "InCsumErrors").unwrap();
            values.split_whitespace().nth(i).unwrap().parse().unwrap()
        })
    }

    pub fn new(tag: &str) -> Self {
        let name = format!("fl{}", unique(tag)).chars().take(30).collect::<String>();
        netns::create(&name).unwrap();
        Netns { name }
    }

    pub fn path(&self) -> PathBuf {
        netns::path(&self.name)
    }

    pub fn file(&self) -> std::fs::File {
        netns::open(&self.name).unwrap()
    }

    /// Runs `ip -n NAME args...`.
    pub fn ip(&self, args: &[&str]) -> String {
        netns::ip_in(&self.name, args).unwrap()
    }

    /// Runs `f` on a thread inside this namespace: sockets it creates stay in it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let ns = self.file();
        std::thread::spawn(move || {
            netns::enter_thread(&ns).unwrap();
            f()
        })
        .join()
        .unwrap()
    }

    /// A command that runs inside this namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        netns::enter_before_exec(&mut cmd, self.file());
        cmd
    }

    /// Names of the devices of `kind` ("ifb", "veth", ...) in this namespace.
    pub fn links_of_kind(&self, kind: &str) -> Vec<String> {
        self.ip(&["-o", "link", "show", "type", kind])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .collect()
    }

    /// The kind of the root qdisc of `dev` ("noqueue", "fq", ...), from `tc`.
    pub fn root_qdisc(&self, dev: &str) -> String {
        let out = Command::new("tc")
            .args(["-n", &self.name, "qdisc", "show", "dev", dev])
            .output()
            .expect("running tc");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .find(|l| l.contains(" root"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("none")
            .to_string()
    }

    /// A veth pair from this namespace to `other`, with the given /24 (IPv4) addresses.
    pub fn veth_to(&self, other: &Netns, addr_here: &str, addr_there: &str) -> String {
        let a =
            format!("flv{}x{}", std::process::id() % 100_000, SEQ.fetch_add(1, Ordering::Relaxed));
        let b = format!("{a}p");
        ip(&[
            "link",
            "add",
            &a,
            "netns",
            &self.name,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &other.name,
        ]);
        self.ip(&["addr", "add", &format!("{addr_here}/24"), "dev", &a]);
        other.ip(&["addr", "add", &format!("{addr_there}/24"), "dev", &b]);
        self.ip(&["link", "set", &a, "up"]);
        other.ip(&["link", "set", &b, "up"]);
        a
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = netns::delete(&self.name);
    }
}

/// Programs attached to a device in `ns`: tcx links (BPF_PROG_QUERY) plus cls_bpf filters.
pub fn tc_programs(ns: &Netns, dev: &str) -> u32 {
    let name = dev.to_string();
    let tcx = ns.run(move || {
        let Ok(idx) = std::ffi::CString::new(name) else { return 0 };
        // SAFETY: plain libc call with a valid C string.
        let ifindex = unsafe { libc::if_nametoindex(idx.as_ptr()) };
        [46u32, 47]
            .iter()
            .map(|ty| {
                // Kernels without tcx fail the query, which counts as none.
                bpf::query(ifindex, *ty).unwrap_or(0)
            })
            .sum::<u32>()
    });
    let filters: u32 = ["ingress", "egress"]
        .iter()
        .map(|hook| {
            let out = Command::new("tc")
                .args(["-n", &ns.name, "filter", "show", "dev", dev, hook])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("fl_tc_")).count()
                as u32
        })
        .sum();
    tcx + filters
}

/// A target: a cgroup with a long-lived process in a fresh network namespace (the agent
/// finds the namespace through the cgroup's processes).
pub struct NsTarget {
    pub cg: Cgroup,
    pub ns: Netns,
    sleeper: Child,
}

impl NsTarget {
    pub fn new(tag: &str) -> Self {
        let ns = Netns::new(tag);
        let cg = Cgroup::new(tag);
        let sleeper = cg.command_in("sleep", Some(&ns)).arg("300").spawn().unwrap();
        NsTarget { cg, ns, sleeper }
    }

    /// fl-probe inside the cgroup and the namespace.
    pub fn probe(&self, args: &[&str]) -> serde_json::Value {
        probe_in(Some(&self.cg), Some(&self.ns), args)
    }

    pub fn rtt(&self, echo: &net::UdpEcho, n: usize) -> serde_json::Value {
        let r = self.probe(&["udp-rtt", &echo.addr().to_string(), &n.to_string()]);
        assert_eq!(r["received"], n as u64, "{r}");
        r
    }
}

impl Drop for NsTarget {
    fn drop(&mut self) {
        let _ = self.sleeper.kill();
        let _ = self.sleeper.wait();
    }
}
