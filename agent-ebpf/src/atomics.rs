//! Atomic counters shared by all CPUs. The bpfel target has no compare-and-swap, so core's
//! atomics lack read-modify-write; these emit the kernel's atomic instructions directly.

/// `*p += v` atomically (BPF_XADD; every kernel).
#[inline(always)]
pub fn add(p: *mut u64, v: u64) {
    // SAFETY: p points into a map value; the instruction is atomic.
    unsafe { core::arch::asm!("lock *(u64 *)({0} + 0) += {1}", in(reg) p, in(reg) v) };
}

/// `*p += v` atomically, returning the old value (BPF_ATOMIC | BPF_FETCH; kernel 5.12+).
#[inline(always)]
pub fn fetch_add(p: *mut u64, v: u64) -> u64 {
    let mut r = v;
    // SAFETY: as above.
    unsafe {
        core::arch::asm!("{0} = atomic_fetch_add((u64 *)({1} + 0), {0})", inout(reg) r, in(reg) p)
    };
    r
}
