//! The process that keeps one time-skew experiment's processes shifted,
//! `faultline __time-skew` (the agent's handle and the protocol: client.rs). It patches each
//! process it is given (inject.rs), stays their tracer without tracing system calls (so a
//! call costs nothing more) to patch a program exec'd in them before it runs and to follow
//! threads and forks, renews the lease of every mapping it made, and at the end (`stop`, its
//! deadline, its agent's death) ends the lease, writes the vDSO entries back and detaches.
//! If it is killed, the lease runs out: every process reads true time within `stub::LEASE`.

use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{self, BufRead as _, BufReader, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

use nix::sys::{
    signal::{SigSet, SigmaskHow, Signal, sigprocmask},
    signalfd::{SfdFlags, SignalFd},
};

use super::{
    client::SUBCOMMAND,
    datapath::PidsWriter,
    inject::{self, InjectError, Patched},
    stub,
};
use crate::kernel::ptrace::{comm, ptrace, status_field, tasks, wait_within};

/// How long a seized thread may take to report its stop (a task of a frozen cgroup reports
/// none until it is thawed).
const STOP_WAIT: Duration = Duration::from_secs(1);

const OPTIONS: usize = (libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACEEXEC) as usize;

/// `faultline __time-skew AGENT_PID DEADLINE_NS OFFSET_NS MASK FOLLOW`; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let n = |i: usize| args.get(i).and_then(|a| a.parse::<i64>().ok());
    let (Some(agent), Some(deadline), Some(offset), Some(mask), Some(follow)) =
        (n(0), n(1), n(2), n(3), n(4))
    else {
        eprintln!("usage: faultline {SUBCOMMAND} AGENT_PID DEADLINE_NS OFFSET_NS MASK FOLLOW");
        return libc::EINVAL;
    };
    match Skewer::new(agent as i32, deadline as u64, offset, mask as u64, follow != 0) {
        Ok(mut s) => {
            s.run();
            0
        }
        Err(e) => {
            eprintln!("faultline {SUBCOMMAND}: {e}");
            1
        }
    }
}

fn monotonic_ns() -> u64 {
    crate::engine::driver::monotonic_ns()
}

fn realtime_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// One patched process (a fork shares its parent's mapping: `shared` is a second handle on
/// the same memory, `originals` the same addresses).
struct Process {
    patched: Patched,
    tids: Vec<i32>,
}

struct Skewer {
    agent: i32,
    deadline: u64,
    offset: i64,
    mask: u64,
    /// A forked child stays shifted (it inherits the patch) only when asked.
    follow: bool,
    sigfd: SignalFd,
    pidfd: OwnedFd,
    ctl: BufReader<File>,
    out: File,
    procs: HashMap<i32, Process>,
    /// Thread -> its process.
    owner: HashMap<i32, i32>,
    /// Forked children whose patch is to be undone at their first stop (`follow` off).
    unpatch: HashMap<i32, Patched>,
    /// vfork children (the parent's memory) let go when they exec (`follow` off).
    spawned: HashSet<i32>,
    /// New tracees that stopped before their parent's clone or fork event was read.
    early: HashSet<i32>,
    /// Threads seized but let go before they reported a stop: detached when they do.
    abandoned: HashSet<i32>,
    /// Processes seized while stopped by SIGSTOP, patched once continued: their threads.
    pending: HashMap<i32, Vec<i32>>,
    /// Threads frozen in the middle of an injected call: their registers, put back (and the
    /// thread detached) when they stop after the thaw.
    restore: HashMap<i32, inject::SavedRegs>,
    patched_total: u64,
    /// A shifted read was seen (kept once the process that made it is gone).
    hit: bool,
    stopping: bool,
    /// FL_TIME_PIDS: the processes whose raw clock calls the kernel programs shift.
    pids: Option<PidsWriter>,
}

impl Skewer {
    fn new(agent: i32, deadline: u64, offset: i64, mask: u64, follow: bool) -> io::Result<Self> {
        // SAFETY: prctl with integer arguments; the parent check closes the race with its
        // death before the call.
        unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
        if std::os::unix::process::parent_id() as i32 != agent {
            return Err(io::Error::other(format!("the agent ({agent}) is gone")));
        }
        let mut mask_set = SigSet::empty();
        for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
            mask_set.add(s);
        }
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask_set), None).map_err(io::Error::from)?;
        let sigfd = SignalFd::with_flags(&mask_set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(io::Error::from)?;
        // SAFETY: pidfd_open with integer arguments; the result is a new descriptor we own.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, agent, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a descriptor just returned by the kernel, owned by nothing else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: fd 0 is the control socket the agent gave us; we own it from here on.
        let ctl = unsafe { File::from_raw_fd(0) };
        let out = ctl.try_clone()?;
        Ok(Skewer {
            agent,
            deadline,
            offset,
            mask,
            follow,
            sigfd,
            pidfd,
            ctl: BufReader::new(ctl),
            out,
            procs: HashMap::new(),
            owner: HashMap::new(),
            unpatch: HashMap::new(),
            spawned: HashSet::new(),
            early: HashSet::new(),
            abandoned: HashSet::new(),
            pending: HashMap::new(),
            restore: HashMap::new(),
            patched_total: 0,
            hit: false,
            stopping: false,
            pids: None,
        })
    }

    /// A patched process joins the experiment (its raw clock calls listed too).
    fn add(&mut self, pid: i32, p: Process) {
        if let Some(w) = &mut self.pids {
            // The kernel programs read the data page without faulting where they cannot
            // sleep: fault it in for them (through this process's own page tables).
            inject::fault_in(pid, p.patched.base);
            w.insert(pid, p.patched.base);
        }
        self.procs.insert(pid, p);
    }

    /// A process leaves it (exited, exec'd into a new image, or let go at the end).
    fn drop_proc(&mut self, pid: i32) -> Option<Process> {
        if let Some(w) = &mut self.pids {
            w.remove(pid);
        }
        self.procs.remove(&pid)
    }

    fn say(&mut self, line: &str) {
        let _ = writeln!(self.out, "{line}");
    }

    fn expiry(&self) -> i64 {
        let left = self.deadline.saturating_sub(monotonic_ns()) as i64;
        realtime_ns() + left.min(stub::LEASE.as_nanos() as i64)
    }

    fn run(&mut self) {
        self.say("ready");
        let mut line = String::new();
        while !self.stopping {
            if monotonic_ns() >= self.deadline {
                break;
            }
            self.renew();
            let mut fds = [
                libc::pollfd {
                    fd: self.ctl.get_ref().as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd { fd: self.sigfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            ];
            // Awake at the deadline itself: the processes are let go then, not a renewal later.
            let left_ms = self.deadline.saturating_sub(monotonic_ns()).div_ceil(1_000_000);
            let wait_ms = left_ms.min(stub::RENEW.as_millis() as u64) as i32;
            // SAFETY: poll on three live descriptors in a local array of its stated length.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
            if fds[2].revents != 0 || std::os::unix::process::parent_id() as i32 != self.agent {
                break;
            }
            if fds[1].revents != 0 {
                let mut term = false;
                while let Ok(Some(s)) = self.sigfd.read_signal() {
                    term |= s.ssi_signo != libc::SIGCHLD as u32;
                }
                self.events();
                if term {
                    break;
                }
            }
            if fds[0].revents != 0 {
                line.clear();
                match self.ctl.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let reply = self.request(line.trim());
                        self.say(&reply);
                    }
                }
            }
        }
        self.finish();
    }

    fn request(&mut self, req: &str) -> String {
        match req.split_once(' ') {
            Some(("seize", pid)) => match pid.parse::<i32>() {
                Ok(pid) => self.seize(pid),
                Err(_) => format!("error {pid}: not a pid"),
            },
            Some(("raw", fd)) => match fd.parse::<RawFd>() {
                Ok(fd) => self.take_raw(fd),
                Err(_) => format!("error {fd}: not a descriptor"),
            },
            None if req == "stats" => {
                self.hit |= self.procs.values().any(|p| p.patched.hit());
                format!("ok {} {}", self.patched_total, u8::from(self.hit))
            }
            None if req == "stop" => {
                self.stopping = true;
                "ok".to_string()
            }
            _ => format!("error: unknown request {req:?}"),
        }
    }

    /// Takes the agent's descriptor `fd` of FL_TIME_PIDS and lists every patched process.
    fn take_raw(&mut self, fd: RawFd) -> String {
        // SAFETY: pidfd_getfd with integer arguments; the result is a new descriptor we own.
        let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, self.pidfd.as_raw_fd(), fd, 0) };
        if got < 0 {
            return format!("error pidfd_getfd: {}", io::Error::last_os_error());
        }
        // SAFETY: a descriptor just returned by the kernel, owned by nothing else.
        let owned = unsafe { OwnedFd::from_raw_fd(got as RawFd) };
        match PidsWriter::from_fd(owned) {
            Ok(mut w) => {
                for (&pid, p) in &self.procs {
                    inject::fault_in(pid, p.patched.base);
                    w.insert(pid, p.patched.base);
                }
                self.pids = Some(w);
                "ok".into()
            }
            Err(e) => format!("error FL_TIME_PIDS: {}", chain(&e)),
        }
    }

    /// Seizes and patches every thread of `pid`: `ok N` (threads), `refused PID: WHY`.
    fn seize(&mut self, pid: i32) -> String {
        if self.procs.contains_key(&pid) {
            return "ok 0".into();
        }
        if let Some(t) = status_field(pid, "TracerPid").filter(|&t| t != 0) {
            return format!("refused {pid}: traced by {t} ({})", comm(t));
        }
        // A process that exited meanwhile is an error (a cgroup target goes on without it),
        // not a refusal (which refuses the whole experiment).
        if let Some(why) = faultline_host::cgroup::frozen(pid) {
            return format!("refused {pid}: frozen ({why}): its threads take no ptrace stop");
        }
        let Some(tids) = tasks(pid) else { return format!("error {pid}: gone") };
        // Threads that were running first: one of them makes the injected calls. A process
        // stopped by SIGSTOP (every thread in group-stop) stays stopped (`resume`).
        let mut held: Vec<(i32, Stop)> = Vec::new();
        let mut late = Vec::new();
        for &t in &tids {
            if ptrace(libc::PTRACE_SEIZE, t, 0, OPTIONS).is_err() {
                continue;
            }
            if ptrace(libc::PTRACE_INTERRUPT, t, 0, 0).is_err() {
                continue;
            }
            match stopped(t) {
                Ok(s) => held.push((t, s)),
                Err(Unstopped::Late) => late.push(t),
                Err(Unstopped::Gone) => {}
            }
        }
        held.sort_by_key(|&(_, s)| s == Stop::Group);
        if !late.is_empty() {
            // Patching bytes a thread may be running is not safe: let everything go.
            for &(t, s) in &held {
                resume(t, s, false, true);
            }
            self.abandoned.extend(late.iter().copied());
            return format!(
                "refused {pid}: threads {late:?} did not stop within {STOP_WAIT:?} (a frozen \
                 cgroup?)"
            );
        }
        if held.is_empty() {
            if tasks(pid).is_none() {
                return format!("error {pid}: gone");
            }
            return format!("refused {pid}: cannot be traced (kernel.yama.ptrace_scope?)");
        }
        let n = held.len();
        if held.iter().all(|&(_, s)| s == Stop::Group) {
            // Stopped by SIGSTOP: a single step would not run (the thread re-enters the
            // group-stop), nor may it. Patched when the process is continued (`event`).
            for &(t, _) in &held {
                self.owner.insert(t, pid);
                let _ = ptrace(libc::PTRACE_LISTEN, t, 0, 0);
            }
            self.pending.insert(pid, held.iter().map(|&(t, _)| t).collect());
            return format!("ok {n}");
        }
        match self.patch(pid, &held) {
            Ok(()) => format!("ok {n}"),
            Err(e) => {
                let why = chain(&e);
                match e {
                    InjectError::Busy(_) => format!("error {pid}: {why}"),
                    _ => format!("refused {pid}: {why}"),
                }
            }
        }
    }

    /// Patches `pid`, whose threads `held` are stopped (the first one running before, the
    /// one that makes the injected calls), and lets them go on as they were; on failure
    /// lets them go untraced.
    fn patch(&mut self, pid: i32, held: &[(i32, Stop)]) -> Result<(), InjectError> {
        let tids: Vec<i32> = held.iter().map(|&(t, _)| t).collect();
        match inject::install(pid, &tids, self.offset, self.expiry(), self.mask) {
            Ok(patched) => {
                for (i, &(t, s)) in held.iter().enumerate() {
                    self.owner.insert(t, pid);
                    resume(t, s, i == 0, false);
                }
                self.patched_total += 1;
                self.add(pid, Process { patched, tids });
                Ok(())
            }
            Err(e) => {
                for (i, &(t, s)) in held.iter().enumerate() {
                    self.owner.remove(&t);
                    match &e {
                        // Not stopped: its registers are put back at its next stop.
                        InjectError::Stuck { tid, saved, .. } if *tid == t => {
                            self.restore.insert(t, **saved);
                        }
                        _ => resume(t, s, i == 0, true),
                    }
                }
                Err(e)
            }
        }
    }

    /// A process seized while stopped by SIGSTOP was continued: thread `tid` reported the
    /// end of its group-stop. Its other threads are stopped too, then it is patched.
    fn patch_continued(&mut self, pid: i32, tid: i32) {
        let Some(tids) = self.pending.remove(&pid) else { return };
        let mut held = vec![(tid, Stop::Running)];
        let mut late = false;
        for &t in tids.iter().filter(|&&t| t != tid) {
            if ptrace(libc::PTRACE_INTERRUPT, t, 0, 0).is_err() {
                continue;
            }
            match stopped(t) {
                Ok(s) => held.push((t, s)),
                Err(Unstopped::Late) => late = true,
                Err(Unstopped::Gone) => {}
            }
        }
        if late {
            eprintln!(
                "faultline {SUBCOMMAND}: process {pid}: a thread did not stop; left unpatched"
            );
            for &(t, s) in &held {
                self.owner.remove(&t);
                resume(t, s, false, true);
            }
            return;
        }
        if let Err(e) = self.patch(pid, &held) {
            eprintln!("faultline {SUBCOMMAND}: process {pid} after SIGCONT: {}", chain(&e));
        }
    }

    fn renew(&mut self) {
        let expiry = self.expiry();
        for p in self.procs.values() {
            let _ = p.patched.set(stub::DATA_EXPIRY, expiry as u64);
        }
    }

    /// Every pending ptrace event.
    fn events(&mut self) {
        loop {
            let mut status = 0;
            // SAFETY: waitpid on any tracee, non-blocking, status into a live local.
            let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::WNOHANG) };
            if tid <= 0 {
                return;
            }
            self.event(tid, status);
        }
    }

    fn event(&mut self, tid: i32, status: i32) {
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            self.abandoned.remove(&tid);
            self.forget(tid);
            return;
        }
        if !libc::WIFSTOPPED(status) {
            return;
        }
        if let Some(saved) = self.restore.remove(&tid) {
            let _ = crate::kernel::ptrace::set_regs(tid, &saved.0);
            let _ = ptrace(libc::PTRACE_DETACH, tid, 0, 0);
            return;
        }
        if self.abandoned.remove(&tid) {
            // Its stop came after its process was refused: let it go as it was.
            let group =
                status >> 16 == libc::PTRACE_EVENT_STOP && is_stop_signal(libc::WSTOPSIG(status));
            let stop = if group { Stop::Group } else { Stop::Running };
            resume(tid, stop, false, true);
            return;
        }
        let sig = libc::WSTOPSIG(status);
        let event = status >> 16;
        let msg = || {
            let mut m: libc::c_ulong = 0;
            ptrace(libc::PTRACE_GETEVENTMSG, tid, 0, &raw mut m as usize).map(|_| m as i32)
        };
        match event {
            libc::PTRACE_EVENT_CLONE => {
                if let (Ok(new), Some(&pid)) = (msg(), self.owner.get(&tid)) {
                    self.owner.insert(new, pid);
                    if let Some(p) = self.procs.get_mut(&pid) {
                        p.tids.push(new);
                    }
                    self.release_early(new);
                }
                let _ = ptrace(libc::PTRACE_CONT, tid, 0, 0);
            }
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                let shares_memory = event == libc::PTRACE_EVENT_VFORK;
                if let Ok(child) = msg() {
                    self.new_child(tid, child, shares_memory);
                }
                let _ = ptrace(libc::PTRACE_CONT, tid, 0, 0);
            }
            libc::PTRACE_EVENT_EXEC => {
                // The thread now has the process's id; the other threads are gone.
                let pid = tid;
                if let Some(old) = self.drop_proc(pid) {
                    for t in old.tids {
                        self.owner.remove(&t);
                    }
                }
                if self.spawned.remove(&pid) {
                    // A vfork child not to be followed: its own program keeps true time.
                    self.owner.remove(&pid);
                    let _ = ptrace(libc::PTRACE_DETACH, pid, 0, 0);
                    return;
                }
                self.owner.insert(pid, pid);
                let installed = inject::leave_syscall(pid, pid).and_then(|()| {
                    inject::install(pid, &[pid], self.offset, self.expiry(), self.mask)
                });
                match installed {
                    Ok(patched) => {
                        self.patched_total += 1;
                        self.add(pid, Process { patched, tids: vec![pid] });
                    }
                    Err(e) => eprintln!("faultline {SUBCOMMAND}: after exec: {}", chain(&e)),
                }
                let _ = ptrace(libc::PTRACE_CONT, pid, 0, 0);
            }
            libc::PTRACE_EVENT_STOP => {
                if is_stop_signal(sig) {
                    // A group-stop (someone stopped the process): it stays stopped.
                    let _ = ptrace(libc::PTRACE_LISTEN, tid, 0, 0);
                } else if let Some(&pid) = self.owner.get(&tid)
                    && self.pending.contains_key(&pid)
                {
                    self.patch_continued(pid, tid);
                } else if !self.owner.contains_key(&tid) && !self.unpatch.contains_key(&tid) {
                    // A new thread or child whose parent's event has not been read yet: it
                    // waits for it (`release_early`).
                    self.early.insert(tid);
                } else {
                    self.first_stop(tid);
                }
            }
            _ => {
                // A signal on its way to the thread: delivered as it would have been.
                let _ = ptrace(libc::PTRACE_CONT, tid, 0, sig as usize);
            }
        }
    }

    /// A process forked (`shares_memory`: vfork or posix_spawn, the parent's memory until it
    /// execs) by a followed thread.
    fn new_child(&mut self, parent_tid: i32, child: i32, shares_memory: bool) {
        let Some(&pid) = self.owner.get(&parent_tid) else { return };
        let Some(parent) = self.procs.get(&pid) else { return };
        let Ok(shared) = parent.patched.shared.try_clone() else { return };
        let patched = Patched {
            pid: child,
            base: parent.patched.base,
            originals: parent.patched.originals.clone(),
            shared,
        };
        if self.follow {
            self.owner.insert(child, child);
            self.add(child, Process { patched, tids: vec![child] });
        } else if shares_memory {
            // Its memory is the parent's: nothing to undo; let go when it execs.
            self.owner.insert(child, child);
            self.spawned.insert(child);
        } else {
            // Its copy of the patch is undone at its first stop.
            self.unpatch.insert(child, patched);
        }
        self.release_early(child);
    }

    /// A new tracee that stopped before its parent's event was read, now that it was.
    fn release_early(&mut self, tid: i32) {
        if self.early.remove(&tid) {
            self.first_stop(tid);
        }
    }

    /// A new tracee's first stop: a forked child not to be followed has its copy of the
    /// patch undone and is let go; any other runs on.
    fn first_stop(&mut self, tid: i32) {
        if let Some(p) = self.unpatch.remove(&tid) {
            let _ = inject::remove(&p, &[tid]);
            let _ = ptrace(libc::PTRACE_DETACH, tid, 0, 0);
        } else {
            let _ = ptrace(libc::PTRACE_CONT, tid, 0, 0);
        }
    }

    fn forget(&mut self, tid: i32) {
        self.early.remove(&tid);
        self.spawned.remove(&tid);
        if let Some(pid) = self.owner.remove(&tid)
            && let Some(p) = self.procs.get_mut(&pid)
        {
            p.tids.retain(|&t| t != tid);
            if p.tids.is_empty() {
                self.drop_proc(pid);
            }
        }
    }

    /// Ends every lease at once, then writes each process's vDSO back and detaches.
    fn finish(&mut self) {
        for p in self.procs.values() {
            let _ = p.patched.set(stub::DATA_EXPIRY, 0);
        }
        let pids: Vec<i32> = self.procs.keys().copied().collect();
        for pid in pids {
            let Some(p) = self.drop_proc(pid) else { continue };
            let mut held = Vec::new();
            for &t in &p.tids {
                if ptrace(libc::PTRACE_INTERRUPT, t, 0, 0).is_ok() && stopped(t).is_ok() {
                    held.push(t);
                }
            }
            for _ in 0..20 {
                match inject::remove(&p.patched, &held) {
                    Err(InjectError::Busy(_)) => {
                        // A thread stands in a patched entry: let it run a moment.
                        for &t in &held {
                            let _ = ptrace(libc::PTRACE_CONT, t, 0, 0);
                        }
                        std::thread::sleep(Duration::from_millis(1));
                        held.retain(|&t| {
                            ptrace(libc::PTRACE_INTERRUPT, t, 0, 0).is_ok() && stopped(t).is_ok()
                        });
                    }
                    _ => break,
                }
            }
            for &t in &p.tids {
                let _ = ptrace(libc::PTRACE_DETACH, t, 0, 0);
            }
        }
        // Seized while stopped and never continued: nothing to undo; they stay stopped.
        for (_, tids) in std::mem::take(&mut self.pending) {
            for t in tids {
                if ptrace(libc::PTRACE_INTERRUPT, t, 0, 0).is_ok() && stopped(t).is_ok() {
                    let _ = ptrace(libc::PTRACE_DETACH, t, 0, 0);
                }
            }
        }
        for (tid, p) in std::mem::take(&mut self.unpatch) {
            let _ = inject::remove(&p, &[tid]);
            let _ = ptrace(libc::PTRACE_DETACH, tid, 0, 0);
        }
    }
}

/// How a seized thread reported its stop after PTRACE_INTERRUPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// It was running (or in a system call).
    Running,
    /// It was stopped by a stop signal (SIGSTOP, SIGTSTP..): group-stop.
    Group,
}

#[derive(Debug)]
enum Unstopped {
    /// No stop within STOP_WAIT (a frozen cgroup's task reports it only when thawed).
    Late,
    /// It exited, or is no longer ours.
    Gone,
}

/// Waits for `tid`'s stop after PTRACE_INTERRUPT, passing on signals that come first.
fn stopped(tid: i32) -> Result<Stop, Unstopped> {
    let t0 = std::time::Instant::now();
    for _ in 0..16 {
        let left = STOP_WAIT.saturating_sub(t0.elapsed());
        let status = match wait_within(tid, left) {
            Ok(Some(s)) => s,
            Ok(None) => return Err(Unstopped::Late),
            Err(_) => return Err(Unstopped::Gone),
        };
        if !libc::WIFSTOPPED(status) {
            return Err(Unstopped::Gone);
        }
        if status >> 16 == libc::PTRACE_EVENT_STOP {
            let group = is_stop_signal(libc::WSTOPSIG(status));
            return Ok(if group { Stop::Group } else { Stop::Running });
        }
        // A signal-delivery-stop before ours: let the signal through and wait again.
        let _ = ptrace(libc::PTRACE_CONT, tid, 0, libc::WSTOPSIG(status) as usize);
    }
    Err(Unstopped::Gone)
}

/// Lets a held thread go on as it was: continued, or detached (`detach`). A running thread
/// runs; one in group-stop stays stopped: PTRACE_LISTEN (still traced) or a plain detach (the
/// kernel keeps it in the group-stop), except the thread that ran the injected calls
/// (`stepped`): the single step took it out of the group-stop, so it is sent back with
/// SIGSTOP.
fn resume(tid: i32, stop: Stop, stepped: bool, detach: bool) {
    let how = if detach { libc::PTRACE_DETACH } else { libc::PTRACE_CONT };
    let _ = match (stop, stepped, detach) {
        (Stop::Running, ..) => ptrace(how, tid, 0, 0),
        (Stop::Group, true, _) => ptrace(how, tid, 0, libc::SIGSTOP as usize),
        (Stop::Group, false, false) => ptrace(libc::PTRACE_LISTEN, tid, 0, 0),
        (Stop::Group, false, true) => ptrace(how, tid, 0, 0),
    };
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
