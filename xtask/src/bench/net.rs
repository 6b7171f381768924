//! Host sections on the network path: datapath cost (iperf3, sockperf), connect cost,
//! inject-to-effect latency, and loss accuracy against iptables' statistic match.

use std::{process::Command, time::Duration};

use anyhow::{Context as _, bail};
use faultline_tests::{
    Agent, Cgroup,
    bpf::{FLOOR_CONNECT4, Floor},
    net::UdpCounter,
};
use serde_json::Value;

use super::{
    host::{
        AgentExt as _, BpfStats, Env, Proc, alternate, free_port, median, output, paired_ratio,
        probe, series, spread, start_agent,
    },
    report::{Better, Figure, Goal, Report},
};

/// A matching rule that drops (next to) nothing: the API refuses 0%, and 1e-6% leaves one
/// packet in 10^8, while the program runs the full match and the random draw for each.
pub const NEAR_ZERO: &str = "0.000001";

/// One run of a client in a cgroup against a server in another: how much work got done
/// (bytes or round trips), in how many wall seconds, for how many CPU seconds of the two
/// cgroups together (loopback runs the whole path, both programs included, in one of them).
#[derive(Clone, Copy)]
pub struct Run {
    pub work: f64,
    pub secs: f64,
    pub cpu: f64,
}

impl Run {
    /// Work per wall second.
    pub fn rate(&self) -> f64 {
        self.work / self.secs
    }
    /// Work per CPU second: what the path costs, whatever else the machine is doing.
    pub fn per_cpu(&self) -> f64 {
        self.work / self.cpu
    }
}

/// iperf3 and sockperf servers in a cgroup of their own. Servers and clients all run on one
/// CPU: otherwise each run lands on one CPU or on two at the scheduler's whim, and in a VM a
/// cross-CPU wake-up costs so much more that the rate of one run differs up to 5x from the
/// next (measured here: 8,000 to 45,000 round trips in the same 0.55 s).
pub struct Servers {
    pub iperf: u16,
    pub sockperf: u16,
    _procs: Vec<Proc>,
    cg: Cgroup,
    cpu: String,
}

/// `program` on CPU `cpu`, started in `cg`.
fn pinned(cg: &Cgroup, cpu: &str, program: &str) -> Command {
    let mut c = cg.command("taskset");
    c.args(["-c", cpu, program]);
    c
}

impl Servers {
    pub fn start() -> anyhow::Result<Servers> {
        let cg = Cgroup::new("bench-servers");
        let cpu = std::thread::available_parallelism().map_or(0, |n| n.get() - 1).to_string();
        let (iperf, sockperf) = (free_port()?, free_port()?);
        let procs = vec![
            Proc::spawn(pinned(&cg, &cpu, "iperf3").args(["-s", "-p", &iperf.to_string()]))?,
            Proc::spawn(pinned(&cg, &cpu, "sockperf").args([
                "server",
                "-i",
                "127.0.0.1",
                "-p",
                &sockperf.to_string(),
            ]))?,
        ];
        std::thread::sleep(Duration::from_millis(700));
        Ok(Servers { iperf, sockperf, _procs: procs, cg, cpu })
    }

    fn cpu(&self, client: &Cgroup) -> anyhow::Result<f64> {
        Ok(client.cpu_usage_s() + self.cg.cpu_usage_s())
    }

    /// TCP throughput: one iperf3 run from `cg` (work in bytes).
    pub fn tcp(&self, cg: &Cgroup, secs: u64) -> anyhow::Result<Run> {
        let c0 = self.cpu(cg)?;
        let out = output(pinned(cg, &self.cpu, "iperf3").args([
            "-c",
            "127.0.0.1",
            "-p",
            &self.iperf.to_string(),
            "-t",
            &secs.to_string(),
            "-J",
        ]))?;
        let cpu = self.cpu(cg)? - c0;
        let v: Value = serde_json::from_str(&out)?;
        let s = &v["end"]["sum_received"];
        let (bytes, t) = (s["bytes"].as_f64(), s["seconds"].as_f64());
        let (Some(work), Some(secs)) = (bytes, t) else { bail!("iperf3: {out}") };
        Ok(Run { work, secs, cpu })
    }

    /// UDP request/response: one sockperf ping-pong run from `cg` (work in round trips).
    pub fn rr(&self, cg: &Cgroup, secs: u64) -> anyhow::Result<Run> {
        let c0 = self.cpu(cg)?;
        let out = pinned(cg, &self.cpu, "sockperf")
            .args(["ping-pong", "-i", "127.0.0.1", "-p", &self.sockperf.to_string()])
            .args(["-t", &secs.to_string()])
            .output()?;
        let cpu = self.cpu(cg)? - c0;
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        let line = text
            .lines()
            .find(|l| l.contains("[Valid Duration]"))
            .with_context(|| format!("sockperf: {text}"))?;
        let field = |k: &str| -> Option<f64> {
            let rest = &line[line.find(k)? + k.len()..];
            rest.split(|c: char| !(c.is_ascii_digit() || c == '.')).next()?.parse().ok()
        };
        let (t, n) = (
            field("RunTime=").context("RunTime")?,
            field("ReceivedMessages=").context("ReceivedMessages")?,
        );
        // sockperf leaves out a warm-up and a cool-down from RunTime; the CPU covers the
        // whole process, so scale it to the counted part.
        Ok(Run { work: n, secs: t, cpu: cpu * t / secs as f64 })
    }
}

const DP: &str = "Datapath cost";

/// Time for a freshly started agent to finish its start-up work before a measurement.
pub const SETTLE: Duration = Duration::from_secs(2);

/// A no agent, B agent with a fault on another cgroup, C a matching near-0% rule here, D no
/// agent and an empty cgroup_skb program here (the floor: what any such program costs).
pub fn datapath(env: &Env, rep: &mut Report) -> anyhow::Result<()> {
    println!("== datapath cost: iperf3 and sockperf from a cgroup, A/B/C/D alternated");
    let cg = Cgroup::new("bench-dp");
    let other = Cgroup::new("bench-dp-other");
    let servers = Servers::start()?;
    let (rounds, secs) = env.pick((3, 1), (9, 3));
    let mut agent: Option<Agent> = None;
    let mut matching: Option<String> = None;
    let mut floor: Option<Floor> = None;
    let samples = alternate(rounds, 4, |_, v| {
        if v != 3 {
            floor = None;
        }
        if v == 0 || v == 3 {
            matching = None;
            if let Some(a) = agent.take() {
                drop(a);
                // What the kernel does after the agent left (programs freed) settles too.
                std::thread::sleep(SETTLE);
            }
            if v == 3 && floor.is_none() {
                floor = Some(Floor::attach(&cg.fs)?);
            }
        } else {
            if agent.is_none() {
                let a = start_agent(None)?;
                std::thread::sleep(SETTLE);
                a.inject(&[
                    "net",
                    "loss",
                    "--cgroup",
                    &other.rel,
                    "--percent",
                    "30",
                    "--for",
                    "10m",
                ])?;
                agent = Some(a);
            }
            let a = agent.as_ref().context("agent")?;
            if v == 2 && matching.is_none() {
                matching = Some(a.inject(&[
                    "net",
                    "loss",
                    "--cgroup",
                    &cg.rel,
                    "--percent",
                    NEAR_ZERO,
                    "--for",
                    "10m",
                ])?);
            }
            if v == 1
                && let Some(id) = matching.take()
            {
                a.cancel(&id)?;
            }
        }
        Ok((servers.tcp(&cg, secs)?, servers.rr(&cg, secs)?))
    })?;
    // The programs' own time per round trip in C (set up again if the last round was not C).
    drop(floor.take());
    let a = match agent.take() {
        Some(a) => a,
        None => {
            let a = start_agent(None)?;
            std::thread::sleep(SETTLE);
            a
        }
    };
    if matching.is_none() {
        a.inject(&["net", "loss", "--cgroup", &cg.rel, "--percent", NEAR_ZERO, "--for", "10m"])?;
    }
    let prog = {
        let stats = BpfStats::enable()?;
        Some(stats.per_op(a.process(), || Ok(servers.rr(&cg, secs)?.work))?)
    };
    drop(a);
    type M = dyn Fn(&(Run, Run)) -> f64;
    let med = |v: usize, m: &M| median(&series(&samples, v, m));
    let tcp_rate: &M = &|s| s.0.rate() * 8.0 / 1e9;
    let tcp_cpu: &M = &|s| s.0.per_cpu() / 1e9;
    let rr_rate: &M = &|s| s.1.rate();
    let rr_cpu: &M = &|s| s.1.per_cpu();
    let abc = |m: &M, unit: &str| {
        format!(
            "medians A {:.4} / B {:.4} / C {:.4} / D {:.4} {unit}",
            med(0, m),
            med(1, m),
            med(2, m),
            med(3, m)
        )
    };
    let figs: [(&str, &str, usize, &M, String); 8] = [
        (
            "datapath.tcp.other",
            "TCP throughput (iperf3), fault on another cgroup / no agent",
            1,
            tcp_rate,
            abc(tcp_rate, "Gbit/s"),
        ),
        (
            "datapath.tcp.match",
            "TCP throughput (iperf3), matching ~0% loss rule / no agent",
            2,
            tcp_rate,
            abc(tcp_rate, "Gbit/s"),
        ),
        (
            "datapath.tcp_cpu.other",
            "TCP bytes per CPU second (iperf3), fault on another cgroup / no agent",
            1,
            tcp_cpu,
            abc(tcp_cpu, "GB per CPU s"),
        ),
        (
            "datapath.tcp_cpu.match",
            "TCP bytes per CPU second (iperf3), matching ~0% loss rule / no agent",
            2,
            tcp_cpu,
            abc(tcp_cpu, "GB per CPU s"),
        ),
        (
            "datapath.rr.other",
            "UDP request/response rate (sockperf), fault on another cgroup / no agent",
            1,
            rr_rate,
            abc(rr_rate, "round trips/s"),
        ),
        (
            "datapath.rr.match",
            "UDP request/response rate (sockperf), matching ~0% loss rule / no agent",
            2,
            rr_rate,
            abc(rr_rate, "round trips/s"),
        ),
        (
            "datapath.rr_cpu.other",
            "UDP round trips per CPU second (sockperf), fault on another cgroup / no agent",
            1,
            rr_cpu,
            abc(rr_cpu, "per CPU s"),
        ),
        (
            "datapath.rr_cpu.match",
            "UDP round trips per CPU second (sockperf), matching ~0% loss rule / no agent",
            2,
            rr_cpu,
            abc(rr_cpu, "per CPU s"),
        ),
    ];
    for (id, label, v, m, note) in figs {
        rep.add(
            Figure::new(DP, id, label, paired_ratio(&samples, 0, v, m), "ratio")
                .goal(Goal::AtLeast(0.98))
                .check(Better::Higher)
                .note(format!(
                    "{note}; {rounds} rounds of {secs} s, {}",
                    spread(&samples, 0, v, m)
                )),
        );
    }
    // The floor: what the kernel's dispatch of any cgroup_skb program costs a round trip, and
    // the rule's program measured over it.
    for (id, label, a, b, goal) in [
        (
            "datapath.rr_cpu.floor",
            "UDP round trips per CPU second, an empty cgroup_skb program / no agent (the floor)",
            0,
            3,
            None,
        ),
        (
            "datapath.rr_cpu.over_floor",
            "UDP round trips per CPU second, matching ~0% loss rule / the empty program",
            3,
            2,
            Some(0.98),
        ),
    ] {
        let mut f = Figure::new(DP, id, label, paired_ratio(&samples, a, b, rr_cpu), "ratio").note(
            format!(
                "{}; {rounds} rounds of {secs} s, {}",
                abc(rr_cpu, "per CPU s"),
                spread(&samples, a, b, rr_cpu)
            ),
        );
        if let Some(g) = goal {
            f = f.goal(Goal::AtLeast(g)).check(Better::Higher);
        }
        rep.add(f);
    }
    if let Some((progs, total)) = prog {
        // sockperf counts only the round trips of its measured window; the client's egress
        // program runs exactly once per round trip, so it counts them all.
        let per_rt = progs.iter().find(|p| p.0 == "fl_skb_egress").map_or(1.0, |p| p.2);
        let total = total / per_rt;
        let each: Vec<String> = progs
            .iter()
            .map(|(n, ns, per)| format!("{n} {:.2} x {ns:.0} ns", per / per_rt))
            .collect();
        rep.add(
            Figure::new(
                DP,
                "datapath.prog_ns.round_trip",
                "Program time per UDP round trip (matching ~0% rule, sockperf)",
                total,
                "ns",
            )
            .note(format!(
                "{}; kernel.bpf_stats_enabled, one extra run; a loss experiment attaches only \
                 the cgroup_skb programs",
                each.join(", ")
            )),
        );
    }
    rep.detail(
        DP,
        format!(
            "Client in a fresh cgroup, servers (iperf3 -s, sockperf server) in another, over \
             loopback, all on one CPU (taskset): on two CPUs each run's rate depends on whether \
             the scheduler placed client and server together, up to 5x apart in this VM. A: no agent running; B: the agent running with a 30% loss experiment on \
             another cgroup; C: as B plus a loss rule on this cgroup that matches every packet \
             (both directions) with {NEAR_ZERO}% (the API refuses 0%), so the programs run the \
             whole match and the random draw on every packet. Rounds alternate A B C, C B A; each \
             figure is the median of the per-round ratios. Rates are per wall second; \"per CPU \
             second\" divides the same work by the CPU time of the client's and the servers' \
             cgroups (cpu.stat), which on loopback hold the whole path including the programs: \
             the cost figure that other load on the machine does not move."
        ),
    );
    Ok(())
}

const SYS: &str = "Syscall path cost";

/// connect() with the cgroup connect hooks attached but not matching, against none.
pub fn syscall(env: &Env, rep: &mut Report) -> anyhow::Result<()> {
    println!(
        "== syscall path cost (host): connect() with the connect hooks attached, not matching"
    );
    let cg = Cgroup::new("bench-sys");
    // A port nobody listens on: each TCP connect() is SYN, RST, ECONNREFUSED.
    let addr = format!("127.0.0.1:{}", free_port()?);
    let agent = start_agent(None)?;
    std::thread::sleep(SETTLE);
    let (rounds, secs) = env.pick((3, "1"), (9, "2"));
    let mut hook: Option<String> = None;
    let mut floor: Option<Floor> = None;
    // none / the agent's hook, not matching / an empty connect4 and connect6 program (the
    // floor: what the kernel's dispatch of any such program costs a call).
    let samples = alternate(rounds, 3, |_, v| {
        if v != 1
            && let Some(id) = hook.take()
        {
            agent.cancel(&id)?;
        }
        if v != 2 {
            floor = None;
        }
        match v {
            1 if hook.is_none() => {
                hook = Some(agent.inject(&[
                    "net", "reject", "--cgroup", &cg.rel, "--port", "1", "--for", "10m",
                ])?)
            }
            2 if floor.is_none() => floor = Some(Floor::attach_connect(&cg.fs)?),
            _ => {}
        }
        let tcp = probe(&cg, &["rate", "connect-refused", &addr, secs])?;
        let udp = probe(&cg, &["rate", "udp-connect", &addr, secs])?;
        let f = |v: &Value, k: &str| v[k].as_f64().with_context(|| format!("{k}: {v}"));
        Ok([f(&tcp, "per_s")?, f(&tcp, "per_cpu_s")?, f(&udp, "per_s")?, f(&udp, "per_cpu_s")?])
    })?;
    // The empty program's own time per TCP connect().
    let floor_ns = {
        let _floor = floor.take().map_or_else(|| Floor::attach_connect(&cg.fs), Ok)?;
        if let Some(id) = hook.take() {
            agent.cancel(&id)?;
        }
        let stats = BpfStats::enable()?;
        stats.ns_per_run(std::process::id(), &[FLOOR_CONNECT4], || {
            probe(&cg, &["rate", "connect-refused", &addr, secs]).map(drop)
        })?[0]
    };
    // The programs' own time per TCP connect().
    agent.inject(&["net", "reject", "--cgroup", &cg.rel, "--port", "1", "--for", "10m"])?;
    let names = ["fl_connect4", "fl_skb_egress", "fl_skb_ingress"];
    let stats = BpfStats::enable()?;
    let ns = stats.ns_per_run(agent.process(), &names, || {
        probe(&cg, &["rate", "connect-refused", &addr, secs]).map(drop)
    })?;
    drop(stats);
    let figs = [
        (
            "syscall.connect.tcp",
            "TCP connect() rate (refused port), connect hook attached, not matching / none",
            0,
            "calls/s",
        ),
        (
            "syscall.connect_cpu.tcp",
            "TCP connect() calls per CPU second, connect hook attached, not matching / none",
            1,
            "calls per CPU s",
        ),
        (
            "syscall.connect.udp",
            "UDP connect() rate, connect hook attached, not matching / none",
            2,
            "calls/s",
        ),
        (
            "syscall.connect_cpu.udp",
            "UDP connect() calls per CPU second, connect hook attached, not matching / none",
            3,
            "calls per CPU s",
        ),
    ];
    for (id, label, i, unit) in figs {
        let m = |s: &[f64; 4]| s[i];
        let note = format!(
            "medians {:.0} / {:.0} {unit} (the empty program {:.0}); {rounds} rounds of {secs} \
             s, {}",
            median(&series(&samples, 1, m)),
            median(&series(&samples, 0, m)),
            median(&series(&samples, 2, m)),
            spread(&samples, 0, 1, m)
        );
        rep.add(
            Figure::new(SYS, id, label, paired_ratio(&samples, 0, 1, m), "ratio")
                .goal(Goal::AtLeast(0.98))
                .check(Better::Higher)
                .note(note),
        );
    }
    // Per CPU second, over the floor: the empty programs against none, the hook against them.
    for (proto, i) in [("tcp", 1), ("udp", 3)] {
        let m = |s: &[f64; 4]| s[i];
        let up = proto.to_uppercase();
        rep.add(
            Figure::new(
                SYS,
                &format!("syscall.connect_cpu_floor.{proto}"),
                &format!("{up} connect() calls per CPU second, an empty connect4/6 program / none"),
                paired_ratio(&samples, 0, 2, m),
                "ratio",
            )
            .note(format!(
                "the kernel's dispatch of any connect program (the floor); {}",
                spread(&samples, 0, 2, m)
            )),
        );
        rep.add(
            Figure::new(
                SYS,
                &format!("syscall.connect_cpu_over_floor.{proto}"),
                &format!(
                    "{up} connect() calls per CPU second, connect hook not matching / an empty \
                     program"
                ),
                paired_ratio(&samples, 2, 1, m),
                "ratio",
            )
            .goal(Goal::AtLeast(0.98))
            .check(Better::Higher)
            .note(format!(
                "what the agent's programs cost beyond that dispatch; {}",
                spread(&samples, 2, 1, m)
            )),
        );
    }
    rep.add(
        Figure::new(
            SYS,
            "syscall.prog_ns.connect4_floor",
            "Program time per connect(), an empty connect4 program (the floor)",
            floor_ns,
            "ns",
        )
        .note("`return 1`, loaded and attached by the bench; kernel.bpf_stats_enabled, one run"),
    );
    rep.add(
        Figure::new(
            SYS,
            "syscall.prog_ns.connect4",
            "Program time per connect(), connect4 hook (not matching)",
            ns[0],
            "ns",
        )
        .note(format!(
            "the same TCP connect() also ran the cgroup_skb programs: egress {:.0} ns (SYN), \
             ingress {:.0} ns (RST); kernel.bpf_stats_enabled, one extra run",
            ns[1], ns[2]
        )),
    );
    rep.detail(
        SYS,
        "Host: `net reject --port 1` on the measuring cgroup attaches the cgroup connect4/6 \
         programs; every connect() runs them and does not match. TCP: socket + connect + close to a \
         local port nobody listens on (SYN, RST, ECONNREFUSED inside the call: no accept \
         queue or TIME_WAIT to limit the rate); UDP: socket + connect + close, where the hook \
         is a larger share of the call. Per CPU second: the calls divided by the probe's own \
         user + system time (getrusage), which holds the whole call on loopback. Rounds \
         alternate none/hook/floor, floor/hook/none; the floor is an empty connect4 and \
         connect6 program the bench attaches itself.",
    );
    Ok(())
}

const LAT: &str = "Inject-to-effect latency";

pub fn latency(env: &Env, rep: &mut Report) -> anyhow::Result<()> {
    let n = env.pick(20, 200);
    println!("== inject-to-effect latency: {n} injects, cold and warm");
    let agent = start_agent(None)?;
    std::thread::sleep(SETTLE);
    let sock = agent.socket.display().to_string();
    for mode in ["cold", "warm"] {
        let cg = Cgroup::new(&format!("bench-lat-{mode}"));
        let v = probe(&cg, &["inject-latency", &sock, &cg.rel, &n.to_string(), mode, "100"])?;
        let f = |k: &str, q: &str| v[k][q].as_f64().unwrap_or(f64::NAN);
        let what = if mode == "cold" {
            "first experiment on the cgroup (programs attached by the call)"
        } else {
            "cgroup already has an experiment (the call adds a rule)"
        };
        let note = format!(
            "{what}; in effect when the call returned: {}/{}; from the call's start p50 {:.2} / \
             p99 {:.2} ms; call p50 {:.2} ms; resolution (gap before the first dropped datagram) \
             median {:.3} ms; undetected {}",
            v["in_effect_at_return"],
            v["injects"],
            f("after_call", "median_ms"),
            f("after_call", "p99_ms"),
            f("call", "median_ms"),
            f("resolution", "median_ms"),
            v["undetected"]
        );
        rep.add(
            Figure::new(
                LAT,
                &format!("latency.{mode}.p50"),
                &format!("Inject return -> first dropped packet, p50 ({mode})"),
                f("after_return", "median_ms"),
                "ms",
            )
            .note(note.clone()),
        );
        rep.add(
            Figure::new(
                LAT,
                &format!("latency.{mode}.p99"),
                &format!("Inject return -> first dropped packet, p99 ({mode})"),
                f("after_return", "p99_ms"),
                "ms",
            )
            .goal(Goal::Below(5.0)),
        );
        if v["undetected"].as_u64().unwrap_or(0) > 0 {
            bail!("{mode}: {} injects without a dropped datagram", v["undetected"]);
        }
    }
    rep.detail(
        LAT,
        "Method: a process in the target cgroup sends a numbered UDP datagram to itself every \
         100 µs and logs each send time (CLOCK_MONOTONIC) and whether sendto() took it; it calls \
         Inject over gRPC (100% egress loss for that port) and notes when the call returned. The \
         first affected packet is the first datagram sent after the call started that never \
         arrived (or that sendto() refused); its send time minus the \
         call's return is the latency (negative: the fault was already in place when Inject \
         returned). Then Cancel, wait until datagrams flow again, repeat. The gap between the \
         last datagram through and the first dropped bounds the error.",
    );
    Ok(())
}

const ACC: &str = "Accuracy";

/// An iptables rule deleted on drop.
struct IptRule(Vec<String>);

impl IptRule {
    fn add(spec: &[String]) -> anyhow::Result<IptRule> {
        output(Command::new("iptables").args(["-w", "-A", "OUTPUT"]).args(spec))?;
        Ok(IptRule(spec.to_vec()))
    }
}

impl Drop for IptRule {
    fn drop(&mut self) {
        let _ = Command::new("iptables").args(["-w", "-D", "OUTPUT"]).args(&self.0).status();
    }
}

/// Loss 30% over 10,000 datagrams: faultline against iptables -m statistic.
pub fn loss(env: &Env, rep: &mut Report) -> anyhow::Result<()> {
    const COUNT: u64 = 10_000;
    let rounds = env.pick(1, 3);
    println!("== loss accuracy: 30% of {COUNT} UDP datagrams, faultline vs iptables statistic");
    let cg = Cgroup::new("bench-loss");
    let agent = start_agent(None)?;
    let samples = alternate(rounds, 2, |_, v| {
        let sink = UdpCounter::start()?;
        let port = sink.addr.port().to_string();
        let send = || probe(&cg, &["udp-send", &sink.addr.to_string(), &COUNT.to_string()]);
        if v == 0 {
            let id = agent.inject(&[
                "net",
                "loss",
                "--cgroup",
                &cg.rel,
                "--percent",
                "30",
                "--protocol",
                "udp",
                "--port",
                &port,
                "--direction",
                "egress",
                "--for",
                "10m",
            ])?;
            send()?;
            agent.cancel(&id)?;
        } else {
            let spec: Vec<String> = [
                "-p",
                "udp",
                "--dport",
                &port,
                "-m",
                "cgroup",
                "--path",
                &cg.rel,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                "0.3",
                "-j",
                "DROP",
            ]
            .map(String::from)
            .to_vec();
            let _rule = IptRule::add(&spec)?;
            send()?;
        }
        Ok(100.0 * (1.0 - sink.settle() as f64 / COUNT as f64))
    })?;
    for (v, who) in [(0, "faultline"), (1, "iptables statistic")] {
        let s = series(&samples, v, |x| *x);
        let runs: Vec<String> = s.iter().map(|x| format!("{x:.2}")).collect();
        rep.add(
            Figure::new(
                ACC,
                &format!("accuracy.loss.{}", if v == 0 { "faultline" } else { "iptables" }),
                &format!("Loss 30%, {who}: measured loss"),
                s.iter().sum::<f64>() / s.len() as f64,
                "%",
            )
            .goal(Goal::Within(30.0, 1.0))
            .check(Better::NearOne)
            .reference(v == 1)
            .note(format!(
                "{rounds} x {COUNT} datagrams, each run: {}%; 1 sd of one run = 0.46 points",
                runs.join(", ")
            )),
        );
    }
    Ok(())
}
