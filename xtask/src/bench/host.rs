//! What the host sections share besides the tests' harness (faultline-tests: the agent
//! process, cgroups, fl-probe, the UDP counter): the agent as the bench drives it, servers'
//! processes, ports, and statistics.

use std::{
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, bail};
use faultline_tests::{Agent, Cgroup};
use serde_json::Value;

/// Binaries and places of one bench run.
pub struct Env {
    pub bin: PathBuf,
    pub probe: PathBuf,
    pub dir: PathBuf,
    pub quick: bool,
}

impl Env {
    /// `quick` in --quick mode, `full` otherwise.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn spawn(cmd: &mut Command) -> anyhow::Result<Proc> {
        Self::with_stdio(cmd, Stdio::null)
    }

    fn with_stdio(cmd: &mut Command, io: fn() -> Stdio) -> anyhow::Result<Proc> {
        let c = cmd
            .stdin(io())
            .stdout(io())
            .stderr(io())
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Proc(c))
    }
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// A workload that waits for `go` on its stdin and prints its result (the delay and skew
    /// benches' C programs and fl-probe loops).
    pub fn waiting(cmd: &mut Command) -> anyhow::Result<Proc> {
        Self::with_stdio(cmd, Stdio::piped)
    }

    /// Lets a `waiting` workload run; returns what it printed.
    pub fn go(&mut self) -> anyhow::Result<String> {
        use std::io::{Read as _, Write as _};
        self.0.stdin.take().context("stdin")?.write_all(b"go\n")?;
        let mut out = String::new();
        self.0.stdout.take().context("stdout")?.read_to_string(&mut out)?;
        let status = self.0.wait()?;
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = self.0.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            anyhow::bail!("the workload failed ({status}): {}", err.trim());
        }
        Ok(out)
    }
}

/// Waits until a fault's helper process (the delay tracer, the time skewer) has process
/// `pid` under ptrace: cgroup targets are scanned every 250 ms.
pub fn traced(pid: u32, by: &str) -> anyhow::Result<()> {
    let t0 = std::time::Instant::now();
    while faultline_tests::threads::tracer_of(pid as i32, pid as i32) == 0 {
        if t0.elapsed() > std::time::Duration::from_secs(5) {
            anyhow::bail!("process {pid} not taken by {by} after 5 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    Ok(())
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

/// `faultline serve` from the tests' harness, in a cgroup of its own (so its CPU use is the
/// cgroup's cpu.stat), without metrics, logging at its default level; the agent is stopped
/// (SIGTERM, so it removes its faults; SIGKILL after 10 s) and its cgroup removed on drop.
pub fn start_agent(config: Option<&Path>) -> anyhow::Result<Agent> {
    let mut args = vec!["--no-metrics".to_string()];
    if let Some(c) = config {
        args.extend(["--config".to_string(), c.display().to_string()]);
    }
    Agent::builder()
        .args(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .log_level(None)
        .in_cgroup(Cgroup::new("bench-agent"))
        .try_start()
        .map_err(anyhow::Error::msg)
}

/// What the bench asks of the agent, as errors rather than the tests' panics.
pub trait AgentExt {
    /// A CLI command with -o json.
    fn json(&self, args: &[&str]) -> anyhow::Result<Value>;

    /// Injects; returns the experiment id.
    fn inject(&self, args: &[&str]) -> anyhow::Result<String> {
        let v = self.json(args)?;
        if v["state"] != "active" {
            bail!("{args:?}: not active: {v}");
        }
        Ok(v["id"].as_str().context("no id")?.to_string())
    }

    fn cancel(&self, id: &str) -> anyhow::Result<()> {
        self.json(&["cancel", id]).map(drop)
    }

    /// The agent's process id.
    fn process(&self) -> u32;

    /// CPU seconds of the agent's own cgroup.
    fn cpu_s(&self) -> anyhow::Result<f64>;

    /// A KiB field of /proc/PID/status (VmRSS, RssAnon, RssFile).
    fn status_kib(&self, key: &str) -> anyhow::Result<u64> {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.process()))?;
        s.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{key} in /proc/PID/status"))
    }
}

impl AgentExt for Agent {
    fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = self.cli(&full);
        if !out.status.success() {
            bail!(
                "faultline {args:?} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    fn process(&self) -> u32 {
        self.pid() as u32
    }

    fn cpu_s(&self) -> anyhow::Result<f64> {
        Ok(self.cgroup().context("the agent has no cgroup of its own")?.cpu_usage_s())
    }
}

/// fl-probe in `cg`: its JSON line (the harness's, which fails loudly).
pub fn probe(cg: &Cgroup, args: &[&str]) -> anyhow::Result<Value> {
    Ok(faultline_tests::probe(Some(cg), args))
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
        let mut m = std::collections::BTreeMap::new();
        for p in faultline_tests::bpf::programs_of(pid)? {
            let e = m.entry(p.name).or_insert((0.0, 0.0));
            e.0 += p.run_time_ns as f64;
            e.1 += p.run_cnt as f64;
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
