//! The kernel half of `sys delay` (issue 16), driven through faultline-core directly: the
//! syscall-exit program arms the chosen calls of seized threads and signals them. No
//! tracer runs here, so nothing is held: the marker reaches a SIGURG handler the workers
//! count with, and the armed entries stay in FL_DELAY_ARMED for the test to read.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    ffi::CString,
    os::unix::fs::MetadataExt as _,
    sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering},
    thread::sleep,
    time::Duration,
};

use faultline_core::faults::delay::{
    DELAY_PROB_ONE, DelayDatapath, DelayRule, DelayTarget, ExitHook, ThreadMaps, syscall_bitmap,
};
use faultline_tests::Cgroup;

const NR_READ: u32 = 0;
const NR_GETPPID: u32 = 110;

/// What a worker shares with the test (an anonymous shared mapping).
#[repr(C)]
struct Shared {
    /// Marker signals its handler took.
    sigurg: AtomicU64,
    /// Loop iterations (one call each).
    calls: AtomicU64,
    /// ForkReader: set by the test to make the worker fork its reading child.
    go: AtomicU64,
    /// ForkReader: the child's pid once forked, and the markers its handler took.
    child_pid: AtomicU64,
    child_sigurg: AtomicU64,
}

/// The worker's own view of its shared page (set in the child after fork).
static SHARED: AtomicPtr<Shared> = AtomicPtr::new(std::ptr::null_mut());
/// Set in a ForkReader's child: its markers are counted apart.
static IS_CHILD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigurg(_: libc::c_int) {
    let p = SHARED.load(Ordering::Relaxed);
    if !p.is_null() {
        // SAFETY: the child's shared page, mapped before fork and never unmapped there.
        let s = unsafe { &*p };
        let n = if IS_CHILD.load(Ordering::Relaxed) { &s.child_sigurg } else { &s.sigurg };
        n.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy)]
enum Op {
    /// read(2) of one byte of /dev/zero.
    Read,
    /// getppid(2).
    Getppid,
    /// read(2) as above, with SIGURG blocked.
    ReadBlocked,
    /// read(2), and once told (`go`), fork a child that reads too.
    ForkReader,
}

/// A forked process in a cgroup making one call in a loop, with a SIGURG handler that
/// counts; killed on drop.
struct Worker {
    pid: i32,
    shared: *mut Shared,
}

impl Worker {
    fn start(cg: &Cgroup, op: Op) -> Worker {
        let procs =
            CString::new(cg.fs.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap();
        let zero = CString::new("/dev/zero").unwrap();
        // SAFETY: an anonymous shared mapping of one page, checked below.
        let shared = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(shared, libc::MAP_FAILED);
        let shared = shared.cast::<Shared>();
        // SAFETY: the child only makes async-signal-safe calls (no allocation, no locks),
        // as it may be forked from a multi-threaded test process, and ends in _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
        if pid == 0 {
            // SAFETY: see above; every pointer is to memory that lives in the child.
            unsafe { worker(shared, &procs, &zero, op) }
        }
        let w = Worker { pid, shared };
        faultline_tests::wait_until("the worker runs in its cgroup", || {
            w.calls() > 100 && cg.procs().contains(&pid)
        });
        w
    }

    fn sigurg(&self) -> u64 {
        // SAFETY: the shared page lives until drop.
        unsafe { (*self.shared).sigurg.load(Ordering::Relaxed) }
    }

    fn calls(&self) -> u64 {
        // SAFETY: as above.
        unsafe { (*self.shared).calls.load(Ordering::Relaxed) }
    }

    fn tid(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for a few more calls (rounds through user space): a marker sent before this
    /// call has reached the handler by then, however late the worker is scheduled.
    fn ran_on(&self) {
        let calls = self.calls();
        faultline_tests::wait_until("the worker to make more calls", || self.calls() > calls + 3);
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SAFETY: our own child (and its child, which PDEATHSIG does not cover), then the page.
        unsafe {
            let child = (*self.shared).child_pid.load(Ordering::Relaxed);
            if child != 0 {
                libc::kill(child as i32, libc::SIGKILL);
            }
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
            libc::munmap(self.shared.cast(), 4096);
        }
    }
}

/// The forked child: joins the cgroup, counts SIGURG, loops on `op`.
unsafe fn worker(shared: *mut Shared, procs: &CString, zero: &CString, op: Op) -> ! {
    // SAFETY: async-signal-safe calls only, on memory the child owns.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        SHARED.store(shared, Ordering::Relaxed);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigurg as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        sa.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGURG, &sa, std::ptr::null_mut());
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGURG);
        let how = if matches!(op, Op::ReadBlocked) { libc::SIG_BLOCK } else { libc::SIG_UNBLOCK };
        libc::sigprocmask(how, &set, std::ptr::null_mut());
        // "0" moves the writer itself.
        let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
        if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
            libc::_exit(3);
        }
        libc::close(fd);
        let zfd = libc::open(zero.as_ptr(), libc::O_RDONLY);
        let mut b = [0u8; 1];
        loop {
            if matches!(op, Op::ForkReader)
                && (*shared).go.load(Ordering::Relaxed) != 0
                && !IS_CHILD.load(Ordering::Relaxed)
                && (*shared).child_pid.load(Ordering::Relaxed) == 0
            {
                let child = libc::fork();
                if child == 0 {
                    IS_CHILD.store(true, Ordering::Relaxed);
                    (*shared).child_pid.store(libc::getpid() as u64, Ordering::Relaxed);
                } else if child < 0 {
                    libc::_exit(4);
                }
            }
            match op {
                Op::Read | Op::ReadBlocked | Op::ForkReader => {
                    libc::read(zfd, b.as_mut_ptr().cast(), 1);
                }
                Op::Getppid => {
                    libc::syscall(libc::SYS_getppid);
                }
            }
            (*shared).calls.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn rule(nrs: &[u32], latency_ms: u64, jitter_ms: u64) -> DelayRule {
    DelayRule {
        syscalls: syscall_bitmap(nrs).unwrap(),
        latency_ns: latency_ms * 1_000_000,
        jitter_ns: jitter_ms * 1_000_000,
        threshold: DELAY_PROB_ONE,
        every_nth: 0,
        max_hits: 0,
        expires_ns: u64::MAX,
        flags: 0,
        path_dev: 0,
        path_ino: 0,
    }
}

fn target(cg: &Cgroup) -> DelayTarget {
    let id = std::fs::metadata(&cg.fs).unwrap().ino();
    let level = cg.rel.trim_matches('/').split('/').count() as u32;
    DelayTarget::Cgroup { id, level }
}

/// Links of this process of one of `progs` (the exit program's forms), from the kernel
/// (fdinfo of every bpf_link descriptor): on the sys_exit tracepoint, or fexit links.
fn exit_links(progs: &[u32]) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(to) = std::fs::read_link(e.path()) else { continue };
        if to.to_string_lossy() != "anon_inode:bpf_link" {
            continue;
        }
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", e.file_name().display()))
                .unwrap_or_default();
        let field =
            |k: &str| info.lines().find_map(|l| l.strip_prefix(k)).map(|v| v.trim().to_string());
        let prog = field("prog_id:").and_then(|v| v.parse::<u32>().ok());
        let on_sys_exit = field("tp_name:").as_deref() == Some("sys_exit");
        let fexit = field("link_type:").as_deref() == Some("tracing");
        if (on_sys_exit || fexit) && prog.is_some_and(|p| progs.contains(&p)) {
            n += 1;
        }
    }
    n
}

/// Debian's kernels (the VM tier) let fexit attach to the system call functions.
fn fexit_expected() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").is_ok_and(|r| r.contains("+deb"))
}

/// The exit program's links for `calls` distinct system calls under `hook`.
fn links_for(hook: ExitHook, calls: usize) -> usize {
    if hook == ExitHook::FExit { calls } else { 1 }
}

/// The preferred form: fexit on the delayed calls' functions where the kernel allows it (it
/// must on Debian's kernels), else tp_btf on sys_exit with the reason fexit was refused.
#[test]
fn the_exit_program_arms_and_signals_only_chosen_calls_of_seized_threads() {
    arms_and_signals(None);
}

#[test]
fn the_sys_exit_tracepoint_does_the_same() {
    arms_and_signals(Some(ExitHook::TpBtf));
}

#[test]
fn the_raw_tracepoint_fallback_does_the_same() {
    arms_and_signals(Some(ExitHook::RawTp));
}

fn arms_and_signals(forced: Option<ExitHook>) {
    let _alone = faultline_tests::serial::alone();
    let mut dp = DelayDatapath::load(false).expect("loading the delay datapath");
    assert_eq!(dp.hook(), None, "nothing is attached before the first rule");
    match forced {
        Some(ExitHook::RawTp) => dp.force_raw_tp(),
        Some(_) => dp.force_tp_btf(),
        None => {}
    }
    let (cg, sibling) = (Cgroup::new("delay-target"), Cgroup::new("delay-sibling"));
    let reader = Worker::start(&cg, Op::Read);
    let other_call = Worker::start(&cg, Op::Getppid);
    let unseized = Worker::start(&cg, Op::Read);
    let outside = Worker::start(&sibling, Op::Read);
    let blocker = Worker::start(&cg, Op::ReadBlocked);
    // Seized the tracer's way: through duplicates of the descriptors it inherits.
    let mut tracer = {
        let (armed, seized) = dp.tracer_fds();
        ThreadMaps::from_fds(
            armed.try_clone_to_owned().unwrap(),
            seized.try_clone_to_owned().unwrap(),
        )
        .expect("opening the thread maps from their descriptors")
    };
    for w in [&reader, &other_call, &outside, &blocker] {
        tracer.seize(w.tid()).unwrap();
        assert!(dp.threads().is_seized(w.tid()), "the datapath sees the tracer's entry");
    }

    let slot = dp.add_rule(target(&cg), rule(&[NR_READ], 100, 10), None).unwrap();
    let hook = dp.hook().expect("the exit program is attached with the first rule");
    eprintln!("exit program attached as {}", hook.name());
    match forced {
        Some(ExitHook::RawTp) => assert_eq!(hook, ExitHook::RawTp),
        Some(_) if hook != ExitHook::TpBtf => {
            eprintln!("note: tp_btf was refused here; the raw tracepoint serves")
        }
        Some(_) => {}
        None if fexit_expected() => assert_eq!(hook, ExitHook::FExit, "{:?}", dp.fexit_refused()),
        None if hook != ExitHook::FExit => {
            let why = dp.fexit_refused().expect("why fexit was refused");
            eprintln!("note: fexit refused here ({why}); {} serves", hook.name());
        }
        None => {}
    }
    assert_eq!(exit_links(&dp.exit_program_ids()), 1, "one link in the kernel");
    let calls_before = reader.calls();
    sleep(Duration::from_millis(300));

    // Markers taken before and after the counters are read bracket the armed count.
    let signals_before = reader.sigurg();
    let c = dp.counters(slot).unwrap();
    let signals = reader.sigurg();
    eprintln!(
        "after 0.3 s: seen {} delayed {} delay_ns {}; reader: {} calls, {} SIGURG",
        c.seen,
        c.delayed,
        c.delay_ns,
        reader.calls(),
        reader.sigurg()
    );
    assert!(c.delayed > 100, "the reader's reads are armed: {c:?}");
    // The blocker's reads are seen but never armed: it blocks the marker.
    assert!(dp.blocked_check.is_ok(), "{:?}", dp.blocked_check);
    assert!(c.seen > c.delayed + 1000, "{c:?}");
    let mean = c.delay_ns / c.delayed;
    assert!((90_000_000..=110_000_000).contains(&mean), "mean delay {mean} ns");
    // No tracer: the calls are not held, the reader runs on.
    assert!(reader.calls() > calls_before + 100, "the reader is not held without a tracer");
    assert!(signals > 100, "SIGURG reaches the reader's handler: {signals}");
    // One marker per armed call (the handler runs just after the count, on the way out).
    assert!(
        signals_before <= c.delayed && c.delayed <= signals + 1,
        "{signals_before}..{signals} markers vs {c:?}"
    );
    let arm = tracer.take_armed(reader.tid()).unwrap().expect("an armed entry for the reader");
    assert_eq!((arm.slot, arm.syscall), (slot, NR_READ));
    assert!((90_000_000..=110_000_000).contains(&arm.delay_ns), "{arm:?}");
    eprintln!("armed[{}] = {arm:?}", reader.tid());

    // Other syscalls, other cgroups and threads not seized see nothing.
    for (w, what) in [
        (&other_call, "getppid in the target"),
        (&unseized, "an unseized reader in the target"),
        (&outside, "a reader in a sibling cgroup"),
        (&blocker, "a seized reader that blocks SIGURG"),
    ] {
        assert!(w.calls() > 1000, "{what} runs");
        assert_eq!(w.sigurg(), 0, "{what} gets no marker");
        assert!(dp.threads().armed(w.tid()).is_none(), "{what} is not armed");
    }

    // A pid rule for getppid on the other worker: the same attachment serves both.
    let by_pid = DelayTarget::Pid { tgid: other_call.pid as u32, follow: false };
    let pid_slot = dp.add_rule(by_pid, rule(&[NR_GETPPID], 5, 0), Some(7)).unwrap();
    // fexit: a second link, on getppid's function, or (where that function has no BTF, as
    // on Debian 6.12) every call through sys_exit again.
    let now = dp.hook().unwrap();
    eprintln!("with getppid too: {}", now.name());
    assert_eq!(exit_links(&dp.exit_program_ids()), links_for(now, 2), "{:?}", dp.fexit_refused());
    faultline_tests::wait_until("getppid of the pid target is signalled", || {
        other_call.sigurg() > 10
    });
    let p = dp.counters(pid_slot).unwrap();
    // Each armed call adds 5 ms; the program counts the call before its delay, so a read
    // may fall between the two for the one call of this thread in flight.
    let whole = p.delay_ns / 5_000_000;
    assert!(
        p.delayed > 10
            && p.delay_ns.is_multiple_of(5_000_000)
            && (whole == p.delayed || whole + 1 == p.delayed),
        "{p:?}"
    );
    assert_eq!(outside.sigurg(), 0);
    dp.remove_rule(pid_slot).unwrap();
    assert!(dp.hook().is_some(), "the cgroup rule keeps the program attached");
    assert_eq!(exit_links(&dp.exit_program_ids()), 1, "one link again");

    // Removing the last rule stops the arming and detaches the program.
    dp.remove_rule(slot).unwrap();
    assert_eq!(dp.hook(), None, "detached with the last rule");
    assert_eq!(exit_links(&dp.exit_program_ids()), 0, "no link left in the kernel");
    // A marker sent just before the detach reaches the handler just after it.
    reader.ran_on();
    let (seen, signals, calls) = (dp.counters(slot).unwrap().seen, reader.sigurg(), reader.calls());
    sleep(Duration::from_millis(300));
    assert!(reader.calls() > calls + 100, "the reader runs");
    assert_eq!(reader.sigurg(), signals, "no marker after the rule is removed");
    assert_eq!(dp.counters(slot).unwrap().seen, seen, "nothing seen after the rule is removed");
    assert!(dp.remove_rule(slot).is_err(), "a slot is removed once");
}

#[test]
fn the_probe_reports_the_hook_and_the_signal() {
    let _alone = faultline_tests::serial::alone();
    let p = faultline_core::faults::delay::probe();
    eprintln!("delay_exit_hook: {:?}; send_signal_thread: {:?}", p.exit_hook, p.send_signal_thread);
    assert!(p.exit_hook.is_ok(), "{:?}", p.exit_hook);
    assert!(p.send_signal_thread.is_ok(), "{:?}", p.send_signal_thread);
}

#[test]
fn pid_rules_that_follow_children_cover_a_child_forked_during_the_rule() {
    let _alone = faultline_tests::serial::alone();
    let mut dp = DelayDatapath::load(false).expect("loading the delay datapath");
    if let Err(why) = &dp.follow {
        panic!("following children needs task_struct offsets from BTF: {why}");
    }
    let cg = Cgroup::new("delay-follow");
    let (follows, stays) = (Worker::start(&cg, Op::ForkReader), Worker::start(&cg, Op::ForkReader));
    let mut slots = Vec::new();
    for (w, follow) in [(&follows, true), (&stays, false)] {
        dp.threads().seize(w.tid()).unwrap();
        let target = DelayTarget::Pid { tgid: w.pid as u32, follow };
        slots.push(dp.add_rule(target, rule(&[NR_READ], 1, 0), None).unwrap());
    }
    let mut children = Vec::new();
    for w in [&follows, &stays] {
        // SAFETY: the shared page lives as long as the worker.
        let s = unsafe { &*w.shared };
        s.go.store(1, Ordering::Relaxed);
        faultline_tests::wait_until("the worker forks", || {
            s.child_pid.load(Ordering::Relaxed) != 0
        });
        let child = s.child_pid.load(Ordering::Relaxed) as u32;
        // The tracer seizes children as they are born (PTRACE_O_TRACEFORK); the test, later.
        dp.threads().seize(child).unwrap();
        children.push((s, child));
    }
    faultline_tests::wait_until("the followed child is signalled", || {
        children[0].0.child_sigurg.load(Ordering::Relaxed) > 10
    });
    // Both parents are targets (each is signalled in its own time on a loaded host).
    faultline_tests::wait_until("both parents signalled", || {
        follows.sigurg() > 10 && stays.sigurg() > 10
    });
    sleep(Duration::from_millis(200));
    assert_eq!(
        children[1].0.child_sigurg.load(Ordering::Relaxed),
        0,
        "the child of a rule without follow is not covered"
    );
    assert!(dp.threads().armed(children[0].1).is_some_and(|a| a.slot == slots[0]));
    for s in slots {
        dp.remove_rule(s).unwrap();
    }
    assert_eq!(dp.hook(), None);
}

/// CLOCK_MONOTONIC in ns, the clock of `expires_ns` (bpf_ktime_get_ns).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: writes the local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn max_hits_every_nth_percent_and_expiry_choose_the_calls() {
    let _alone = faultline_tests::serial::alone();
    let mut dp = DelayDatapath::load(false).expect("loading the delay datapath");
    let cg = Cgroup::new("delay-judge");
    let reader = Worker::start(&cg, Op::Read);
    dp.threads().seize(reader.tid()).unwrap();
    let run = |dp: &mut DelayDatapath, r: DelayRule, seed: Option<u64>, ms: u64| {
        let before = reader.sigurg();
        let slot = dp.add_rule(target(&cg), r, seed).unwrap();
        sleep(Duration::from_millis(ms));
        dp.remove_rule(slot).unwrap();
        reader.ran_on();
        (dp.counters(slot).unwrap(), reader.sigurg() - before)
    };

    let (c, signals) = run(&mut dp, DelayRule { max_hits: 5, ..rule(&[NR_READ], 1, 0) }, None, 300);
    eprintln!("max_hits 5: {c:?}, {signals} markers");
    assert_eq!((c.delayed, signals), (5, 5), "{c:?}");
    assert!(c.seen > 1000, "calls go on being seen past max hits: {c:?}");

    let (c, signals) =
        run(&mut dp, DelayRule { every_nth: 10, ..rule(&[NR_READ], 1, 0) }, None, 300);
    eprintln!("every 10th: {c:?}, {signals} markers");
    assert!(c.delayed > 100 && c.seen / 10 - c.delayed <= 1, "{c:?}");
    assert_eq!(signals, c.delayed);

    let half = DelayRule { threshold: DELAY_PROB_ONE / 2, ..rule(&[NR_READ], 1, 0) };
    let (c, _) = run(&mut dp, half, Some(42), 300);
    let share = c.delayed as f64 / c.seen as f64;
    eprintln!("50%, seeded: {c:?} ({share:.3})");
    assert!(c.seen > 1000 && (0.45..0.55).contains(&share), "{c:?}");

    // Uniform jitter stays within latency +- jitter, and spreads over it.
    let (c, _) = run(&mut dp, rule(&[NR_READ], 50, 50), None, 300);
    let mean = c.delay_ns / c.delayed.max(1);
    eprintln!("50 ms +- 50 ms: {c:?}, mean {mean} ns");
    assert!(c.delayed > 100 && (40_000_000..60_000_000).contains(&mean), "{c:?}");

    // Expiry: the rule stops choosing at expires_ns though it is still installed.
    let r = DelayRule { expires_ns: monotonic_ns() + 200_000_000, ..rule(&[NR_READ], 1, 0) };
    let slot = dp.add_rule(target(&cg), r, None).unwrap();
    sleep(Duration::from_millis(300));
    let at = dp.counters(slot).unwrap();
    sleep(Duration::from_millis(300));
    let later = dp.counters(slot).unwrap();
    eprintln!("expired after 200 ms: {at:?} then {later:?}");
    assert!(at.delayed > 100, "{at:?}");
    assert_eq!((later.seen, later.delayed), (at.seen, at.delayed), "nothing after expiry");
    dp.remove_rule(slot).unwrap();
    assert_eq!(dp.hook(), None);
}
