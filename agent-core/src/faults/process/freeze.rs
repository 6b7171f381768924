//! Pausing the target: cgroup v2 `cgroup.freeze` on its directory, which freezes the whole
//! subtree.
//!
//! A frozen cgroup is kernel state that outlives the agent, so it is undone three ways: the
//! handle's drop thaws it; a guard child (`faultline __thaw-guard`) thaws it at the deadline
//! or as soon as the agent dies (PR_SET_PDEATHSIG), even when the agent is SIGKILLed; and a
//! journal entry, written before freezing, lets the next start thaw what both missed.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    process::Child,
    time::{Duration, Instant},
};

use nix::sys::{
    signal::{SigSet, SigmaskHow, Signal, sigprocmask},
    time::TimeSpec,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::{
    engine::{
        driver::{FaultHandle, monotonic_ns},
        error::{Error, Result},
        model::{Counters, Plan, PlanStep, ResolvedCgroup},
    },
    faults::{plan, spawn},
    store::{self, Store},
};

const BACKEND: &str = "cgroup.freeze";

/// How long Inject waits for the kernel to report the cgroup frozen.
const SETTLE: Duration = Duration::from_secs(2);

/// The journal entry of a freeze: the cgroup, by inode and path.
#[derive(Debug, Serialize, Deserialize)]
pub struct Frozen {
    ino: u64,
    dir: PathBuf,
}

impl store::Record for Frozen {
    const KIND: &'static str = "frozen";
    const VERSION: u32 = 1;

    fn key(&self) -> String {
        self.ino.to_string()
    }

    fn encode(&self) -> std::result::Result<Vec<u8>, String> {
        store::json::encode(self)
    }

    fn decode(_version: u32, payload: &[u8]) -> std::result::Result<Self, String> {
        store::json::decode(payload)
    }
}

pub struct FreezeHandle {
    dir: PathBuf,
    ino: u64,
    journal: Store<Frozen>,
    frozen: u64,
    guard: Option<Child>,
}

impl FaultHandle for FreezeHandle {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn counters(&self) -> Counters {
        Counters { processes_frozen: self.frozen, ..Default::default() }
    }
}

impl Drop for FreezeHandle {
    fn drop(&mut self) {
        thaw(&self.dir, self.ino);
        if let Some(mut g) = self.guard.take() {
            let _ = g.kill();
            let _ = g.wait();
        }
        self.journal.remove(&self.ino.to_string());
    }
}

/// The cgroup's directory and freeze file, if the freezer is there and the cgroup is not
/// frozen already (by someone else: it would not be this fault's to thaw).
fn freezable(cg: &ResolvedCgroup) -> Result<(PathBuf, PathBuf)> {
    let dir = cg.fs_path();
    let file = dir.join("cgroup.freeze");
    let now = std::fs::read_to_string(&file).map_err(|e| {
        Error::FailedPrecondition(format!(
            "unsupported: {} cannot be read ({e}); the cgroup v2 freezer needs Linux 5.2",
            file.display()
        ))
    })?;
    if now.trim() == "1" {
        return Err(Error::FailedPrecondition(format!(
            "{} is already frozen, not by this fault: it is left as it is",
            cg.path
        )));
    }
    Ok((dir, file))
}

/// What a pause would do, checked as `freeze` checks it, freezing nothing.
pub fn plan(cg: &ResolvedCgroup) -> Result<Plan> {
    let (dir, file) = freezable(cg)?;
    let pids = super::members(&dir);
    let steps = vec![
        PlanStep::new(
            "journal the freeze and start a thaw guard (faultline __thaw-guard) that thaws the \
             cgroup at the deadline or as soon as the agent dies",
            plan::on_cgroup(cg),
        ),
        PlanStep::new(
            format!(
                "write 1 to {}: freezes the subtree, {} now",
                file.display(),
                plan::processes(pids.len())
            ),
            plan::on_pids(&pids),
        ),
    ];
    Ok(Plan { resolved: None, backend: BACKEND.into(), steps })
}

pub fn freeze(
    cg: &ResolvedCgroup,
    journal: &Store<Frozen>,
    expires: u64,
) -> Result<Box<dyn FaultHandle>> {
    let (dir, file) = freezable(cg)?;
    journal
        .put(&Frozen { ino: cg.id, dir: dir.clone() })
        .map_err(|e| Error::journal("the freeze", &e))?;
    let journal = journal.clone();
    let mut handle = FreezeHandle { dir: dir.clone(), ino: cg.id, journal, frozen: 0, guard: None };
    handle.guard = Some(
        spawn::spawn(spawn::Spec {
            args: vec!["__thaw-guard".into(), file.display().to_string(), expires.to_string()],
            procs: Vec::new(),
            shm_fd: None,
            oom_score_adj: None,
            death_signal: libc::SIGTERM,
            stdin: None,
            keep_fds: Vec::new(),
        })
        .map_err(|e| Error::internal("starting the thaw guard", e))?,
    );
    std::fs::write(&file, "1")
        .map_err(|e| Error::internal(&format!("writing {}", file.display()), e))?;
    let t0 = Instant::now();
    while !events_frozen(&dir) {
        if t0.elapsed() > SETTLE {
            // Tasks in uninterruptible sleep freeze late; the fault is in place all the same.
            warn!(cgroup = %cg.path, "not reported frozen after {SETTLE:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    handle.frozen = super::members(&dir).len() as u64;
    info!(cgroup = %cg.path, processes = handle.frozen, "frozen");
    Ok(Box::new(handle))
}

fn events_frozen(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .is_ok_and(|t| t.lines().any(|l| l.trim() == "frozen 1"))
}

/// Thaws `dir` if it is still the cgroup that was frozen (same inode).
fn thaw(dir: &Path, ino: u64) {
    if std::fs::metadata(dir).is_ok_and(|m| m.ino() == ino)
        && let Err(e) = std::fs::write(dir.join("cgroup.freeze"), "0")
    {
        warn!(cgroup = %dir.display(), error = %e, "thawing");
    }
}

/// Thaws every cgroup journaled by an earlier agent.
pub fn recover(journal: &Store<Frozen>, records: Vec<Frozen>) {
    for r in records {
        info!(cgroup = %r.dir.display(), "thawing a cgroup an earlier agent froze");
        thaw(&r.dir, r.ino);
        journal.remove(&r.ino.to_string());
    }
}

/// `faultline __thaw-guard FREEZE_FILE DEADLINE_NS`: waits for the deadline (monotonic) or
/// SIGTERM (the agent died: PR_SET_PDEATHSIG), then thaws. The agent SIGKILLs it when it
/// thaws by itself.
pub fn guard_main(args: &[String]) -> i32 {
    let (Some(file), Some(deadline)) =
        (args.first(), args.get(1).and_then(|d| d.parse::<u64>().ok()))
    else {
        return libc::EINVAL;
    };
    let mut set = SigSet::empty();
    for s in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        set.add(s);
    }
    let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    loop {
        let left = deadline.saturating_sub(monotonic_ns());
        if left == 0 {
            break;
        }
        let ts = TimeSpec::new((left / 1_000_000_000) as _, (left % 1_000_000_000) as _);
        // SAFETY: (nix has no sigtimedwait) both pointers are to live locals of the right
        // types; a null siginfo is allowed (the signal's details are not wanted).
        if unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), ts.as_ref()) } > 0 {
            break;
        }
    }
    match std::fs::write(file, "0") {
        Ok(()) => 0,
        Err(e) => e.raw_os_error().unwrap_or(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_journals_of_earlier_releases() {
        for (release, r) in store::fixtures::<Frozen>() {
            assert!(r.ino > 0 && r.dir.is_absolute(), "{release}: {r:?}");
        }
    }
}
