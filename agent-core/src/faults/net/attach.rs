//! Which targeted cgroups get their own cgroup program attachments, and which ones.
//!
//! Programs attached to a cgroup also run for its descendants. The sock_addr programs walk
//! every targeted ancestor level themselves, so attaching them to both `/a` and `/a/b` would
//! apply `/a/b`'s rules twice: only the topmost targets (no targeted ancestor) get them, with
//! the hooks their whole subtree needs. The cgroup_skb programs read only their own attach
//! point's rules (kept with the attachment, in cgroup storage), so every target gets its own,
//! and a packet of `/a/b` runs both `/a/b`'s and `/a`'s.

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

/// The hook groups each target is to hold: the `own` groups on every target whose rules need
/// them, the others on the topmost targets, for their whole subtree (`topmost_hooks`).
/// Targets that need none are left out.
pub fn wanted_hooks<'a>(
    targets: impl IntoIterator<Item = (u64, &'a str, u8)>,
    own: u8,
) -> BTreeMap<u64, u8> {
    let targets: Vec<(u64, &str, u8)> = targets.into_iter().collect();
    let mut out = topmost_hooks(targets.iter().map(|&(id, p, h)| (id, p, h & !own)));
    for &(id, _, h) in &targets {
        if h & own != 0 {
            *out.entry(id).or_insert(0) |= h & own;
        }
    }
    out.retain(|_, h| *h != 0);
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

    #[test]
    fn own_groups_go_on_every_target_the_others_on_the_topmost() {
        // Group 1 is attached per target; 2 and 4 serve a subtree from its top.
        let t = [(1, "/a", 1), (2, "/a/b", 3), (3, "/a/b/c", 4), (4, "/z", 2), (5, "/z/y", 1)];
        assert_eq!(
            wanted_hooks(t, 1),
            BTreeMap::from([(1, 1 | 2 | 4), (2, 1), (4, 2), (5, 1)]),
            "/a/b/c needs only a group its top carries: nothing of its own"
        );
        assert_eq!(
            wanted_hooks([(1, "/a", 1), (2, "/a/b", 1)], 1),
            BTreeMap::from([(1, 1), (2, 1)])
        );
        assert!(wanted_hooks([(1, "/a", 0)], 1).is_empty());
    }
}
