//! Boots a kernel + initramfs under QEMU (TCG: the /dev/kvm here cannot run these kernels),
//! streams the guest console to the host, and reads the job's exit code from a second serial
//! port, with a console marker as fallback.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;

pub enum Outcome {
    /// The job ran and exited with this code.
    Exited(i32),
    /// The VM stopped without reporting an exit code (crash, panic, early poweroff).
    NoExitCode,
    TimedOut,
}

pub struct Boot<'a> {
    pub name: &'a str,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub lsm: Option<&'a str>,
    pub timeout: Duration,
    /// The console is written here as well as to stdout.
    pub log: &'a Path,
}

pub struct Report {
    pub outcome: Outcome,
    /// From QEMU start to the guest's ready marker.
    pub boot: Option<Duration>,
    pub total: Duration,
}

const MARKER: &str = "FAULTLINE-EXIT=";

pub fn boot(b: &Boot) -> anyhow::Result<Report> {
    let rc_file = b.log.with_extension("rc");
    let _ = std::fs::remove_file(&rc_file);
    let mut append = String::from("console=ttyS0 quiet panic=-1 oops=panic");
    if let Some(lsm) = b.lsm {
        append.push_str(&format!(" lsm={lsm}"));
    }
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg,thread=multi", "-cpu", "max", "-smp", "1", "-m", "2G"])
        .args(["-display", "none", "-monitor", "none", "-no-reboot", "-nodefaults"])
        .arg("-kernel")
        .arg(b.vmlinuz)
        .arg("-initrd")
        .arg(b.initrd)
        .args(["-append", &append, "-serial", "stdio", "-serial"])
        .arg(format!("file:{}", rc_file.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let stdout = child.stdout.take().context("qemu stdout")?;
    let log =
        std::fs::File::create(b.log).with_context(|| format!("creating {}", b.log.display()))?;
    let seen: Arc<Mutex<(Option<Duration>, Option<i32>)>> = Arc::default();
    let reader = {
        let (seen, name) = (seen.clone(), b.name.to_string());
        std::thread::spawn(move || {
            let mut log = log;
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let line = line.trim_end_matches('\r');
                println!("[{name}] {line}");
                let _ = writeln!(log, "{line}");
                let mut s = seen.lock().unwrap_or_else(|p| p.into_inner());
                if line.starts_with("FAULTLINE-VM-READY") && s.0.is_none() {
                    s.0 = Some(start.elapsed());
                }
                if let Some(rc) = line.strip_prefix(MARKER).and_then(|r| r.trim().parse().ok()) {
                    s.1 = Some(rc);
                }
            }
        })
    };
    let timed_out = loop {
        if child.try_wait()?.is_some() {
            break false;
        }
        if start.elapsed() > b.timeout {
            let _ = child.kill();
            let _ = child.wait();
            break true;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = reader.join();
    let total = start.elapsed();
    let (boot, marker) = *seen.lock().unwrap_or_else(|p| p.into_inner());
    let from_port = std::fs::read_to_string(&rc_file).ok().and_then(|s| s.trim().parse().ok());
    let outcome = match (timed_out, from_port.or(marker)) {
        (true, _) => Outcome::TimedOut,
        (false, Some(rc)) => Outcome::Exited(rc),
        (false, None) => Outcome::NoExitCode,
    };
    Ok(Report { outcome, boot, total })
}
