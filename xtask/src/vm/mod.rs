//! The VM tier: the integration tests inside Debian kernels under QEMU.
//!
//! `cargo xtask vm-test [--kernel K|all]` builds static (musl) binaries of the agent, the
//! traffic probe and every integration test, boots each kernel once with all of them, prints
//! the capability table, runs the tests, and exits with their result.
//! `cargo xtask vm-run --kernel K -- CMD...` runs one command in a guest instead.

mod cpio;
mod initramfs;
mod kernels;
mod qemu;

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{root, run};

const MUSL: &str = "x86_64-unknown-linux-musl";

/// Kernels `cargo xtask test` runs by default (5.10 on request).
pub const DEFAULT_KERNELS: &[&str] = &["debian-6.1", "debian-6.12"];
/// Debian's LSM list without bpf, as Ubuntu ships it.
pub const NO_BPF_LSM: &str = "landlock,lockdown,yama,loadpin,safesetid,integrity,apparmor";
/// The integration test binary the guests run (tests/tests/kernel).
const GUEST_TESTS: &str = "kernel";
/// Tests run at once inside a guest (one vCPU): most of them wait (for holds, deadlines,
/// packets), so two overlap well; those with short time windows run alone
/// (tests/src/serial.rs), as sys_sockets' 2 s kernel-expiry window does since it failed once
/// next to a neighbour starting an agent.
pub const GUEST_TEST_THREADS: usize = 2;

pub fn cache() -> PathBuf {
    root().join("target/vm")
}

/// Kernel names from a --kernel value ("all" or one name).
pub fn kernel_names(arg: &str) -> anyhow::Result<Vec<&'static str>> {
    if arg == "all" {
        return Ok(kernels::KERNELS.iter().map(|k| k.name).collect());
    }
    Ok(vec![kernels::spec(arg)?.name])
}

/// Where the guests' static binaries are built: a target dir of their own (a musl release
/// build shares nothing with the host's debug one), so that it can run next to other cargo
/// commands on the workspace (`build_in_background`).
fn guest_target() -> PathBuf {
    root().join("target/guest")
}

/// Static binaries for the guest: (guest path, host path).
pub type Files = Vec<(String, PathBuf)>;

/// Builds the static binaries for the guest. `idle`: at idle CPU priority (SCHED_IDLE, the
/// compiler gets only the time nothing else wants), quiet, its output in `log`.
fn build_binaries_with(idle: Option<(&Path, &Running)>) -> anyhow::Result<Files> {
    let command = |args: &[&str]| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = match idle {
            Some(_) => {
                let mut c = Command::new("chrt");
                c.args(["--idle", "0"]).arg(cargo);
                c
            }
            None => Command::new(cargo),
        };
        c.args(args).env("CARGO_TARGET_DIR", guest_target()).current_dir(root());
        c
    };
    let log = |out: &std::process::Output| -> anyhow::Result<()> {
        if let Some((log, _)) = idle {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log)?;
            f.write_all(&out.stdout)?;
            f.write_all(&out.stderr)?;
        }
        Ok(())
    };
    let bins = ["build", "--release", "--target", MUSL, "--package", "faultline"];
    let mut bins = command(&bins);
    bins.args(["--package", "faultline-tests", "--bins"]);
    if let Some((_, running)) = idle {
        let out = running.output(&mut bins).context("building the guest binaries")?;
        log(&out)?;
        if !out.status.success() {
            bail!("building the guest binaries failed:\n{}", String::from_utf8_lossy(&out.stderr));
        }
    } else {
        run(&mut bins)?;
    }
    let out = guest_target().join(MUSL).join("release");
    let mut files = vec![
        ("/bin/faultline".to_string(), out.join("faultline")),
        ("/bin/fl-probe".to_string(), out.join("fl-probe")),
    ];
    // One test binary, `kernel`: the host-only tests (Python, promtool, tmux, the load test)
    // are another binary, never built for the guests.
    // The same packages as the build above: features unify the same way, nothing is built
    // twice.
    let mut build = command(&["test", "--release", "--target", MUSL, "--package", "faultline"]);
    build.args(["--package", "faultline-tests", "--test", GUEST_TESTS, "--no-run"]);
    build.arg("--message-format=json");
    let build = match idle {
        Some((_, running)) => running.output(&mut build),
        None => build.output().map_err(anyhow::Error::from),
    }
    .context("building the integration tests for the guest")?;
    log(&build)?;
    if !build.status.success() {
        bail!("building tests failed:\n{}", String::from_utf8_lossy(&build.stderr));
    }
    for line in String::from_utf8_lossy(&build.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == GUEST_TESTS
            && let Some(exe) = msg["executable"].as_str()
        {
            files.push((format!("/tests/{GUEST_TESTS}"), PathBuf::from(exe)));
        }
    }
    if files.len() != 3 {
        bail!("cargo built no executable for the {GUEST_TESTS} tests");
    }
    files.push((crate::golang::GUEST_CLOCK.to_string(), crate::golang::clock_server()?));
    Ok(files)
}

fn build_binaries() -> anyhow::Result<Files> {
    build_binaries_with(None)
}

/// The cargo command a background build runs, so that `cargo xtask test` can stop it (a host
/// stage failed) or give it normal priority (the VM tier waits for it).
#[derive(Default)]
struct Running(std::sync::Mutex<RunState>);

#[derive(Default)]
struct RunState {
    /// The process group of the running command.
    pgid: Option<u32>,
    stopped: bool,
    promoted: bool,
}

/// Every process of group `pgid` back to the normal scheduling policy.
fn promote(pgid: u32) {
    let Ok(procs) = std::fs::read_dir("/proc") else { return };
    for pid in
        procs.filter_map(Result::ok).filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so count from its ')'.
        let pgrp = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(2));
        if pgrp == Some(&pgid.to_string()) {
            let _ = Command::new("chrt")
                .args(["--other", "--all-tasks", "--pid", "0", &pid.to_string()])
                .status();
        }
    }
}

impl Running {
    /// Runs `cmd` in a process group of its own (unless stopped already), capturing its output.
    fn output(&self, cmd: &mut Command) -> anyhow::Result<std::process::Output> {
        use std::os::unix::process::CommandExt as _;
        let child = {
            let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
            if g.stopped {
                bail!("stopped");
            }
            let child = cmd
                .process_group(0)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .with_context(|| format!("spawning {cmd:?}"))?;
            g.pgid = Some(child.id());
            if g.promoted {
                promote(child.id());
            }
            child
        };
        let out = child.wait_with_output()?;
        self.0.lock().unwrap_or_else(|e| e.into_inner()).pgid = None;
        Ok(out)
    }

    /// Stops the running command (its whole process group) and any later one.
    fn stop(&self) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.stopped = true;
        if let Some(pgid) = g.pgid {
            let _ = Command::new("kill").args(["-TERM", "--", &format!("-{pgid}")]).status();
        }
    }

    /// Normal priority for the running command and any later one: the host stages are done.
    fn promote(&self) {
        let mut g = self.0.lock().unwrap_or_else(|e| e.into_inner());
        g.promoted = true;
        if let Some(pgid) = g.pgid {
            promote(pgid);
        }
    }
}

/// The guests' binaries, building at idle priority while the host stages run (they leave a
/// core idle much of the time: single-crate compiles, linking, tests waiting on the clock).
/// Dropped without `wait` (a host stage failed), it stops the build.
pub struct GuestBuild {
    thread: Option<std::thread::JoinHandle<anyhow::Result<Files>>>,
    running: std::sync::Arc<Running>,
}

pub fn build_in_background() -> anyhow::Result<GuestBuild> {
    std::fs::create_dir_all(cache())?;
    let log = cache().join("guest-build.log");
    std::fs::write(&log, "")?;
    println!("== building the guests' binaries in the background (log {})", log.display());
    let running = std::sync::Arc::new(Running::default());
    let r = running.clone();
    let thread = std::thread::spawn(move || build_binaries_with(Some((&log, &r))));
    Ok(GuestBuild { thread: Some(thread), running })
}

impl GuestBuild {
    /// Waits for the build, at normal priority from now on (nothing else runs any more).
    pub fn wait(mut self) -> anyhow::Result<Files> {
        let thread = self.thread.take().context("waited twice")?;
        if !thread.is_finished() {
            println!("== waiting for the guests' binaries");
            self.running.promote();
        }
        thread.join().map_err(|_| anyhow::anyhow!("the guest build thread panicked"))?
    }
}

impl Drop for GuestBuild {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.running.stop();
            let _ = thread.join();
        }
    }
}

/// Busybox-static from Debian's archive, unpacked (never installed).
fn busybox(cache: &Path) -> anyhow::Result<PathBuf> {
    let dir = cache.join("busybox");
    let bin = dir.join("bin/busybox");
    if !bin.exists() {
        let apt = kernels::Apt::new(
            cache.join("apt/userland"),
            "deb http://deb.debian.org/debian bookworm main\n",
        )?;
        apt.fetch("busybox-static", &dir)?;
    }
    Ok(bin)
}

/// A short stable hash, to key cached segments by what built them.
fn fnv(parts: &[&str]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    format!("{h:016x}")
}

struct Prepared {
    cache: PathBuf,
    base: PathBuf,
}

fn prepare() -> anyhow::Result<Prepared> {
    let cache = cache();
    std::fs::create_dir_all(cache.join("run"))?;
    let busybox = busybox(&cache)?;
    let base = cache.join(format!("base-{}.cpio", fnv(&[&initramfs::base_key()])));
    if !base.exists() {
        initramfs::base(&busybox, &base)?;
    }
    Ok(Prepared { cache, base })
}

/// The kernel tests' split over boots (`cargo xtask test`): each default kernel in two parts
/// (a: the packet tests and the errno faults; b: the rest, with sys delay), and the tests of
/// the agent's own logic in a third boot of the last kernel only (c: validation, the gRPC
/// surface, remote access, metrics, a failing state directory, targets, dry runs, the
/// journal's resume after a restart, the halt switch, stop conditions and node guards, the
/// no-hit mark, the debug log, Chaos Mesh manifests, the long inject/cancel cycles of time
/// skew): they do the same on every kernel, and the host runs them too. Ordered so that two
/// boots at a time end together (as the last runs' times put them).
pub fn tier_parts(timeout: Duration) -> Vec<Guest> {
    let a: Vec<String> = ["net_", "sys_files", "sys_sockets"].map(String::from).to_vec();
    let once: Vec<String> = [
        "bad_input::",
        "bad_stress_input",
        "sys_delay::bad_input",
        "api::",
        "metrics::",
        "remote::",
        "state_dir::",
        "store_recovery::",
        "targets::",
        "dry_run::",
        "restart::",
        "halt::",
        "stop_conditions::",
        "no_hit::",
        "bpf_debug_log::",
        "time_skew::many_inject_cancel_cycles",
        // Chaos Mesh manifests: the mapping is the client's, the faults are tested on every
        // kernel by their own tests; the last kernel serves what the host lacks (fq, file
        // faults).
        "chaos_mesh",
    ]
    .map(String::from)
    .to_vec();
    let skip = |fs: &[String]| -> Vec<String> {
        fs.iter().flat_map(|f| ["--skip".to_string(), f.clone()]).collect()
    };
    let mut b = skip(&a);
    b.extend(skip(&once));
    // Run alone in a guest by `cargo xtask crash-campaign --vm KERNEL`; the host runs its
    // short form.
    b.extend(["--skip".to_string(), "crash_campaign".to_string()]);
    let mut c = once.clone();
    c.extend(skip(&a));
    let last = DEFAULT_KERNELS[DEFAULT_KERNELS.len() - 1];
    let mut parts = Vec::new();
    for k in DEFAULT_KERNELS {
        parts.push(Guest::part(k, "a", &a, timeout));
        parts.push(Guest::part(k, "b", &b, timeout));
    }
    // Two kernels: 6.1 a, 6.1 b, 6.12 a, 6.12 c, 6.12 b (then the CI's LSM boot).
    parts.insert(parts.len() - 1, Guest::part(last, "c", &c, timeout));
    parts
}

/// The CI's VM tier: each default kernel in two parts, debian-5.10 for sys delay alone (its
/// tracing programs read a cgroup's ancestors through BTF offsets, which no later kernel
/// does), and debian-6.12 booted as Ubuntu ships it (bpf missing from the LSM list, so file
/// faults take fmod_ret).
pub fn ci_tier() -> Vec<Guest> {
    let mut guests = tier_parts(Duration::from_secs(2100));
    guests.push(Guest::new("debian-5.10", &["sys_delay".to_string()], Duration::from_secs(900)));
    guests.push(Guest::with_lsm(
        "debian-6.12",
        Some(NO_BPF_LSM),
        &[
            "openat_",
            "write_fails",
            "read_fails",
            "unlink_mkdir",
            "file_calls_",
            "nested_targets_each",
        ]
        .map(String::from),
        Duration::from_secs(600),
    ));
    guests
}

/// One boot of the VM tier: a kernel, its command line, what to run.
pub struct Guest {
    /// Names the boot's files under target/vm/run (`NAME.log`, `NAME.rc`, ...) and prefixes
    /// its console lines: two boots of one kernel need two names.
    pub name: String,
    pub kernel: &'static str,
    /// Boot with this LSM list (e.g. without bpf, as Ubuntu ships).
    pub lsm: Option<String>,
    /// Test name filters for the guest's test binary.
    pub filter: Vec<String>,
    pub timeout: Duration,
}

impl Guest {
    /// A boot of `kernel` with the default LSM list, named after the kernel.
    pub fn new(kernel: &'static str, filter: &[String], timeout: Duration) -> Guest {
        Guest::with_lsm(kernel, None, filter, timeout)
    }

    /// A boot with `lsm` as the LSM list (named `KERNEL-lsm-HASH`), or the default one.
    pub fn with_lsm(
        kernel: &'static str,
        lsm: Option<&str>,
        filter: &[String],
        timeout: Duration,
    ) -> Guest {
        let name = match lsm {
            None => kernel.to_string(),
            Some(l) => format!("{kernel}-lsm-{}", &fnv(&[l])[..8]),
        };
        Guest { name, kernel, lsm: lsm.map(String::from), filter: filter.to_vec(), timeout }
    }

    /// One part of a kernel's tests (`filter` picks them), named `KERNEL-PART`: a kernel's
    /// tests split over two boots keep both cores busy to the end of the tier.
    pub fn part(kernel: &'static str, part: &str, filter: &[String], timeout: Duration) -> Guest {
        Guest { name: format!("{kernel}-{part}"), ..Guest::new(kernel, filter, timeout) }
    }

    fn file(&self, p: &Prepared, ext: &str) -> PathBuf {
        p.cache.join("run").join(format!("{}.{ext}", self.name))
    }
}

/// Writes the initrd of `g` (base + the kernel's modules + payload); returns it with the
/// kernel image. Run one at a time: kernels and module segments are fetched and cached here.
fn stage(
    p: &Prepared,
    g: &Guest,
    files: &[(String, PathBuf)],
    job: &str,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let k = kernels::fetch(kernels::spec(g.kernel)?, &p.cache)?;
    let modules = k.dir.join(format!("modules-{}.cpio", fnv(initramfs::MODULES)));
    if !modules.exists() {
        initramfs::modules(&k, &modules)?;
    }
    let payload = g.file(p, "payload.cpio");
    initramfs::payload(files, job, &payload)?;
    let initrd = g.file(p, "initrd");
    let mut data = std::fs::read(&p.base)?;
    data.extend(std::fs::read(&modules)?);
    data.extend(std::fs::read(&payload)?);
    std::fs::write(&initrd, data)?;
    Ok((k.vmlinuz, initrd))
}

/// Boots a staged guest; retries once when the VM dies without a code.
fn boot(p: &Prepared, g: &Guest, vmlinuz: &Path, initrd: &Path) -> anyhow::Result<qemu::Report> {
    let log = g.file(p, "log");
    let boot = qemu::Boot {
        name: &g.name,
        vmlinuz,
        initrd,
        lsm: g.lsm.as_deref(),
        timeout: g.timeout,
        log: &log,
    };
    let first = qemu::boot(&boot)?;
    if matches!(first.outcome, qemu::Outcome::NoExitCode) {
        println!("== {}: the VM stopped without an exit code; retrying once", g.name);
        return qemu::boot(&boot);
    }
    Ok(first)
}

fn describe(name: &str, r: &qemu::Report) -> String {
    let boot = r.boot.map(|b| format!("{:.1}s", b.as_secs_f64())).unwrap_or_else(|| "-".into());
    let what = match r.outcome {
        qemu::Outcome::Exited(0) => "passed".to_string(),
        qemu::Outcome::Exited(rc) => format!("FAILED (exit {rc})"),
        qemu::Outcome::NoExitCode => "VM FAILURE (no exit code, twice)".to_string(),
        qemu::Outcome::TimedOut => "VM FAILURE (timed out; killed)".to_string(),
    };
    format!("{name:<24} {what:<34} boot {boot:>6}  total {:.0}s", r.total.as_secs_f64())
}

const TEST_JOB: &str = r#"set -u
echo "== capabilities: $(uname -r)"
faultline serve --socket /run/caps.sock --state-dir /tmp/caps-state >/tmp/caps.log 2>&1 &
pid=$!
i=0
while [ ! -S /run/caps.sock ] && [ $i -lt 600 ]; do usleep 100000; i=$((i+1)); done
faultline --endpoint /run/caps.sock caps || cat /tmp/caps.log
kill $pid
wait $pid
export FAULTLINE_BIN=/bin/faultline FL_PROBE_BIN=/bin/fl-probe FL_GO_CLOCK_BIN=/bin/fl-clock-go
rc=0
for t in /tests/*; do
  echo "== $(basename "$t")"
  # Killed before the VM's own deadline, so that the log says which tests still ran.
  # --report-time (a stable libtest takes -Z options under RUSTC_BOOTSTRAP): each test's
  # time in the log, summed up per guest by the host to balance the tier.
  RUSTC_BOOTSTRAP=1 timeout -s KILL __LIMIT__ "$t" -Z unstable-options --report-time \
    --test-threads=__THREADS__ --nocapture __FILTER__ || { echo "== $(basename "$t") failed or timed out (rc $?)"; rc=1; }
done
exit $rc
"#;

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Runs the integration tests in every guest, side by side: as many at once as the host has
/// cores (each guest has one vCPU), in the order given (longest first keeps the tail short).
/// Tests inside a guest run `threads` at a time.
pub fn vm_test(guests: &[Guest], threads: usize, built: Option<GuestBuild>) -> anyhow::Result<()> {
    let files = match built {
        Some(b) => b.wait()?,
        None => build_binaries()?,
    };
    let p = prepare()?;
    let mut staged = Vec::new();
    for g in guests {
        let job = TEST_JOB
            .replace(
                "__FILTER__",
                &g.filter.iter().map(|f| shell_quote(f)).collect::<Vec<_>>().join(" "),
            )
            .replace("__THREADS__", &threads.max(1).to_string())
            // Time to boot and to print what is still running before the VM is killed.
            .replace("__LIMIT__", &g.timeout.as_secs().saturating_sub(60).max(60).to_string());
        staged.push(stage(&p, g, &files, &job)?);
    }
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let slots = cores.min(guests.len()).max(1);
    println!("== VM tier: {} guests, {slots} at a time, {threads} test threads each", guests.len());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let reports: Vec<std::sync::Mutex<Option<anyhow::Result<qemu::Report>>>> =
        guests.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..slots {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let Some(g) = guests.get(i) else { break };
                    let (vmlinuz, initrd) = &staged[i];
                    let r = boot(&p, g, vmlinuz, initrd);
                    if let Ok(r) = &r {
                        println!("== {}", describe(&g.name, r));
                    }
                    *reports[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
                }
            });
        }
    });
    let mut lines = Vec::new();
    let mut failed = false;
    for (g, r) in guests.iter().zip(reports) {
        let r = r.into_inner().unwrap_or_else(|e| e.into_inner());
        let r = match r {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                failed = true;
                lines.push(format!("{:<24} VM FAILURE ({e:#})", g.name));
                continue;
            }
            None => bail!("{}: no report", g.name),
        };
        lines.push(describe(&g.name, &r));
        if let Ok(log) = std::fs::read_to_string(g.file(&p, "log")) {
            lines.push(format!("  {}", test_times(&log)));
        }
        if !matches!(r.outcome, qemu::Outcome::Exited(0)) {
            failed = true;
            let log = std::fs::read_to_string(g.file(&p, "log"));
            let name = &g.name;
            lines
                .extend(failure_lines(&log.unwrap_or_default()).map(|l| format!("  [{name}] {l}")));
        }
    }
    let summary = lines.join("\n");
    println!("== VM tier summary\n{summary}");
    if failed {
        // Repeated in the error so that it ends the output: CI keeps only the tail.
        bail!("VM tier failed (logs in {}):\n{summary}", p.cache.join("run").display());
    }
    Ok(())
}

/// A test's time as libtest's --report-time prints it: `test NAME ... ok <1.234s>`.
fn test_time(line: &str) -> Option<(&str, f64)> {
    let rest = line.split_once("test ")?.1;
    let (name, rest) = rest.split_once(" ... ")?;
    let secs = rest.rsplit_once('<')?.1.strip_suffix("s>")?;
    Some((name, secs.parse().ok()?))
}

/// One line per guest: the tests' summed time and the slowest five, to balance the tier.
fn test_times(log: &str) -> String {
    let mut times: Vec<(&str, f64)> = log.lines().filter_map(test_time).collect();
    let sum: f64 = times.iter().map(|t| t.1).sum();
    times.sort_by(|a, b| b.1.total_cmp(&a.1));
    let top: Vec<String> = times.iter().take(5).map(|(n, t)| format!("{n} {t:.0}s")).collect();
    format!("{} tests, {sum:.0} test-seconds; slowest: {}", times.len(), top.join(", "))
}

/// The lines of a guest log that say what failed, so a CI tail shows the cause.
fn failure_lines(log: &str) -> impl Iterator<Item = &str> {
    const SIGNS: &[&str] =
        &["FAILED", "panicked", "failed or timed out", "Kernel panic", "running for over"];
    log.lines().filter(|l| SIGNS.iter().any(|s| l.contains(s))).take(40)
}

pub fn vm_run(
    kernel: &'static str,
    lsm: Option<&str>,
    cmd: &[String],
    timeout: Duration,
) -> anyhow::Result<i32> {
    if cmd.is_empty() {
        bail!("nothing to run: cargo xtask vm-run --kernel K -- CMD...");
    }
    let files = build_binaries()?;
    let p = prepare()?;
    let job = format!(
        "export FAULTLINE_BIN=/bin/faultline FL_PROBE_BIN=/bin/fl-probe \
         FL_GO_CLOCK_BIN=/bin/fl-clock-go\n{}\n",
        cmd.iter().map(|c| shell_quote(c)).collect::<Vec<_>>().join(" ")
    );
    let g = Guest::with_lsm(kernel, lsm, &[], timeout);
    let (vmlinuz, initrd) = stage(&p, &g, &files, &job)?;
    let r = boot(&p, &g, &vmlinuz, &initrd)?;
    println!("{}", describe(&g.name, &r));
    match r.outcome {
        qemu::Outcome::Exited(rc) => {
            println!("exit code {rc}");
            Ok(rc)
        }
        _ => bail!("the VM failed before the command finished"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_time_lines_give_name_and_seconds() {
        assert_eq!(
            test_time("test sys_delay::fsync_waits ... ok <12.500s>"),
            Some(("sys_delay::fsync_waits", 12.5))
        );
        assert_eq!(test_time("test sys_delay::x ... ok"), None);
        let log = "test a ... ok <1.000s>\nnoise\ntest b ... FAILED <3.000s>\n";
        assert_eq!(test_times(log), "2 tests, 4 test-seconds; slowest: b 3s, a 1s");
    }
}
