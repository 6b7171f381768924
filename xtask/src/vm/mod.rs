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

pub fn cache() -> PathBuf {
    root().join("target/vm")
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Kernel names from a --kernel value ("all" or one name).
pub fn kernel_names(arg: &str) -> anyhow::Result<Vec<&'static str>> {
    if arg == "all" {
        return Ok(kernels::KERNELS.iter().map(|k| k.name).collect());
    }
    Ok(vec![kernels::spec(arg)?.name])
}

/// Static binaries for the guest: (guest path, host path).
fn build_binaries() -> anyhow::Result<Vec<(String, PathBuf)>> {
    run(cargo().args([
        "build",
        "--release",
        "--target",
        MUSL,
        "--package",
        "faultline",
        "--package",
        "faultline-tests",
        "--bins",
    ]))?;
    let out = root().join("target").join(MUSL).join("release");
    let mut files = vec![
        ("/bin/faultline".to_string(), out.join("faultline")),
        ("/bin/fl-probe".to_string(), out.join("fl-probe")),
    ];
    let build = cargo()
        .args([
            "test",
            "--release",
            "--target",
            MUSL,
            "--package",
            "faultline-tests",
            "--no-run",
            "--message-format=json",
        ])
        .current_dir(root())
        .output()
        .context("building the integration tests for the guest")?;
    if !build.status.success() {
        bail!("building tests failed:\n{}", String::from_utf8_lossy(&build.stderr));
    }
    for line in String::from_utf8_lossy(&build.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let is_test =
            msg["target"]["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "test"));
        if msg["reason"] == "compiler-artifact"
            && is_test
            // The guests have no Python: the example client's test runs on the host only.
            && msg["target"]["name"] != "python_client"
            && msg["target"]["name"] != "observability_tools" // nor promtool: host only
            // Nor tmux: the live view's terminal test runs on the host only.
            && msg["target"]["name"] != "live_view"
            // The load test measures the agent, not the kernel: once, on the host.
            && msg["target"]["name"] != "load"
            && let (Some(exe), Some(name)) =
                (msg["executable"].as_str(), msg["target"]["name"].as_str())
        {
            files.push((format!("/tests/{name}"), PathBuf::from(exe)));
        }
    }
    Ok(files)
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

/// Boots `kernel` with `job` and the payload; retries once when the VM dies without a code.
fn boot_job(
    p: &Prepared,
    kernel: &str,
    lsm: Option<&str>,
    files: &[(String, PathBuf)],
    job: &str,
    timeout: Duration,
) -> anyhow::Result<qemu::Report> {
    let k = kernels::fetch(kernels::spec(kernel)?, &p.cache)?;
    let modules = k.dir.join(format!("modules-{}.cpio", fnv(initramfs::MODULES)));
    if !modules.exists() {
        initramfs::modules(&k, &modules)?;
    }
    let payload = p.cache.join("run").join(format!("{kernel}-payload.cpio"));
    initramfs::payload(files, job, &payload)?;
    let initrd = p.cache.join("run").join(format!("{kernel}.initrd"));
    let mut data = std::fs::read(&p.base)?;
    data.extend(std::fs::read(&modules)?);
    data.extend(std::fs::read(&payload)?);
    std::fs::write(&initrd, data)?;
    let log = p.cache.join("run").join(format!("{kernel}.log"));
    let boot =
        qemu::Boot { name: kernel, vmlinuz: &k.vmlinuz, initrd: &initrd, lsm, timeout, log: &log };
    let first = qemu::boot(&boot)?;
    if matches!(first.outcome, qemu::Outcome::NoExitCode) {
        println!("== {kernel}: the VM stopped without an exit code; retrying once");
        return qemu::boot(&boot);
    }
    Ok(first)
}

fn describe(kernel: &str, r: &qemu::Report) -> String {
    let boot = r.boot.map(|b| format!("{:.1}s", b.as_secs_f64())).unwrap_or_else(|| "-".into());
    let what = match r.outcome {
        qemu::Outcome::Exited(0) => "passed".to_string(),
        qemu::Outcome::Exited(rc) => format!("FAILED (exit {rc})"),
        qemu::Outcome::NoExitCode => "VM FAILURE (no exit code, twice)".to_string(),
        qemu::Outcome::TimedOut => "VM FAILURE (timed out; killed)".to_string(),
    };
    format!("{kernel:<12} {what:<34} boot {boot:>6}  total {:.0}s", r.total.as_secs_f64())
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
export FAULTLINE_BIN=/bin/faultline FL_PROBE_BIN=/bin/fl-probe
rc=0
for t in /tests/*; do
  echo "== $(basename "$t")"
  # A hung test fails its binary and the rest still run.
  timeout -s KILL 600 "$t" --test-threads=1 --nocapture __FILTER__ || { echo "== $(basename "$t") failed or timed out (rc $?)"; rc=1; }
done
exit $rc
"#;

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

pub fn vm_test(
    kernels: &[&str],
    lsm: Option<&str>,
    filter: &[String],
    timeout: Duration,
) -> anyhow::Result<()> {
    let files = build_binaries()?;
    let p = prepare()?;
    let job = TEST_JOB.replace(
        "__FILTER__",
        &filter.iter().map(|f| shell_quote(f)).collect::<Vec<_>>().join(" "),
    );
    let mut lines = Vec::new();
    let mut failed = false;
    for k in kernels {
        let r = boot_job(&p, k, lsm, &files, &job, timeout)?;
        lines.push(describe(k, &r));
        if !matches!(r.outcome, qemu::Outcome::Exited(0)) {
            failed = true;
            let log = std::fs::read_to_string(p.cache.join("run").join(format!("{k}.log")));
            lines.extend(failure_lines(&log.unwrap_or_default()).map(|l| format!("  [{k}] {l}")));
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

/// The lines of a guest log that say what failed, so a CI tail shows the cause.
fn failure_lines(log: &str) -> impl Iterator<Item = &str> {
    const SIGNS: &[&str] = &["FAILED", "panicked", "failed or timed out", "Kernel panic"];
    log.lines().filter(|l| SIGNS.iter().any(|s| l.contains(s))).take(40)
}

pub fn vm_run(
    kernel: &str,
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
        "export FAULTLINE_BIN=/bin/faultline FL_PROBE_BIN=/bin/fl-probe\n{}\n",
        cmd.iter().map(|c| shell_quote(c)).collect::<Vec<_>>().join(" ")
    );
    let r = boot_job(&p, kernel, lsm, &files, &job, timeout)?;
    println!("{}", describe(kernel, &r));
    match r.outcome {
        qemu::Outcome::Exited(rc) => {
            println!("exit code {rc}");
            Ok(rc)
        }
        _ => bail!("the VM failed before the command finished"),
    }
}
