//! Helpers shared by the programs that judge a task's system calls (sys.rs: errno faults,
//! delay.rs: latency faults, time.rs: raw clock calls): `.rodata` reads, exact counters, the
//! seeded generator, the ids of a forked child, and where a call's saved registers are.

use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_probe_read_kernel};

use crate::maps::{FL_SYS_HAS_FETCH, FL_SYS_TASK_PID, FL_SYS_TASK_TGID};

/// offsetof(struct pt_regs, ..) on x86_64: a system call's first, second and fifth arguments,
/// and at its exit its number (orig_ax).
pub const PT_REGS_DI: usize = 112;
pub const PT_REGS_SI: usize = 104;
pub const PT_REGS_R8: usize = 72;
pub const PT_REGS_ORIG_AX: usize = 120;

#[inline(always)]
pub fn rodata(v: &u32) -> u32 {
    // SAFETY: a frozen .rodata value; volatile so the compiler keeps the load.
    unsafe { core::ptr::read_volatile(v) }
}

/// The next value of a shared counter: exact across CPUs where the kernel has atomic
/// fetch-and-add (FL_SYS_HAS_FETCH), else a plain increment (two CPUs may then read the
/// same value).
#[inline(always)]
pub fn next(p: *mut u64) -> u64 {
    if rodata(&FL_SYS_HAS_FETCH) != 0 {
        crate::atomics::fetch_add(p, 1) + 1
    } else {
        // SAFETY: p points into a map value.
        unsafe {
            *p += 1;
            *p
        }
    }
}

/// A uniform 32-bit draw: from the rule's own generator at `rng` when `seeded`, else the
/// kernel's.
#[inline(always)]
pub fn draw(seeded: bool, rng: *mut u64) -> u64 {
    if seeded {
        // SAFETY: rng points into a map value; a lost update only repeats a draw.
        unsafe {
            let mut x = *rng;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            *rng = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32
        }
    } else {
        // SAFETY: helper without arguments.
        u64::from(unsafe { bpf_get_prandom_u32() })
    }
}

/// The (pid, tgid) of a task, read at offsets from the kernel's BTF (FL_SYS_TASK_*).
#[inline(always)]
pub fn task_ids(task: *const u8) -> Option<(u32, u32)> {
    // SAFETY: reading two ints of the task at offsets from BTF.
    let (pid, tgid) = unsafe {
        (
            bpf_probe_read_kernel(task.add(rodata(&FL_SYS_TASK_PID) as usize).cast::<u32>()),
            bpf_probe_read_kernel(task.add(rodata(&FL_SYS_TASK_TGID) as usize).cast::<u32>()),
        )
    };
    Some((pid.ok()?, tgid.ok()?))
}

/// The clock, read at the first need only: a task or packet that meets no rule never pays
/// for it, one that meets several pays once.
#[derive(Default)]
pub struct LazyNow(u64);

impl LazyNow {
    #[inline(always)]
    pub fn get(&mut self) -> u64 {
        if self.0 == 0 {
            // SAFETY: helper without arguments.
            self.0 = unsafe { aya_ebpf::helpers::bpf_ktime_get_ns() };
        }
        self.0
    }
}
