//! `cargo xtask fuzz`: the cargo-fuzz targets in fuzz/ (request validation, the journal
//! reader), each run for a number of executions on its corpus, single process. A bench-style
//! task, not part of `cargo xtask test`: it prints the executions libFuzzer reports and fails
//! on a crash (the input is left in fuzz/artifacts/TARGET/).

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::{root, run, setup};

pub const TARGETS: &[&str] = &["validate", "journal"];
pub const DEFAULT_RUNS: u64 = 1_000_000;
/// Pinned, like bpf-linker: a fuzz run is reproducible from the repo alone.
const CARGO_FUZZ: &str = "cargo-fuzz@0.13.2";
/// Seconds one input may take before libFuzzer calls it a hang.
const TIMEOUT_SECS: u32 = 10;

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// `cargo fuzz` on the nightly toolchain (the sanitizers need it), whatever the toolchain of
/// the cargo that runs xtask.
fn cargo_fuzz() -> Command {
    let mut c = Command::new("rustup");
    c.env_remove("RUSTUP_TOOLCHAIN").env_remove("RUSTC").args(["run", "nightly", "cargo", "fuzz"]);
    c.current_dir(root());
    c
}

fn install_cargo_fuzz() -> anyhow::Result<()> {
    let ok = cargo_fuzz().arg("--version").output().map(|o| o.status.success()).unwrap_or(false);
    if ok {
        return Ok(());
    }
    println!("== installing {CARGO_FUZZ}");
    run(Command::new("cargo").args(["install", CARGO_FUZZ, "--locked"]))
}

/// What libFuzzer said at the end of one run.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    runs: Option<u64>,
    /// Coverage and features of the last status line ("cov: 1234 ft: 5678").
    cov: Option<u64>,
    ft: Option<u64>,
}

impl Stats {
    fn read(&mut self, line: &str) {
        let num = |s: &str| s.trim().parse::<u64>().ok();
        if let Some(n) = line.strip_prefix("stat::number_of_executed_units:") {
            self.runs = num(n).or(self.runs);
        } else if let Some(rest) = line.strip_prefix("Done ") {
            // "Done 1000000 runs in 95 second(s)"
            if self.runs.is_none() {
                self.runs = rest.split_whitespace().next().and_then(num);
            }
        } else if let Some(rest) = line.strip_prefix('#') {
            // "#1048576 pulse  cov: 1234 ft: 5678 corp: 90/4Kb lim: 4096 exec/s: 9000 rss: 80Mb"
            let words: Vec<&str> = rest.split_whitespace().collect();
            let after = |key: &str| {
                words.iter().position(|w| *w == key).and_then(|i| words.get(i + 1)).copied()
            };
            if let Some(n) = words.first().and_then(|w| num(w)) {
                self.runs = self.runs.max(Some(n));
            }
            self.cov = after("cov:").and_then(num).or(self.cov);
            self.ft = after("ft:").and_then(num).or(self.ft);
        }
    }
}

/// Files and bytes in a directory (not recursive); zeros when it does not exist.
fn dir_size(dir: &Path) -> (usize, u64) {
    let Ok(rd) = std::fs::read_dir(dir) else { return (0, 0) };
    rd.flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}

fn artifacts(target: &str) -> Vec<PathBuf> {
    let dir = fuzz_dir().join("artifacts").join(target);
    let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    v.sort();
    v
}

struct Outcome {
    target: String,
    stats: Stats,
    seconds: f64,
    corpus: (usize, u64),
    crash: Option<String>,
}

/// One campaign: `runs` executions of `target` on fuzz/corpus/TARGET (where new inputs go)
/// and fuzz/seeds/TARGET, with the shared dictionary.
fn campaign(target: &str, runs: u64) -> anyhow::Result<Outcome> {
    let corpus = fuzz_dir().join("corpus").join(target);
    let seeds = fuzz_dir().join("seeds").join(target);
    std::fs::create_dir_all(&corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let before = artifacts(target);
    println!("== fuzz {target}: {runs} runs");
    let mut cmd = cargo_fuzz();
    cmd.arg("run").arg("--fuzz-dir").arg(fuzz_dir()).arg(target).arg(&corpus);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    cmd.arg("--")
        .arg(format!("-runs={runs}"))
        .arg(format!("-timeout={TIMEOUT_SECS}"))
        .arg(format!("-dict={}", fuzz_dir().join("faultline.dict").display()))
        .arg("-print_final_stats=1")
        .stderr(Stdio::piped());
    let mut start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let mut stats = Stats::default();
    if let Some(err) = child.stderr.take() {
        for line in BufReader::new(err).lines() {
            let line = line.unwrap_or_default();
            eprintln!("{line}");
            // The fuzzer's own first line: the time from here on is fuzzing, not cargo.
            if line.starts_with("INFO: Seed:") {
                start = Instant::now();
            }
            stats.read(&line);
        }
    }
    let status = child.wait()?;
    let seconds = start.elapsed().as_secs_f64();
    let new: Vec<PathBuf> = artifacts(target).into_iter().filter(|p| !before.contains(p)).collect();
    let crash = if !new.is_empty() {
        Some(format!(
            "{status}; input saved as {}",
            new.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ))
    } else if !status.success() {
        Some(format!("{status} (see the output above)"))
    } else {
        None
    };
    Ok(Outcome { target: target.into(), stats, seconds, corpus: dir_size(&corpus), crash })
}

/// Merges fuzz/corpus/TARGET down to the inputs that add coverage, as `cargo fuzz cmin`
/// does, but with the binary that just ran: cmin would build again, and others' edits of
/// agent/src since the campaign started would make it another binary.
fn minimize(target: &str) -> anyhow::Result<(usize, u64)> {
    let corpus = fuzz_dir().join("corpus").join(target);
    // Beside the build, out of git's way if a step fails.
    let merged = fuzz_dir().join("target/cmin").join(target);
    let old = fuzz_dir().join("target/cmin").join(format!("{target}.old"));
    let bin = fuzz_dir().join("target").join(format!("{}/release/{target}", host_triple()?));
    if !bin.exists() {
        bail!("no fuzz binary {}", bin.display());
    }
    println!("== minimizing the corpus of {target}");
    for d in [&merged, &old] {
        let _ = std::fs::remove_dir_all(d);
    }
    std::fs::create_dir_all(&merged)?;
    let artifacts = fuzz_dir().join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    run(Command::new(&bin)
        .env("ASAN_OPTIONS", "detect_odr_violation=0")
        .arg("-merge=1")
        .arg(format!("-timeout={TIMEOUT_SECS}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(&merged)
        .arg(&corpus))?;
    std::fs::rename(&corpus, &old)?;
    std::fs::rename(&merged, &corpus)?;
    std::fs::remove_dir_all(&old)?;
    Ok(dir_size(&corpus))
}

/// The triple cargo-fuzz builds for by default (the host's), from nightly's rustc.
fn host_triple() -> anyhow::Result<String> {
    let out = Command::new("rustup")
        .env_remove("RUSTUP_TOOLCHAIN")
        .args(["run", "nightly", "rustc", "-vV"])
        .output()
        .context("rustc -vV")?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_string))
        .context("no host line in rustc -vV")
}

fn kib(bytes: u64) -> String {
    format!("{:.1} KiB", bytes as f64 / 1024.0)
}

pub fn fuzz(runs: u64, targets: &[String], cmin: bool) -> anyhow::Result<()> {
    let targets: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    if let Some(t) = targets.iter().find(|t| !TARGETS.contains(t)) {
        bail!("no fuzz target {t:?}: {TARGETS:?}");
    }
    // The nightly toolchain and bpf-linker: the agent's build script builds its eBPF programs.
    setup::all()?;
    install_cargo_fuzz()?;
    println!("== building the fuzz targets (nightly, sanitizers)");
    run(cargo_fuzz().arg("build").arg("--fuzz-dir").arg(fuzz_dir()))?;
    let mut outcomes = Vec::new();
    for t in &targets {
        let mut o = campaign(t, runs)?;
        if cmin && o.crash.is_none() {
            o.corpus = minimize(t)?;
        }
        outcomes.push(o);
    }
    println!("== fuzz summary ({runs} runs asked of each target)");
    for o in &outcomes {
        let s = &o.stats;
        // From the fuzzer's wall time: libFuzzer's own figure counts whole seconds.
        let exec_s =
            s.runs.map_or("?".into(), |r| format!("{:.0}", r as f64 / o.seconds.max(1e-3)));
        println!(
            "{}: {} executions in {:.1} s ({} exec/s), cov {} ft {}, corpus {} files / {}{}: {}",
            o.target,
            s.runs.map_or("?".into(), |r| r.to_string()),
            o.seconds,
            exec_s,
            s.cov.map_or("?".into(), |c| c.to_string()),
            s.ft.map_or("?".into(), |c| c.to_string()),
            o.corpus.0,
            kib(o.corpus.1),
            if cmin && o.crash.is_none() { " after cmin" } else { "" },
            o.crash.as_deref().map_or("no crash".into(), |c| format!("CRASH {c}")),
        );
    }
    let crashed: Vec<&str> =
        outcomes.iter().filter(|o| o.crash.is_some()).map(|o| o.target.as_str()).collect();
    if !crashed.is_empty() {
        bail!("fuzz targets crashed: {crashed:?} (inputs in fuzz/artifacts/)");
    }
    let short: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.stats.runs.is_none_or(|r| r < runs))
        .map(|o| o.target.as_str())
        .collect();
    if !short.is_empty() {
        bail!("fuzz targets stopped short of {runs} runs: {short:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libfuzzer_final_lines() {
        let mut s = Stats::default();
        for l in [
            "INFO: Seed: 123",
            "#2\tINITED cov: 10 ft: 12 corp: 1/1b exec/s: 0 rss: 30Mb",
            "#524288\tpulse  cov: 1234 ft: 5678 corp: 90/4096b lim: 4096 exec/s: 9000 rss: 80Mb",
            "#1000000\tDONE   cov: 1240 ft: 5700 corp: 91/4Kb lim: 4096 exec/s: 9090 rss: 81Mb",
            "Done 1000000 runs in 110 second(s)",
            "stat::number_of_executed_units: 1000000",
            "stat::average_exec_per_sec:     9090",
        ] {
            s.read(l);
        }
        assert_eq!(s, Stats { runs: Some(1_000_000), cov: Some(1240), ft: Some(5700) });
    }

    #[test]
    fn done_line_alone_gives_the_runs() {
        let mut s = Stats::default();
        s.read("Done 42 runs in 0 second(s)");
        assert_eq!(s.runs, Some(42));
    }
}
