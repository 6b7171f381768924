//! Stress faults: CPU, memory and disk fill, done by worker processes (`worker.rs`) placed in
//! the target's cgroups (`placement.rs`) by a dedicated spawner thread (`spawn.rs`). A
//! supervisor thread per experiment runs the CPU control loop and notices a worker's death
//! (an OOM kill fails the experiment with reason "oom-killed") and the end of an IO stress
//! that moved all its bytes (the experiment ends then, as expired, with reason "done: ...").

mod placement;
pub mod shared;
pub mod worker;

use std::{
    os::unix::process::ExitStatusExt as _,
    path::PathBuf,
    process::Child,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use placement::Placement;
use shared::Shared;
use tracing::{debug, warn};

use crate::{
    engine::{
        driver::{FaultDriver, FaultHandle, monotonic_ns},
        error::{Error, Result},
        model::{
            Amount, Counters, CpuStress, DiskFill, FaultSpec, IoAmount, IoMode, IoStress,
            MemoryStress, Plan as DryPlan, PlanStep, Resolved,
        },
    },
    faults::spawn,
    store::{BoxFuture, Recover, Store},
    units::human_bytes,
    wire::validate_stress::host_memory,
};

/// How often the supervisor samples the cgroup and the workers.
const TICK: Duration = Duration::from_millis(50);
/// The CPU loop corrects the accumulated error over this long.
const HORIZON_S: f64 = 1.0;

/// Journals the v1 cgroups it creates alongside (state dir), so a crash leaves none behind.
pub struct StressDriver {
    journal: Store<placement::Created>,
    /// The policy's max_stress_memory: a percent size is only known in bytes here.
    max_memory: Option<u64>,
}

impl StressDriver {
    pub fn new(state_dir: &std::path::Path, max_memory: Option<u64>) -> StressDriver {
        StressDriver { journal: Store::new(state_dir), max_memory }
    }
}

impl Recover for StressDriver {
    type Record = placement::Created;

    /// Removes the v1 cgroups an earlier agent created and did not remove (it crashed).
    fn recover(&self, records: Vec<placement::Created>) -> BoxFuture<'_> {
        placement::recover(&self.journal, records);
        Box::pin(std::future::ready(()))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Cpu {
        target_cpus: f64,
    },
    Memory,
    Fill,
    /// With the bytes to move in all (`--bytes`), if bounded.
    Io {
        bytes: Option<u64>,
    },
}

struct Inner {
    kind: Kind,
    placement: Placement,
    shared: Shared,
    workers: Mutex<Vec<Child>>,
    stop: AtomicBool,
    failure: Mutex<Option<String>>,
    /// Set once every worker did all it was asked (an IO stress with `--bytes`).
    finished: Mutex<Option<String>>,
    cpu0: u64,
    oom0: u64,
    count: usize,
}

pub struct StressHandle {
    inner: Arc<Inner>,
    supervisor: Option<JoinHandle<()>>,
    backend: &'static str,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// One supervisor tick: CPU control, then worker liveness.
    fn tick(&self, t0: Instant) {
        if let Kind::Cpu { target_cpus } = self.kind
            && let Some(usage) = self.placement.cpu_usage_usec()
        {
            let used = usage.saturating_sub(self.cpu0) as f64 / 1e6;
            let err = (target_cpus * t0.elapsed().as_secs_f64() - used)
                .clamp(-target_cpus * HORIZON_S, target_cpus * HORIZON_S);
            self.shared.set_duty((target_cpus + err / HORIZON_S) / self.count as f64);
        }
        let mut workers = lock(&self.workers);
        for (i, w) in workers.iter_mut().enumerate() {
            let Ok(Some(status)) = w.try_wait() else { continue };
            if status.success() || self.stop.load(Ordering::Relaxed) {
                continue;
            }
            let why = if status.signal() == Some(libc::SIGKILL)
                && self.placement.oom_kills() > self.oom0
            {
                "oom-killed".to_string()
            } else if let Some(sig) = status.signal() {
                format!("stress worker {i} killed by signal {sig}")
            } else {
                let code = status.code().unwrap_or(0);
                format!("stress worker {i} failed: {}", std::io::Error::from_raw_os_error(code))
            };
            let mut f = lock(&self.failure);
            if f.is_none() {
                warn!(reason = %why, "stress worker ended early");
                *f = Some(why);
            }
        }
        if let Kind::Io { bytes: Some(goal) } = self.kind
            && workers.iter_mut().all(|w| matches!(w.try_wait(), Ok(Some(s)) if s.success()))
        {
            let t = self.shared.totals(self.count);
            // Workers also end cleanly at the deadline: only all bytes moved is "done".
            if t.written + t.read >= goal {
                let why = done_reason(t.written, t.read);
                debug!(reason = %why, "io stress finished");
                lock(&self.finished).get_or_insert(why);
            }
        }
    }
}

/// "done: 2GiB written", or with reads "done: 64MiB moved (16MiB written, 48MiB read)".
fn done_reason(written: u64, read: u64) -> String {
    use crate::units::human_bytes;
    if read == 0 {
        format!("done: {} written", human_bytes(written))
    } else {
        format!(
            "done: {} moved ({} written, {} read)",
            human_bytes(written + read),
            human_bytes(written),
            human_bytes(read)
        )
    }
}

impl FaultHandle for StressHandle {
    fn backend(&self) -> &'static str {
        self.backend
    }

    fn counters(&self) -> Counters {
        let i = &self.inner;
        let t = i.shared.totals(i.count);
        let cpu = match i.kind {
            Kind::Cpu { .. } => {
                i.placement.cpu_usage_usec().map_or(0, |u| u.saturating_sub(i.cpu0))
            }
            _ => 0,
        };
        Counters {
            cpu_usage_usec: cpu,
            bytes_resident: t.resident,
            bytes_filled: t.filled,
            bytes_written: t.written,
            bytes_read: t.read,
            ..Default::default()
        }
    }

    fn failure(&self) -> Option<String> {
        lock(&self.inner.failure).clone()
    }

    fn finished(&self) -> Option<String> {
        lock(&self.inner.finished).clone()
    }
}

impl Drop for StressHandle {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.supervisor.take() {
            let _ = t.join();
        }
        for w in lock(&self.inner.workers).iter_mut() {
            let _ = w.kill();
            let _ = w.wait();
        }
        debug!("stress workers stopped");
    }
}

/// The workers' arguments after KIND INDEX DEADLINE.
struct Plan {
    kind: Kind,
    name: &'static str,
    workers: usize,
    extra: Vec<Vec<String>>,
    oom_score_adj: Option<i32>,
}

fn cpu_plan(c: &CpuStress, p: &Placement) -> Plan {
    let allowed = p.allowed_cpus();
    let workers = c.workers.map_or(allowed.ceil().max(1.0) as usize, |w| w as usize);
    let target_cpus = c.load_percent as f64 / 100.0 * (workers as f64).min(allowed);
    Plan {
        kind: Kind::Cpu { target_cpus },
        name: "cpu",
        workers,
        extra: vec![Vec::new(); workers],
        oom_score_adj: None,
    }
}

fn memory_plan(m: &MemoryStress, p: &Placement, max: Option<u64>) -> Result<Plan> {
    let total = match m.size {
        Amount::Bytes(b) => b,
        Amount::Percent(pct) => {
            (p.memory_limit().unwrap_or_else(host_memory) as f64 * pct / 100.0) as u64
        }
    };
    crate::policy::Policy::check_stress_memory(max, total)?;
    let workers = m.workers.max(1) as usize;
    let each = total / workers as u64;
    if each == 0 {
        return Err(Error::invalid("fault.memory_stress.workers", "more workers than bytes"));
    }
    let ramp = m.ramp.as_nanos() as u64;
    Ok(Plan {
        kind: Kind::Memory,
        name: "mem",
        workers,
        extra: vec![vec![each.to_string(), ramp.to_string()]; workers],
        oom_score_adj: m.oom_score_adj,
    })
}

fn io_plan(s: &IoStress, p: &Placement) -> Plan {
    // By default the target's own /tmp, as its processes see it.
    let dir = s.directory.clone().unwrap_or_else(|| match p.member {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/root/tmp")),
        None => PathBuf::from("/tmp"),
    });
    let workers = s.workers.max(1) as usize;
    let mode = match s.mode {
        IoMode::Write => "write",
        IoMode::Read => "read",
        IoMode::Mixed => "mixed",
    };
    let amount = |i: usize| match s.amount {
        IoAmount::Unlimited => "u:0".to_string(),
        // The first workers take the remainder.
        IoAmount::Bytes(b) => {
            let each = b / workers as u64 + u64::from((i as u64) < b % workers as u64);
            format!("b:{each}")
        }
        IoAmount::RatePerSecond(r) => format!("r:{}", (r / workers as u64).max(1)),
    };
    let extra = (0..workers)
        .map(|i| {
            vec![
                dir.display().to_string(),
                mode.to_string(),
                s.block_size.to_string(),
                u8::from(s.direct).to_string(),
                amount(i),
            ]
        })
        .collect();
    let bytes = match s.amount {
        IoAmount::Bytes(b) => Some(b),
        _ => None,
    };
    Plan { kind: Kind::Io { bytes }, name: "io", workers, extra, oom_score_adj: None }
}

fn fill_plan(d: &DiskFill) -> Plan {
    let amount = match d.amount {
        Amount::Bytes(b) => b.to_string(),
        Amount::Percent(p) => format!("pct:{p}"),
    };
    Plan {
        kind: Kind::Fill,
        name: "fill",
        workers: 1,
        extra: vec![vec![d.path.display().to_string(), amount]],
        oom_score_adj: None,
    }
}

impl StressDriver {
    /// The workers of `fault` in `placement`.
    fn workers(&self, fault: &FaultSpec, placement: &Placement) -> Result<Plan> {
        Ok(match fault {
            FaultSpec::CpuStress(c) => cpu_plan(c, placement),
            FaultSpec::MemoryStress(m) => memory_plan(m, placement, self.max_memory)?,
            FaultSpec::DiskFill(d) => fill_plan(d),
            FaultSpec::IoStress(s) => io_plan(s, placement),
            other => {
                return Err(Error::Internal(format!("{} is not a stress fault", other.kind())));
            }
        })
    }
}

fn backend(placement: &Placement) -> &'static str {
    if placement.v1.is_empty() { "workers:cgroup2" } else { "workers:cgroup2+v1" }
}

/// What a fill's filesystem holds now, and what a percent asks (the worker's own arithmetic);
/// a path that cannot be read fails the worker, not the inject.
fn fill_now(d: &DiskFill) -> String {
    let dir = d.path.display().to_string();
    let st = match nix::sys::statvfs::statvfs(d.path.as_path()) {
        Ok(st) => st,
        Err(e) => return format!("{dir} cannot be read now: {e}; the worker would fail"),
    };
    let frsize = st.fragment_size() as u64;
    let used = (st.blocks() as u64 - st.blocks_free() as u64) * frsize;
    let avail = st.blocks_available() as u64 * frsize;
    let mut now = format!("now {} used, {} available", human_bytes(used), human_bytes(avail));
    match d.amount {
        Amount::Percent(p) => {
            if let Ok(b) = worker::fill_target(&dir, p) {
                now += &format!(": {} to take", human_bytes(b));
            }
        }
        Amount::Bytes(b) if b > avail => {
            now += &format!(": only {} fits", human_bytes(avail));
        }
        Amount::Bytes(_) => {}
    }
    now
}

impl FaultDriver for StressDriver {
    fn apply(
        &self,
        target: &Resolved,
        fault: &FaultSpec,
        expires: u64,
    ) -> Result<Box<dyn FaultHandle>> {
        let cg = target.cgroup("stress needs a cgroup or pid target")?;
        let placement = Placement::new(cg, &self.journal)?;
        let plan = self.workers(fault, &placement)?;
        let shared = Shared::create().map_err(|e| Error::internal("shared page", e))?;
        if let Kind::Cpu { target_cpus } = plan.kind {
            shared.set_duty(target_cpus / plan.workers as f64);
        }
        let backend = backend(&placement);
        let inner = Arc::new(Inner {
            kind: plan.kind,
            cpu0: placement.cpu_usage_usec().unwrap_or(0),
            oom0: placement.oom_kills(),
            placement,
            shared,
            workers: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            finished: Mutex::new(None),
            count: plan.workers,
        });
        // From here on, the handle's drop stops whatever was started.
        let mut handle = StressHandle { inner: inner.clone(), supervisor: None, backend };
        for (i, extra) in plan.extra.into_iter().enumerate() {
            let mut args = vec![
                "__stress-worker".to_string(),
                plan.name.to_string(),
                i.to_string(),
                expires.to_string(),
            ];
            args.extend(extra);
            let child = spawn::spawn(spawn::Spec {
                args,
                procs: inner.placement.procs_files(),
                shm_fd: Some(inner.shared.raw_fd()),
                oom_score_adj: plan.oom_score_adj,
                death_signal: libc::SIGKILL,
                stdin: None,
                keep_fds: Vec::new(),
            })
            .map_err(|e| {
                Error::FailedPrecondition(format!(
                    "starting a stress worker in {}: {e}",
                    inner.placement.v2.display()
                ))
            })?;
            lock(&inner.workers).push(child);
        }
        let sup = inner.clone();
        handle.supervisor = Some(
            std::thread::Builder::new()
                .name("stress-supervisor".into())
                .spawn(move || {
                    let t0 = Instant::now();
                    while !sup.stop.load(Ordering::Relaxed)
                        && monotonic_ns() < expires
                        && lock(&sup.finished).is_none()
                    {
                        sup.tick(t0);
                        std::thread::sleep(TICK);
                    }
                })
                .map_err(|e| Error::internal("starting the stress supervisor", e))?,
        );
        Ok(Box::new(handle))
    }

    /// The workers `apply` would start and where, checked as `apply` checks them (the
    /// memory size against the limit and the policy), starting none and making no cgroup.
    fn plan(&self, target: &Resolved, fault: &FaultSpec) -> Result<DryPlan> {
        let cg = target.cgroup("stress needs a cgroup or pid target")?;
        let placement = Placement::dry(cg, &self.journal)?;
        let plan = self.workers(fault, &placement)?;
        let mut on = crate::faults::plan::on_cgroup(cg);
        for v1 in &placement.v1 {
            on += &format!(", v1 {} {}", v1.controllers.join(","), v1.dir.display());
        }
        let mut steps = Vec::new();
        if !placement.would_make().is_empty() {
            let dirs: Vec<String> =
                placement.would_make().iter().map(|d| d.display().to_string()).collect();
            steps.push(PlanStep::new(
                "make the target's v1 cgroups (journaled; removed at the end)",
                dirs.join(", "),
            ));
        }
        let what = match fault {
            FaultSpec::CpuStress(c) => {
                let allowed = placement.allowed_cpus();
                let target_cpus = match plan.kind {
                    Kind::Cpu { target_cpus } => target_cpus,
                    _ => 0.0,
                };
                format!(
                    "start {} cpu worker(s) holding {target_cpus:.2} CPUs busy in all ({}% of \
                     {:.2} the target may use)",
                    plan.workers,
                    c.load_percent,
                    (plan.workers as f64).min(allowed)
                )
            }
            FaultSpec::MemoryStress(m) => {
                let each: u64 =
                    plan.extra.first().and_then(|e| e.first()?.parse().ok()).unwrap_or(0);
                let of = match placement.memory_limit() {
                    Some(l) => format!("the cgroup's limit is {}", human_bytes(l)),
                    None => format!("no limit; host memory {}", human_bytes(host_memory())),
                };
                format!(
                    "start {} memory worker(s) holding {} each, {} in all, over {} ({of})",
                    plan.workers,
                    human_bytes(each),
                    human_bytes(each * plan.workers as u64),
                    crate::units::human_duration(m.ramp)
                )
            }
            FaultSpec::DiskFill(d) => format!(
                "start 1 fill worker allocating {} in an unnamed file in {} ({})",
                match d.amount {
                    Amount::Bytes(b) => human_bytes(b),
                    Amount::Percent(p) => format!("the filesystem up to {p}% used"),
                },
                d.path.display(),
                fill_now(d)
            ),
            FaultSpec::IoStress(s) => format!(
                "start {} io worker(s): {} {} blocks{} in {}, {}",
                plan.workers,
                plan.extra.first().and_then(|e| e.get(1)).map_or("", String::as_str),
                human_bytes(s.block_size),
                if s.direct { " (O_DIRECT)" } else { "" },
                plan.extra.first().and_then(|e| e.first()).map_or("", String::as_str),
                match s.amount {
                    IoAmount::Unlimited => "as fast as they go".to_string(),
                    IoAmount::Bytes(b) => format!("{} in all", human_bytes(b)),
                    IoAmount::RatePerSecond(r) => format!("{}/s in all", human_bytes(r)),
                }
            ),
            other => {
                return Err(Error::Internal(format!("{} is not a stress fault", other.kind())));
            }
        };
        steps.push(PlanStep::new(
            format!("{what}; each joins through cgroup.procs (faultline __stress-worker)"),
            on,
        ));
        Ok(DryPlan { resolved: None, backend: backend(&placement).into(), steps })
    }
}

#[cfg(test)]
mod tests {
    use super::done_reason;

    #[test]
    fn the_done_reason_says_what_moved() {
        assert_eq!(done_reason(2 << 30, 0), "done: 2GiB written");
        assert_eq!(
            done_reason(16 << 20, 48 << 20),
            "done: 64MiB moved (16MiB written, 48MiB read)"
        );
    }
}
