//! Which targeted cgroups get their own cgroup program attachments, and which ones.
//!
//! Programs attached to a cgroup also run for its descendants. The program walks every
//! targeted ancestor level itself, so attaching to both `/a` and `/a/b` would apply `/a/b`'s
//! rules twice. Only the topmost targets (no targeted ancestor) are attached, with the hooks
//! their whole subtree needs.

use std::collections::{BTreeMap, BTreeSet};

use crate::engine::model::is_ancestor_path;

/// The ids of the targets that have no targeted strict ancestor.
pub fn topmost<'a>(targets: impl IntoIterator<Item = (u64, &'a str)>) -> BTreeSet<u64> {
    topmost_hooks(targets.into_iter().map(|(id, p)| (id, p, 0))).into_keys().collect()
}

/// The topmost targets, each with the union of the hook groups (a bit mask) its own rules
/// and those of every target beneath it need: its attachment serves the whole subtree.
pub fn topmost_hooks<'a>(
    targets: impl IntoIterator<Item = (u64, &'a str, u8)>,
) -> BTreeMap<u64, u8> {
    let mut sorted: Vec<(Vec<&str>, u64, &str, u8)> =
        targets.into_iter().map(|(id, p, h)| (p.split('/').collect(), id, p, h)).collect();
    // Component-wise order puts each subtree right after its root.
    sorted.sort();
    let mut out = BTreeMap::new();
    let mut top: Option<(&str, u64)> = None;
    for (_, id, path, hooks) in sorted {
        if let Some((t, tid)) = top
            && is_ancestor_path(t, path)
        {
            *out.entry(tid).or_insert(0) |= hooks;
            continue;
        }
        top = Some((path, id));
        *out.entry(id).or_insert(0) |= hooks;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_targets_share_the_topmost_attachment() {
        let t = [(1, "/a"), (2, "/a/b"), (3, "/a-x"), (4, "/a/b/c"), (5, "/z"), (6, "/a/c")];
        assert_eq!(topmost(t), BTreeSet::from([1, 3, 5]));
        assert_eq!(topmost([(2, "/a/b"), (6, "/a/c")]), BTreeSet::from([2, 6]));
        assert_eq!(topmost([(4, "/a/b/c"), (2, "/a/b")]), BTreeSet::from([2]));
        assert!(topmost([]).is_empty());
    }

    #[test]
    fn a_topmost_target_carries_the_hooks_of_its_subtree() {
        let t = [(1, "/a", 1), (2, "/a/b", 2), (3, "/a-x", 4), (4, "/a/b/c", 4), (5, "/z", 2)];
        assert_eq!(topmost_hooks(t), BTreeMap::from([(1, 7), (3, 4), (5, 2)]));
        // Two rules on one target: one entry with both groups.
        assert_eq!(topmost_hooks([(1, "/a", 1), (1, "/a", 2)]), BTreeMap::from([(1, 3)]));
    }
}
