//! Time skew through raw system calls: `clock_gettime` and `gettimeofday` entered with
//! `syscall` (not through the vDSO, which the injected code covers) by a process the skewer
//! patched have their result shifted at the call's exit, under the rule the injected code
//! follows (offset, clock mask and lease from the process's data page, so that both paths
//! start and stop together). fexit on each call's function where the kernel allows it (only
//! those calls pay a map lookup), sleepable (the data page is read with a fault allowed) or
//! plain (bpf_probe_read_user: a data page not faulted in reads as absent; the skewer faults
//! it in); else the sys_exit tracepoint (tp_btf, else raw_tp), which every system call on the
//! node passes while it is attached. User-space owner: agent-core/src/faults/time/datapath.rs.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_kernel,
        generated::{bpf_copy_from_user, bpf_probe_read_user, bpf_probe_write_user},
    },
    macros::{btf_tracepoint, fexit, raw_tracepoint},
    programs::{BtfTracePointContext, FExitContext, RawTracePointContext},
};
use faultline_common::time::{DATA_HIT, DATA_MAGIC, MAGIC, TimeData, shifted};

use crate::{
    calls::{PT_REGS_DI, PT_REGS_ORIG_AX, PT_REGS_SI},
    maps::FL_TIME_PIDS,
};

/// x86_64 system call numbers.
const NR_GETTIMEOFDAY: u64 = 96;
const NR_CLOCK_GETTIME: u64 = 228;
const NSEC: u64 = 1_000_000_000;
/// CLOCK_REALTIME: gettimeofday reads it.
const REALTIME: u64 = 0;

/// How a program reads user memory: copy (may fault; sleepable programs) or probe (not).
#[derive(Clone, Copy)]
enum Read {
    Copy,
    Probe,
}

impl Read {
    #[inline(always)]
    fn get<T: Copy + Default>(self, at: u64) -> Option<T> {
        let mut v = T::default();
        let dst = (&raw mut v).cast();
        let len = core::mem::size_of::<T>() as u32;
        // SAFETY: reading user memory of the current task into a local of that size.
        let rc = unsafe {
            match self {
                Read::Copy => bpf_copy_from_user(dst, len, at as *const _),
                Read::Probe => bpf_probe_read_user(dst, len, at as *const _),
            }
        };
        (rc == 0).then_some(v)
    }
}

/// The call's saved registers: a typed kernel pointer (fexit, tp_btf: read directly) or not
/// (raw_tp: read through the probe helper).
#[derive(Clone, Copy)]
enum Regs {
    Btf(*const u8),
    Raw(*const u8),
}

impl Regs {
    #[inline(always)]
    fn get(self, off: usize) -> u64 {
        match self {
            // SAFETY: the verifier checks the load against struct pt_regs in the kernel's BTF.
            Regs::Btf(r) => unsafe { core::ptr::read_volatile(r.add(off).cast::<u64>()) },
            // SAFETY: reading one saved register of the current task.
            Regs::Raw(r) => unsafe { bpf_probe_read_kernel(r.add(off).cast::<u64>()) }.unwrap_or(0),
        }
    }
}

/// The calling process's data page (its address and head) if the skewer patched it, the
/// mapping is ours and `clock` is one it shifts.
#[inline(always)]
fn page(read: Read, clock: u64) -> Option<(u64, TimeData)> {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: only read.
    let base = *unsafe { FL_TIME_PIDS.get(tgid) }?;
    let data: TimeData = read.get(base + DATA_MAGIC as u64)?;
    if data.magic != MAGIC || clock > 63 || data.mask & (1 << clock) == 0 {
        return None;
    }
    Some((base, data))
}

/// Writes `v` to user memory at `at`.
#[inline(always)]
fn put<T>(at: u64, v: &T) {
    // SAFETY: writing a local of that size into the current task's memory (a buffer the call
    // just filled, or the data page's hit word).
    unsafe {
        bpf_probe_write_user(at as *mut _, (v as *const T).cast(), core::mem::size_of::<T>() as u32)
    };
}

/// The first shifted read of the process: its hit word (as the injected code sets it).
#[inline(always)]
fn mark_hit(base: u64, data: &TimeData) {
    if data.hit == 0 {
        put(base + DATA_HIT as u64, &1u64);
    }
}

/// clock_gettime(clockid_t clk, struct timespec *ts) returned `ret`.
#[inline(always)]
fn clock_gettime(read: Read, regs: Regs, ret: i64) {
    if ret != 0 {
        return;
    }
    let (clk, tp) = (regs.get(PT_REGS_DI) & 0xffff_ffff, regs.get(PT_REGS_SI));
    let Some((base, data)) = page(read, clk) else { return };
    let Some(ts) = read.get::<[i64; 2]>(tp) else { return };
    let Some(ns) = shifted(&data, ts[0].wrapping_mul(NSEC as i64).wrapping_add(ts[1])) else {
        return;
    };
    put(tp, &[(ns / NSEC) as i64, (ns % NSEC) as i64]);
    mark_hit(base, &data);
}

/// gettimeofday(struct timeval *tv, struct timezone *tz) returned `ret`.
#[inline(always)]
fn gettimeofday(read: Read, regs: Regs, ret: i64) {
    let tv = regs.get(PT_REGS_DI);
    if ret != 0 || tv == 0 {
        return;
    }
    let Some((base, data)) = page(read, REALTIME) else { return };
    let Some(t) = read.get::<[i64; 2]>(tv) else { return };
    let true_ns = t[0].wrapping_mul(NSEC as i64).wrapping_add(t[1].wrapping_mul(1000));
    let Some(ns) = shifted(&data, true_ns) else { return };
    put(tv, &[(ns / NSEC) as i64, (ns % NSEC / 1000) as i64]);
    mark_hit(base, &data);
}

#[fexit(function = "__x64_sys_clock_gettime", sleepable)]
pub fn fl_time_clock_gettime_s(ctx: FExitContext) -> i32 {
    clock_gettime(Read::Copy, Regs::Btf(ctx.arg(0)), ctx.arg(1));
    0
}

#[fexit(function = "__x64_sys_clock_gettime")]
pub fn fl_time_clock_gettime(ctx: FExitContext) -> i32 {
    clock_gettime(Read::Probe, Regs::Btf(ctx.arg(0)), ctx.arg(1));
    0
}

#[fexit(function = "__x64_sys_gettimeofday", sleepable)]
pub fn fl_time_gettimeofday_s(ctx: FExitContext) -> i32 {
    gettimeofday(Read::Copy, Regs::Btf(ctx.arg(0)), ctx.arg(1));
    0
}

#[fexit(function = "__x64_sys_gettimeofday")]
pub fn fl_time_gettimeofday(ctx: FExitContext) -> i32 {
    gettimeofday(Read::Probe, Regs::Btf(ctx.arg(0)), ctx.arg(1));
    0
}

/// Any system call's exit: only the two clock calls go further.
#[inline(always)]
fn on_sys_exit(regs: Regs, ret: i64) {
    match regs.get(PT_REGS_ORIG_AX) {
        NR_CLOCK_GETTIME => clock_gettime(Read::Probe, regs, ret),
        NR_GETTIMEOFDAY => gettimeofday(Read::Probe, regs, ret),
        _ => {}
    }
}

#[btf_tracepoint(function = "sys_exit")]
pub fn fl_time_sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    on_sys_exit(Regs::Btf(ctx.arg(0)), ctx.arg(1));
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn fl_time_sys_exit_raw(ctx: RawTracePointContext) -> i32 {
    on_sys_exit(Regs::Raw(ctx.arg(0)), ctx.arg(1));
    0
}
