//! System-call latency (`sys delay`): at the exit of every system call (tp_btf on sys_exit,
//! or the same code as a raw tracepoint where tp_btf is refused) the program picks the calls
//! of seized threads that a rule delays, hands each to the tracer in FL_DELAY_ARMED and
//! sends the thread the marker signal; the tracer holds the thread at the signal's stop.
//! A task is targeted by its cgroup (FL_DELAY_CGROUPS, by ancestor level) or its process
//! (FL_DELAY_PIDS, by tgid). User-space owner: agent-core/src/faults/delay.

use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_probe_read_kernel,
        bpf_send_signal_thread,
    },
    macros::{btf_tracepoint, fexit, raw_tracepoint},
    programs::{BtfTracePointContext, FExitContext, RawTracePointContext},
};
use faultline_common::delay::{
    DELAY_F_NORMAL, DELAY_F_PATH, DELAY_F_SEEDED, DELAY_MAX_SYSCALL, DELAY_SIGNAL, DelayArm,
    DelayConfig, DelayRule, DelaySlots, MAX_DELAY_RULES_PER_TARGET, PATH_FD_ARG0, PATH_FD_ARG4,
    PATH_FD_RET, path_fd,
};

use crate::{
    atomics,
    calls::{self, LazyNow, PT_REGS_DI, PT_REGS_ORIG_AX, PT_REGS_R8, next, rodata},
    dlog::dlog,
    fdpath, levels,
    maps::{
        FL_DELAY_AGENT_TGID, FL_DELAY_ARMED, FL_DELAY_CGROUPS, FL_DELAY_CONFIG, FL_DELAY_PIDS,
        FL_DELAY_RULES, FL_DELAY_SEIZED, FL_DELAY_STATE, FL_DELAY_TASK_BLOCKED,
    },
    normal,
};

/// -ERESTARTSYS .. -ERESTART_RESTARTBLOCK: the call is restarted or interrupted by a real
/// signal; it is judged when it finally completes.
const RESTART_FIRST: i64 = -516;
const RESTART_LAST: i64 = -512;

/// Bit `nr` of a syscall bitmap (`nr` < DELAY_MAX_SYSCALL).
#[inline(always)]
fn has(bits: &[u64; (DELAY_MAX_SYSCALL / 64) as usize], nr: u32) -> bool {
    bits[(nr >> 6) as usize & 7] & (1 << (nr & 63)) != 0
}

/// Whether the current thread blocks the marker signal: it would take the stop at some
/// later, unrelated point, so its calls are never armed.
#[inline(always)]
fn marker_blocked() -> bool {
    let off = rodata(&FL_DELAY_TASK_BLOCKED);
    if off == 0 {
        return false;
    }
    // SAFETY: reading the first word of current->blocked at its offset from BTF.
    let blocked = unsafe {
        let task = bpf_get_current_task() as *const u8;
        bpf_probe_read_kernel(task.add(off as usize).cast::<u64>())
    };
    blocked.is_ok_and(|b| b & (1 << (DELAY_SIGNAL - 1)) != 0)
}

/// Calls `f(slot, rule)` for each live rule on the current task (its process, then its
/// cgroup and ancestors at the levels in use) until `f` gives a result.
#[inline(always)]
fn each_rule<R>(
    cfg: &DelayConfig,
    tgid: u32,
    mut f: impl FnMut(u32, &DelayRule) -> Option<R>,
) -> Option<R> {
    let mut now = LazyNow::default();
    let mut visit = |set: &DelaySlots| -> Option<R> {
        for i in 0..MAX_DELAY_RULES_PER_TARGET {
            if i as u32 >= set.count {
                break;
            }
            let slot = set.slots[i];
            // SAFETY: only read; user space replaces rules atomically.
            let Some(rule) = (unsafe { FL_DELAY_RULES.get(slot) }) else { continue };
            if rule.expires_ns <= now.get() {
                continue;
            }
            if let Some(r) = f(slot, rule) {
                return Some(r);
            }
        }
        None
    };
    if cfg.pids != 0 {
        // SAFETY: only read.
        if let Some(set) = unsafe { FL_DELAY_PIDS.get(tgid) }
            && let Some(r) = visit(set)
        {
            return Some(r);
        }
    }
    levels::find(
        cfg.levels,
        levels::current_ancestor_id_tracing,
        // SAFETY: only read.
        |id| visit(unsafe { FL_DELAY_CGROUPS.get(id) }?),
    )
}

/// Latency plus jitter (uniform in +-jitter, or normal with sigma = jitter), clamped to
/// [0, latency + jitter].
#[inline(always)]
fn draw_delay(rule: &DelayRule, seeded: bool, rng: *mut u64) -> u64 {
    let (lat, jit) = (rule.latency_ns, rule.jitter_ns);
    if jit == 0 {
        return lat;
    }
    let r = calls::draw(seeded, rng);
    let d = if rule.flags & DELAY_F_NORMAL != 0 {
        let q = normal::QUANTILES[(r >> 24) as usize & 0xff] as i64;
        lat as i64 + q * jit as i64 / normal::SCALE
    } else {
        // r / 2^32 of 2 * jitter, in two halves so that jitters of minutes do not overflow.
        let span = 2 * jit;
        let off = (span >> 32) * r + (((span & 0xffff_ffff) * r) >> 32);
        lat as i64 + off as i64 - jit as i64
    };
    let top = (lat + jit) as i64;
    if d < 0 {
        0
    } else if d > top {
        top as u64
    } else {
        d as u64
    }
}

/// One rule against one matching call: the delay if the rule chooses it. `blocked`: the
/// thread blocks the marker, so the call is only seen.
#[inline(always)]
fn judge(slot: u32, rule: &DelayRule, blocked: bool) -> Option<u64> {
    let st = FL_DELAY_STATE.get_ptr_mut(slot)?;
    // SAFETY: st points into a map value; counters are updated atomically.
    let (seen, claimed, rng) = unsafe {
        (
            core::ptr::addr_of_mut!((*st).seen),
            core::ptr::addr_of_mut!((*st).claimed),
            core::ptr::addr_of_mut!((*st).rng),
        )
    };
    let seeded = rule.flags & DELAY_F_SEEDED != 0;
    if blocked {
        atomics::add(seen, 1);
        return None;
    }
    let hit = if rule.every_nth > 0 {
        next(seen).is_multiple_of(rule.every_nth)
    } else {
        atomics::add(seen, 1);
        calls::draw(seeded, rng) < rule.threshold
    };
    if !hit || (rule.max_hits > 0 && next(claimed) > rule.max_hits) {
        return None;
    }
    Some(draw_delay(rule, seeded, rng))
}

/// Hands the call to the tracer and signals the thread; counts it once the signal is sent.
#[inline(always)]
fn arm(tid: u32, slot: u32, nr: u32, delay_ns: u64) {
    let arm = DelayArm { delay_ns, slot, syscall: nr };
    if FL_DELAY_ARMED.insert(tid, arm, 0).is_err() {
        return;
    }
    // SAFETY: helper with a scalar argument, in the context of the thread to signal.
    if unsafe { bpf_send_signal_thread(DELAY_SIGNAL) } < 0 {
        let _ = FL_DELAY_ARMED.remove(tid);
        return;
    }
    if let Some(st) = FL_DELAY_STATE.get_ptr_mut(slot) {
        // SAFETY: st points into a map value.
        unsafe {
            atomics::add(core::ptr::addr_of_mut!((*st).delayed), 1);
            atomics::add(core::ptr::addr_of_mut!((*st).delay_ns), delay_ns);
        }
    }
    dlog!("delay: rule {} armed tid {} (syscall {}) for {} ns", slot, tid, nr, delay_ns);
}

/// The descriptor of the file call `nr` worked on: from its arguments in `regs` or its
/// result `ret`; None when the call names no file by a descriptor.
#[inline(always)]
fn call_fd(nr: u32, regs: *const u8, ret: i64) -> Option<u64> {
    let arg = |off: usize| {
        // SAFETY: reading one saved register of the current task.
        unsafe { bpf_probe_read_kernel(regs.add(off).cast::<u64>()) }.ok().map(|v| v & 0xffff_ffff)
    };
    match path_fd(nr) {
        PATH_FD_ARG0 => arg(PT_REGS_DI),
        PATH_FD_ARG4 => arg(PT_REGS_R8),
        PATH_FD_RET if ret >= 0 => Some(ret as u64),
        _ => None,
    }
}

/// sys_exit(struct pt_regs *regs, long ret), for both program types: `nr` is
/// regs->orig_ax.
#[inline(always)]
fn on_exit(regs: *const u8, nr: u64, ret: i64) {
    // Also not a system call: orig_ax is -1 there.
    if nr >= u64::from(DELAY_MAX_SYSCALL) {
        return;
    }
    let nr = nr as u32;
    let Some(cfg) = FL_DELAY_CONFIG.get(0) else { return };
    if !has(&cfg.syscalls, nr) || (RESTART_FIRST..=RESTART_LAST).contains(&ret) {
        return;
    }
    let id = bpf_get_current_pid_tgid();
    let (tid, tgid) = (id as u32, (id >> 32) as u32);
    // SAFETY: only read.
    if tgid == rodata(&FL_DELAY_AGENT_TGID) || unsafe { FL_DELAY_SEIZED.get(tid) }.is_none() {
        return;
    }
    let blocked = marker_blocked();
    // The path rules whose directory holds the call's file (one walk for all of them).
    let over =
        if cfg.paths != 0 { call_fd(nr, regs, ret).map_or(0, fdpath::rules_over) } else { 0 };
    let chosen = each_rule(cfg, tgid, |slot, rule| {
        if !has(&rule.syscalls, nr)
            || (rule.flags & DELAY_F_PATH != 0 && over & (1 << (slot & 63)) == 0)
        {
            return None;
        }
        judge(slot, rule, blocked).map(|d| (slot, d))
    });
    if let Some((slot, delay_ns)) = chosen {
        arm(tid, slot, nr, delay_ns);
    }
}

/// tp_btf: `regs` is a typed kernel pointer, read directly (cheaper than a probe read on a
/// path every system call of the host takes).
#[btf_tracepoint(function = "sys_exit")]
pub fn fl_delay_sys_exit_btf(ctx: BtfTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    // SAFETY: the verifier checks the load against struct pt_regs in the kernel's BTF.
    let nr = unsafe { core::ptr::read_volatile(regs.add(PT_REGS_ORIG_AX).cast::<u64>()) };
    on_exit(regs, nr, ctx.arg(1));
    0
}

/// The same, where the kernel refuses tp_btf: every read goes through the probe helper.
#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn fl_delay_sys_exit_raw(ctx: RawTracePointContext) -> i32 {
    let regs: *const u8 = ctx.arg(0);
    // SAFETY: reading regs->orig_ax of the current task's saved registers.
    let Ok(nr) = (unsafe { bpf_probe_read_kernel(regs.add(PT_REGS_ORIG_AX).cast::<u64>()) }) else {
        return 0;
    };
    on_exit(regs, nr, ctx.arg(1));
    0
}

/// The exit of one system call's function (`__x64_sys_<name>(const struct pt_regs *regs)`),
/// where the kernel lets fexit attach there: only that call's callers pay, where sys_exit
/// makes every system call on the node take the slow exit path. One copy per function (a
/// loaded program has one attach point); the agent attaches copy i to the i-th function its
/// rules need. They share one body.
#[inline(never)]
fn on_fexit(regs: *const u8, ret: i64) {
    // SAFETY: the verifier checks the load against struct pt_regs in the kernel's BTF.
    let nr = unsafe { core::ptr::read_volatile(regs.add(PT_REGS_ORIG_AX).cast::<u64>()) };
    on_exit(regs, nr, ret);
}

macro_rules! fexit_copies {
    ($($name:ident),*) => {$(
        #[fexit(function = "__x64_sys_getppid")]
        pub fn $name(ctx: FExitContext) -> i32 {
            on_fexit(ctx.arg(0), ctx.arg(1));
            0
        }
    )*};
}

// As many as a rule may name system calls (DELAY_FEXIT_COPIES).
fexit_copies!(
    fl_delay_fexit_0,
    fl_delay_fexit_1,
    fl_delay_fexit_2,
    fl_delay_fexit_3,
    fl_delay_fexit_4,
    fl_delay_fexit_5,
    fl_delay_fexit_6,
    fl_delay_fexit_7,
    fl_delay_fexit_8,
    fl_delay_fexit_9,
    fl_delay_fexit_10,
    fl_delay_fexit_11,
    fl_delay_fexit_12,
    fl_delay_fexit_13,
    fl_delay_fexit_14,
    fl_delay_fexit_15
);

/// Pid targets that follow children: a child of a targeted process gets its rules (it is
/// delayed once the tracer has seized it too). Runs in the parent.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn fl_delay_fork(ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = FL_DELAY_CONFIG.get(0) else { return 0 };
    if cfg.pids == 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: only read.
    let Some(set) = (unsafe { FL_DELAY_PIDS.get(tgid) }) else { return 0 };
    if set.follow == 0 {
        return 0;
    }
    let set = *set;
    // sched_process_fork(struct task_struct *parent, struct task_struct *child)
    let Some((pid, child_tgid)) = calls::task_ids(ctx.arg(1)) else { return 0 };
    // A new thread shares its process's entry.
    if pid == child_tgid {
        let _ = FL_DELAY_PIDS.insert(pid, set, 0);
    }
    0
}

/// A targeted process exits: its pid may be reused.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn fl_delay_task_exit(_ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = FL_DELAY_CONFIG.get(0) else { return 0 };
    if cfg.pids == 0 {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    if id as u32 == (id >> 32) as u32 {
        let _ = FL_DELAY_PIDS.remove(id as u32);
    }
    0
}
