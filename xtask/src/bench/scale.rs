//! Scale: per-packet cost with 1, 100 and 1,000 active experiments on other cgroups, and the
//! agent's memory and CPU idle and with 1,000 experiments.

use std::time::Duration;

use faultline_tests::{
    Agent, Cgroup,
    bpf::{FLOOR_EGRESS, FLOOR_INGRESS, Floor},
};

use super::{
    host::{
        AgentExt as _, BpfStats, Env, alternate, median, paired_ratio, series, spread, start_agent,
    },
    net::{NEAR_ZERO, Servers},
    report::{Better, Figure, Goal, Report},
};

const H: &str = "Scale";

const PROGS: [&str; 2] = ["fl_skb_egress", "fl_skb_ingress"];

/// The agent's resident memory (MiB), CPU (% of one CPU) over `window`, and what the
/// memory is (anonymous: heap and stacks; file: the mapped binary and libraries).
fn footprint(agent: &Agent, window: Duration) -> anyhow::Result<(f64, f64, String)> {
    let u0 = agent.cpu_s()?;
    std::thread::sleep(window);
    let cpu = (agent.cpu_s()? - u0) / window.as_secs_f64() * 100.0;
    let mib = |k| agent.status_kib(k).map(|v| v as f64 / 1024.0);
    let what =
        format!("anonymous {:.1} MiB, file-backed {:.1} MiB", mib("RssAnon")?, mib("RssFile")?);
    Ok((mib("VmRSS")?, cpu, what))
}

/// Program time per packet of the programs `names` (egress, ingress) of process `pid` while
/// `cg` runs sockperf: the median of three runs, each side, and their mean.
fn per_packet(
    pid: u32,
    names: [&str; 2],
    servers: &Servers,
    cg: &Cgroup,
    secs: u64,
) -> anyhow::Result<(f64, f64, f64)> {
    let stats = BpfStats::enable()?;
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(stats.ns_per_run(pid, &names, || servers.rr(cg, secs).map(drop))?);
    }
    drop(stats);
    let side = |i: usize| median(&runs.iter().map(|r| r[i]).collect::<Vec<_>>());
    let (eg, ing) = (side(0), side(1));
    Ok((eg, ing, (eg + ing) / 2.0))
}

pub fn scale(env: &Env, rep: &mut Report) -> anyhow::Result<()> {
    let window = Duration::from_secs(env.pick(3, 10));
    let (rounds, secs) = env.pick((2, 1), (6, 2));
    println!("== scale: per-packet cost with 1, 100, 1,000 experiments; agent RSS and CPU");
    let policy = env.dir.join("scale-policy.toml");
    std::fs::write(&policy, "max_concurrent = 2000\n")?;
    let agent = start_agent(Some(&policy))?;
    // Idle: started, nothing asked of it yet, settled.
    std::thread::sleep(Duration::from_secs(3));
    let (rss_idle, cpu_idle, mem_idle) = footprint(&agent, window)?;
    let t = Cgroup::new("bench-scale-t");
    let r = Cgroup::new("bench-scale-r");
    let servers = Servers::start()?;
    // The floor: an empty program on a cgroup of its own, run by the same traffic; attached
    // throughout, so each level's rounds measure it beside the rule.
    let floor_cg = Cgroup::new("bench-scale-f");
    let _floor = Floor::attach(&floor_cg.fs)?;
    let floor =
        per_packet(std::process::id(), [FLOOR_EGRESS, FLOOR_INGRESS], &servers, &floor_cg, secs)?;
    rep.add(
        Figure::new(
            H,
            "scale.prog_ns.floor",
            "Program time per packet, an empty cgroup_skb program (the floor)",
            floor.2,
            "ns",
        )
        .note(format!(
            "egress {:.0} ns, ingress {:.0} ns: `return 1`, loaded and attached by the bench \
             (bpf_stats, median of 3 runs)",
            floor.0, floor.1
        )),
    );
    let over = |ns: f64| format!("{:.0} ns over the floor", ns - floor.2);
    agent.inject(&["net", "loss", "--cgroup", &t.rel, "--percent", NEAR_ZERO, "--for", "1h"])?;
    let parent = Cgroup::new("bench-scale-n");
    let mut children: Vec<Cgroup> = Vec::new();
    let mut ratios = Vec::new();
    let mut prog_ns = Vec::new();
    let mut at_1000 = (0.0, 0.0, String::new());
    let mut notes = Vec::new();
    for level in [1usize, 100, 1000] {
        let t0 = std::time::Instant::now();
        let want = level - 1; // the rule on T counts as one
        let start = children.len();
        let made: anyhow::Result<Vec<Vec<Cgroup>>> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|k| {
                    let (agent, parent) = (&agent, &parent);
                    s.spawn(move || -> anyhow::Result<Vec<Cgroup>> {
                        let mut mine = Vec::new();
                        for i in (start..want).filter(|i| i % 4 == k) {
                            let c = parent.child(&format!("c{i}"));
                            agent.inject(&[
                                "net",
                                "loss",
                                "--cgroup",
                                &c.rel,
                                "--percent",
                                "1",
                                "--protocol",
                                "udp",
                                "--port",
                                "9",
                                "--for",
                                "1h",
                            ])?;
                            mine.push(c);
                        }
                        Ok(mine)
                    })
                })
                .collect();
            threads
                .into_iter()
                .map(|t| t.join().map_err(|_| anyhow::anyhow!("inject thread panicked"))?)
                .collect()
        });
        children.extend(made?.into_iter().flatten());
        if level > 1 {
            println!("   {} experiments made in {:.1} s", want - start, t0.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_secs(if level == 1000 { 6 } else { 1 }));
        // R (no program), T (the rule), F (the empty program), alternated.
        let samples = alternate(rounds, 3, |_, v| servers.rr([&r, &t, &floor_cg][v], secs))?;
        let ratio = paired_ratio(&samples, 0, 1, |x| x.per_cpu());
        let over_floor = paired_ratio(&samples, 2, 1, |x| x.per_cpu());
        if level == 1 {
            rep.add(
                Figure::new(
                    H,
                    "scale.rr.floor",
                    "UDP round trips per CPU s, the empty cgroup_skb program / none",
                    paired_ratio(&samples, 0, 2, |x| x.per_cpu()),
                    "ratio",
                )
                .note(format!(
                    "the kernel's own cost of running a cgroup_skb program on each packet (the \
                     floor under the matching-rule ratios); {}",
                    spread(&samples, 0, 2, |x| x.per_cpu())
                )),
            );
        }
        notes.push(format!(
            "{level}: {:.0} / {:.0} round trips per CPU s, {} (wall-clock rate ratio {:.3})",
            median(&series(&samples, 1, |x| x.per_cpu())),
            median(&series(&samples, 0, |x| x.per_cpu())),
            spread(&samples, 0, 1, |x| x.per_cpu()),
            paired_ratio(&samples, 0, 1, |x| x.rate())
        ));
        ratios.push(ratio);
        // The programs' own time per packet, from the kernel's run-time statistics.
        let (eg, ing, packet_ns) = per_packet(agent.process(), PROGS, &servers, &t, secs)?;
        prog_ns.push(packet_ns);
        rep.add(
            Figure::new(
                H,
                &format!("scale.prog_ns.{level}"),
                &format!("Program time per packet, {level} experiment(s) active"),
                packet_ns,
                "ns",
            )
            .goal(Goal::Below(130.0))
            .note(format!(
                "egress {eg:.0} ns, ingress {ing:.0} ns (bpf_stats, median of 3 runs); {}",
                over(packet_ns)
            )),
        );
        rep.add(
            Figure::new(
                H,
                &format!("scale.rr.{level}"),
                &format!(
                    "UDP round trips per CPU s, matching rule / none, {level} experiment(s) active"
                ),
                ratio,
                "ratio",
            )
            .goal(Goal::AtLeast(0.98))
            .check(Better::Higher)
            .note(notes.last().cloned().unwrap_or_default()),
        );
        rep.add(
            Figure::new(
                H,
                &format!("scale.rr_over_floor.{level}"),
                &format!(
                    "UDP round trips per CPU s, matching rule / the empty program, {level} \
                     experiment(s) active"
                ),
                over_floor,
                "ratio",
            )
            .goal(Goal::AtLeast(0.98))
            .check(Better::Higher)
            .note(format!(
                "what the rule's program costs beyond the kernel's dispatch of any cgroup_skb \
                 program; {}",
                spread(&samples, 2, 1, |x| x.per_cpu())
            )),
        );
        if level == 1000 {
            at_1000 = footprint(&agent, window)?;
        }
    }
    // With the 1,000 in place: a targeted cgroup whose rule's port filter matches nothing of
    // this traffic, then this cgroup with 15 more such rules (16, the most one cgroup takes).
    let n = Cgroup::new("bench-scale-u");
    let no_match = ["--percent", "1", "--protocol", "udp", "--port", "9", "--for", "1h"];
    agent.inject(&[&["net", "loss", "--cgroup", &n.rel][..], &no_match[..]].concat())?;
    std::thread::sleep(Duration::from_secs(1));
    let (eg, ing, unmatched) = per_packet(agent.process(), PROGS, &servers, &n, secs)?;
    rep.add(
        Figure::new(
            H,
            "scale.prog_ns.no_match",
            "Program time per packet, targeted cgroup, no rule matches (port filter elsewhere)",
            unmatched,
            "ns",
        )
        .goal(Goal::Below(60.0))
        .note(format!(
            "egress {eg:.0} ns, ingress {ing:.0} ns, {}; one rule (UDP to port 9) on the \
             cgroup, 1,000 experiments on others",
            over(unmatched)
        )),
    );
    for k in 0..15 {
        let port = (9 + k).to_string();
        let proto = if k % 2 == 0 { "udp" } else { "tcp" };
        agent.inject(&[
            "net",
            "loss",
            "--cgroup",
            &t.rel,
            "--percent",
            "1",
            "--protocol",
            proto,
            "--port",
            &port,
            "--for",
            "1h",
        ])?;
    }
    std::thread::sleep(Duration::from_secs(1));
    let (eg, ing, sixteen) = per_packet(agent.process(), PROGS, &servers, &t, secs)?;
    rep.add(
        Figure::new(
            H,
            "scale.prog_ns.1000_16",
            "Program time per packet, 1,000 experiments elsewhere and 16 on this cgroup (one matching)",
            sixteen,
            "ns",
        )
        .goal(Goal::Below(130.0))
        .note(format!(
            "egress {eg:.0} ns, ingress {ing:.0} ns, {}; the {NEAR_ZERO}% rule matches every \
             packet, 15 more (UDP or TCP to ports 9-23) match none",
            over(sixteen)
        )),
    );
    for (i, level) in [(1, 100), (2, 1000)] {
        rep.add(
            Figure::new(
                H,
                &format!("scale.flat.{level}"),
                &format!("Per-packet cost flat: program time at 1 experiment / at {level}"),
                prog_ns[0] / prog_ns[i],
                "ratio",
            )
            .goal(Goal::AtLeast(0.95))
            .check(Better::Higher)
            .note(format!("{:.0} ns / {:.0} ns", prog_ns[0], prog_ns[i])),
        );
        rep.add(
            Figure::new(
                H,
                &format!("scale.flat_rr.{level}"),
                &format!("Round trips per CPU s flat: T/R ratio at {level} experiments / at 1"),
                ratios[i] / ratios[0],
                "ratio",
            )
            .goal(Goal::AtLeast(0.97))
            .check(Better::Higher),
        );
    }
    let w = window.as_secs();
    rep.add(
        Figure::new(H, "scale.rss.idle", "Agent RSS, idle", rss_idle, "MiB")
            .goal(Goal::Below(16.0))
            .note(mem_idle),
    );
    rep.add(
        Figure::new(H, "scale.cpu.idle", "Agent CPU, idle", cpu_idle, "% of a CPU")
            .goal(Goal::Below(0.1))
            .note(format!("over {w} s")),
    );
    rep.add(
        Figure::new(H, "scale.rss.1000", "Agent RSS, 1,000 experiments", at_1000.0, "MiB")
            .note(at_1000.2.clone()),
    );
    rep.add(
        Figure::new(H, "scale.cpu.1000", "Agent CPU, 1,000 experiments", at_1000.1, "% of a CPU")
            .note(format!("over {w} s, 6 s after the last inject")),
    );
    rep.detail(
        H,
        format!(
            "Per-packet cost: sockperf ping-pong from a cgroup T with a matching {NEAR_ZERO}% loss \
             rule, against a cgroup R with no program, as round trips per CPU second of client \
             and server (see Datapath cost), alternated ({rounds} rounds of {secs} s per \
             level, with F: a cgroup with the empty program), while 0, 99 and 999 more experiments (1% UDP loss to port 9) are active on \
             cgroups of their own. Flat means the T/R ratio does not fall as experiments are \
             added; the programs' own time per packet comes from the kernel's run-time \
             statistics (kernel.bpf_stats_enabled, on only for three extra runs per level), and \
             is set against the floor: an empty cgroup_skb program the bench attaches to a \
             cgroup of its own, run by the same traffic. With the 1,000 in place, two more: a \
             cgroup whose one rule (UDP to port 9) matches none of the traffic, and T with 15 \
             more such rules (16 on one cgroup, the most it takes). Agent RSS from /proc/PID/status, CPU from the cpu.stat of a cgroup holding \
             only the agent, over {w} s. Round trips per CPU s (T / R): {}.",
            notes.join("; ")
        ),
    );
    drop(agent);
    drop(children);
    Ok(())
}
