//! CPU stress accuracy: faultline against stress-ng --cpu-load, each in a fresh cgroup,
//! measured from the cgroup's own cpu.stat: idle, next to a competing process in the same
//! cgroup (judged by the cgroup's whole usage), and under a CPU quota.

use std::{process::Stdio, time::Duration};

use anyhow::{Context as _, bail};
use faultline_tests::{Agent, Cgroup};

use super::{
    host::{AgentExt as _, Env, Proc, alternate, median, proc_cpu_s, series, start_agent},
    report::{Better, Figure, Goal, Report},
};

const ACC: &str = "Accuracy";

fn stress_ng_in(cg: &Cgroup, load: u32, secs: u64) -> anyhow::Result<()> {
    let status = cg
        .command("stress-ng")
        .args(["--cpu", "1", "--cpu-load", &load.to_string(), "--timeout"])
        .arg(format!("{secs}s"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running stress-ng")?;
    if !status.success() {
        bail!("stress-ng failed: {status}");
    }
    Ok(())
}

fn faultline_in(agent: &Agent, cg: &Cgroup, load: u32, secs: u64) -> anyhow::Result<()> {
    let (load, dur) = (load.to_string(), format!("{secs}s"));
    agent.inject(&[
        "stress",
        "cpu",
        "--cgroup",
        &cg.rel,
        "--workers",
        "1",
        "--load",
        &load,
        "--for",
        &dur,
    ])?;
    // Workers end on their own at the deadline.
    std::thread::sleep(Duration::from_millis(secs * 1000 + 300));
    Ok(())
}

/// CPU (in CPUs) the stress tool used in `cg` over the run (the cgroup's usage less the
/// competing process's), and the cgroup's whole usage, per second of the run.
fn measure(
    env: &Env,
    cg: &Cgroup,
    compete: bool,
    secs: u64,
    run: impl FnOnce() -> anyhow::Result<()>,
) -> anyhow::Result<(f64, f64)> {
    let competitor = if compete {
        let c = cg
            .command(&env.probe)
            .args(["spin", &(secs + 5).to_string(), &COMPETITOR_PERCENT.to_string()])
            .stdout(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        Some(Proc(c))
    } else {
        None
    };
    let other = |p: &Option<Proc>| p.as_ref().map_or(Ok(0.0), |p| proc_cpu_s(p.pid()));
    let (u0, c0) = (cg.cpu_usage_s(), other(&competitor)?);
    run()?;
    let (u1, c1) = (cg.cpu_usage_s(), other(&competitor)?);
    let s = secs as f64;
    Ok((((u1 - u0) - (c1 - c0)) / s, (u1 - u0) / s))
}

/// The competing process's own load, in percent of a CPU: below every target, so that the
/// tool has something to add.
const COMPETITOR_PERCENT: u32 = 20;

pub fn cpu(env: &Env, rep: &mut Report) -> anyhow::Result<()> {
    let secs = env.pick(3, 10);
    let rounds = env.pick(1, 2);
    println!("== CPU load accuracy: 1 worker, {secs} s runs, faultline vs stress-ng");
    let agent = start_agent(None)?;
    let rows: [(u32, Option<f64>, bool); 7] = [
        (25, None, false),
        (50, None, false),
        (80, None, false),
        (25, None, true),
        (50, None, true),
        (80, None, true),
        (80, Some(0.5), false),
    ];
    let mut table = String::from(
        "| load | quota | competing process | target CPU | faultline | ratio | stress-ng | ratio | cgroup total (faultline / stress-ng) |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (load, quota, compete) in rows {
        let cg = |tag: &str| match quota {
            None => Cgroup::new(&format!("bench-{tag}{load}{}", if compete { "c" } else { "" })),
            Some(q) => Cgroup::with_cpu_quota(&format!("bench-{tag}{load}q"), q),
        };
        let samples = alternate(rounds, 2, |_, v| {
            let c = cg(if v == 0 { "fl" } else { "ng" });
            if v == 0 {
                measure(env, &c, compete, secs, || faultline_in(&agent, &c, load, secs))
            } else {
                measure(env, &c, compete, secs, || stress_ng_in(&c, load, secs))
            }
        })?;
        // The load is a share of what the cgroup may use: 80% of a 0.5 CPU quota is 0.4.
        let target = load as f64 / 100.0 * quota.unwrap_or(1.0).min(1.0);
        let ours = median(&series(&samples, 0, |x| x.0));
        let theirs = median(&series(&samples, 1, |x| x.0));
        let total = |v| median(&series(&samples, v, |x| x.1));
        let totals = format!("{:.3} / {:.3}", total(0), total(1));
        let q = quota.map_or("none".to_string(), |q| format!("{q} CPU"));
        let what = match (quota, compete) {
            (Some(q), _) => format!("under a {q} CPU quota"),
            (None, true) => {
                format!("next to a process using {COMPETITOR_PERCENT}% in the cgroup, cgroup total")
            }
            (None, false) => "idle cgroup".to_string(),
        };
        table += &format!(
            "| {load}% | {q} | {} | {target:.3} | {ours:.3} | {:.3} | {theirs:.3} | {:.3} | {totals} |\n",
            if compete { "yes" } else { "no" },
            ours / target,
            theirs / target
        );
        let key = format!(
            "{load}{}{}",
            if compete { "-competing" } else { "" },
            if quota.is_some() { "-quota" } else { "" }
        );
        // Next to a competitor the question is the pod's load: the cgroup's whole usage.
        let judged = |v: usize, alone: f64| if compete { total(v) } else { alone };
        for (who, v) in [("faultline", judged(0, ours)), ("stress-ng", judged(1, theirs))] {
            rep.add(
                Figure::new(
                    ACC,
                    &format!("accuracy.cpu.{key}.{who}"),
                    &format!("CPU {load}%, {what}, {who}: measured / target"),
                    v / target,
                    "ratio",
                )
                .goal(Goal::Within(1.0, 0.1))
                .check(Better::NearOne)
                .reference(who != "faultline")
                .note(if compete {
                    format!(
                        "cgroup total {v:.3} of {target:.3} CPU; the tool's own share \
                         {ours:.3} / {theirs:.3} (faultline / stress-ng)"
                    )
                } else {
                    format!("{v:.3} of {target:.3} CPU")
                }),
            );
        }
    }
    rep.detail(
        ACC,
        format!(
            "CPU: one worker for {secs} s in a fresh cgroup, the CPU it used from the cgroup's \
             cpu.stat (the competing process's own CPU time, from /proc, taken out); median of \
             {rounds} alternated run(s) per tool. The competing process is one thread busy \
             {COMPETITOR_PERCENT}% of the time (`fl-probe spin`) in the same cgroup, and there \
             the figure is the cgroup's whole usage against the target: what the pod's \
             dashboard shows. stress-ng's --cpu-load is a duty cycle of its own worker, added \
             on top; faultline's --load is, by its API contract (proto CpuStress), a closed \
             loop on the cgroup's whole usage, so its worker adds only what is missing.\n\n{table}"
        ),
    );
    Ok(())
}
