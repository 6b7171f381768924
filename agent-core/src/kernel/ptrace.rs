//! ptrace(2) and the /proc fields its users read, written once for the tracers of the
//! syscall-latency (faults/delay/holder.rs) and time-skew (faults/time) faults.

use std::io;

/// ptrace(2) through the raw system call: glibc declares the request unsigned and musl signed
/// (the static guest build), and the raw PEEK requests store the word at `data` instead of
/// returning it (which the libc wrappers would rewrite).
pub fn ptrace(req: impl Into<i64>, tid: i32, addr: usize, data: usize) -> io::Result<libc::c_long> {
    // SAFETY: requests whose addr/data are integers, or pointers to live locals of the type
    // the request reads or writes (GETEVENTMSG, GETSIGINFO, GETREGS, SETREGS, PEEKDATA).
    let r = unsafe { libc::syscall(libc::SYS_ptrace, req.into(), tid, addr, data) };
    if r < 0 { Err(io::Error::last_os_error()) } else { Ok(r) }
}

/// The registers of a stopped tracee.
pub fn regs(tid: i32) -> io::Result<libc::user_regs_struct> {
    // SAFETY: user_regs_struct is plain integers; all-zero is a valid value.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    ptrace(libc::PTRACE_GETREGS, tid, 0, &raw mut r as usize)?;
    Ok(r)
}

pub fn set_regs(tid: i32, r: &libc::user_regs_struct) -> io::Result<()> {
    ptrace(libc::PTRACE_SETREGS, tid, 0, r as *const _ as usize).map(drop)
}

/// One word of a stopped tracee's memory (any mapping, read-only ones included).
pub fn peek(tid: i32, addr: u64) -> io::Result<u64> {
    let mut word = 0u64;
    ptrace(libc::PTRACE_PEEKDATA, tid, addr as usize, &raw mut word as usize)?;
    Ok(word)
}

/// Writes one word (copy-on-write for read-only mappings such as the vDSO's text).
pub fn poke(tid: i32, addr: u64, word: u64) -> io::Result<()> {
    ptrace(libc::PTRACE_POKEDATA, tid, addr as usize, word as usize).map(drop)
}

/// Writes `bytes` at `addr`, reading the words they share with their neighbours first.
pub fn write_bytes(tid: i32, addr: u64, bytes: &[u8]) -> io::Result<()> {
    let start = addr & !7;
    let end = (addr + bytes.len() as u64).div_ceil(8) * 8;
    let mut at = start;
    while at < end {
        let mut word = peek(tid, at)?.to_le_bytes();
        for (i, b) in word.iter_mut().enumerate() {
            let a = at + i as u64;
            if a >= addr && a < addr + bytes.len() as u64 {
                *b = bytes[(a - addr) as usize];
            }
        }
        poke(tid, at, u64::from_le_bytes(word))?;
        at += 8;
    }
    Ok(())
}

/// Why ptrace cannot be used here at all, if it cannot (Yama scope 3).
pub fn forbidden() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .filter(|s| s.trim() == "3")
        .map(|_| "kernel.yama.ptrace_scope=3 forbids ptrace (until reboot)".to_string())
}

/// A numeric field of /proc/TID/status (`TracerPid`, `Tgid`, ...).
pub fn status_field(tid: i32, field: &str) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    text.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().parse().ok())
}

/// The threads of a process.
pub fn tasks(pid: i32) -> Option<Vec<i32>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    Some(dir.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
}

pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map_or_else(|_| "?".into(), |c| c.trim().to_string())
}

/// A zombie (an exited leader waiting for its threads) cannot be stopped or detached.
pub fn is_zombie(tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{tid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X')))
    })
}

/// waitpid(tid, __WALL) for at most `within`: the raw status of the tracee's next stop or
/// exit; None if it reported none in time (a task in a frozen cgroup does not stop).
pub fn wait_within(tid: i32, within: std::time::Duration) -> io::Result<Option<i32>> {
    let t0 = std::time::Instant::now();
    let mut nap = std::time::Duration::from_micros(50);
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status to a live local.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL | libc::WNOHANG) };
        if r > 0 {
            return Ok(Some(status));
        }
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if t0.elapsed() >= within {
            return Ok(None);
        }
        std::thread::sleep(nap);
        nap = (nap * 2).min(std::time::Duration::from_millis(5));
    }
}

/// waitpid(tid, __WALL): the raw status of the tracee's next stop or exit.
pub fn wait(tid: i32) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid writes the status to a live local.
        let r = unsafe { libc::waitpid(tid, &mut status, libc::__WALL) };
        if r >= 0 {
            return Ok(status);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}
