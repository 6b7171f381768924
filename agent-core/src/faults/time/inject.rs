//! Patching one process, all of whose threads the caller holds stopped under ptrace: an
//! 8 KiB shared mapping is made in it by two system calls run on one of its threads (mmap,
//! then mprotect of the data page), filled through /proc/PID/map_files, and the vDSO's clock
//! entries are overwritten with jumps to it. Undoing writes the entries' bytes back; the
//! mapping stays (a thread may be inside it), inert once its lease is over.

use std::{fs::File, io, os::unix::fs::FileExt as _};

use super::{
    stub::{self, Entry, MAPPING_LEN, TRAMPOLINE_AT},
    vdso::{self, PATCH_LEN, VdsoError},
};
use crate::kernel::ptrace::{self, regs, set_regs, wait_within};

#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    #[error("process {0} has no vDSO")]
    NoVdso(i32),
    #[error("reading process {pid}'s {what}")]
    Read {
        pid: i32,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Vdso(#[from] VdsoError),
    #[error("process {pid}: {what}")]
    Ptrace {
        pid: i32,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("process {pid}: {call} in the process failed with errno {errno}")]
    RemoteCall { pid: i32, call: &'static str, errno: i64 },
    #[error("process {0}: its clock functions are already patched by something else")]
    PatchedElsewhere(i32),
    #[error("process {0}: a thread is inside a clock function's first bytes; try again")]
    Busy(i32),
    /// The thread did not come back from the single step (frozen meanwhile): it runs the
    /// call when thawed and stops again; its registers must be put back then (`saved`).
    #[error(
        "process {pid}: thread {tid} did not come back from a single step within {STEP_WAIT:?} (frozen?)"
    )]
    Stuck { pid: i32, tid: i32, saved: Box<SavedRegs> },
}

/// How long a single step may take (a thread frozen meanwhile takes it only when thawed).
pub const STEP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// A thread's registers from before a remote call.
#[derive(Clone, Copy)]
pub struct SavedRegs(pub libc::user_regs_struct);

impl std::fmt::Debug for SavedRegs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SavedRegs {{ rip: {:#x} }}", self.0.rip)
    }
}

/// One single step of stopped thread `tid`: its wait status, None if it did not come back
/// within STEP_WAIT.
fn step(pid: i32, tid: i32) -> Result<Option<i32>, InjectError> {
    ptrace::ptrace(libc::PTRACE_SINGLESTEP, tid, 0, 0).map_err(ptrace_err(pid, "single step"))?;
    wait_within(tid, STEP_WAIT).map_err(ptrace_err(pid, "waiting for the step"))
}

fn ptrace_err(pid: i32, what: &'static str) -> impl FnOnce(io::Error) -> InjectError {
    move |source| InjectError::Ptrace { pid, what, source }
}

/// Where a process's vDSO is mapped.
fn vdso_range(pid: i32) -> Result<(u64, u64), InjectError> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map_err(|source| InjectError::Read { pid, what: "maps", source })?;
    let line = maps.lines().find(|l| l.ends_with("[vdso]")).ok_or(InjectError::NoVdso(pid))?;
    let range = line.split_whitespace().next().unwrap_or_default();
    let (a, b) = range.split_once('-').ok_or(InjectError::NoVdso(pid))?;
    let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| InjectError::NoVdso(pid));
    Ok((hex(a)?, hex(b)?))
}

/// A patched process: what undoing needs.
#[derive(Debug)]
pub struct Patched {
    pub pid: i32,
    /// The mapping's address in the process.
    pub base: u64,
    /// Each patched entry's address and the bytes the patch replaced.
    pub originals: Vec<(u64, [u8; PATCH_LEN])>,
    /// The mapping's shared memory, open read-write: the data page is written through it.
    pub shared: File,
}

impl Patched {
    /// Writes one data-page word (stub::DATA_*).
    pub fn set(&self, at: usize, value: u64) -> io::Result<()> {
        self.shared.write_all_at(&value.to_le_bytes(), at as u64)
    }

    /// Whether a read was shifted since the mapping was made.
    pub fn hit(&self) -> bool {
        let mut b = [0u8; 8];
        self.shared.read_exact_at(&mut b, stub::DATA_HIT as u64).is_ok() && b != [0; 8]
    }
}

/// Touches the data page of the mapping at `base` in process `pid` through /proc/PID/mem,
/// which faults it into the process's page tables (a shared mapping is not copied at fork,
/// nor present before the process's first touch); best effort.
pub fn fault_in(pid: i32, base: u64) {
    let mut b = [0u8; 8];
    if let Ok(mem) = File::open(format!("/proc/{pid}/mem")) {
        let _ = mem.read_exact_at(&mut b, base + stub::DATA_MAGIC as u64);
    }
}

/// Runs system call `nr` on the stopped thread `tid` (at a `syscall` instruction of the
/// vDSO, one single step), with its registers put back afterwards.
fn remote_call(
    pid: i32,
    tid: i32,
    at: u64,
    (call, nr): (&'static str, u64),
    args: [u64; 6],
) -> Result<u64, InjectError> {
    let saved = regs(tid).map_err(ptrace_err(pid, "reading registers"))?;
    let mut r = saved;
    r.rax = nr;
    (r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9) =
        (args[0], args[1], args[2], args[3], args[4], args[5]);
    r.rip = at;
    // Not a system call being restarted: the kernel leaves these registers alone on resume.
    r.orig_rax = u64::MAX;
    set_regs(tid, &r).map_err(ptrace_err(pid, "setting registers"))?;
    // A signal that arrives first (SIGCONT of a process continued a moment ago) stops the
    // thread before the step: it is sent again once the thread is back as it was.
    let mut deferred = Vec::new();
    let after = loop {
        let status = match step(pid, tid) {
            Ok(Some(s)) => s,
            Ok(None) => {
                return Err(InjectError::Stuck { pid, tid, saved: Box::new(SavedRegs(saved)) });
            }
            Err(e) => break Err(e),
        };
        let (sig, event) = (libc::WSTOPSIG(status), status >> 16);
        if libc::WIFSTOPPED(status) && sig == libc::SIGTRAP && event == 0 {
            break regs(tid).map_err(ptrace_err(pid, "reading the result"));
        }
        if libc::WIFSTOPPED(status) && event == libc::PTRACE_EVENT_STOP && deferred.len() < 8 {
            // A ptrace notification (a SIGCONT sent to the process): the step is still to come.
            deferred.push(0);
            continue;
        }
        if !libc::WIFSTOPPED(status) || event != 0 || deferred.len() >= 8 {
            break Err(InjectError::Ptrace {
                pid,
                what: "the step ended otherwise than with SIGTRAP",
                source: io::Error::other(format!("wait status {status:#x}")),
            });
        }
        deferred.push(sig);
    };
    // Whatever happened: the thread resumes where it was (a system call it was in restarts).
    set_regs(tid, &saved).map_err(ptrace_err(pid, "restoring registers"))?;
    for sig in deferred.into_iter().filter(|&s| s != 0) {
        // SAFETY: tgkill with integer arguments, to a thread of the process we trace.
        unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, sig) };
    }
    let ret = after?.rax as i64;
    if (-4095..0).contains(&ret) {
        return Err(InjectError::RemoteCall { pid, call, errno: -ret });
    }
    Ok(ret as u64)
}

/// Takes a thread stopped inside a system call (at PTRACE_EVENT_EXEC: the call's result is
/// not stored yet, and would overwrite what a remote call puts in rax) to the call's exit:
/// one single step stops it there, before any instruction of the program runs.
pub fn leave_syscall(pid: i32, tid: i32) -> Result<(), InjectError> {
    let status = step(pid, tid)?.ok_or_else(|| InjectError::Ptrace {
        pid,
        what: "leaving the system call: no stop after the single step (frozen?)",
        source: io::Error::from(io::ErrorKind::TimedOut),
    })?;
    if libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGTRAP {
        Ok(())
    } else {
        Err(InjectError::Ptrace {
            pid,
            what: "leaving the system call ended otherwise than with SIGTRAP",
            source: io::Error::other(format!("wait status {status:#x}")),
        })
    }
}

/// Patches process `pid`, whose threads `tids` are all stopped under ptrace, so that its
/// realtime clocks read `offset_ns` off until true time `expiry_ns`. `shared_inode`: the
/// inode of a mapping this skewer already made (in a parent before a fork): a process whose
/// entries jump into it is already covered.
pub fn install(
    pid: i32,
    tids: &[i32],
    offset_ns: i64,
    expiry_ns: i64,
    mask: u64,
) -> Result<Patched, InjectError> {
    let (start, end) = vdso_range(pid)?;
    let mem = File::open(format!("/proc/{pid}/mem")).map_err(|source| InjectError::Read {
        pid,
        what: "memory",
        source,
    })?;
    let mut image = vec![0u8; (end - start) as usize];
    mem.read_exact_at(&mut image, start).map_err(|source| InjectError::Read {
        pid,
        what: "vDSO",
        source,
    })?;
    let entries = vdso::entries(&image)?;
    if Entry::ALL.iter().any(|&e| image[entries.offset(e) as usize..].starts_with(&[0x48, 0xb8])) {
        // Patched already: by a skewer that was killed (its lease over), or by someone else.
        return adopt(pid, &mem, &image, start, &entries, (offset_ns, expiry_ns, mask));
    }
    let cg = entries.offset(Entry::ClockGettime) as usize;
    let moved = vdso::prologue_len(&image[cg..], PATCH_LEN)?;
    let syscall_at = image
        .windows(2)
        .position(|w| w == [0x0f, 0x05])
        .map(|p| start + p as u64)
        .ok_or(VdsoError::Malformed("no syscall instruction"))?;
    busy(pid, tids, start, &entries, moved)?;
    let tid = tids.first().copied().unwrap_or(pid);
    let prot_rx = (libc::PROT_READ | libc::PROT_EXEC) as u64;
    let flags = (libc::MAP_SHARED | libc::MAP_ANONYMOUS) as u64;
    let base = remote_call(
        pid,
        tid,
        syscall_at,
        ("mmap", libc::SYS_mmap as u64),
        [0, MAPPING_LEN as u64, prot_rx, flags, u64::MAX, 0],
    )?;
    let prot_rw = (libc::PROT_READ | libc::PROT_WRITE) as u64;
    remote_call(
        pid,
        tid,
        syscall_at,
        ("mprotect", libc::SYS_mprotect as u64),
        [base + 4096, 4096, prot_rw, 0, 0, 0],
    )?;
    let shared = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/map_files/{base:x}-{:x}", base + 4096))
        .map_err(|source| InjectError::Read { pid, what: "injected mapping", source })?;
    let write = |at: u64, bytes: &[u8]| {
        shared.write_all_at(bytes, at).map_err(|source| InjectError::Read {
            pid,
            what: "injected mapping (writing)",
            source,
        })
    };
    write(0, stub::code())?;
    let back = start + cg as u64 + moved as u64;
    write(TRAMPOLINE_AT as u64, &vdso::trampoline(&image[cg..cg + moved], back))?;
    for (at, v) in stub::data(offset_ns, expiry_ns, mask) {
        write(at as u64, &v.to_le_bytes())?;
    }
    let mut originals = Vec::new();
    for (i, e) in Entry::ALL.into_iter().enumerate() {
        let at = start + entries.offset(e);
        let off = entries.offset(e) as usize;
        let mut orig = [0u8; PATCH_LEN];
        orig.copy_from_slice(&image[off..off + PATCH_LEN]);
        write((stub::DATA_ORIGINALS + 16 * i) as u64, &orig)?;
        ptrace::write_bytes(tid, at, &vdso::patch(base + e.offset() as u64))
            .map_err(ptrace_err(pid, "patching the vDSO"))?;
        originals.push((at, orig));
    }
    Ok(Patched { pid, base, originals, shared })
}

/// Whether `pid`'s vDSO holds a skewer's jump (cheap: its maps and one vDSO read).
pub fn left_behind(pid: i32) -> bool {
    let Ok((start, end)) = vdso_range(pid) else { return false };
    let Ok(mem) = File::open(format!("/proc/{pid}/mem")) else { return false };
    let mut image = vec![0u8; (end - start) as usize];
    mem.read_exact_at(&mut image, start).is_ok()
        && image
            .windows(PATCH_LEN)
            .any(|w| w.starts_with(&[0x48, 0xb8]) && w.ends_with(&[0xff, 0xe0]))
}

/// Takes over the mapping a killed skewer left in `pid` (its entries jump into it and its
/// data page has our magic): new offset and lease, and the entries' own bytes from the page.
fn adopt(
    pid: i32,
    mem: &File,
    image: &[u8],
    start: u64,
    entries: &vdso::Entries,
    (offset_ns, expiry_ns, mask): (i64, i64, u64),
) -> Result<Patched, InjectError> {
    let mut bases = Entry::ALL.iter().map(|&e| {
        let off = entries.offset(e) as usize;
        let jump = image.get(off..off + PATCH_LEN).filter(|p| p.starts_with(&[0x48, 0xb8]))?;
        let to = u64::from_le_bytes(jump[2..10].try_into().ok()?);
        to.checked_sub(e.offset() as u64)
    });
    let base = bases.next().flatten().ok_or(InjectError::PatchedElsewhere(pid))?;
    if !bases.all(|b| b == Some(base)) {
        return Err(InjectError::PatchedElsewhere(pid));
    }
    let mut magic = [0u8; 8];
    mem.read_exact_at(&mut magic, base + stub::DATA_MAGIC as u64)
        .map_err(|_| InjectError::PatchedElsewhere(pid))?;
    if u64::from_le_bytes(magic) != stub::MAGIC {
        return Err(InjectError::PatchedElsewhere(pid));
    }
    let shared = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/{pid}/map_files/{base:x}-{:x}", base + 4096))
        .map_err(|source| InjectError::Read { pid, what: "the mapping left behind", source })?;
    let mut originals = Vec::new();
    for (i, e) in Entry::ALL.into_iter().enumerate() {
        let mut orig = [0u8; PATCH_LEN];
        shared
            .read_exact_at(&mut orig, (stub::DATA_ORIGINALS + 16 * i) as u64)
            .map_err(|source| InjectError::Read { pid, what: "the mapping left behind", source })?;
        originals.push((start + entries.offset(e), orig));
    }
    let p = Patched { pid, base, originals, shared };
    for (at, v) in stub::data(offset_ns, expiry_ns, mask) {
        p.set(at, v).map_err(|source| InjectError::Read {
            pid,
            what: "the mapping left behind",
            source,
        })?;
    }
    Ok(p)
}

/// Fails with `Busy` if a thread stands inside the bytes a patch replaces (or, for
/// clock_gettime, inside the instructions moved to the trampoline).
fn busy(
    pid: i32,
    tids: &[i32],
    start: u64,
    entries: &vdso::Entries,
    moved: usize,
) -> Result<(), InjectError> {
    for &t in tids {
        let rip = regs(t).map_err(ptrace_err(pid, "reading registers"))?.rip;
        for e in Entry::ALL {
            let at = start + entries.offset(e);
            let len = if e == Entry::ClockGettime { moved } else { PATCH_LEN } as u64;
            if rip > at && rip < at + len {
                return Err(InjectError::Busy(pid));
            }
        }
    }
    Ok(())
}

/// Writes the entries' own bytes back (threads stopped, as for `install`). The mapping
/// stays: its lease should be over first (`Patched::set(DATA_EXPIRY, 0)`).
pub fn remove(p: &Patched, tids: &[i32]) -> Result<(), InjectError> {
    let pid = p.pid;
    for &t in tids {
        let rip = regs(t).map_err(ptrace_err(pid, "reading registers"))?.rip;
        if p.originals.iter().any(|(at, _)| rip > *at && rip < at + PATCH_LEN as u64) {
            return Err(InjectError::Busy(pid));
        }
    }
    let tid = tids.first().copied().unwrap_or(pid);
    for (at, orig) in &p.originals {
        ptrace::write_bytes(tid, *at, orig).map_err(ptrace_err(pid, "restoring the vDSO"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead as _, BufReader, Write as _};

    use super::*;
    use crate::kernel::ptrace::wait;

    fn now_ns() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as i64
    }

    /// Patches a running Python (glibc, vDSO clock) and reads its clock through it.
    #[test]
    fn a_patched_process_reads_the_offset_until_the_lease_ends() {
        if unsafe { libc::geteuid() } != 0 {
            panic!("needs root (ptrace of a child is enough, map_files needs CAP_SYS_ADMIN)");
        }
        let mut child = std::process::Command::new("python3")
            .args(["-u", "-c", "import sys,time\nfor l in sys.stdin: print(time.time_ns(), time.time(), flush=True)"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let mut input = child.stdin.take().unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut read = || {
            input.write_all(b"\n").unwrap();
            let mut l = String::new();
            out.read_line(&mut l).unwrap();
            l.split_whitespace().next().unwrap().parse::<i64>().unwrap()
        };
        let before = read() - now_ns();
        assert!(before.abs() < 50_000_000, "{before}");
        let tids = ptrace::tasks(pid).unwrap();
        for &t in &tids {
            ptrace::ptrace(libc::PTRACE_SEIZE, t, 0, 0).unwrap();
            ptrace::ptrace(libc::PTRACE_INTERRUPT, t, 0, 0).unwrap();
            wait(t).unwrap();
        }
        let offset = -600_000_000_000i64;
        let p = install(pid, &tids, offset, now_ns() + 20_000_000_000, stub::REALTIME_MASK);
        for &t in &tids {
            ptrace::ptrace(libc::PTRACE_DETACH, t, 0, 0).unwrap();
        }
        let p = p.unwrap();
        let shifted = read() - now_ns();
        assert!((shifted - offset).abs() < 50_000_000, "read {shifted} ns off, not {offset}");
        assert!(p.hit());
        p.set(stub::DATA_EXPIRY, 0).unwrap();
        let back = read() - now_ns();
        assert!(back.abs() < 50_000_000, "after the lease: {back}");
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
