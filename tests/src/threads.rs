//! Threads as /proc shows them, for the tests of faults that hold threads (sys delay):
//! their state, their tracer, a process held by a tracer of the test's own, and the probe's
//! two timed threads (`TimedThreads`).

use std::{
    ffi::{CStr, CString},
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdout, Command, Stdio},
    time::Duration,
};

use crate::{Cgroup, wait_for};

/// A field of /proc/PID/task/TID/status (`path` is the task's directory).
pub fn status(path: &str, field: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("{path}/status")).ok()?;
    text.lines().find_map(|l| Some(l.strip_prefix(field)?.strip_prefix(':')?.trim().to_string()))
}

/// The state letter of thread `tid` of `pid` (None once it is gone).
pub fn state(pid: i32, tid: i32) -> Option<char> {
    status(&format!("/proc/{pid}/task/{tid}"), "State")?.chars().next()
}

/// The TracerPid of thread `tid` of `pid` (0: not traced).
pub fn tracer_of(pid: i32, tid: i32) -> i32 {
    status(&format!("/proc/{pid}/task/{tid}"), "TracerPid").map_or(0, |s| s.parse().unwrap())
}

/// The thread ids of `pid`.
pub fn tids(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

/// No thread of `pid` stopped (T or t) or traced.
pub fn assert_untraced(pid: i32) {
    for tid in tids(pid) {
        let s = state(pid, tid);
        assert!(!matches!(s, Some('T' | 't')), "thread {tid} of {pid} is in state {s:?}");
        assert_eq!(tracer_of(pid, tid), 0, "thread {tid} of {pid} is still traced");
    }
}

/// The comm of the tracer `Traced` starts.
pub const TRACER_COMM: &str = "fl-test-tracer";
const TRACER_NAME: &CStr = c"fl-test-tracer";

/// `sleep 30` held by a tracer of the test's own, as a debugger would hold it: a child
/// forked from the test (named TRACER_COMM) that PTRACE_SEIZEs the sleep and waits, so no
/// strace or gdb is needed (the VM tier's guests have neither). With a cgroup, both the sleep
/// and its tracer run in it. Both are killed on drop, the tracer first (which detaches the
/// sleep), also when the test fails.
pub struct Traced {
    /// The traced process (`sleep 30`).
    pub pid: i32,
    /// Its tracer.
    pub tracer: i32,
    sleep: Child,
}

impl Traced {
    pub fn start(cgroup: Option<&Cgroup>) -> Traced {
        let sleep = cgroup
            .map_or_else(|| Command::new("sleep"), |cg| cg.command("sleep"))
            .arg("30")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = sleep.id() as i32;
        let procs = cgroup.map(|cg| {
            CString::new(cg.fs.join("cgroup.procs").into_os_string().into_encoded_bytes()).unwrap()
        });
        // SAFETY: the child makes only async-signal-safe calls (no allocation, no locks; the
        // test process may have other threads) on memory prepared before the fork, and
        // never returns.
        let tracer = unsafe { libc::fork() };
        assert!(tracer >= 0, "fork: {}", std::io::Error::last_os_error());
        if tracer == 0 {
            // SAFETY: as above.
            unsafe { trace(pid, procs.as_deref()) }
        }
        let mut t = Traced { pid, tracer, sleep };
        wait_for("the test's tracer to seize the sleep", Duration::from_secs(10), || {
            let mut st = 0;
            // SAFETY: our own child; st is a live local.
            if unsafe { libc::waitpid(t.tracer, &mut st, libc::WNOHANG) } == t.tracer {
                t.tracer = 0;
                panic!("the test's tracer exited: wait status {st:#x}");
            }
            tracer_of(pid, pid) == t.tracer
        });
        assert_eq!(
            std::fs::read_to_string(format!("/proc/{}/comm", t.tracer)).unwrap().trim(),
            TRACER_COMM
        );
        t
    }
}

/// The forked tracer: names itself, joins `procs` (a cgroup.procs file) when given, seizes
/// `pid` and waits to be killed (or for the test to die: PDEATHSIG). Exit codes 1 to 4 say
/// which step failed.
unsafe fn trace(pid: i32, procs: Option<&CStr>) -> ! {
    // SAFETY: async-signal-safe calls only, on memory the child owns.
    unsafe {
        let parent = libc::getppid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(1);
        }
        if libc::prctl(libc::PR_SET_NAME, TRACER_NAME.as_ptr()) != 0 {
            libc::_exit(2);
        }
        if let Some(procs) = procs {
            // "0" moves the writer itself.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                libc::_exit(3);
            }
            libc::close(fd);
        }
        // The raw call: libc declares the request unsigned on glibc, signed on musl.
        let seize = libc::PTRACE_SEIZE as libc::c_long;
        if libc::syscall(libc::SYS_ptrace, seize, pid as libc::c_long, 0usize, 0usize) != 0 {
            libc::_exit(4);
        }
        loop {
            libc::pause();
        }
    }
}

impl Drop for Traced {
    fn drop(&mut self) {
        if self.tracer > 0 {
            // SAFETY: our own child, reaped here.
            unsafe {
                libc::kill(self.tracer, libc::SIGKILL);
                libc::waitpid(self.tracer, std::ptr::null_mut(), 0);
            }
        }
        let _ = self.sleep.kill();
        let _ = self.sleep.wait();
    }
}

/// `fl-probe threads-timed SECONDS [IN OUT]` (thread A times its calls, thread B counts
/// getppid calls per ms; see the probe's threads.rs), waiting for its go. Killed on drop.
pub struct TimedThreads {
    child: Child,
    out: BufReader<ChildStdout>,
    pub pid: i32,
    pub tid_a: i32,
    pub tid_b: i32,
}

impl TimedThreads {
    /// Started by `probe` (a Command for the probe binary, placed where the test wants it:
    /// `Cgroup::command`, or plain); with `files` = [IN, OUT], A's calls on both files.
    pub fn start(mut probe: Command, seconds: f64, files: &[&str]) -> TimedThreads {
        let mut child = probe
            .args(["threads-timed", &seconds.to_string()])
            .args(files)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let n = |k: &str| v[k].as_i64().unwrap() as i32;
        TimedThreads { pid: n("pid"), tid_a: n("tid_a"), tid_b: n("tid_b"), child, out }
    }

    /// Starts the run and returns once A is in its timed rounds (two bytes read: a hold
    /// from here on lands in a round it times).
    pub fn go(&mut self) {
        self.child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let io = format!("/proc/{}/task/{}/io", self.pid, self.tid_a);
        wait_for("A's rounds", Duration::from_secs(10), || {
            let text = std::fs::read_to_string(&io).unwrap();
            let rchar = text.lines().find_map(|l| l.strip_prefix("rchar:"));
            rchar.is_some_and(|n| n.trim().parse::<u64>().unwrap() >= 2)
        });
    }

    /// The run's report (its last line), once it has ended.
    pub fn finish(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        assert!(self.child.wait().unwrap().success());
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Every thread traced by one tracer (not nobody).
    pub fn traced(&self) -> bool {
        [self.pid, self.tid_a, self.tid_b].iter().all(|t| tracer_of(self.pid, *t) != 0)
    }

    /// How much longer than a round of `median` ms each long round of report `v` was, in
    /// ms, for those longer by more than `over` (the probe lists rounds over 20 ms; a loaded
    /// host has such rounds without a hold now and then).
    pub fn extras_over(v: &serde_json::Value, median: f64, over: f64) -> Vec<f64> {
        v["long"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["ms"].as_f64().unwrap() - median)
            .filter(|e| *e > over)
            .collect()
    }
}

impl Drop for TimedThreads {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
