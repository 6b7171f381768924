//! `time_skew`: one skewer process per experiment (client.rs), given every process of the
//! target at the start and, for a cgroup target, each newcomer a rescan finds.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use tracing::{debug, warn};

use super::client::{SkewStats, SkewerClient};
use crate::{
    engine::{
        driver::{FaultDriver, FaultHandle, monotonic_ns},
        error::{Error, Result, chain},
        model::{Counters, FaultSpec, Resolved, ResolvedCgroup, TimeSkew},
    },
    faults::{helper::HelperError, process::members},
};

pub const BACKEND: &str = "vdso_patch";
/// How often a cgroup target is rescanned for processes that joined it, and the counters read.
const RESCAN: Duration = Duration::from_millis(250);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Why this host cannot shift clocks, if it cannot.
pub fn unsupported() -> Option<String> {
    if cfg!(not(target_arch = "x86_64")) {
        return Some(
            "time skew patches the x86-64 vDSO; this agent is built for another CPU".into(),
        );
    }
    crate::kernel::ptrace::forbidden()
}

/// Whether clocks can be shifted here (the caps row): ptrace, this kernel's vDSO (read from
/// the agent's own: every process has the same), and /proc/PID/map_files.
pub fn probe() -> std::result::Result<String, String> {
    if let Some(why) = unsupported() {
        return Err(why);
    }
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| e.to_string())?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]")).ok_or("no vDSO in this kernel")?;
    let range = line.split_whitespace().next().unwrap_or_default();
    let (a, b) = range.split_once('-').ok_or("unreadable /proc/self/maps")?;
    let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|e| e.to_string());
    let (a, b) = (hex(a)?, hex(b)?);
    // SAFETY: our own vDSO, mapped readable for the life of the process.
    let image = unsafe { std::slice::from_raw_parts(a as *const u8, (b - a) as usize) };
    let entries = super::vdso::entries(image).map_err(|e| e.to_string())?;
    let cg = entries.offset(super::stub::Entry::ClockGettime) as usize;
    let moved = super::vdso::prologue_len(&image[cg..], super::vdso::PATCH_LEN)
        .map_err(|e| e.to_string())?;
    std::fs::read_dir("/proc/self/map_files")
        .map_err(|e| format!("/proc/PID/map_files cannot be read (CAP_SYS_ADMIN): {e}"))?;
    Ok(format!(
        "the vDSO's clock_gettime, gettimeofday and time can be patched (first {moved} bytes of \
         clock_gettime moved to a trampoline)"
    ))
}

pub struct TimeDriver;

impl FaultDriver for TimeDriver {
    fn apply(
        &self,
        target: &Resolved,
        fault: &FaultSpec,
        expires: u64,
    ) -> Result<Box<dyn FaultHandle>> {
        let FaultSpec::TimeSkew(spec) = fault else {
            return Err(Error::Internal(format!("time driver asked for {}", fault.kind())));
        };
        let cg =
            target.cgroup("time skew acts on processes: name a cgroup, container, pod or pid")?;
        apply(cg, spec, expires)
    }
}

fn apply(cg: &ResolvedCgroup, spec: &TimeSkew, expires: u64) -> Result<Box<dyn FaultHandle>> {
    let own = std::process::id() as i32;
    if cg.pid == Some(own as u32) {
        return Err(Error::invalid("target.pid", "the agent's own clock cannot be skewed"));
    }
    if let Some(why) = unsupported() {
        return Err(Error::FailedPrecondition(format!("unsupported: time skew: {why}")));
    }
    // A cgroup target's children are in it: followed always; a pid target's when asked.
    let follow = cg.pid.is_none() || spec.follow_children;
    let mut client = SkewerClient::spawn(expires, spec.offset_ns, spec.clock_mask, follow)
        .map_err(|e| Error::internal("starting the time skewer", chain(&e)))?;
    let skewer = client.pid().map_or(0, |p| p as i32);
    let pids = match cg.pid {
        Some(p) => vec![p as i32],
        None => candidates(cg, own, skewer),
    };
    let mut known = BTreeSet::new();
    for pid in pids {
        match seize(&mut client, pid) {
            Ok(threads) => {
                debug!(pid, threads, "clock shifted");
                known.insert(pid);
            }
            // Exited meanwhile: a pid target is gone, a cgroup member just left.
            Err(HelperError::Failed(why)) if cg.pid.is_none() => debug!(pid, %why, "not seized"),
            Err(HelperError::Failed(why)) => return Err(Error::NotFound(format!("process {why}"))),
            Err(HelperError::Refused(why)) => {
                // Nothing stays applied: dropping the client makes the skewer undo the rest.
                return Err(Error::FailedPrecondition(format!(
                    "time skew cannot shift process {why}: nothing was applied"
                )));
            }
            Err(e) => return Err(Error::internal("the time skewer", chain(&e))),
        }
    }
    let client = Arc::new(Mutex::new(Some(client)));
    let stats = Arc::new(Stats::default());
    let failure = Arc::new(Mutex::new(None));
    let (stop, rx) = mpsc::channel::<()>();
    let watch = Watch {
        client: client.clone(),
        cgroup: cg.pid.is_none().then(|| cg.clone()),
        own,
        skewer,
        known,
        skipped: BTreeSet::new(),
        expires,
        stats: stats.clone(),
        failure: failure.clone(),
    };
    let thread = std::thread::Builder::new()
        .name("time-watch".into())
        .spawn(move || watch.run(rx))
        .map_err(|e| Error::internal("starting the time-skew watcher", e))?;
    Ok(Box::new(SkewHandle { client, stop: Some(stop), thread: Some(thread), stats, failure }))
}

/// `seize`, tried again while a thread stands in a clock function's first bytes.
fn seize(client: &mut SkewerClient, pid: i32) -> std::result::Result<u32, HelperError> {
    let mut last = None;
    for _ in 0..20 {
        match client.seize(pid) {
            Err(HelperError::Failed(why)) if why.contains("try again") => {
                last = Some(why);
                std::thread::sleep(Duration::from_millis(2));
            }
            other => return other,
        }
    }
    Err(HelperError::Failed(last.unwrap_or_default()))
}

fn candidates(cg: &ResolvedCgroup, own: i32, skewer: i32) -> Vec<i32> {
    let mut pids = members(&cg.fs_path());
    pids.retain(|p| *p != own && *p != skewer);
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[derive(Default)]
struct Stats {
    patched: AtomicU64,
    hit: AtomicU64,
}

impl Stats {
    fn store(&self, s: SkewStats) {
        self.patched.store(s.patched, Ordering::Relaxed);
        self.hit.store(u64::from(s.hit), Ordering::Relaxed);
    }
}

struct Watch {
    client: Arc<Mutex<Option<SkewerClient>>>,
    cgroup: Option<ResolvedCgroup>,
    own: i32,
    skewer: i32,
    known: BTreeSet<i32>,
    skipped: BTreeSet<i32>,
    expires: u64,
    stats: Arc<Stats>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Watch {
    fn run(mut self, stop: mpsc::Receiver<()>) {
        loop {
            if let Err(e) = self.round() {
                // At the deadline the skewer undoes everything and exits: not a failure.
                if monotonic_ns() >= self.expires {
                    return;
                }
                let why = format!("the time skewer ended: {}", chain(&e));
                warn!(reason = %why, "time skew failed");
                *lock(&self.failure) = Some(why);
                return;
            }
            if stop.recv_timeout(RESCAN) != Err(mpsc::RecvTimeoutError::Timeout)
                || monotonic_ns() >= self.expires
            {
                return;
            }
        }
    }

    fn round(&mut self) -> std::result::Result<(), HelperError> {
        let mut guard = lock(&self.client);
        let Some(c) = guard.as_mut() else { return Ok(()) };
        if let Some(cg) = &self.cgroup {
            for pid in candidates(cg, self.own, self.skewer) {
                if self.known.contains(&pid) || self.skipped.contains(&pid) {
                    continue;
                }
                match seize(c, pid) {
                    Ok(_) => {
                        self.known.insert(pid);
                    }
                    Err(HelperError::Refused(why)) => {
                        warn!(pid, %why, "a process that joined the target keeps true time");
                        self.skipped.insert(pid);
                    }
                    Err(HelperError::Failed(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.stats.store(c.stats()?);
        Ok(())
    }
}

struct SkewHandle {
    client: Arc<Mutex<Option<SkewerClient>>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    stats: Arc<Stats>,
    failure: Arc<Mutex<Option<String>>>,
}

impl FaultHandle for SkewHandle {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn counters(&self) -> Counters {
        Counters {
            processes_skewed: self.stats.patched.load(Ordering::Relaxed),
            skewed_reads: self.stats.hit.load(Ordering::Relaxed),
            ..Default::default()
        }
    }

    fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }
}

impl Drop for SkewHandle {
    /// Every process reads true time again at once, and its vDSO is written back.
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(c) = lock(&self.client).take() {
            match c.stop() {
                Ok(()) | Err(HelperError::Closed | HelperError::Io(_)) => {}
                Err(e) => warn!(error = %chain(&e), "stopping the time skewer"),
            }
        }
    }
}
