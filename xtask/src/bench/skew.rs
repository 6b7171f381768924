//! Time skew (`faultline time skew`, issue 17): the offset a process of the target reads, and
//! what a shifted clock_gettime costs against an untouched one, beside libfaketime
//! (LD_PRELOAD, Debian's `faketime`) on the same program. The workload is a small C program
//! (skew.c, built here with cc) that waits for a line on stdin, so the fault is applied to it
//! while it runs.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use faultline_tests::{Agent, Cgroup};

use super::{
    host::{
        AgentExt as _, Env, Proc, alternate, median, output, paired_ratio, spread, start_agent,
        traced,
    },
    report::{Better, Figure, Goal, Report},
};

const H: &str = "Time skew";
const SOURCE: &str = include_str!("skew.c");
/// libfaketime as Debian installs it.
const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// One run's "calls wall_s offset_ms".
struct Run {
    per_s: f64,
    offset_ms: f64,
}

fn parse(s: &str) -> anyhow::Result<Run> {
    let w: Vec<f64> = s.split_whitespace().map(str::parse).collect::<Result<_, _>>()?;
    match w[..] {
        [calls, wall, offset_ms] => Ok(Run { per_s: calls / wall, offset_ms }),
        _ => bail!("the skew workload printed {s:?}"),
    }
}

pub fn skew(env: &Env, rep: &mut Report) -> anyhow::Result<()> {
    if !Path::new(FAKETIME).exists() {
        bail!("{FAKETIME} is missing: `cargo xtask setup` installs Debian's faketime");
    }
    let src = env.dir.join("skew-load.c");
    let bin: PathBuf = env.dir.join("skew-load");
    std::fs::write(&src, SOURCE)?;
    output(Command::new("cc").args(["-O2", "-o"]).arg(&bin).arg(&src))
        .context("building the skew workload (needs a C compiler: gcc)")?;
    let agent: Agent = start_agent(None)?;
    let secs = env.pick(1, 3).to_string();
    let rounds = env.pick(3, 7);
    println!("== time skew -10m: {rounds} rounds of {secs} s, none / faultline / libfaketime");
    let cg = Cgroup::new("bench-skew");
    let runs = alternate(rounds, 3, |_, v| match v {
        0 => parse(&Proc::waiting(cg.command(&bin).arg(&secs))?.go()?),
        1 => {
            let mut p = Proc::waiting(cg.command(&bin).arg(&secs))?;
            let id = agent.inject(&[
                "time",
                "skew",
                "--pid",
                &p.pid().to_string(),
                "--offset",
                "-10m",
                "--for",
                "5m",
            ])?;
            traced(p.pid(), "the time skewer")?;
            let r = p.go().and_then(|o| parse(&o));
            let _ = agent.json(&["cancel", &id]);
            r
        }
        _ => parse(
            &Proc::waiting(
                cg.command(&bin).arg(&secs).env("LD_PRELOAD", FAKETIME).env("FAKETIME", "-10m"),
            )?
            .go()?,
        ),
    })?;
    let offsets: Vec<f64> = runs[1].iter().map(|r| r.offset_ms + 600_000.0).collect();
    rep.add(
        Figure::new(
            H,
            "skew.offset_error",
            "time skew -10m: offset read less offset asked",
            median(&offsets),
            "ms",
        )
        .goal(Goal::Within(0.0, 50.0))
        .check(Better::NearOne)
        .note(format!("{rounds} processes, read right after the fault began")),
    );
    let per_s = |r: &Run| r.per_s;
    for (v, key, who) in
        [(1, "skew.cost.faultline", "faultline"), (2, "skew.cost.faketime", "libfaketime")]
    {
        rep.add(
            Figure::new(
                H,
                key,
                &format!("clock_gettime rate, shifted by {who} / untouched"),
                paired_ratio(&runs, 0, v, per_s),
                "ratio",
            )
            .check(Better::Higher)
            .note(format!(
                "{}; medians {:.1} / {:.1} M calls/s",
                spread(&runs, 0, v, per_s),
                median(&runs[v].iter().map(per_s).collect::<Vec<_>>()) / 1e6,
                median(&runs[0].iter().map(per_s).collect::<Vec<_>>()) / 1e6
            )),
        );
    }
    let ours = paired_ratio(&runs, 0, 1, per_s);
    let theirs = paired_ratio(&runs, 0, 2, per_s);
    rep.add(
        Figure::new(
            H,
            "skew.cost.vs_faketime",
            "shifted clock_gettime rate: faultline / libfaketime",
            ours / theirs,
            "ratio",
        )
        .goal(Goal::AtLeast(1.0))
        .check(Better::Higher),
    );
    rep.detail(
        H,
        format!(
            "A C program in a fresh cgroup calls clock_gettime(CLOCK_REALTIME) as often as it \
             can for {secs} s: untouched, after `time skew --pid P --offset -10m` (started once \
             the skewer patched it), and under libfaketime (LD_PRELOAD, FAKETIME=-10m), \
             {rounds} rounds alternated. The offset a process reads is measured against its own \
             monotonic clock plus the gap it saw before the fault."
        ),
    );
    Ok(())
}
