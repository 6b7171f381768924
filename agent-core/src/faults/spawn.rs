//! Starting helper children of the agent (`faultline __stress-worker ...`, `faultline
//! __thaw-guard ...`): moved into the target's cgroups before exec (so every page and cycle a
//! stress worker uses is charged there), with PR_SET_PDEATHSIG so they learn of the agent's
//! death at once.
//!
//! PDEATHSIG fires when the *thread* that forked exits, not the process, so every worker is
//! forked by one thread that lives as long as the agent.

use std::{
    ffi::CString,
    io,
    os::{
        fd::{AsRawFd as _, BorrowedFd, IntoRawFd as _, OwnedFd, RawFd},
        unix::{ffi::OsStrExt as _, process::CommandExt as _},
    },
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
};

use nix::{
    fcntl::{FcntlArg, FdFlag, OFlag, fcntl, open},
    sys::{
        prctl::set_pdeathsig,
        signal::{SigSet, SigmaskHow, Signal, sigprocmask},
        stat::Mode,
    },
    unistd::{Pid, dup2_raw, getppid, write},
};

use super::stress::shared::WORKER_FD;

/// argv[0] of every helper child.
pub const ARGV0: &str = "faultline";

/// The environment variable that carries a helper's agent pid.
pub const AGENT_ENV: &str = "FAULTLINE_AGENT_PID";

/// The first thing every helper child does (agent/src/main.rs, before its subcommand):
/// started through /proc/self/exe, it would be `exe` in ps and top and in the refusals that
/// name a process's tracer ("traced by 1234 (exe)"), so it takes the name users know. Only
/// the name is at stake: a failure is no reason not to run.
pub fn name_child() {
    let _ = nix::sys::prctl::set_name(c"faultline");
}

pub struct Spec {
    /// Arguments after the executable, the hidden subcommand first.
    pub args: Vec<String>,
    /// cgroup.procs files the child writes itself into, in order.
    pub procs: Vec<PathBuf>,
    /// Shared with the child as fd WORKER_FD.
    pub shm_fd: Option<i32>,
    pub oom_score_adj: Option<i32>,
    /// Sent to the child when the agent dies.
    pub death_signal: i32,
    /// The child's stdin (None: /dev/null).
    pub stdin: Option<OwnedFd>,
    /// Descriptors the child inherits at the same numbers (their close-on-exec flag is
    /// cleared in the child only).
    pub keep_fds: Vec<RawFd>,
}

type Request = (Spec, mpsc::Sender<io::Result<Child>>);

fn spawner() -> io::Result<&'static Mutex<mpsc::Sender<Request>>> {
    static SPAWNER: OnceLock<Result<Mutex<mpsc::Sender<Request>>, String>> = OnceLock::new();
    SPAWNER
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            std::thread::Builder::new()
                .name("child-spawner".into())
                .spawn(move || {
                    for (spec, reply) in rx {
                        let _ = reply.send(fork(spec));
                    }
                })
                .map(|_| Mutex::new(tx))
                .map_err(|e| format!("starting the child spawner thread: {e}"))
        })
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))
}

/// Starts one worker; it runs inside the target's cgroups from its first instruction.
pub fn spawn(spec: Spec) -> io::Result<Child> {
    let (tx, rx) = mpsc::channel();
    let gone = || io::Error::other("child spawner thread is gone");
    spawner()?
        .lock()
        .map_err(|_| io::Error::other("child spawner lock poisoned"))?
        .send((spec, tx))
        .map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}

fn cstr(p: &std::path::Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

/// Writes `data` to the file at `path` with plain syscalls and no allocation (safe between
/// fork and exec); the descriptor closes on return.
fn write_file(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    let fd = open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    write(&fd, data)?;
    Ok(())
}

fn fork(spec: Spec) -> io::Result<Child> {
    let procs: Vec<CString> = spec.procs.iter().map(|p| cstr(p)).collect::<io::Result<_>>()?;
    let adj = spec.oom_score_adj.map(|a| a.to_string().into_bytes());
    let agent = Pid::this();
    let shm = spec.shm_fd;
    let death = Signal::try_from(spec.death_signal)?;
    // The agent's own binary, whatever its path, but named as users know it in ps and top
    // (`faultline __stress-worker ...`), not `/proc/self/exe ...`.
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(ARGV0).args(&spec.args);
    // Whose helper it is, for the next agent's start if this one dies (faults/orphans.rs).
    cmd.env(AGENT_ENV, agent.as_raw().to_string());
    cmd.stdin(spec.stdin.map_or_else(Stdio::null, Stdio::from)).stdout(Stdio::null());
    let keep = spec.keep_fds;
    // Runs in the child between fork and exec: only async-signal-safe syscalls (nix's wrappers
    // are thin and do not allocate for a &CStr path) on data prepared before fork.
    let setup = move || -> io::Result<()> {
        // A death signal the child handles (not SIGKILL) is blocked from here on: the mask
        // survives exec, so the signal waits as pending until the child is ready for it
        // rather than killing it during its start-up.
        if death != Signal::SIGKILL {
            let mut set = SigSet::empty();
            set.add(death);
            let _ = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
        }
        if set_pdeathsig(death).is_err() || getppid() != agent {
            return Err(io::Error::other("the agent is gone"));
        }
        // "0" moves the writing process itself.
        for p in &procs {
            write_file(p, b"0")?;
        }
        if let Some(adj) = &adj {
            write_file(c"/proc/self/oom_score_adj", adj)?;
        }
        for fd in &keep {
            // SAFETY: the caller keeps these descriptors open for the whole spawn, so the
            // child's copies are open here too.
            let fd = unsafe { BorrowedFd::borrow_raw(*fd) };
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
        }
        if let Some(fd) = shm {
            // SAFETY: fd is the memfd of the caller's Shared, which stays open for the whole
            // spawn, so the child's copy of it is open here too.
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            if fd.as_raw_fd() == WORKER_FD {
                // dup2 onto itself keeps close-on-exec: clear it then.
                fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
            } else {
                // SAFETY: in the forked child nothing but this closure runs before exec, so no
                // owner of whatever WORKER_FD held sees it replaced (as libc's dup2 would do it
                // too); the copy is left open (into_raw_fd) for the worker to inherit.
                let _ = unsafe { dup2_raw(fd, WORKER_FD) }?.into_raw_fd();
            }
        }
        Ok(())
    };
    // SAFETY: `setup` only makes async-signal-safe syscalls on data prepared before fork
    // (see above), so it is sound in the single-threaded child of a multi-threaded parent.
    unsafe { cmd.pre_exec(setup) };
    cmd.spawn()
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Write as _},
        os::{
            fd::{AsFd as _, AsRawFd as _},
            unix::net::UnixStream,
        },
        time::Duration,
    };

    use super::*;

    fn link(fd: &str) -> String {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map_or_else(|_| "?".into(), |p| p.display().to_string())
    }

    /// The child: this test binary again, running only `spawned_child_side`.
    #[test]
    fn stdin_and_kept_fds_reach_the_child() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let mut child = spawn(Spec {
            args: vec![
                "--exact".into(),
                "faults::spawn::tests::spawned_child_side".into(),
                "--ignored".into(),
            ],
            procs: Vec::new(),
            shm_fd: None,
            oom_score_adj: None,
            death_signal: libc::SIGKILL,
            stdin: Some(theirs.into()),
            keep_fds: vec![w.as_raw_fd()],
        })
        .unwrap();
        ours.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut line = String::new();
        BufReader::new(&ours).read_line(&mut line).unwrap();
        assert!(child.wait().unwrap().success());
        let fds: std::collections::HashMap<&str, &str> =
            line.split_whitespace().filter_map(|e| e.split_once('=')).collect();
        let pipe = link(&w.as_raw_fd().to_string());
        assert_eq!(fds.get(w.as_raw_fd().to_string().as_str()), Some(&pipe.as_str()), "{line}");
        // The read end stayed close-on-exec: not in the child (under that number, anything
        // but the pipe).
        let other = fds.get(r.as_raw_fd().to_string().as_str()).copied().unwrap_or_default();
        assert!(!other.starts_with("pipe:"), "{line}");
    }

    /// Reports its open descriptors on stdin when stdin is a socket (spawned by the test
    /// above); does nothing otherwise.
    #[test]
    #[ignore = "the child side of stdin_and_kept_fds_reach_the_child"]
    fn spawned_child_side() {
        if !link("0").starts_with("socket:") {
            return;
        }
        let names: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        let report: Vec<String> = names.iter().map(|n| format!("{n}={}", link(n))).collect();
        let stdin = std::io::stdin().as_fd().try_clone_to_owned().unwrap();
        let mut out = std::fs::File::from(stdin);
        out.write_all(format!("{}\n", report.join(" ")).as_bytes()).unwrap();
    }
}
