//! The walk over a packet's or task's ancestor cgroups at the levels that have targets.

use aya_ebpf::helpers::{
    bpf_get_current_ancestor_cgroup_id, bpf_get_current_task, bpf_probe_read_kernel,
};
use faultline_common::net::{MAX_CGROUP_LEVEL, MAX_LEVEL_LOOKUPS};

use crate::maps::FL_ANCESTRY;

/// The id of the current task's ancestor cgroup at `level` (0: the task's cgroup is not that
/// deep), for tracing programs: the helper, or where user space found the kernel's tracing
/// programs without it (FL_ANCESTRY, before 6.1) the same id read through the task's
/// css_set, as the helper reads it.
#[inline(always)]
pub fn current_ancestor_id_tracing(level: u32) -> u64 {
    // SAFETY: a frozen .rodata value; volatile so the verifier sees the constant.
    let o = unsafe { core::ptr::read_volatile(&FL_ANCESTRY) };
    if o.known == 0 {
        // SAFETY: helper with a scalar argument, in task context.
        return unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) };
    }
    let read = |base: u64, off: u64| -> Option<u64> {
        // SAFETY: a probe read of kernel memory, which fails cleanly on a bad address.
        unsafe { bpf_probe_read_kernel((base + off) as *const u64) }.ok()
    };
    let id = || -> Option<u64> {
        // SAFETY: helper without arguments.
        let task = unsafe { bpf_get_current_task() };
        let css_set = read(task, u64::from(o.task_cgroups))?;
        let cgroup = read(css_set, u64::from(o.css_set_dfl_cgrp))?;
        // SAFETY: as `read`, for the int.
        let depth =
            unsafe { bpf_probe_read_kernel((cgroup + u64::from(o.cgroup_level)) as *const i32) }
                .ok()?;
        if depth < 0 || level > depth as u32 || level > MAX_CGROUP_LEVEL {
            return None;
        }
        read(cgroup, u64::from(o.cgroup_ancestor_ids) + 8 * u64::from(level))
    };
    id().unwrap_or(0)
}

/// Calls `id_of` for each level set in `levels` (a bit per cgroup level that holds a target,
/// deepest first: a nested target's rules come before its ancestors', as with the programs
/// kept on cgroup attachments, which run the cgroup's own before its ancestors') and `f`
/// with the ancestor id it returns, until `f` gives a result. A level the cgroup does not
/// reach (`id_of` returns 0) is passed over. The trip count is bounded for the verifier.
#[inline(always)]
pub fn find<R>(
    mut levels: u32,
    mut id_of: impl FnMut(u32) -> u64,
    mut f: impl FnMut(u64) -> Option<R>,
) -> Option<R> {
    for _ in 0..MAX_LEVEL_LOOKUPS {
        if levels == 0 {
            break;
        }
        let level = 31 - levels.leading_zeros();
        levels &= !(1 << level);
        if level > MAX_CGROUP_LEVEL {
            break;
        }
        let id = id_of(level);
        if id == 0 {
            continue;
        }
        if let Some(r) = f(id) {
            return Some(r);
        }
    }
    None
}
