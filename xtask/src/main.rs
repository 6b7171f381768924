//! `cargo xtask <task>`: everything a fresh machine needs, in one place.
//!
//! - `setup`: installs what is missing (nightly rust-src, bpf-linker, Debian packages, the
//!   Python venv target/py); a second run installs nothing.
//! - `run`: builds the agent in release mode and runs it in the foreground.
//! - `test`: format and lint checks, unit tests, the privileged integration tests on this
//!   kernel, then the same tests inside Debian kernels under QEMU (the VM tier).
//! - `vm-test`, `vm-run`: the VM tier alone, or one command in a guest.
//! - `bench`: performance goals as ratios measured in one run (CPU stress accuracy against
//!   stress-ng).
//! - `crash-campaign`: SIGKILLs the agent at random moments among random API calls and checks
//!   after every restart that nothing is left and nothing lost (`test` runs a short form).
//! - `fuzz`: the cargo-fuzz targets (request validation, the journal reader), a number of
//!   executions each on the corpus kept in fuzz/; bench-style, not part of `test`.

mod bench;
mod fuzz;
mod golang;
mod setup;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install missing toolchain parts and packages.
    Setup,
    /// Build (release) and run the agent in the foreground; extra args go to `faultline serve`.
    Run {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// fmt + clippy, unit tests, then integration tests (as root). Extra args go to the
    /// integration test runner (e.g. a test name filter).
    Test {
        /// Skip fmt and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Skip the VM tier.
        #[arg(long)]
        host_only: bool,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the integration tests inside Debian kernels under QEMU, one boot per kernel.
    VmTest {
        /// debian-5.10, debian-6.1, debian-6.12 or all (default: the CI tier, in its parts).
        #[arg(long)]
        kernel: Option<String>,
        /// Boot with this LSM list (e.g. without bpf, as Ubuntu ships).
        #[arg(long)]
        lsm: Option<String>,
        /// Kill a guest that runs longer than this many seconds.
        #[arg(long, default_value_t = 1500)]
        timeout: u64,
        /// Tests run at once inside each guest.
        #[arg(long, default_value_t = vm::GUEST_TEST_THREADS)]
        test_threads: usize,
        /// Test name filter passed to the guest's test binary.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        filter: Vec<String>,
    },
    /// Performance goals as ratios measured in one run (datapath and syscall cost, inject
    /// latency, accuracy against the incumbents, scale, load): target/bench/report.{md,json}.
    Bench {
        /// Fewer, shorter rounds (development).
        #[arg(long)]
        quick: bool,
        /// Compare the ratios with bench/baseline.json; fail on a regression over 10%.
        #[arg(long)]
        check: bool,
        /// Write this run's ratios to bench/baseline.json.
        #[arg(long)]
        save_baseline: bool,
        /// datapath, syscall, latency, accuracy, delay, scale, vm, load (default: all).
        sections: Vec<String>,
    },
    /// Fuzz request validation and the journal reader (cargo-fuzz, nightly): N executions
    /// each on fuzz/corpus, then the corpus minimized; fails on a crash.
    Fuzz {
        /// Executions per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_RUNS)]
        runs: u64,
        /// Leave the corpus as the run left it (no `cargo fuzz cmin`).
        #[arg(long)]
        no_cmin: bool,
        /// validate, journal (default: both).
        targets: Vec<String>,
    },
    /// The crash campaign (tests/tests/kernel/crash_campaign.rs): random API calls, the
    /// agent SIGKILLed at a random moment, restarted, the invariants checked after each
    /// recovery; prints the report (kills, calls, outcomes, violations, the seed).
    CrashCampaign {
        /// Kills (the CI's short form runs 50).
        #[arg(long, default_value_t = 1000)]
        kills: u64,
        /// Seed (default: from the clock); a failure's seed replays it.
        #[arg(long)]
        seed: Option<u64>,
        /// Run it alone in a guest of this kernel (debian-6.12: fq, ifb, tc) instead of here.
        #[arg(long)]
        vm: Option<String>,
    },
    /// Run one command inside a guest with `faultline` on PATH; exits with its code.
    VmRun {
        #[arg(long, default_value = "debian-6.12")]
        kernel: String,
        #[arg(long)]
        lsm: Option<String>,
        #[arg(long, default_value_t = 600)]
        timeout: u64,
        #[arg(last = true, required = true)]
        cmd: Vec<String>,
    },
}

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Runs a command (in the workspace root unless it has a directory), failing with its description.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(root());
    }
    let status = cmd.status().with_context(|| format!("spawning {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    // ring (TLS) compiles C: for the static guest binaries with musl-tools' wrapper.
    c.env("CC_x86_64_unknown_linux_musl", "musl-gcc");
    c
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.trim_ascii() == b"0").unwrap_or(false)
}

/// Wall time of each stage of `cargo xtask test`, printed as each ends and all at the end.
struct Stages {
    start: Instant,
    last: Instant,
    lines: Vec<String>,
}

impl Stages {
    fn start() -> Stages {
        let now = Instant::now();
        Stages { start: now, last: now, lines: Vec::new() }
    }

    fn done(&mut self, stage: &str) {
        let now = Instant::now();
        let line = format!("{stage:<30} {:>6.0}s", (now - self.last).as_secs_f64());
        println!("== {line}");
        self.lines.push(line);
        self.last = now;
    }
}

impl Drop for Stages {
    fn drop(&mut self) {
        println!(
            "== stage times\n{}\n{:<30} {:>6.0}s",
            self.lines.join("\n"),
            "total",
            self.start.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    if let Err(e) = task(Cli::parse().task) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn task(task: Task) -> anyhow::Result<()> {
    match task {
        Task::Setup => setup::all(),
        Task::Bench { quick, check, save_baseline, sections } => {
            bench::bench(bench::Opts { quick, check, save_baseline, sections })
        }
        Task::Fuzz { runs, no_cmin, targets } => fuzz::fuzz(runs, &targets, !no_cmin),
        Task::Run { args } => {
            setup::all()?;
            run(cargo().args(["build", "--release", "--package", "faultline"]))?;
            let bin = root().join("target/release/faultline");
            use std::os::unix::process::CommandExt as _;
            // exec: Ctrl-C and SIGTERM reach the agent directly.
            let err = Command::new(&bin).arg("serve").args(args).exec();
            bail!("exec {}: {err}", bin.display())
        }
        Task::VmTest { kernel, lsm, timeout, test_threads, filter } => {
            setup::all()?;
            let kernels = match &kernel {
                Some(k) => vm::kernel_names(k)?,
                None => vm::DEFAULT_KERNELS.to_vec(),
            };
            if kernel.is_none() && lsm.is_none() && filter.is_empty() {
                // As CI runs it: the parts, the Ubuntu-like boot.
                return vm::vm_test(&vm::ci_tier(), test_threads, None);
            }
            let timeout = Duration::from_secs(timeout);
            let guests: Vec<vm::Guest> = kernels
                .into_iter()
                .map(|k| vm::Guest::with_lsm(k, lsm.as_deref(), &filter, timeout))
                .collect();
            vm::vm_test(&guests, test_threads, None)
        }
        Task::CrashCampaign { kills, seed, vm: Some(kernel) } => {
            setup::all()?;
            let k = vm::kernel_names(&kernel)?;
            let seed = seed.map(|s| format!(" FL_CAMPAIGN_SEED={s}")).unwrap_or_default();
            let job = format!(
                "FL_CAMPAIGN_KILLS={kills}{seed} /tests/* --exact crash_campaign::crash_campaign \
                 --nocapture"
            );
            let cmd = ["sh".to_string(), "-c".to_string(), job];
            // About 5 s a kill in an emulated guest.
            let timeout = Duration::from_secs(600 + kills * 10);
            let rc = vm::vm_run(k[0], None, &cmd, timeout)?;
            std::process::exit(rc)
        }
        Task::CrashCampaign { kills, seed, vm: None } => {
            setup::all()?;
            if !is_root() {
                bail!("the crash campaign makes cgroups and loads eBPF programs: run as root");
            }
            run(cargo().args(["build", "--workspace", "--bin", "faultline", "--bin", "fl-probe"]))?;
            let mut cmd = cargo();
            cmd.args(["test", "--workspace", "--test", "kernel", "--", "--exact"])
                .args(["crash_campaign::crash_campaign", "--nocapture"])
                .env("FAULTLINE_BIN", root().join("target/debug/faultline"))
                .env("FL_CAMPAIGN_KILLS", kills.to_string());
            if let Some(s) = seed {
                cmd.env("FL_CAMPAIGN_SEED", s.to_string());
            }
            run(&mut cmd)
        }
        Task::VmRun { kernel, lsm, timeout, cmd } => {
            setup::all()?;
            let k = vm::kernel_names(&kernel)?;
            let rc = vm::vm_run(k[0], lsm.as_deref(), &cmd, Duration::from_secs(timeout))?;
            std::process::exit(rc)
        }
        Task::Test { no_lint, host_only, args } => {
            let mut clock = Stages::start();
            setup::all()?;
            clock.done("setup");
            // The VM tier's static binaries build in the time the host stages leave idle.
            let guest_build =
                (!host_only && is_root()).then(vm::build_in_background).transpose()?;
            if !no_lint {
                run(cargo().args(["fmt", "--all", "--check"]))?;
                run(cargo().args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ]))?;
                // The kernel programs on their own target: the workspace pass sees them empty.
                run(Command::new("rustup")
                    .current_dir(root().join("agent-ebpf"))
                    .env_remove("RUSTUP_TOOLCHAIN")
                    .args(["run", "nightly", "cargo", "clippy", "--target", "bpfel-unknown-none"])
                    .args(["-Z", "build-std=core", "--release", "--", "-D", "warnings"]))?;
                // The fuzz crate is outside the workspace: an agent API change must not
                // break it unseen. In the workspace's target dir, it reuses what clippy just
                // checked (the same dependencies) instead of checking them all again.
                run(cargo()
                    .args(["check", "--manifest-path", "fuzz/Cargo.toml", "--all-targets"])
                    .env("CARGO_TARGET_DIR", root().join("target"))
                    .current_dir(root()))?;
            }
            clock.done("lint");
            // Kubernetes schemas (strict), Containerfile and systemd unit, all offline.
            println!("== deploy manifests");
            run(Command::new(setup::venv_python()).arg(root().join("deploy/check.py")))?;
            println!("== unit tests");
            // Every cargo command of the host stages selects the whole workspace, so that
            // features unify the same way each time and no dependency is built twice; the
            // targets pick what runs (the integration tests wait for root below).
            run(cargo().args(["test", "--workspace", "--lib", "--bins"]))?;
            run(cargo().args(["test", "--workspace", "--doc"]))?;
            clock.done("deploy checks and unit tests");
            if !is_root() {
                bail!("the integration tests load eBPF programs and make cgroups: run as root");
            }
            println!("== integration tests (real kernel, as root)");
            run(cargo().args(["build", "--workspace", "--bin", "faultline", "--bin", "fl-probe"]))?;
            let go_clock = golang::clock_server()?;
            let go_grpc_ls = golang::grpc_ls()?;
            run(cargo()
                .args(["test", "--workspace", "--test", "kernel", "--test", "host_only", "--"])
                .args(&args)
                .env("FAULTLINE_BIN", root().join("target/debug/faultline"))
                .env(golang::CLOCK_ENV, go_clock)
                .env(golang::GRPC_LS_ENV, go_grpc_ls))?;
            clock.done("host integration tests");
            if host_only {
                return Ok(());
            }
            let guests: Vec<vm::Guest> = if args.is_empty() {
                vm::ci_tier()
            } else {
                let timeout = Duration::from_secs(2100);
                vm::DEFAULT_KERNELS.iter().map(|k| vm::Guest::new(k, &args, timeout)).collect()
            };
            let vm = vm::vm_test(&guests, vm::GUEST_TEST_THREADS, guest_build);
            clock.done("VM tier");
            vm
        }
    }
}
