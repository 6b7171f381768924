//! Signals to the target's processes: all of them or one at random, once or every interval.
//!
//! Each process is opened as a pidfd and its cgroup checked through that handle before the
//! signal goes out, so a pid reused by a process outside the target is never signalled.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use tracing::debug;

use crate::{
    engine::{
        driver::{FaultHandle, monotonic_ns},
        error::{Error, Result},
        model::{
            Counters, KillMode, Plan, PlanStep, ProcessKill, ResolvedCgroup, is_ancestor_path,
        },
    },
    faults::plan,
    targets::cgroup_v2_path,
};

const BACKEND: &str = "pidfd_send_signal";

pub struct KillHandle {
    signalled: Arc<AtomicU64>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultHandle for KillHandle {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn counters(&self) -> Counters {
        Counters {
            processes_signalled: self.signalled.load(Ordering::Relaxed),
            ..Default::default()
        }
    }
}

impl Drop for KillHandle {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once.
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends the first round now (so Inject returns after it), then repeats on a thread.
pub fn start(cg: &ResolvedCgroup, k: &ProcessKill, expires: u64) -> Result<Box<dyn FaultHandle>> {
    let signalled = Arc::new(AtomicU64::new(0));
    let sent = round(cg, k)?;
    signalled.fetch_add(sent, Ordering::Relaxed);
    let mut handle = KillHandle { signalled: signalled.clone(), stop: None, thread: None };
    if let Some(every) = k.interval {
        let (tx, rx) = mpsc::channel::<()>();
        let (cg, k) = (cg.clone(), k.clone());
        handle.stop = Some(tx);
        handle.thread = Some(
            std::thread::Builder::new()
                .name("process-kill".into())
                .spawn(move || {
                    loop {
                        let left = expires.saturating_sub(monotonic_ns());
                        let wait = every.min(Duration::from_nanos(left));
                        if wait.is_zero()
                            || rx.recv_timeout(wait) != Err(mpsc::RecvTimeoutError::Timeout)
                        {
                            return;
                        }
                        if monotonic_ns() >= expires {
                            return;
                        }
                        match round(&cg, &k) {
                            Ok(n) => {
                                signalled.fetch_add(n, Ordering::Relaxed);
                            }
                            Err(e) => debug!(error = %e, "kill round"),
                        }
                    }
                })
                .map_err(|e| Error::internal("starting the kill thread", e))?,
        );
    }
    Ok(Box::new(handle))
}

/// What a kill would do, sending nothing: the signal, to whom now, how often. pidfd_open is
/// checked on the agent's own pid (what `round` refuses where it is missing).
pub fn plan(cg: &ResolvedCgroup, k: &ProcessKill) -> Result<Plan> {
    // SAFETY: (nix has no pidfd_open) integer arguments only; a returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, std::process::id() as i32, 0) };
    if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
        return Err(Error::FailedPrecondition(
            "unsupported: pidfd_open (Linux 5.3) is missing".into(),
        ));
    }
    if fd >= 0 {
        // SAFETY: fd was just returned to us by pidfd_open and nothing else owns it.
        drop(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    }
    let pids = members_of(cg);
    let signal = crate::wire::validate_process::signal_name(k.signal);
    let mut action = match k.mode {
        KillMode::All => format!("send {signal} to each process through a pidfd"),
        KillMode::RandomOne => {
            format!("send {signal} through a pidfd to one process chosen at random among")
        }
    };
    match k.interval {
        Some(every) => {
            action += &format!(
                ", then again every {} until the end (to the processes there then)",
                crate::units::human_duration(every)
            )
        }
        None => action += ", once",
    }
    let on = format!("{} of {}", plan::on_pids(&pids), plan::on_cgroup(cg));
    Ok(Plan { resolved: None, backend: BACKEND.into(), steps: vec![PlanStep::new(action, on)] })
}

/// The processes a round signals (before a random pick): a pid target is that process, not
/// everything sharing its cgroup; never the agent.
fn members_of(cg: &ResolvedCgroup) -> Vec<i32> {
    let mut pids = match cg.pid {
        Some(pid) => vec![pid as i32],
        None => super::members(&cg.fs_path()),
    };
    let own = std::process::id() as i32;
    pids.retain(|&p| p != own);
    pids
}

/// One round: the signal to every member, or to one chosen at random. Returns how many
/// processes it reached.
fn round(cg: &ResolvedCgroup, k: &ProcessKill) -> Result<u64> {
    let mut pids = members_of(cg);
    if k.mode == KillMode::RandomOne && !pids.is_empty() {
        let i = random_index(pids.len());
        pids = vec![pids[i]];
    }
    let mut sent = 0;
    for pid in pids {
        if signal_member(pid, &cg.path, k.signal)? {
            sent += 1;
        }
    }
    Ok(sent)
}

/// Signals `pid` if, checked through a pidfd, it is still in `cgroup` or below. Ok(false)
/// when it has exited or moved.
fn signal_member(pid: i32, cgroup: &str, signal: i32) -> Result<bool> {
    // SAFETY: (nix has no pidfd_open) integer arguments only; a returned fd is owned below.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(false),
            Some(libc::ENOSYS) => Err(Error::FailedPrecondition(
                "unsupported: pidfd_open (Linux 5.3) is missing".into(),
            )),
            _ => Err(Error::internal(&format!("pidfd_open({pid})"), e)),
        };
    }
    // SAFETY: fd was just returned to us by pidfd_open and nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // With the pidfd open, the pid cannot be reused: /proc/PID is this process, or gone.
    let inside = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|t| cgroup_v2_path(&t))
        .is_some_and(|p| p == cgroup || is_ancestor_path(cgroup, &p));
    if !inside {
        return Ok(false);
    }
    // SAFETY: (nix has no pidfd_send_signal) a pidfd we hold open; a null siginfo is allowed
    // and means a plain kill().
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<u8>(),
            0,
        )
    };
    if rc < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ESRCH) => Ok(false),
            _ => Err(Error::internal(&format!("signalling {pid}"), e)),
        };
    }
    Ok(true)
}

fn random_index(n: usize) -> usize {
    let mut b = [0u8; 8];
    // SAFETY: (nix has no getrandom) writes at most b.len() bytes into b, a live local.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    (u64::from_le_bytes(b) % n as u64) as usize
}
