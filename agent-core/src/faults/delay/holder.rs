//! The tracer process itself (`faultline __delay-tracer`, see tracer.rs for its command line
//! and protocol): it seizes the target's threads, holds each armed one in its
//! signal-delivery-stop for its delay, passes every other signal through, follows clones,
//! forks and execs, and releases everything on `stop`, at its deadline or when the agent dies.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{self, Read as _, Write as _},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
    time::Duration,
};

use faultline_common::delay::DELAY_SIGNAL;
use nix::sys::{
    signal::{SigSet, SigmaskHow, Signal, sigprocmask},
    signalfd::{SfdFlags, SignalFd},
};

use super::{
    datapath::{DelayError, ThreadMaps},
    tracer::SUBCOMMAND,
};
use crate::{
    engine::driver::monotonic_ns,
    kernel::ptrace::{comm, is_zombie, ptrace, status_field, tasks},
};

/// A hold never lasts longer than this, whatever the map says (the rules allow 60 s).
const MAX_HOLD_NS: u64 = 60_000_000_000;
/// How long `release` waits for the threads to stop before it answers with an error (they
/// are still detached when they do stop).
const RELEASE_WAIT_NS: u64 = 5_000_000_000;
/// How long the tracer waits for its tracees to stop before it exits anyway (exit detaches
/// them too).
const STOP_WAIT_NS: u64 = 2_000_000_000;
/// si_code of a signal the kernel raised (bpf_send_signal_thread, socket OOB data).
const SI_KERNEL: i32 = 0x80;

/// `faultline __delay-tracer AGENT_PID DEADLINE_NS ARMED_FD SEIZED_FD`; returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let parsed = (|| {
        let n = |i: usize| args.get(i)?.parse::<i64>().ok();
        Some((n(0)? as i32, n(1)? as u64, n(2)? as RawFd, n(3)? as RawFd))
    })();
    let Some((agent, deadline, armed, seized)) = parsed else {
        eprintln!("usage: faultline {SUBCOMMAND} AGENT_PID DEADLINE_NS ARMED_FD SEIZED_FD");
        return libc::EINVAL;
    };
    match Daemon::new(agent, deadline, armed, seized) {
        Ok(mut d) => {
            d.run();
            0
        }
        Err(e) => {
            eprintln!("faultline {SUBCOMMAND}: {e}");
            1
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("blocking signals")]
    Mask(#[source] nix::Error),
    #[error("signalfd")]
    SignalFd(#[source] nix::Error),
    #[error("the agent ({0}) is gone")]
    AgentGone(i32),
    #[error("pidfd_open of the agent")]
    Pidfd(#[source] io::Error),
    #[error("the control channel (fd 0)")]
    Control(#[source] io::Error),
    #[error("the thread maps")]
    Maps(#[source] DelayError),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    /// Attached by the kernel (a new thread or child): its first stop has not come yet.
    Fresh,
    Running,
    /// In its SIGURG signal-delivery-stop until `until`; resumed with `resume` (0, or SIGURG
    /// when a real one merged with the marker).
    Held {
        since: u64,
        until: u64,
        slot: u32,
        resume: i32,
    },
    /// In a group-stop (someone SIGSTOPped the process), restarted with PTRACE_LISTEN.
    Listening,
}

struct Tracee {
    tgid: i32,
    /// The process a `seize` named; `release` of it detaches this thread.
    owner: i32,
    state: State,
}

struct Pending {
    owner: i32,
    /// Sent once the owner has no threads left (`{n}` replaced by the count).
    reply: String,
    count: u32,
    give_up: u64,
}

struct Daemon {
    me: i32,
    agent: i32,
    deadline: u64,
    maps: ThreadMaps,
    sigfd: SignalFd,
    pidfd: OwnedFd,
    ctl: File,
    inbuf: Vec<u8>,
    ctl_open: bool,
    tracees: HashMap<i32, Tracee>,
    /// Owners being released: their threads are detached at their next stop.
    releasing: Vec<i32>,
    pending: Option<Pending>,
    /// Set once everything is being released: when to exit even if threads are left.
    stopping: Option<u64>,
    /// `stop` asked (and gets its `ok` at the exit).
    stop_reply: bool,
    stats: BTreeMap<u32, (u64, u64)>,
}

fn is_stop_signal(sig: i32) -> bool {
    matches!(sig, libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU)
}

const OPTIONS: usize = (libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACEEXEC) as usize;

enum Reply {
    Now(String),
    /// Sent when the pending release completes.
    Later,
}

impl Daemon {
    fn new(agent: i32, deadline: u64, armed: RawFd, seized: RawFd) -> Result<Daemon, SetupError> {
        let mut set = SigSet::empty();
        for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
            set.add(s);
        }
        sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(SetupError::Mask)?;
        let sigfd = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(SetupError::SignalFd)?;
        // Out of the agent's process group: a terminal's ^Z to the agent does not stop us.
        let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
        // The agent may have started us without it (or from a thread that ends): SIGTERM
        // (blocked above, read from the signalfd) when our parent dies.
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
        if nix::unistd::getppid().as_raw() != agent {
            return Err(SetupError::AgentGone(agent));
        }
        // SAFETY: (nix has no pidfd_open) integer arguments; the fd returned is owned below.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, agent, 0) };
        if fd < 0 {
            return Err(SetupError::Pidfd(io::Error::last_os_error()));
        }
        // SAFETY: pidfd_open returned a new descriptor nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // SAFETY: the descriptors were inherited for us to own (the command line names them);
        // nothing else in this process uses them.
        let (armed, seized, ctl) = unsafe {
            (OwnedFd::from_raw_fd(armed), OwnedFd::from_raw_fd(seized), File::from_raw_fd(0))
        };
        nix::fcntl::fcntl(&ctl, nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK))
            .map_err(|e| SetupError::Control(e.into()))?;
        let mut d = Daemon {
            me: std::process::id() as i32,
            agent,
            deadline,
            maps: ThreadMaps::from_fds(armed, seized).map_err(SetupError::Maps)?,
            sigfd,
            pidfd,
            ctl,
            inbuf: Vec::new(),
            ctl_open: true,
            tracees: HashMap::new(),
            releasing: Vec::new(),
            pending: None,
            stopping: None,
            stop_reply: false,
            stats: BTreeMap::new(),
        };
        d.send("ready").map_err(SetupError::Control)?;
        Ok(d)
    }

    fn send(&mut self, line: &str) -> io::Result<()> {
        // Replies are short; the agent reads each one before its next request.
        let mut buf = line.as_bytes().to_vec();
        buf.push(b'\n');
        let mut off = 0;
        while off < buf.len() {
            match self.ctl.write(&buf[off..]) {
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn reply(&mut self, line: &str) {
        if self.ctl_open && self.send(line).is_err() {
            self.ctl_open = false;
        }
    }

    fn run(&mut self) {
        loop {
            let now = monotonic_ns();
            if self.stopping.is_none()
                && (now >= self.deadline
                    || !self.ctl_open
                    || nix::unistd::getppid().as_raw() != self.agent)
            {
                self.begin_stop(now);
            }
            self.end_holds(now);
            self.check_pending(now);
            if let Some(give_up) = self.stopping
                && (self.tracees.is_empty() || now >= give_up)
            {
                break;
            }
            let mut wake = now + 1_000_000_000;
            for t in self.tracees.values() {
                if let State::Held { until, .. } = t.state {
                    wake = wake.min(until);
                }
            }
            wake = wake.min(self.deadline.max(now));
            if let Some(p) = &self.pending {
                wake = wake.min(p.give_up);
            }
            if let Some(g) = self.stopping {
                wake = wake.min(g);
            }
            let read_ctl = self.ctl_open && self.pending.is_none() && self.stopping.is_none();
            let mut fds = [
                libc::pollfd { fd: self.sigfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd { fd: self.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
                libc::pollfd {
                    fd: if read_ctl { self.ctl.as_raw_fd() } else { -1 },
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let left = wake.saturating_sub(now);
            let ts = libc::timespec {
                tv_sec: (left / 1_000_000_000) as _,
                tv_nsec: (left % 1_000_000_000) as _,
            };
            // SAFETY: (libc: nix's ppoll wants BorrowedFds for all three, and the ctl slot is
            // -1 when idle) a live array of pollfd of the length passed, a live timespec, and a
            // null signal mask (the mask is unchanged).
            unsafe { libc::ppoll(fds.as_mut_ptr(), fds.len() as _, &ts, std::ptr::null()) };
            while let Ok(Some(si)) = self.sigfd.read_signal() {
                if si.ssi_signo != libc::SIGCHLD as u32 && self.stopping.is_none() {
                    self.begin_stop(monotonic_ns());
                }
            }
            self.reap();
            if fds[1].revents != 0 && self.stopping.is_none() {
                self.begin_stop(monotonic_ns());
            }
            if fds[2].revents != 0 {
                self.read_ctl();
            }
            self.serve_lines();
        }
        if self.stop_reply {
            self.reply("ok");
        }
        for tid in self.tracees.keys() {
            self.maps.release(*tid as u32);
        }
    }

    fn read_ctl(&mut self) {
        let mut buf = [0u8; 4096];
        loop {
            match self.ctl.read(&mut buf) {
                Ok(0) => {
                    self.ctl_open = false;
                    return;
                }
                Ok(n) => self.inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => {
                    self.ctl_open = false;
                    return;
                }
            }
        }
    }

    /// Serves the complete lines read so far, one at a time: a `release` that waits for
    /// threads to stop holds back the requests after it.
    fn serve_lines(&mut self) {
        while self.pending.is_none() && self.stopping.is_none() {
            let Some(end) = self.inbuf.iter().position(|b| *b == b'\n') else { return };
            let line: Vec<u8> = self.inbuf.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line).trim().to_string();
            if line.is_empty() {
                continue;
            }
            if let Reply::Now(r) = self.serve(&line) {
                self.reply(&r);
            }
        }
    }

    fn serve(&mut self, line: &str) -> Reply {
        let mut words = line.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let pid = words.next().map(str::parse::<i32>);
        match (verb, pid, words.next()) {
            ("seize", Some(Ok(pid)), None) if pid > 0 => self.seize(pid),
            ("release", Some(Ok(pid)), None) if pid > 0 => {
                self.release(pid, "ok {n}".into());
                Reply::Later
            }
            ("stats", None, _) => {
                let mut r = String::from("ok");
                for (slot, (holds, ns)) in &self.stats {
                    r.push_str(&format!(" {slot}:{holds}:{ns}"));
                }
                Reply::Now(r)
            }
            ("stop", None, _) => {
                self.stop_reply = true;
                self.begin_stop(monotonic_ns());
                Reply::Later
            }
            _ => Reply::Now(format!("error: unknown request {line:?}")),
        }
    }

    fn seize(&mut self, pid: i32) -> Reply {
        let Some(tgid) = status_field(pid, "Tgid") else {
            return Reply::Now(format!("error {pid}: no such process"));
        };
        if tgid == self.me || tgid == self.agent {
            return Reply::Now(format!("refused {pid}: the agent's own process"));
        }
        if std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
            .is_ok_and(|s| s.trim() == "3")
        {
            return Reply::Now(format!("refused {pid}: kernel.yama.ptrace_scope=3 forbids ptrace"));
        }
        // Already followed (a child of a seized process): it is this owner's from now on.
        let mut n = 0;
        for t in self.tracees.values_mut().filter(|t| t.tgid == tgid) {
            t.owner = tgid;
            n += 1;
        }
        if n > 0 {
            return Reply::Now(format!("ok {n}"));
        }
        let Some(first) = tasks(tgid) else {
            return Reply::Now(format!("error {pid}: no such process"));
        };
        for tid in first {
            if let Some(tp) = status_field(tid, "TracerPid")
                && tp != 0
                && tp != self.me
            {
                return Reply::Now(format!("refused {pid}: traced by {tp} ({})", comm(tp)));
            }
        }
        // Seize until a pass finds no thread it had not seen: a thread created meanwhile by
        // a thread already seized is attached by the kernel (TRACECLONE), one created by a
        // thread not yet seized shows up in the next pass.
        let mut seized = 0u32;
        loop {
            let mut more = false;
            for tid in tasks(tgid).unwrap_or_default() {
                if self.tracees.contains_key(&tid) {
                    continue;
                }
                match ptrace(libc::PTRACE_SEIZE, tid, 0, OPTIONS) {
                    Ok(_) => {
                        self.adopt(tid, tgid, tgid, State::Running);
                        seized += 1;
                        more = true;
                    }
                    // Gone meanwhile.
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    // Attached by the kernel as a new thread of one we seized: its first
                    // stop is on its way.
                    Err(_) if status_field(tid, "TracerPid") == Some(self.me) => {
                        self.adopt(tid, tgid, tgid, State::Fresh);
                        seized += 1;
                        more = true;
                    }
                    Err(e) => {
                        let why = match status_field(tid, "TracerPid") {
                            Some(tp) if tp != 0 => format!("traced by {tp} ({})", comm(tp)),
                            _ => format!("ptrace refused thread {tid}: {e}"),
                        };
                        // Let go of what was taken, then answer.
                        self.release(tgid, format!("refused {pid}: {why}"));
                        return Reply::Later;
                    }
                }
            }
            if !more {
                break;
            }
        }
        if seized == 0 {
            return Reply::Now(format!("error {pid}: no such process"));
        }
        Reply::Now(format!("ok {seized}"))
    }

    fn adopt(&mut self, tid: i32, tgid: i32, owner: i32, state: State) {
        if let Err(e) = self.maps.seize(tid as u32) {
            eprintln!("faultline {SUBCOMMAND}: FL_DELAY_SEIZED[{tid}]: {e}");
        }
        self.tracees.insert(tid, Tracee { tgid, owner, state });
    }

    fn releasing(&self, owner: i32) -> bool {
        self.stopping.is_some() || self.releasing.contains(&owner)
    }

    /// Starts detaching every thread of `owner`; `reply` is sent when none is left.
    fn release(&mut self, owner: i32, reply: String) {
        if !self.releasing.contains(&owner) {
            self.releasing.push(owner);
        }
        let give_up = monotonic_ns() + RELEASE_WAIT_NS;
        self.pending = Some(Pending { owner, reply, count: 0, give_up });
        let mine: Vec<i32> =
            self.tracees.iter().filter(|(_, t)| t.owner == owner).map(|(tid, _)| *tid).collect();
        for tid in mine {
            self.interrupt(tid);
        }
        self.check_pending(monotonic_ns());
    }

    /// Makes `tid` stop so it can be detached; a held thread is detached at once.
    fn interrupt(&mut self, tid: i32) {
        let Some(t) = self.tracees.get(&tid) else { return };
        match t.state {
            State::Held { resume, .. } => self.detach(tid, resume),
            // Its first stop comes anyway.
            State::Fresh => {}
            State::Running | State::Listening => {
                if ptrace(libc::PTRACE_INTERRUPT, tid, 0, 0).is_err() || is_zombie(tid) {
                    // Exited (a zombie leader waits for its threads): nothing to detach.
                    self.forget(tid);
                }
            }
        }
    }

    fn begin_stop(&mut self, now: u64) {
        self.stopping = Some(now + STOP_WAIT_NS);
        let all: Vec<i32> = self.tracees.keys().copied().collect();
        for tid in all {
            self.interrupt(tid);
        }
    }

    fn check_pending(&mut self, now: u64) {
        let Some(p) = &self.pending else { return };
        let owner = p.owner;
        let left = self.tracees.values().filter(|t| t.owner == owner).count();
        if left == 0 {
            self.releasing.retain(|o| *o != owner);
            if let Some(p) = self.pending.take() {
                let r = p.reply.replace("{n}", &p.count.to_string());
                self.reply(&r);
            }
        } else if now >= p.give_up {
            // They are detached when they stop; the agent hears of it now.
            self.pending = None;
            self.reply(&format!(
                "error {owner}: {left} threads did not stop within {} s",
                RELEASE_WAIT_NS / 1_000_000_000
            ));
        }
    }

    fn account(&mut self, slot: u32, since: u64) {
        let e = self.stats.entry(slot).or_default();
        e.0 += 1;
        e.1 += monotonic_ns().saturating_sub(since);
    }

    /// Removes `tid` from the table and the maps.
    fn forget(&mut self, tid: i32) {
        self.maps.release(tid as u32);
        if let Some(t) = self.tracees.remove(&tid)
            && let State::Held { since, slot, .. } = t.state
        {
            self.account(slot, since);
        }
    }

    fn detach(&mut self, tid: i32, sig: i32) {
        let _ = ptrace(libc::PTRACE_DETACH, tid, 0, sig as usize);
        if let Some(t) = self.tracees.get(&tid)
            && let Some(p) = &mut self.pending
            && t.owner == p.owner
        {
            p.count += 1;
        }
        self.forget(tid);
    }

    fn resume(&mut self, tid: i32, sig: i32) {
        if let Some(t) = self.tracees.get_mut(&tid) {
            t.state = State::Running;
        }
        if ptrace(libc::PTRACE_CONT, tid, 0, sig as usize).is_err() {
            // Killed while stopped: its exit is on the way.
        }
    }

    fn end_holds(&mut self, now: u64) {
        let due: Vec<(i32, u32, u64, i32)> = self
            .tracees
            .iter()
            .filter_map(|(tid, t)| match t.state {
                State::Held { since, until, slot, resume } if until <= now => {
                    Some((*tid, slot, since, resume))
                }
                _ => None,
            })
            .collect();
        for (tid, slot, since, resume) in due {
            self.resume(tid, resume);
            self.account(slot, since);
        }
    }

    fn reap(&mut self) {
        loop {
            let mut st: libc::c_int = 0;
            // SAFETY: a live c_int for the status.
            let tid = unsafe { libc::waitpid(-1, &mut st, libc::__WALL | libc::WNOHANG) };
            if tid <= 0 {
                return;
            }
            if libc::WIFEXITED(st) || libc::WIFSIGNALED(st) {
                self.forget(tid);
            } else if libc::WIFSTOPPED(st) {
                self.stopped(tid, st);
            }
            self.check_pending(monotonic_ns());
        }
    }

    /// A thread the kernel attached (a new thread or child of a tracee) whose first stop
    /// came before its creator's event.
    fn adopt_unknown(&mut self, tid: i32) {
        let tgid = status_field(tid, "Tgid").unwrap_or(tid);
        let ppid = status_field(tid, "PPid").unwrap_or(0);
        let owner = self
            .tracees
            .values()
            .find(|t| t.tgid == tgid)
            .or_else(|| self.tracees.values().find(|t| t.tgid == ppid))
            .map_or(tgid, |t| t.owner);
        self.adopt(tid, tgid, owner, State::Fresh);
    }

    fn stopped(&mut self, tid: i32, st: libc::c_int) {
        if !self.tracees.contains_key(&tid) {
            self.adopt_unknown(tid);
        }
        let Some(t) = self.tracees.get(&tid) else { return };
        let (owner, fresh) = (t.owner, t.state == State::Fresh);
        let releasing = self.releasing(owner);
        let sig = libc::WSTOPSIG(st);
        let event = (st >> 16) & 0xff;
        match event {
            libc::PTRACE_EVENT_STOP => {
                if releasing {
                    self.detach(tid, 0);
                } else if !fresh && is_stop_signal(sig) {
                    // Group-stop: stays stopped as the process was told, still ours.
                    if let Some(t) = self.tracees.get_mut(&tid) {
                        t.state = State::Listening;
                    }
                    let _ = ptrace(libc::PTRACE_LISTEN, tid, 0, 0);
                } else {
                    // First stop of a new tracee, or the trap of an interrupt / SIGCONT.
                    self.resume(tid, 0);
                }
            }
            libc::PTRACE_EVENT_CLONE | libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                let mut msg: libc::c_ulong = 0;
                if ptrace(libc::PTRACE_GETEVENTMSG, tid, 0, (&raw mut msg) as usize).is_ok() {
                    let new = msg as i32;
                    if new > 0 && !self.tracees.contains_key(&new) {
                        let tgid = status_field(new, "Tgid").unwrap_or(new);
                        self.adopt(new, tgid, owner, State::Fresh);
                    }
                }
                if releasing { self.detach(tid, 0) } else { self.resume(tid, 0) }
            }
            libc::PTRACE_EVENT_EXEC => {
                // An exec from a thread other than the leader: it now has the leader's tid,
                // its old tid is gone without an exit of its own.
                let mut msg: libc::c_ulong = 0;
                if ptrace(libc::PTRACE_GETEVENTMSG, tid, 0, (&raw mut msg) as usize).is_ok() {
                    let former = msg as i32;
                    if former != tid && self.tracees.remove(&former).is_some() {
                        self.maps.release(former as u32);
                    }
                }
                if let Err(e) = self.maps.seize(tid as u32) {
                    eprintln!("faultline {SUBCOMMAND}: FL_DELAY_SEIZED[{tid}]: {e}");
                }
                if releasing { self.detach(tid, 0) } else { self.resume(tid, 0) }
            }
            0 => {
                if sig == DELAY_SIGNAL as i32
                    && let Some(arm) = self.maps.take_armed(tid as u32).ok().flatten()
                {
                    // A real SIGURG merged with the marker goes on to the thread.
                    let mut si: libc::siginfo_t =
                        // SAFETY: siginfo_t is plain data; all zeroes is a valid value.
                        unsafe { std::mem::zeroed() };
                    let real = ptrace(libc::PTRACE_GETSIGINFO, tid, 0, (&raw mut si) as usize)
                        .is_ok_and(|_| si.si_code != SI_KERNEL);
                    let resume = if real { sig } else { 0 };
                    if releasing {
                        self.detach(tid, resume);
                    } else if let Some(t) = self.tracees.get_mut(&tid) {
                        let since = monotonic_ns();
                        let until = since + arm.delay_ns.min(MAX_HOLD_NS);
                        t.state = State::Held { since, until, slot: arm.slot, resume };
                    }
                    return;
                }
                // Not ours: passed on unchanged.
                if releasing { self.detach(tid, sig) } else { self.resume(tid, sig) }
            }
            _ => {
                if releasing {
                    self.detach(tid, 0)
                } else {
                    self.resume(tid, 0)
                }
            }
        }
    }
}
