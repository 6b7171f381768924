//! System-call latency (`faultline sys delay`, issue 16): how close the added latency comes to
//! the one asked, what a delay fault costs the calls of its target that it does not delay
//! (against strace's own injection on the same workload), and what it costs processes outside
//! its target. The workload is a small C program (delay.c, built here with cc) started in the
//! bench's cgroups; it waits for a line on stdin before it runs, so the fault's tracer has
//! seized it first.

use std::{path::PathBuf, process::Command};

use anyhow::{Context as _, bail};
use faultline_tests::{Agent, Cgroup};

use super::{
    host::{
        AgentExt as _, Env, Proc, alternate, median, output, paired_ratio, series, spread,
        start_agent, traced,
    },
    report::{Better, Figure, Goal, Report},
};

const H: &str = "System-call latency";
const SOURCE: &str = include_str!("delay.c");
/// The latency asked of the accuracy run.
const LATENCY_MS: f64 = 100.0;
/// strace's injection of the same latency, as ChaosBlade runs it (microseconds).
const STRACE_INJECT: &str = "inject=fsync:delay_exit=100000";
/// The loops of the cost runs: a null system call, and a read a real program makes.
const OPS: [&str; 2] = ["getppid", "read4k"];

/// The built workload and the file it works on (4 KiB, in the page cache), removed on drop.
struct Load {
    bin: PathBuf,
    file: PathBuf,
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
    }
}

impl Load {
    fn build(env: &Env) -> anyhow::Result<Load> {
        let src = env.dir.join("delay-load.c");
        let bin = env.dir.join("delay-load");
        std::fs::write(&src, SOURCE)?;
        output(Command::new("cc").args(["-O2", "-o"]).arg(&bin).arg(&src))
            .context("building the delay workload (needs a C compiler: gcc)")?;
        // On tmpfs where there is one: fsync there returns at once, where a disk's fsync
        // flushes the device cache (250 us here, tens of ms while others write).
        let shm = std::fs::read_to_string("/proc/mounts")
            .is_ok_and(|m| m.lines().any(|l| l.starts_with("tmpfs /dev/shm ")));
        let dir = if shm { PathBuf::from("/dev/shm") } else { env.dir.clone() };
        let file = dir.join(format!("faultline-bench-delay-{}.dat", std::process::id()));
        std::fs::write(&file, [7u8; 4096])?;
        Ok(Load { bin, file })
    }

    /// Where its file is, for the report.
    fn fs(&self) -> String {
        format!(
            "a 4 KiB file in {}",
            self.file.parent().map_or(String::new(), |d| d.display().to_string())
        )
    }

    /// Its arguments after the program's name.
    fn args(&self, mode: &str, op: &str, n: &str) -> Vec<String> {
        vec![mode.into(), op.into(), self.file.display().to_string(), n.into()]
    }

    /// The workload in `cg`, waiting for its go.
    fn start(&self, cg: &Cgroup, mode: &str, op: &str, n: &str) -> anyhow::Result<Proc> {
        Proc::waiting(cg.command(&self.bin).args(self.args(mode, op, n)))
    }

    /// The workload under `strace -f -e inject=fsync:delay_exit=100000`, in `cg`.
    fn start_strace(&self, cg: &Cgroup, op: &str, secs: &str) -> anyhow::Result<Proc> {
        Proc::waiting(
            cg.command("strace")
                .args(["-f", "-e", STRACE_INJECT, "-o", "/dev/null"])
                .arg(&self.bin)
                .args(self.args("rate", op, secs)),
        )
    }
}

/// `sys delay` on the cgroup `cg` for `syscall`, all calls, 100 ms; returns the id.
fn inject(agent: &Agent, cg: &Cgroup, syscall: &str) -> anyhow::Result<String> {
    let lat = format!("{LATENCY_MS}ms");
    agent.inject(&[
        "sys",
        "delay",
        "--cgroup",
        &cg.rel,
        "--syscall",
        syscall,
        "--latency",
        &lat,
        "--percent",
        "100",
        "--for",
        "10m",
    ])
}

/// Runs `f` with a delay fault on `cg` for `syscall`, seized `pids` first; cancels after.
fn with_fault<T>(
    agent: &Agent,
    cg: &Cgroup,
    syscall: &str,
    pids: &[u32],
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let id = inject(agent, cg, syscall)?;
    let r = pids.iter().try_for_each(|&p| traced(p, "the delay tracer")).and_then(|_| f());
    agent.cancel(&id)?;
    r
}

/// The value at fraction `p` of sorted `v`.
fn pct(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Nanoseconds each call took longer at rate `with` than at rate `none` (calls per second).
fn added_ns(none: f64, with: f64) -> f64 {
    (1.0 / with - 1.0 / none) * 1e9
}

/// A rate run's result.
#[derive(Clone, Copy)]
struct Rate {
    calls: f64,
    wall: f64,
    cpu: f64,
}

impl Rate {
    fn parse(s: &str) -> anyhow::Result<Rate> {
        let f: Vec<f64> = s
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .context(s.to_string())?;
        let [calls, wall, cpu] = f[..] else { bail!("rate output {s:?}") };
        Ok(Rate { calls, wall, cpu })
    }
    /// Calls per wall second: what the program sees.
    fn per_s(&self) -> f64 {
        self.calls / self.wall
    }
    /// Calls per CPU second of the program: the cost, whatever else the machine runs.
    fn per_cpu(&self) -> f64 {
        self.calls / self.cpu.max(1e-3)
    }
}

/// Runs the OPS rate loops one after the other (all started, so seized, before the first).
fn rates(procs: &mut [Proc]) -> anyhow::Result<Vec<Rate>> {
    procs.iter_mut().map(|p| p.go().and_then(|o| Rate::parse(&o))).collect()
}

pub fn delay(env: &Env, rep: &mut Report) -> anyhow::Result<()> {
    let load = Load::build(env)?;
    let agent = start_agent(None)?;
    accuracy(env, rep, &agent, &load)?;
    targeted(env, rep, &agent, &load)?;
    untargeted(env, rep, &agent, &load)
}

/// 1. N timed fsync calls with no fault, then N with 100 ms on fsync of their cgroup: the
///    added latency is each delayed call's time less the no-fault median.
fn accuracy(env: &Env, rep: &mut Report, agent: &Agent, load: &Load) -> anyhow::Result<()> {
    let n = env.pick(50, 200).to_string();
    println!("== sys delay accuracy: {n} fsync calls, {LATENCY_MS} ms asked");
    let cg = Cgroup::new("bench-delay-acc");
    let ms = |s: String| -> anyhow::Result<Vec<f64>> {
        let mut v: Vec<f64> = s
            .split_whitespace()
            .map(|x| x.parse::<f64>().map(|ns| ns / 1e6))
            .collect::<Result<_, _>>()?;
        v.sort_by(f64::total_cmp);
        Ok(v)
    };
    let natural = ms(load.start(&cg, "timed", "fsync", &n)?.go()?)?;
    let mut p = load.start(&cg, "timed", "fsync", &n)?;
    let pid = p.pid();
    let delayed = ms(with_fault(agent, &cg, "fsync", &[pid], || p.go())?)?;
    let base = median(&natural);
    let added: Vec<f64> = delayed.iter().map(|t| t - base).collect();
    let (med, p99) = (median(&added), pct(&added, 0.99));
    rep.add(
        Figure::new(H, "delay.fsync_natural", "fsync without a fault: median", base * 1e3, "us")
            .note(format!("p99 {:.1} us, {}", pct(&natural, 0.99) * 1e3, load.fs())),
    );
    rep.add(
        Figure::new(
            H,
            "delay.accuracy.median",
            "sys delay 100 ms on fsync: added latency, median",
            med,
            "ms",
        )
        .goal(Goal::Within(LATENCY_MS, 10.0))
        .check(Better::NearOne)
        .note(format!("{n} calls, all delayed (--percent 100)")),
    );
    rep.add(
        Figure::new(
            H,
            "delay.accuracy.p99",
            "sys delay 100 ms on fsync: added latency, p99",
            p99,
            "ms",
        )
        .note(format!("min {:.2} ms, max {:.2} ms", added[0], added[added.len() - 1])),
    );
    rep.detail(
        H,
        format!(
            "Accuracy: a program in a fresh cgroup times {n} fsync calls on {} \
             (clock_gettime around each call), with no fault (median {:.1} us), then {n} more \
             with `sys delay --syscall fsync --latency 100ms --percent 100` on its cgroup \
             (started once the tracer had seized it). Added latency = each call's time less \
             the no-fault median: median {med:.2} ms, p99 {p99:.2} ms.",
            load.fs(),
            base * 1e3
        ),
    );
    Ok(())
}

/// 2. A targeted process's calls that do not match: rate loops of getppid and 4 KiB reads in
///    the target cgroup with no fault, with `sys delay` on fsync of that cgroup, and under
///    `strace -f -e inject=fsync:delay_exit=100000`.
fn targeted(env: &Env, rep: &mut Report, agent: &Agent, load: &Load) -> anyhow::Result<()> {
    let secs = env.pick(1, 3).to_string();
    let rounds = env.pick(3, 7);
    println!(
        "== sys delay, calls of the target that do not match: {rounds} rounds of {secs} s, \
         no fault / faultline / strace"
    );
    let cg = Cgroup::new("bench-delay-tgt");
    let samples = alternate(rounds, 3, |_, v| {
        let mut procs = OPS
            .iter()
            .map(|op| match v {
                2 => load.start_strace(&cg, op, &secs),
                _ => load.start(&cg, "rate", op, &secs),
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        if v == 1 {
            let pids: Vec<u32> = procs.iter().map(Proc::pid).collect();
            with_fault(agent, &cg, "fsync", &pids, || rates(&mut procs))
        } else {
            rates(&mut procs)
        }
    })?;
    let mut table = String::from(
        "| loop | no fault (calls/s) | faultline (calls/s) | strace (calls/s) | faultline: ns added per call | faultline: calls per CPU second, ratio |\n|---|---|---|---|---|---|\n",
    );
    for (i, op) in OPS.iter().enumerate() {
        let wall = |s: &Vec<Rate>| s[i].per_s();
        let cpu = |s: &Vec<Rate>| s[i].per_cpu();
        let rate = |v| median(&series(&samples, v, wall));
        table += &format!(
            "| {op} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} |\n",
            rate(0),
            rate(1),
            rate(2),
            added_ns(rate(0), rate(1)),
            paired_ratio(&samples, 0, 1, cpu)
        );
        for (who, v) in [("faultline", 1), ("strace", 2)] {
            rep.add(
                Figure::new(
                    H,
                    &format!("delay.targeted.{op}.{who}"),
                    &format!("{op} loop in the target, fault on fsync, {who} / no fault"),
                    paired_ratio(&samples, 0, v, wall),
                    "ratio",
                )
                .goal(Goal::AtLeast(0.95))
                .check(Better::Higher)
                .reference(who == "strace")
                .note(format!(
                    "calls per second; {}; per CPU second {:.3}",
                    spread(&samples, 0, v, wall),
                    paired_ratio(&samples, 0, v, cpu)
                )),
            );
        }
    }
    rep.detail(
        H,
        format!(
            "Calls that do not match, of a targeted process: a loop of getppid (the raw \
             system call: a null call) and one of pread of 4 KiB of a file in the page cache, \
             each in its own process in the target cgroup, {secs} s each, calls per wall \
             second; with no fault, with `sys delay --syscall fsync --latency 100ms` on the \
             cgroup (the processes seized before they start), and under `strace -f -e \
             {STRACE_INJECT} -o /dev/null` (what ChaosBlade runs). Median of {rounds} \
             alternated rounds of per-round ratios.\n\n{table}"
        ),
    );
    Ok(())
}

/// 3. Processes outside the target: the same loops in a cgroup of their own, with no fault
///    and with a delay fault on another cgroup (a seized sleep in it).
fn untargeted(env: &Env, rep: &mut Report, agent: &Agent, load: &Load) -> anyhow::Result<()> {
    let secs = env.pick(1, 3).to_string();
    let rounds = env.pick(3, 7);
    println!(
        "== sys delay, processes outside the target: {rounds} rounds of {secs} s, \
         no fault / fault on another cgroup"
    );
    let target = Cgroup::new("bench-delay-other");
    let sleeper = Proc::spawn(target.command("sleep").arg("3600"))?;
    let cg = Cgroup::new("bench-delay-free");
    let samples = alternate(rounds, 2, |_, v| {
        let mut procs = OPS
            .iter()
            .map(|op| load.start(&cg, "rate", op, &secs))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if v == 1 {
            with_fault(agent, &target, "fsync", &[sleeper.pid()], || rates(&mut procs))
        } else {
            rates(&mut procs)
        }
    })?;
    let mut table = String::from(
        "| loop | no fault (calls/s) | fault elsewhere (calls/s) | ns added per call | ratio | per CPU second, ratio |\n|---|---|---|---|---|---|\n",
    );
    for (i, op) in OPS.iter().enumerate() {
        let wall = |s: &Vec<Rate>| s[i].per_s();
        let cpu = |s: &Vec<Rate>| s[i].per_cpu();
        let ratio = paired_ratio(&samples, 0, 1, wall);
        let (none, with) = (median(&series(&samples, 0, wall)), median(&series(&samples, 1, wall)));
        table += &format!(
            "| {op} | {none:.0} | {with:.0} | {:.0} | {ratio:.3} | {:.3} |\n",
            added_ns(none, with),
            paired_ratio(&samples, 0, 1, cpu)
        );
        rep.add(
            Figure::new(
                H,
                &format!("delay.untargeted.{op}"),
                &format!("{op} loop outside the target, delay fault elsewhere / none"),
                ratio,
                "ratio",
            )
            .goal(Goal::AtLeast(0.99))
            .check(Better::Higher)
            .note(format!(
                "calls per second; {}; per CPU second {:.3}",
                spread(&samples, 0, 1, wall),
                paired_ratio(&samples, 0, 1, cpu)
            )),
        );
    }
    rep.detail(
        H,
        format!(
            "Processes outside the target: the same two loops in a cgroup of their own, {secs} \
             s each, with no fault and with `sys delay --syscall fsync` on another cgroup (a \
             `sleep` there, seized). On kernels where the backend is tp_btf (or raw_tp) on \
             sys_exit, every system call on the node passes the program while a delay fault \
             is active. Median of {rounds} alternated rounds of per-round ratios.\n\n{table}"
        ),
    );
    Ok(())
}
