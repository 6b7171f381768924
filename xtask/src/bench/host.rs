//! What the host sections share: cgroups, an agent process, fl-probe and other tools run
//! inside a cgroup, small servers, and statistics.

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

/// Binaries and places of one bench run.
pub struct Env {
    pub bin: PathBuf,
    pub probe: PathBuf,
    pub mount: PathBuf,
    pub dir: PathBuf,
    pub quick: bool,
}

impl Env {
    /// `quick` in --quick mode, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    info.lines()
        .find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            (right.split_whitespace().next()? == "cgroup2")
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })
        .context("no cgroup2 mount")
}

/// The v1 cpu hierarchy's mount point, if the host has one.
fn v1_cpu_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mut r = right.split_whitespace();
        (r.next()? == "cgroup" && r.nth(1)?.split(',').any(|o| o == "cpu"))
            .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
    })
}

/// A cgroup2 directory and, on a hybrid host with a quota, the v1 cpu cgroup at the same
/// path (where the quota lives there). Removed, with its processes killed, on drop.
pub struct Cg {
    pub path: PathBuf,
    pub rel: String,
    v1: Option<PathBuf>,
}

impl Cg {
    pub fn new(mount: &Path, name: &str) -> anyhow::Result<Cg> {
        let p = mount.join(format!("faultline-bench-{name}-{}", std::process::id()));
        Cg::at(mount, p)
    }

    fn at(mount: &Path, p: PathBuf) -> anyhow::Result<Cg> {
        if !p.exists() {
            std::fs::create_dir(&p).with_context(|| format!("mkdir {}", p.display()))?;
        }
        let rel = format!("/{}", p.strip_prefix(mount)?.display());
        Ok(Cg { path: p, rel, v1: None })
    }

    pub fn child(&self, mount: &Path, name: &str) -> anyhow::Result<Cg> {
        Cg::at(mount, self.path.join(name))
    }

    /// A quota of `cpus` CPUs: cpu.max on pure v2, cpu.cfs_quota_us on a hybrid host.
    pub fn with_quota(mount: &Path, name: &str, cpus: f64) -> anyhow::Result<Cg> {
        let mut cg = Cg::new(mount, name)?;
        let quota = format!("{} 100000", (cpus * 100_000.0) as u64);
        let _ = std::fs::write(mount.join("cgroup.subtree_control"), "+cpu");
        if std::fs::write(cg.path.join("cpu.max"), &quota).is_err() {
            let v1 = v1_cpu_mount().context("no cpu controller in cgroup2 or v1")?;
            let dir = v1.join(cg.path.strip_prefix(mount)?);
            std::fs::create_dir(&dir)?;
            std::fs::write(dir.join("cpu.cfs_period_us"), "100000")?;
            std::fs::write(dir.join("cpu.cfs_quota_us"), ((cpus * 100_000.0) as u64).to_string())?;
            cg.v1 = Some(dir);
        }
        Ok(cg)
    }

    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut v = vec![self.path.join("cgroup.procs")];
        v.extend(self.v1.iter().map(|d| d.join("cgroup.procs")));
        v
    }

    /// CPU seconds the cgroup has used (cgroup2's cpu.stat, present without controllers).
    pub fn usage_s(&self) -> anyhow::Result<f64> {
        let s = std::fs::read_to_string(self.path.join("cpu.stat"))?;
        let u: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
            .context("usage_usec")?;
        Ok(u as f64 / 1e6)
    }

    /// A command that starts inside this cgroup (moved there between fork and exec).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        let procs = self.procs_files();
        // SAFETY: only file writes between fork and exec.
        unsafe {
            cmd.pre_exec(move || procs.iter().try_for_each(|p| std::fs::write(p, "0")));
        }
        cmd
    }

    fn has_procs(&self) -> bool {
        std::fs::read_to_string(self.path.join("cgroup.procs")).is_ok_and(|s| !s.trim().is_empty())
    }
}

impl Drop for Cg {
    fn drop(&mut self) {
        for _ in 0..50 {
            if !self.has_procs() {
                break;
            }
            let _ = std::fs::write(self.path.join("cgroup.kill"), "1");
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = std::fs::remove_dir(&self.path);
        if let Some(d) = &self.v1 {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Proc> {
        let c = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Proc(c))
    }
    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs a command, fails on a non-zero exit, returns its stdout.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("spawning {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// fl-probe in `cg`: its JSON line.
pub fn probe(env: &Env, cg: &Cg, args: &[&str]) -> anyhow::Result<Value> {
    let out = output(cg.command(&env.probe).args(args))?;
    let line = out.lines().last().unwrap_or_default();
    serde_json::from_str(line).with_context(|| format!("fl-probe {args:?} printed {out:?}"))
}

/// A `faultline serve` in a cgroup of its own (so its CPU use is the cgroup's cpu.stat).
pub struct Agent {
    proc: Option<Proc>,
    pub socket: PathBuf,
    bin: PathBuf,
    pub cg: Cg,
}

impl Agent {
    pub fn start(env: &Env, config: Option<&Path>) -> anyhow::Result<Agent> {
        let cg = Cg::new(&env.mount, "agent")?;
        let dir = env.dir.join(format!("agent-{}", unique()));
        std::fs::create_dir_all(&dir)?;
        let socket = dir.join("faultline.sock");
        let mut cmd = cg.command(&env.bin);
        cmd.arg("serve").arg("--socket").arg(&socket).arg("--state-dir").arg(dir.join("state"));
        cmd.arg("--no-metrics");
        if let Some(c) = config {
            cmd.arg("--config").arg(c);
        }
        let log = std::fs::File::create(dir.join("agent.log"))?;
        let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log).spawn()?;
        let mut agent = Agent { proc: Some(Proc(child)), socket, bin: env.bin.clone(), cg };
        let t0 = Instant::now();
        while std::os::unix::net::UnixStream::connect(&agent.socket).is_err() {
            if let Some(p) = agent.proc.as_mut()
                && let Some(st) = p.0.try_wait()?
            {
                bail!("the agent exited with {st}: see {}", dir.join("agent.log").display());
            }
            if t0.elapsed() > Duration::from_secs(30) {
                bail!("the agent did not start in 30 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(agent)
    }

    pub fn pid(&self) -> u32 {
        self.proc.as_ref().map_or(0, Proc::pid)
    }

    /// A CLI command with -o json.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<Value> {
        let out = output(
            Command::new(&self.bin)
                .arg("--endpoint")
                .arg(&self.socket)
                .args(["-o", "json"])
                .args(args),
        )?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Injects; returns the experiment id.
    pub fn inject(&self, args: &[&str]) -> anyhow::Result<String> {
        let v = self.cli(args)?;
        if v["state"] != "active" {
            bail!("{args:?}: not active: {v}");
        }
        Ok(v["id"].as_str().context("no id")?.to_string())
    }

    pub fn cancel(&self, id: &str) -> anyhow::Result<()> {
        self.cli(&["cancel", id]).map(drop)
    }

    /// A KiB field of /proc/PID/status (VmRSS, RssAnon, RssFile).
    pub fn status_kib(&self, key: &str) -> anyhow::Result<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        s.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{key} in /proc/PID/status"))
    }

    /// SIGTERM (the agent removes its faults), then SIGKILL after 10 s.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(mut p) = self.proc.take() {
            let _ = Command::new("kill").args(["-TERM", &p.pid().to_string()]).status();
            let t0 = Instant::now();
            while p.0.try_wait().ok().flatten().is_none() && t0.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn unique() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// A free local port (TCP and UDP both free at the time of asking).
pub fn free_port() -> anyhow::Result<u16> {
    loop {
        let t = TcpListener::bind("127.0.0.1:0")?;
        let port = t.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

/// Counts the datagrams that reach a local port.
pub struct UdpSink {
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpSink {
    pub fn start() -> anyhow::Result<UdpSink> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        // 4 MiB of receive buffer: the sender is paced, only the fault may drop.
        let _ = set_rcvbuf(&s, 4 << 20);
        let addr = s.local_addr()?;
        let (count, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let thread = {
            let (count, stop) = (count.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if s.recv(&mut buf).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Ok(UdpSink { addr, count, stop, thread: Some(thread) })
    }

    /// Datagrams received so far, after a short quiet period.
    pub fn settle(&self) -> u64 {
        let mut last = self.count.load(Ordering::Relaxed);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.count.load(Ordering::Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for UdpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn set_rcvbuf(s: &UdpSocket, bytes: i32) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    unsafe extern "C" {
        fn setsockopt(fd: i32, level: i32, name: i32, val: *const i32, len: u32) -> i32;
    }
    // SOL_SOCKET = 1, SO_RCVBUFFORCE = 33 (root), falling back to SO_RCVBUF = 8.
    for name in [33, 8] {
        // SAFETY: setsockopt on our own socket with a local int.
        if unsafe { setsockopt(s.as_raw_fd(), 1, name, &bytes, 4) } == 0 {
            return Ok(());
        }
    }
    Err(std::io::Error::last_os_error())
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Runs `rounds` rounds of `variants`, in order on even rounds and reversed on odd ones
/// (A B C, C B A, ...), so a slow drift of the machine weighs on every variant alike.
/// `measure(round, variant)` returns one sample; the result is samples[variant][round].
pub fn alternate<T>(
    rounds: usize,
    variants: usize,
    mut measure: impl FnMut(usize, usize) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<Vec<T>>> {
    let mut out: Vec<Vec<T>> = (0..variants).map(|_| Vec::new()).collect();
    for r in 0..rounds {
        let order: Vec<usize> =
            if r % 2 == 0 { (0..variants).collect() } else { (0..variants).rev().collect() };
        for v in order {
            let x = measure(r, v)?;
            out[v].push(x);
        }
    }
    Ok(out)
}

/// One metric of every round of one variant.
pub fn series<T>(s: &[Vec<T>], variant: usize, metric: impl Fn(&T) -> f64) -> Vec<f64> {
    s[variant].iter().map(metric).collect()
}

/// Median over rounds of metric(b) / metric(a), each pair from the same round.
pub fn paired_ratio<T>(s: &[Vec<T>], a: usize, b: usize, metric: impl Fn(&T) -> f64) -> f64 {
    let r: Vec<f64> = s[a].iter().zip(&s[b]).map(|(x, y)| metric(y) / metric(x)).collect();
    median(&r)
}

/// "min-max" of the per-round ratios metric(b) / metric(a): how far the rounds agree.
pub fn spread<T>(s: &[Vec<T>], a: usize, b: usize, metric: impl Fn(&T) -> f64) -> String {
    let r: Vec<f64> = s[a].iter().zip(&s[b]).map(|(x, y)| metric(y) / metric(x)).collect();
    let lo = r.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = r.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("rounds {lo:.3}-{hi:.3}")
}

/// CPU seconds of one process (all its threads) from /proc/PID/stat (10 ms ticks).
pub fn proc_cpu_s(pid: u32) -> anyhow::Result<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = &s[s.rfind(')').context("stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / 100.0)
}

/// A program's name, nanoseconds per run, and runs per operation.
pub type ProgRun = (String, f64, f64);

/// The kernel's per-program run time statistics (kernel.bpf_stats_enabled), on while this
/// lives: they cost two clock reads per program run, so never during the other measures.
pub struct BpfStats {
    before: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStats {
    pub fn enable() -> anyhow::Result<BpfStats> {
        let before = std::fs::read_to_string(BPF_STATS)?.trim().to_string();
        std::fs::write(BPF_STATS, "1")?;
        Ok(BpfStats { before })
    }

    /// (run_time_ns, run_cnt) of each program the process `pid` holds, by program name.
    pub fn snapshot(
        &self,
        pid: u32,
    ) -> anyhow::Result<std::collections::BTreeMap<String, (f64, f64)>> {
        let mut ids = std::collections::BTreeSet::new();
        for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
            let Ok(text) = std::fs::read_to_string(e?.path()) else { continue };
            if let Some(id) = text.lines().find_map(|l| l.strip_prefix("prog_id:")) {
                ids.insert(id.trim().parse::<u64>()?);
            }
        }
        let out = output(Command::new("bpftool").args(["prog", "show", "-j"]))?;
        let v: Value = serde_json::from_str(&out)?;
        let mut m = std::collections::BTreeMap::new();
        for p in v.as_array().context("bpftool prog show -j")? {
            if p["id"].as_u64().is_some_and(|id| ids.contains(&id))
                && let Some(name) = p["name"].as_str()
            {
                let e = m.entry(name.to_string()).or_insert((0.0, 0.0));
                e.0 += p["run_time_ns"].as_f64().unwrap_or(0.0);
                e.1 += p["run_cnt"].as_f64().unwrap_or(0.0);
            }
        }
        Ok(m)
    }

    /// Every program of `pid` that ran while `f` did (f returns how many operations it
    /// made): (name, nanoseconds per run, runs per operation), and the total program time per
    /// operation.
    pub fn per_op(
        &self,
        pid: u32,
        f: impl FnOnce() -> anyhow::Result<f64>,
    ) -> anyhow::Result<(Vec<ProgRun>, f64)> {
        let a = self.snapshot(pid)?;
        let ops = f()?.max(1.0);
        let b = self.snapshot(pid)?;
        let mut v = Vec::new();
        let mut total = 0.0;
        for (name, y) in &b {
            let x = a.get(name).copied().unwrap_or((0.0, 0.0));
            let (ns, runs) = (y.0 - x.0, y.1 - x.1);
            if runs > 0.0 {
                v.push((name.clone(), ns / runs, runs / ops));
                total += ns / ops;
            }
        }
        Ok((v, total))
    }

    /// Nanoseconds per run of each of `names` while `f` runs.
    pub fn ns_per_run(
        &self,
        pid: u32,
        names: &[&str],
        f: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<Vec<f64>> {
        let a = self.snapshot(pid)?;
        f()?;
        let b = self.snapshot(pid)?;
        names
            .iter()
            .map(|n| {
                let (Some(x), Some(y)) = (a.get(*n), b.get(*n)) else {
                    bail!("program {n} not found in the agent's descriptors")
                };
                Ok((y.0 - x.0) / (y.1 - x.1).max(1.0))
            })
            .collect()
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.before);
    }
}
