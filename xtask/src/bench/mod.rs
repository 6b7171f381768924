//! `cargo xtask bench [--quick] [--check] [--save-baseline] [SECTION...]`: the performance
//! goals, as ratios measured in one run (never timing assertions in tests), written to
//! target/bench/report.md and report.json.
//!
//! Sections (default: all, in this order):
//! - datapath: iperf3 and sockperf from a cgroup without the agent, with a fault on another
//!   cgroup, and with a matching ~0% rule on this one (net.rs)
//! - syscall: connect() with the cgroup connect hooks attached but not matching (net.rs)
//! - latency: from the Inject call's return to the first affected packet (net.rs)
//! - accuracy: loss against iptables statistic (net.rs), CPU against stress-ng (cpu.rs)
//! - delay: `sys delay` added latency against the asked, cost to the target's other calls
//!   (against strace's injection) and to processes outside the target (delay.rs)
//! - scale: per-packet cost with 1, 100, 1,000 experiments; agent RSS and CPU (scale.rs)
//! - vm: the VM-tier items in one Debian guest: openat cost with BPF LSM, delay against
//!   netem, bandwidth against tbf (vm.rs)
//! - load: the full load test (1,000 experiments, 100 clients, 60 s rounds)
//!
//! Noisy machines: every ratio is the median of per-round ratios of alternated runs.
//! `--check` compares the ratios with bench/baseline.json and fails on a regression over
//! 10%; `--save-baseline` writes this run's ratios there.

mod cpu;
mod delay;
mod host;
mod net;
mod report;
mod scale;
mod skew;
mod vm;

use std::{
    io::{BufRead as _, BufReader},
    process::Stdio,
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{cargo, root, run, setup};
use host::Env;
use report::{Figure, Report};

pub const SECTIONS: &[&str] =
    &["datapath", "syscall", "latency", "accuracy", "delay", "skew", "scale", "vm", "load"];

/// Tools the bench runs next to faultline.
const PACKAGES: &[&str] =
    &["stress-ng", "iperf3", "sockperf", "iptables", "strace", "gcc", "faketime"];

pub struct Opts {
    pub quick: bool,
    pub check: bool,
    pub save_baseline: bool,
    pub sections: Vec<String>,
}

pub fn bench(o: Opts) -> anyhow::Result<()> {
    let sections: Vec<String> = if o.sections.is_empty() {
        SECTIONS.iter().map(|s| s.to_string()).collect()
    } else {
        for s in &o.sections {
            if !SECTIONS.contains(&s.as_str()) {
                bail!("unknown section {s:?}: choose from {SECTIONS:?}");
            }
        }
        SECTIONS
            .iter()
            .filter(|s| o.sections.iter().any(|x| x == *s))
            .map(|s| s.to_string())
            .collect()
    };
    setup::all()?;
    setup::install_packages(PACKAGES)?;
    run(cargo().args(["build", "--release", "--package", "faultline"]))?;
    run(cargo().args(["build", "--release", "--package", "faultline-tests", "--bin", "fl-probe"]))?;
    let dir = std::env::temp_dir().join(format!("faultline-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let env = Env {
        bin: root().join("target/release/faultline"),
        probe: root().join("target/release/fl-probe"),
        dir: dir.clone(),
        quick: o.quick,
    };
    // The tests' harness (agent, cgroups, fl-probe) runs these release builds.
    faultline_tests::use_binaries(env.bin.clone(), env.probe.clone());
    let out = root().join("target/bench");
    let mut rep = Report { quick: o.quick, sections: sections.clone(), ..Default::default() };
    let t0 = Instant::now();
    for s in &sections {
        // The harness fails by panicking (it is the tests'): a section that panics failed.
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match s.as_str() {
            "datapath" => net::datapath(&env, &mut rep),
            "syscall" => net::syscall(&env, &mut rep),
            "latency" => net::latency(&env, &mut rep),
            "accuracy" => net::loss(&env, &mut rep).and_then(|_| cpu::cpu(&env, &mut rep)),
            "delay" => delay::delay(&env, &mut rep),
            "skew" => skew::skew(&env, &mut rep),
            "scale" => scale::scale(&env, &mut rep),
            "vm" => vm::vm(&env, &mut rep),
            "load" => load(&env, &mut rep),
            _ => Ok(()),
        }))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(anyhow::anyhow!("panicked: {msg}"))
        });
        if let Err(e) = r {
            println!("== {s} FAILED: {e:#}");
            rep.failures.push(format!("{s}: {e:#}"));
        }
        rep.seconds = t0.elapsed().as_secs_f64();
        rep.write(&out)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "== report: {} and report.json ({:.0} s)",
        out.join("report.md").display(),
        rep.seconds
    );
    let missed: Vec<&Figure> =
        rep.figures.iter().filter(|f| f.met() == Some(false) && !f.reference).collect();
    println!("== {} figures, {} goals not met", rep.figures.len(), missed.len());
    for f in missed {
        println!("   not met: {} = {:.3} {}", f.label, f.value, f.unit);
    }
    let baseline = root().join("bench/baseline.json");
    if o.save_baseline {
        std::fs::create_dir_all(root().join("bench"))?;
        std::fs::write(&baseline, serde_json::to_string_pretty(&rep.baseline())? + "\n")?;
        println!("== wrote {}", baseline.display());
    }
    if !rep.failures.is_empty() {
        bail!("sections failed: {}", rep.failures.join("; "));
    }
    if o.check {
        rep.check(&baseline)?;
    }
    Ok(())
}

/// A number in `line` between `before` and `after`.
fn number(line: &str, before: &str, after: &str) -> Option<f64> {
    let rest = &line[line.find(before)? + before.len()..];
    rest[..rest.find(after)?].trim().parse().ok()
}

/// The load test (tests/tests/host_only/load.rs), full size (quick: CI size, 2 rounds); its summary
/// lines go into the report.
fn load(env: &Env, rep: &mut Report) -> anyhow::Result<()> {
    const H: &str = "Load";
    let what = if env.quick {
        "200 experiments, 20 clients, 2 rounds of 10 s"
    } else {
        "1,000 experiments, 100 clients, 3 rounds of 60 s"
    };
    println!("== load: {what} (release build)");
    let mut cmd = cargo();
    cmd.args(["test", "--release", "--package", "faultline-tests", "--test", "host_only"])
        .args(["--", "--nocapture", "load::"])
        .env("FAULTLINE_BIN", &env.bin)
        .current_dir(root())
        .stderr(Stdio::piped());
    if env.quick {
        cmd.env("FAULTLINE_LOAD_ROUNDS", "2");
    } else {
        cmd.env("FAULTLINE_LOAD", "full");
    }
    let mut child = cmd.spawn().context("cargo test --test host_only load::")?;
    let stderr = child.stderr.take().context("stderr")?;
    let mut lines = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        eprintln!("{line}");
        if line.starts_with("round ") || line.starts_with("agent RSS") {
            lines.push(line);
        }
    }
    let status = child.wait()?;
    rep.detail(H, format!("{what}; the test's summary lines:\n\n```\n{}\n```", lines.join("\n")));
    let rounds: Vec<&String> = lines.iter().filter(|l| l.starts_with("round ")).collect();
    let Some(last) = rounds.last() else {
        bail!("no round lines from the load test ({status})");
    };
    let rss: Vec<f64> = rounds.iter().filter_map(|l| number(l, "agent RSS ", " KiB")).collect();
    rep.add(Figure::new(
        H,
        "load.calls_per_s",
        "Load: API calls per second (last round)",
        number(last, "(", "/s)").unwrap_or(f64::NAN),
        "calls/s",
    ));
    rep.add(Figure::new(
        H,
        "load.p99",
        "Load: call latency p99 (last round)",
        number(last, "p99 ", " ms").unwrap_or(f64::NAN),
        "ms",
    ));
    if rss.len() >= 2 {
        let (a, b) = (rss[rss.len() - 2], rss[rss.len() - 1]);
        rep.add(
            Figure::new(H, "load.rss", "Load: agent RSS after the last round", b / 1024.0, "MiB")
                .note(format!(
                    "previous round {:.1} MiB (the test fails on growth over 2% + 1 MiB)",
                    a / 1024.0
                )),
        );
    }
    if !status.success() {
        bail!("the load test failed ({status})");
    }
    Ok(())
}
