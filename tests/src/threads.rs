//! Threads as /proc shows them, for the tests of faults that hold threads (sys delay):
//! their state, their tracer, and a process under strace.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::wait_for;

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

/// `strace -o /dev/null sleep 30` through `strace` (a Command for strace, placed where the
/// test wants it), once strace traces its sleep: (strace, the sleep's pid). strace forks a
/// child of its own at start to test ptrace; the sleep is found by its comm.
pub fn strace_sleeping(mut strace: Command) -> (Child, i32) {
    let child = strace
        .args(["-o", "/dev/null", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let spid = child.id() as i32;
    let comm = |p: i32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    let mut sleeper = 0;
    wait_for("strace to trace sleep", Duration::from_secs(5), || {
        let children = std::fs::read_to_string(format!("/proc/{spid}/task/{spid}/children"))
            .unwrap_or_default();
        sleeper = children
            .split_whitespace()
            .map(|p| p.parse().unwrap())
            .find(|p| comm(*p).trim() == "sleep")
            .unwrap_or(0);
        sleeper != 0 && tracer_of(sleeper, sleeper) == spid
    });
    (child, sleeper)
}
