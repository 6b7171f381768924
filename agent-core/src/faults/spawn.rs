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
    os::unix::{ffi::OsStrExt as _, process::CommandExt as _},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Mutex, OnceLock, mpsc},
};

use super::stress::shared::WORKER_FD;

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

/// Writes `data` to the file at `path` with raw syscalls (safe between fork and exec).
fn write_file(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: valid NUL-terminated path; plain syscalls.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = io::Error::last_os_error();
        libc::close(fd);
        if n < 0 {
            return Err(err);
        }
    }
    Ok(())
}

fn fork(spec: Spec) -> io::Result<Child> {
    let procs: Vec<CString> = spec.procs.iter().map(|p| cstr(p)).collect::<io::Result<_>>()?;
    let adj = spec.oom_score_adj.map(|a| a.to_string().into_bytes());
    let agent = std::process::id() as i32;
    let (shm, death) = (spec.shm_fd, spec.death_signal as libc::c_ulong);
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(&spec.args);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: the closure only makes async-signal-safe syscalls on data prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            // A death signal the child handles (not SIGKILL) is blocked from here on: the mask
            // survives exec, so the signal waits as pending until the child is ready for it
            // rather than killing it during its start-up.
            if death != libc::SIGKILL as libc::c_ulong {
                let mut set: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut set);
                libc::sigaddset(&mut set, death as libc::c_int);
                libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, death, 0, 0, 0) < 0 || libc::getppid() != agent {
                return Err(io::Error::other("the agent is gone"));
            }
            // "0" moves the writing process itself.
            for p in &procs {
                write_file(p, b"0")?;
            }
            if let Some(adj) = &adj {
                write_file(c"/proc/self/oom_score_adj", adj)?;
            }
            // dup2 onto itself keeps close-on-exec: clear it then.
            let placed = match shm {
                None => 0,
                Some(fd) if fd == WORKER_FD => libc::fcntl(fd, libc::F_SETFD, 0),
                Some(fd) => libc::dup2(fd, WORKER_FD),
            };
            if placed < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
}
