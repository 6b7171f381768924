//! The `syscall_delay` driver: one rule in the delay datapath and one tracer process per
//! experiment.
//!
//! Apply: the target's processes (a pid target: that process; a cgroup, container or pod:
//! every process in the cgroup and below it) are seized by a new `faultline __delay-tracer`
//! whose deadline is the experiment's, then the rule is added (which attaches the exit
//! program with the first rule). A process the tracer cannot hold (traced by another
//! debugger, Yama scope 3) refuses the whole inject, naming it and its tracer, with nothing
//! left applied. While the fault lasts a watcher thread seizes processes that enter a
//! cgroup target from outside (every 250 ms; what seized processes fork the tracer follows
//! itself), lets go of those that left it, and reads the tracer's held time for the
//! counters. Revert: the rule goes first (no new call is chosen), then the tracer stops,
//! which resumes and detaches every thread.
//!
//! The datapath (its maps are about 18 MB) is loaded with the first delay fault and kept.

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use faultline_common::delay::{DELAY_F_NORMAL, DELAY_F_PATH, DELAY_PROB_ONE, DelayRule};
use tracing::{debug, info, warn};

use super::{
    datapath::{DelayDatapath, DelayError, DelayTarget, ExitHook, syscall_bitmap},
    tracer::{Tracer, TracerError},
};
use crate::{
    engine::{
        driver::{FaultDriver, FaultHandle, monotonic_ns},
        error::{Error, Result, chain},
        model::{
            Counters, Distribution, FaultSpec, Plan, PlanStep, Resolved, ResolvedCgroup,
            SyscallDelay,
        },
    },
    faults::{plan, process::members},
};

/// How often a cgroup target is scanned for processes that entered it.
pub const RESCAN: Duration = Duration::from_millis(250);

const FIELD: &str = "fault.syscall_delay";

/// The tracers this agent runs: never seized as members of a target.
static TRACERS: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The backend string of each form of the exit program.
pub fn backend(hook: ExitHook) -> &'static str {
    match hook {
        ExitHook::FExit => "fexit+ptrace",
        ExitHook::TpBtf => "tp_btf+ptrace",
        ExitHook::RawTp => "raw_tp+ptrace",
    }
}

pub use crate::kernel::ptrace::forbidden as ptrace_forbidden;

pub struct DelayDriver {
    debug: bool,
    datapath: Mutex<Option<Arc<Mutex<DelayDatapath>>>>,
}

impl DelayDriver {
    /// Nothing is loaded until the first delay fault; `debug` turns the exit program's debug
    /// log lines on (`--debug-bpf`).
    pub fn new(debug: bool) -> DelayDriver {
        DelayDriver { debug, datapath: Mutex::new(None) }
    }

    /// Whether the datapath is loaded (the first delay fault, or a dry run, loads it).
    fn loaded(&self) -> bool {
        lock(&self.datapath).is_some()
    }

    fn datapath(&self) -> Result<Arc<Mutex<DelayDatapath>>> {
        let mut slot = lock(&self.datapath);
        if let Some(dp) = &*slot {
            return Ok(dp.clone());
        }
        let dp = DelayDatapath::load(self.debug).map_err(|e| {
            Error::FailedPrecondition(format!(
                "unsupported: system-call delays: the delay datapath: {}",
                chain(&e)
            ))
        })?;
        info!("system-call delay datapath loaded");
        let dp = Arc::new(Mutex::new(dp));
        *slot = Some(dp.clone());
        Ok(dp)
    }

    /// What `apply_delay` refuses before it starts the tracer, in its order; the rule, its
    /// target, and the datapath (loaded here if it was not: programs loaded, none attached).
    fn check(
        &self,
        cg: &ResolvedCgroup,
        spec: &SyscallDelay,
        expires: u64,
    ) -> Result<(DelayRule, DelayTarget, Arc<Mutex<DelayDatapath>>)> {
        let own = std::process::id();
        if cg.pid == Some(own) {
            return Err(Error::invalid("target.pid", "the agent's own process cannot be delayed"));
        }
        if let Some(why) = ptrace_forbidden() {
            return Err(Error::FailedPrecondition(format!("unsupported: sys delay: {why}")));
        }
        let mut rule = rule(spec, expires)?;
        if let Some(prefix) = &spec.path_prefix {
            // Resolved in the target's own root (a container sees its own /data).
            let root = cg.pid.map(|p| p as i32).or_else(|| candidates(cg).first().copied());
            let (dev, ino) = path_identity(prefix, root)?;
            rule.flags |= DELAY_F_PATH;
            (rule.path_dev, rule.path_ino) = (dev, ino);
        }
        let target = match cg.pid {
            Some(tgid) => DelayTarget::Pid { tgid, follow: spec.follow_children },
            None => DelayTarget::Cgroup { id: cg.id, level: cg.level },
        };
        let dp = self.datapath()?;
        {
            let d = lock(&dp);
            if let (true, Err(why)) = (spec.follow_children, &d.follow) {
                return Err(Error::FailedPrecondition(format!(
                    "unsupported: {FIELD}.follow_children: {why}"
                )));
            }
        }
        Ok((rule, target, dp))
    }

    /// What `apply_delay` would do, checked as it checks: each process the tracer would
    /// seize (another tracer refuses it, as the tracer would), the rule against the
    /// datapath's room. No tracer, no seizure, no rule, nothing attached; the datapath is
    /// loaded if it was not (the step says so).
    fn plan_delay(&self, cg: &ResolvedCgroup, spec: &SyscallDelay) -> Result<Plan> {
        let was_loaded = self.loaded();
        let (rule, target, dp) = self.check(cg, spec, 0)?;
        let pids = match cg.pid {
            Some(pid) => vec![pid as i32],
            None => candidates(cg),
        };
        for &pid in &pids {
            if let Some(why) = plan::traced_by(pid) {
                return Err(refusal(TracerError::Refused(format!("{pid}: {why}")), 0));
            }
            if cg.pid.is_some() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                return Err(Error::NotFound(format!("process {pid}: no such process")));
            }
        }
        let d = lock(&dp);
        d.plan_rule(target, &rule).map_err(datapath_error)?;
        let hook = d.planned_hook(spec.numbers.len());
        let mut steps = Vec::new();
        if !was_loaded {
            steps.push(PlanStep::new(
                "load the delay datapath (done by this dry run: its programs loaded, none \
                 attached, kept for the first delay fault)",
                "the agent",
            ));
        }
        steps.push(PlanStep::new(
            format!(
                "start a delay tracer (faultline {}) and seize every thread of each process \
                 with ptrace (they show it as TracerPid)",
                super::tracer::SUBCOMMAND
            ),
            plan::on_pids(&pids),
        ));
        let share = match spec.every_nth {
            Some(n) => format!("every {n}th call"),
            None => format!("{}% of calls", spec.percent),
        };
        steps.push(PlanStep::new(
            format!(
                "write a rule delaying {} by {} (+- {}, {share}) to a slot of {}",
                spec.syscalls.join(", "),
                crate::units::human_duration(spec.latency),
                crate::units::human_duration(spec.jitter),
                faultline_common::delay::MAP_DELAY_RULES
            ),
            match cg.pid {
                Some(pid) => format!("pid {pid} of {}", plan::on_cgroup(cg)),
                None => plan::on_cgroup(cg),
            },
        ));
        steps.push(match d.hook() {
            Some(h) => PlanStep::new(
                format!("none to attach: the exit program is attached ({})", h.name()),
                "the host",
            ),
            None => PlanStep::new(
                format!(
                    "attach the exit program as {} (the attach is not tried by a dry run; \
                     fexit falls back to tp_btf, then raw_tp, on sys_exit)",
                    hook.name()
                ),
                "the host",
            ),
        });
        if cg.pid.is_none() {
            steps.push(PlanStep::new(
                format!("rescan every {} ms and seize processes that join", RESCAN.as_millis()),
                plan::on_cgroup(cg),
            ));
        }
        Ok(Plan { resolved: None, backend: backend(hook).into(), steps })
    }

    fn apply_delay(
        &self,
        cg: &ResolvedCgroup,
        spec: &SyscallDelay,
        expires: u64,
    ) -> Result<Box<dyn FaultHandle>> {
        let (rule, target, dp) = self.check(cg, spec, expires)?;
        let tracer = {
            let d = lock(&dp);
            let (armed, seized) = d.tracer_fds();
            Tracer::spawn(armed, seized, expires)
                .map_err(|e| Error::internal("starting the delay tracer", chain(&e)))?
        };
        let tracer_pid = tracer.pid().map_or(0, |p| p as i32);
        lock(&TRACERS).insert(tracer_pid);
        let mut seizing = Seizing { tracer: Some(tracer), pid: tracer_pid };
        let mut known = BTreeSet::new();
        match cg.pid {
            Some(pid) => {
                let t = seizing.tracer()?;
                match t.seize(pid as i32) {
                    Ok(n) => debug!(pid, threads = n, "seized"),
                    Err(TracerError::Failed(why)) => {
                        return Err(Error::NotFound(format!("process {why}")));
                    }
                    Err(e) => return Err(refusal(e, tracer_pid)),
                }
                known.insert(pid as i32);
            }
            None => {
                for pid in candidates(cg) {
                    match seizing.tracer()?.seize(pid) {
                        Ok(n) => {
                            debug!(pid, threads = n, "seized");
                            known.insert(pid);
                        }
                        // Exited meanwhile.
                        Err(TracerError::Failed(why)) => debug!(pid, %why, "not seized"),
                        Err(e) => return Err(refusal(e, tracer_pid)),
                    }
                }
            }
        }
        let slot = lock(&dp).add_rule(target, rule, spec.seed).map_err(datapath_error)?;
        let hook = lock(&dp).hook().unwrap_or(ExitHook::RawTp);
        let tracer = Arc::new(Mutex::new(seizing.tracer.take()));
        let held_usec = Arc::new(AtomicU64::new(0));
        let failure = Arc::new(Mutex::new(None));
        let (stop, rx) = mpsc::channel::<()>();
        let watch = Watch {
            tracer: tracer.clone(),
            cgroup: cg.pid.is_none().then(|| cg.clone()),
            known,
            skipped: BTreeSet::new(),
            slot,
            expires,
            held_usec: held_usec.clone(),
            failure: failure.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("delay-watch".into())
            .spawn(move || watch.run(rx))
            .map_err(|e| {
                let _ = lock(&dp).remove_rule(slot);
                Error::internal("starting the delay watcher", e)
            });
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                stop_tracer(&tracer, tracer_pid);
                return Err(e);
            }
        };
        info!(slot, tracer = tracer_pid, backend = backend(hook), "system-call delay applied");
        Ok(Box::new(DelayHandle {
            datapath: dp,
            slot,
            tracer,
            tracer_pid,
            backend: backend(hook),
            held_usec,
            failure,
            stop: Some(stop),
            thread: Some(thread),
        }))
    }
}

/// The datapath rule of `spec`.
fn rule(spec: &SyscallDelay, expires: u64) -> Result<DelayRule> {
    let syscalls = syscall_bitmap(&spec.numbers).map_err(|e| {
        Error::invalid(format!("{FIELD}.syscalls"), chain(&e)) // numbers come from our table
    })?;
    Ok(DelayRule {
        syscalls,
        latency_ns: spec.latency.as_nanos() as u64,
        jitter_ns: spec.jitter.as_nanos() as u64,
        threshold: if spec.every_nth.is_some() {
            DELAY_PROB_ONE
        } else {
            ((spec.percent / 100.0) * DELAY_PROB_ONE as f64).round() as u64
        },
        every_nth: spec.every_nth.unwrap_or(0),
        max_hits: spec.max_hits.unwrap_or(0),
        expires_ns: expires,
        flags: if spec.distribution == Distribution::Normal { DELAY_F_NORMAL } else { 0 },
        path_dev: 0,
        path_ino: 0,
    })
}

/// The (device in the kernel's dev_t encoding, inode) of `prefix` as process `root_pid`
/// sees it (through /proc/PID/root; the agent's own root when the target has no process).
/// The exit program matches files at or under it by these, so it must exist now.
fn path_identity(prefix: &str, root_pid: Option<i32>) -> Result<(u32, u64)> {
    use std::os::unix::fs::MetadataExt as _;
    let (path, seen_by) = match root_pid {
        Some(pid) => (format!("/proc/{pid}/root{prefix}"), format!("process {pid}")),
        None => (prefix.to_string(), "the agent (the target has no process yet)".to_string()),
    };
    let m = std::fs::metadata(&path).map_err(|e| {
        Error::invalid(
            format!("{FIELD}.path_prefix"),
            format!(
                "{prefix:?} cannot be resolved as {seen_by} sees it: {e} (sys delay matches a \
                 path prefix by the identity of that directory or file, so it must exist when \
                 the fault starts)"
            ),
        )
    })?;
    Ok((kernel_dev(m.dev()), m.ino()))
}

/// A user-space dev_t (glibc's encoding, as stat returns it) in the kernel's own encoding
/// (`MKDEV`: major << 20 | minor), as struct super_block.s_dev holds it.
fn kernel_dev(dev: u64) -> u32 {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    ((major << 20) | (minor & 0xf_ffff)) as u32
}

/// Every process of a cgroup target but the agent and its tracers.
fn candidates(cg: &ResolvedCgroup) -> Vec<i32> {
    let own = std::process::id() as i32;
    let tracers = lock(&TRACERS).clone();
    let mut pids = members(&cg.fs_path());
    pids.retain(|p| *p != own && !tracers.contains(p));
    pids.sort_unstable();
    pids.dedup();
    pids
}

/// A tracer's refusal of a process as the inject's answer.
fn refusal(e: TracerError, tracer: i32) -> Error {
    match e {
        // "PID: traced by 1234 (strace)", "PID: kernel.yama.ptrace_scope=3 forbids ptrace"
        TracerError::Refused(why) => {
            let ours = why
                .split_once("traced by ")
                .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<i32>().ok())
                .is_some_and(|tp| lock(&TRACERS).contains(&tp));
            let also = if ours {
                " (the tracer of another sys delay experiment: one delay fault per process at \
                 a time)"
            } else {
                ""
            };
            Error::FailedPrecondition(format!(
                "sys delay cannot hold process {why}{also}: nothing was applied"
            ))
        }
        other => Error::internal(&format!("the delay tracer ({tracer})"), chain(&other)),
    }
}

fn datapath_error(e: DelayError) -> Error {
    match e {
        DelayError::Full | DelayError::TargetFull | DelayError::TooManyLevels => {
            Error::ResourceExhausted(e.to_string())
        }
        DelayError::TooDeep(_) => Error::invalid("target", e.to_string()),
        DelayError::NoExitHook { .. } | DelayError::NoPathWalk(_) => {
            Error::FailedPrecondition(format!("unsupported: sys delay: {}", chain(&e)))
        }
        other => Error::internal("adding the delay rule", chain(&other)),
    }
}

/// The tracer while apply seizes: stopped (releasing what it took) unless apply succeeds.
struct Seizing {
    tracer: Option<Tracer>,
    pid: i32,
}

impl Seizing {
    fn tracer(&mut self) -> Result<&mut Tracer> {
        self.tracer.as_mut().ok_or_else(|| Error::Internal("the delay tracer is gone".into()))
    }
}

impl Drop for Seizing {
    fn drop(&mut self) {
        if let Some(t) = self.tracer.take() {
            if let Err(e) = t.stop() {
                warn!(error = %chain(&e), tracer = self.pid, "stopping the delay tracer");
            }
            lock(&TRACERS).remove(&self.pid);
        }
    }
}

fn stop_tracer(tracer: &Mutex<Option<Tracer>>, pid: i32) {
    if let Some(t) = lock(tracer).take() {
        match t.stop() {
            Ok(()) => debug!(tracer = pid, "delay tracer stopped"),
            // It ended by itself (its deadline, as the experiment's): its exit let go of
            // every thread; it is reaped as the client drops.
            Err(TracerError::Closed | TracerError::Io(_)) => {
                debug!(tracer = pid, "delay tracer had ended")
            }
            Err(e) => warn!(error = %chain(&e), tracer = pid, "stopping the delay tracer"),
        }
    }
    lock(&TRACERS).remove(&pid);
}

/// The watcher thread's state.
struct Watch {
    tracer: Arc<Mutex<Option<Tracer>>>,
    /// Cgroup targets: rescanned for newcomers.
    cgroup: Option<ResolvedCgroup>,
    known: BTreeSet<i32>,
    /// Newcomers the tracer refused (warned once).
    skipped: BTreeSet<i32>,
    slot: u32,
    expires: u64,
    held_usec: Arc<AtomicU64>,
    failure: Arc<Mutex<Option<String>>>,
}

impl Watch {
    fn run(mut self, stop: mpsc::Receiver<()>) {
        loop {
            if stop.recv_timeout(RESCAN) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            // The tracer ends at the deadline by itself.
            if monotonic_ns() >= self.expires {
                return;
            }
            if let Err(e) = self.round() {
                // At the deadline the tracer stops reading requests and exits: not a failure.
                if monotonic_ns() >= self.expires {
                    return;
                }
                let why = format!("the delay tracer ended: {}", chain(&e));
                warn!(reason = %why, "system-call delay failed");
                *lock(&self.failure) = Some(why);
                return;
            }
        }
    }

    fn round(&mut self) -> std::result::Result<(), TracerError> {
        let mut guard = lock(&self.tracer);
        let Some(t) = guard.as_mut() else { return Ok(()) };
        if let Some(cg) = &self.cgroup {
            let now: BTreeSet<i32> = candidates(cg).into_iter().collect();
            let new: Vec<i32> = now.difference(&self.known).copied().collect();
            for pid in new {
                if self.skipped.contains(&pid) {
                    continue;
                }
                match t.seize(pid) {
                    Ok(n) => {
                        debug!(pid, threads = n, "seized a process that entered the target");
                        self.known.insert(pid);
                    }
                    Err(TracerError::Refused(why)) => {
                        warn!(%why, "a process that entered the target cannot be delayed");
                        self.skipped.insert(pid);
                    }
                    Err(TracerError::Failed(why)) => debug!(pid, %why, "not seized"),
                    Err(e) => return Err(e),
                }
            }
            // Left the target (or exited): not held any longer.
            let gone: Vec<i32> = self.known.difference(&now).copied().collect();
            for pid in gone {
                self.known.remove(&pid);
                if std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    match t.release(pid) {
                        Ok(_) | Err(TracerError::Failed(_)) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            self.skipped.retain(|p| now.contains(p));
        }
        let stats = t.stats()?;
        if let Some(s) = stats.iter().find(|s| s.slot == self.slot) {
            self.held_usec.store(s.held_ns / 1000, Ordering::Relaxed);
        }
        Ok(())
    }
}

struct DelayHandle {
    datapath: Arc<Mutex<DelayDatapath>>,
    slot: u32,
    tracer: Arc<Mutex<Option<Tracer>>>,
    tracer_pid: i32,
    backend: &'static str,
    held_usec: Arc<AtomicU64>,
    failure: Arc<Mutex<Option<String>>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultHandle for DelayHandle {
    fn backend(&self) -> &'static str {
        self.backend
    }

    /// Seen and delayed from the datapath; the delay added is the time the tracer held the
    /// threads (what the callers waited), as of the watcher's last read (at most 250 ms old).
    fn counters(&self) -> Counters {
        let c = match lock(&self.datapath).counters(self.slot) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %chain(&e), slot = self.slot, "reading delay counters");
                Default::default()
            }
        };
        Counters {
            calls_seen: c.seen,
            calls_delayed: c.delayed,
            delay_added_usec: self.held_usec.load(Ordering::Relaxed),
            ..Default::default()
        }
    }

    fn failure(&self) -> Option<String> {
        lock(&self.failure).clone()
    }
}

impl Drop for DelayHandle {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // No call is chosen from now on; then every thread is resumed and detached.
        if let Err(e) = lock(&self.datapath).remove_rule(self.slot) {
            warn!(error = %chain(&e), slot = self.slot, "removing the delay rule");
        }
        stop_tracer(&self.tracer, self.tracer_pid);
    }
}

impl FaultDriver for DelayDriver {
    fn apply(
        &self,
        target: &Resolved,
        fault: &FaultSpec,
        expires: u64,
    ) -> Result<Box<dyn FaultHandle>> {
        let FaultSpec::SyscallDelay(spec) = fault else {
            return Err(Error::Internal(format!("the delay family was handed {}", fault.kind())));
        };
        let cg =
            target.cgroup("syscall_delay acts on a task's calls: use a cgroup or pid target")?;
        let started = monotonic_ns();
        self.apply_delay(cg, spec, expires).map_err(|e| match e {
            // The tracer ends itself at the deadline: a fault whose time ran out while it was
            // being applied (loading the datapath, seizing many threads) finds it gone.
            Error::Internal(why) if monotonic_ns() >= expires => {
                Error::FailedPrecondition(format!(
                    "sys delay: the fault's time ran out while it was being applied ({} ms of \
                 setup; ask for a longer --for): {why}",
                    (monotonic_ns() - started) / 1_000_000
                ))
            }
            other => other,
        })
    }
    fn plan(&self, target: &Resolved, fault: &FaultSpec) -> Result<Plan> {
        let FaultSpec::SyscallDelay(spec) = fault else {
            return Err(Error::Internal(format!("the delay family was handed {}", fault.kind())));
        };
        let cg =
            target.cgroup("syscall_delay acts on a task's calls: use a cgroup or pid target")?;
        self.plan_delay(cg, spec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SyscallDelay {
        SyscallDelay {
            syscalls: vec!["read".into(), "fsync".into()],
            numbers: vec![0, 74],
            latency: Duration::from_millis(100),
            jitter: Duration::from_millis(10),
            distribution: Distribution::Uniform,
            percent: 50.0,
            every_nth: None,
            max_hits: Some(3),
            path_prefix: None,
            follow_children: false,
            seed: None,
        }
    }

    #[test]
    fn the_rule_carries_the_spec() {
        let r = rule(&spec(), 77).unwrap();
        assert_eq!((r.syscalls[0], r.syscalls[1]), (1, 1 << (74 - 64)));
        assert_eq!((r.latency_ns, r.jitter_ns), (100_000_000, 10_000_000));
        assert_eq!(r.threshold, DELAY_PROB_ONE / 2);
        assert_eq!((r.every_nth, r.max_hits, r.expires_ns, r.flags), (0, 3, 77, 0));
        let nth = SyscallDelay {
            every_nth: Some(4),
            percent: 100.0,
            distribution: Distribution::Normal,
            ..spec()
        };
        let r = rule(&nth, 1).unwrap();
        assert_eq!((r.threshold, r.every_nth, r.flags), (DELAY_PROB_ONE, 4, DELAY_F_NORMAL));
        let full = SyscallDelay { percent: 100.0, ..spec() };
        assert_eq!(rule(&full, 1).unwrap().threshold, DELAY_PROB_ONE);
    }

    #[test]
    fn refusals_name_the_process_and_its_tracer() {
        let e = refusal(TracerError::Refused("42: traced by 9 (strace)".into()), 5);
        match e {
            Error::FailedPrecondition(m) => {
                assert!(m.contains("process 42: traced by 9 (strace)"), "{m}")
            }
            other => panic!("{other:?}"),
        }
        lock(&TRACERS).insert(77_777_777);
        let e = refusal(TracerError::Refused("42: traced by 77777777 (faultline)".into()), 5);
        lock(&TRACERS).remove(&77_777_777);
        assert!(e.to_string().contains("another sys delay experiment"), "{e}");
        assert!(matches!(refusal(TracerError::Closed, 5), Error::Internal(_)));
        assert!(matches!(datapath_error(DelayError::Full), Error::ResourceExhausted(_)));
        assert!(matches!(datapath_error(DelayError::TooDeep(40)), Error::InvalidArgument { .. }));
    }
}
