//! A task's ancestor cgroups, as the tracing programs read them where the kernel has no
//! helper for it (agent-ebpf/src/levels.rs).

/// `.rodata` (`AncestryOffsets`) of the families whose tracing programs find a task's
/// targeted ancestors (sys delay).
pub const GLOBAL_ANCESTRY: &str = "FL_ANCESTRY";

/// offsetof() of what a task's ancestor cgroup ids are read through, from the kernel's BTF,
/// set where tracing programs lack bpf_get_current_ancestor_cgroup_id and `struct cgroup`
/// keeps its ancestors' ids in an array (before 6.1: `ancestor_ids[]`). `known` 0: the
/// programs call the helper.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AncestryOffsets {
    pub known: u32,
    /// struct task_struct.cgroups (a struct css_set *).
    pub task_cgroups: u32,
    /// struct css_set.dfl_cgrp (the task's cgroup on the unified hierarchy).
    pub css_set_dfl_cgrp: u32,
    /// struct cgroup.level, and .ancestor_ids (u64 per level, the root's first).
    pub cgroup_level: u32,
    pub cgroup_ancestor_ids: u32,
}
