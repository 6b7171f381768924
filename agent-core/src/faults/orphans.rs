//! Helper processes a killed agent left (`faultline __delay-tracer`, `__thaw-guard`,
//! `__stress-worker`, ...). Each learns of its agent's death (PR_SET_PDEATHSIG, a pidfd) and
//! ends by itself, undoing its part (a tracer releases its threads, a guard thaws), but that
//! takes a moment, and an agent restarted at once would race them: a resumed `sys delay`
//! cannot seize threads still held, a resumed `time skew` cannot stop them, a resumed pause
//! could be thawed behind its back. So a starting agent waits for them first, before anything
//! is recovered or resumed; one still there after the grace is SIGKILLed (the kernel detaches
//! a tracer's threads, and the journals undo the rest).

use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::spawn::AGENT_ENV;

/// The helpers whose agent is gone: `(pid, argv[1])`. Every helper an agent starts carries
/// its agent's pid in its environment (spawn.rs); one whose agent is no longer a process of
/// this binary is an orphan. Another live agent's helpers (two agents on one host) and
/// helpers started by hand (tests) are left be.
fn orphans() -> Vec<(i32, String)> {
    let me = std::fs::read_link("/proc/self/exe").ok();
    let exe_of = |pid: &str| std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    let var = format!("{AGENT_ENV}=");
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let pid = name.to_str()?;
            let n: i32 = pid.parse().ok()?;
            if exe_of(pid) != me {
                return None;
            }
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let sub = cmdline.split(|b| *b == 0).nth(1)?;
            if !sub.starts_with(b"__") {
                return None;
            }
            let environ = std::fs::read(e.path().join("environ")).ok()?;
            let agent = environ
                .split(|b| *b == 0)
                .find_map(|v| v.strip_prefix(var.as_bytes()))
                .and_then(|v| std::str::from_utf8(v).ok())?
                .to_string();
            (exe_of(&agent) != me).then(|| (n, String::from_utf8_lossy(sub).into_owned()))
        })
        .collect()
}

/// Waits up to `grace` for the orphaned helpers to end, then SIGKILLs those still there.
/// Returns how many there were.
pub fn reap(grace: Duration) -> usize {
    let found = orphans();
    if found.is_empty() {
        return 0;
    }
    info!(helpers = ?found, "helper processes of a previous agent: waiting for them to end");
    let until = Instant::now() + grace;
    let mut left = found.clone();
    while !left.is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
        left = orphans();
    }
    for (pid, what) in &left {
        warn!(pid, helper = %what, "helper of a dead agent still running: killed");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let until = Instant::now() + Duration::from_secs(1);
    while !orphans().is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    found.len()
}
