//! `time_skew`: one skewer process per experiment (client.rs), given every process of the
//! target at the start and, for a cgroup target, each newcomer a rescan finds.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    time::Duration,
};

use std::os::fd::AsRawFd as _;

use tracing::{debug, warn};

use super::{
    client::{SkewStats, SkewerClient},
    datapath::TimeDatapath,
};
use crate::{
    engine::{
        driver::{FaultDriver, FaultHandle, monotonic_ns},
        error::{Error, Result, chain},
        model::{Counters, FaultSpec, Plan, PlanStep, Resolved, ResolvedCgroup, TimeSkew},
    },
    faults::{helper::HelperError, plan, process::members},
};

pub const BACKEND: &str = "vdso_patch";
/// The same, raw clock calls shifted by the kernel programs too (datapath.rs).
pub const BACKEND_RAW: &str = "vdso_patch+fexit";
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

/// One per agent: the raw-syscall programs, loaded at the first experiment and attached
/// while any runs.
#[derive(Default)]
pub struct TimeDriver {
    raw: Arc<Mutex<Raw>>,
}

#[derive(Default)]
struct Raw {
    /// None: not loaded yet; Err: why it cannot be (said once).
    dp: Option<std::result::Result<TimeDatapath, String>>,
    users: usize,
}

/// An experiment's use of the raw-syscall programs (dropping it detaches them after the last).
struct RawUse(Arc<Mutex<Raw>>);

impl Drop for RawUse {
    fn drop(&mut self) {
        let mut raw = lock(&self.0);
        raw.users = raw.users.saturating_sub(1);
        if raw.users == 0
            && let Some(Ok(dp)) = raw.dp.as_mut()
        {
            dp.detach();
        }
    }
}

impl Raw {
    /// Attaches the programs for one more experiment (loading them the first time: the
    /// kernel's BTF is parsed, up to seconds on a slow machine, so the watch thread does it,
    /// not the request); None (and a warning) where raw calls cannot be shifted: the vDSO
    /// patch still works.
    fn acquire(this: &Arc<Mutex<Raw>>) -> Option<RawUse> {
        let mut raw = lock(this);
        let dp = raw.dp.get_or_insert_with(|| {
            TimeDatapath::load().map_err(|e| {
                let why = chain(&e);
                warn!(reason = %why, "time skew: raw clock system calls will not be shifted");
                why
            })
        });
        let Ok(dp) = dp else { return None };
        if let Err(e) = dp.attach() {
            warn!(reason = %chain(&e), "time skew: raw clock system calls will not be shifted");
            return None;
        }
        raw.users += 1;
        Some(RawUse(this.clone()))
    }
}

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
        self.apply(cg, spec, expires)
    }

    fn plan(&self, target: &Resolved, fault: &FaultSpec) -> Result<Plan> {
        let FaultSpec::TimeSkew(spec) = fault else {
            return Err(Error::Internal(format!("time driver asked for {}", fault.kind())));
        };
        let cg =
            target.cgroup("time skew acts on processes: name a cgroup, container, pod or pid")?;
        self.plan(cg, spec)
    }
}

impl TimeDriver {
    /// What `apply` refuses before it starts the skewer; the agent's pid.
    fn check(cg: &ResolvedCgroup) -> Result<i32> {
        let own = std::process::id() as i32;
        if cg.pid == Some(own as u32) {
            return Err(Error::invalid("target.pid", "the agent's own clock cannot be skewed"));
        }
        if let Some(why) = unsupported() {
            return Err(Error::FailedPrecondition(format!("unsupported: time skew: {why}")));
        }
        Ok(own)
    }

    /// The processes `apply` would shift, each checked as the skewer checks it before its
    /// ptrace (another tracer, a frozen cgroup: refused with the skewer's words), none seized.
    fn plan(&self, cg: &ResolvedCgroup, spec: &TimeSkew) -> Result<Plan> {
        let own = Self::check(cg)?;
        let pids = match cg.pid {
            Some(p) => vec![p as i32],
            None => candidates(cg, own, 0),
        };
        for &pid in &pids {
            let refused = plan::traced_by(pid).or_else(|| {
                faultline_host::cgroup::frozen(pid)
                    .map(|why| format!("frozen ({why}): its threads take no ptrace stop"))
            });
            if let Some(why) = refused {
                return Err(Error::FailedPrecondition(format!(
                    "time skew cannot shift process {pid}: {why}: nothing was applied"
                )));
            }
            if cg.pid.is_some() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Err(Error::NotFound(format!("process {pid}: gone")));
            }
        }
        let follow = cg.pid.is_none() || spec.follow_children;
        let mut steps = vec![PlanStep::new(
            format!(
                "start a time skewer (faultline {}) that seizes each process with ptrace and \
                 patches its vDSO clock_gettime, gettimeofday and time so realtime reads {}{}",
                super::client::SUBCOMMAND,
                crate::units::human_duration(std::time::Duration::from_nanos(
                    spec.offset_ns.unsigned_abs()
                )) + if spec.offset_ns < 0 { " behind" } else { " ahead" },
                if follow { "; children they fork too" } else { "" }
            ),
            plan::on_pids(&pids),
        )];
        if cg.pid.is_none() {
            steps.push(PlanStep::new(
                format!("rescan every {} ms and shift the processes that join", RESCAN.as_millis()),
                plan::on_cgroup(cg),
            ));
        }
        let raw = matches!(lock(&self.raw).dp, Some(Ok(_)));
        steps.push(PlanStep::new(
            "attach the raw clock_gettime and gettimeofday programs while it runs, where they \
             load (their load and attach are not tried by a dry run)",
            "the skewed processes",
        ));
        Ok(Plan { resolved: None, backend: if raw { BACKEND_RAW } else { BACKEND }.into(), steps })
    }

    fn apply(
        &self,
        cg: &ResolvedCgroup,
        spec: &TimeSkew,
        expires: u64,
    ) -> Result<Box<dyn FaultHandle>> {
        let own = Self::check(cg)?;
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
                Err(HelperError::Failed(why)) if cg.pid.is_none() => {
                    debug!(pid, %why, "not seized")
                }
                Err(HelperError::Failed(why)) => {
                    return Err(Error::NotFound(format!("process {why}")));
                }
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
            raw: Some(self.raw.clone()),
            raw_use: None,
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
    /// The raw-syscall programs shift this experiment's processes too.
    raw: AtomicBool,
    /// Processes that joined the target and could not be shifted, and the last reason.
    unskewed: AtomicU64,
    note: Mutex<Option<String>>,
}

impl Stats {
    fn store(&self, s: SkewStats) {
        self.patched.store(s.patched, Ordering::Relaxed);
        self.hit.store(u64::from(s.hit), Ordering::Relaxed);
    }
}

struct Watch {
    /// Taken at the first round: the raw-syscall programs are attached and handed to the
    /// skewer then (`raw_use` holds them attached until the watch ends).
    raw: Option<Arc<Mutex<Raw>>>,
    raw_use: Option<RawUse>,
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

    /// Attaches the raw-syscall programs and gives the skewer their map.
    fn raw_handoff(&mut self, shared: Arc<Mutex<Raw>>) -> std::result::Result<(), HelperError> {
        let Some(u) = Raw::acquire(&shared) else { return Ok(()) };
        let fd = match &lock(&shared).dp {
            Some(Ok(dp)) => dp.pids_fd().as_raw_fd(),
            _ => return Ok(()),
        };
        let mut guard = lock(&self.client);
        let Some(c) = guard.as_mut() else { return Ok(()) };
        c.raw(fd)?;
        self.raw_use = Some(u);
        self.stats.raw.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn round(&mut self) -> std::result::Result<(), HelperError> {
        if let Some(shared) = self.raw.take() {
            self.raw_handoff(shared)?;
        }
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
                        self.stats.unskewed.fetch_add(1, Ordering::Relaxed);
                        *lock(&self.stats.note) = Some(format!("process {why}: keeps true time"));
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
        if self.stats.raw.load(Ordering::Relaxed) { BACKEND_RAW } else { BACKEND }
    }

    fn counters(&self) -> Counters {
        Counters {
            processes_skewed: self.stats.patched.load(Ordering::Relaxed),
            skewed_reads: self.stats.hit.load(Ordering::Relaxed),
            processes_unskewed: self.stats.unskewed.load(Ordering::Relaxed),
            ..Default::default()
        }
    }

    fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }

    fn note(&self) -> Option<String> {
        lock(&self.stats.note).clone()
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
