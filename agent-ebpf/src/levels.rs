//! The walk over a packet's or task's ancestor cgroups at the levels that have targets.

use faultline_common::net::{MAX_CGROUP_LEVEL, MAX_LEVEL_LOOKUPS};

/// Calls `id_of` for each level set in `levels` (a bit per cgroup level that holds a target,
/// shallowest first) and `f` with the ancestor id it returns, until `f` gives a result.
/// Stops at the first level the cgroup does not reach (`id_of` returns 0: deeper ones
/// cannot match either). The trip count is bounded for the verifier.
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
        let level = levels.trailing_zeros();
        levels &= levels - 1;
        if level > MAX_CGROUP_LEVEL {
            break;
        }
        let id = id_of(level);
        if id == 0 {
            break;
        }
        if let Some(r) = f(id) {
            return Some(r);
        }
    }
    None
}
