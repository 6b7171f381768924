//! Which targeted cgroups get their own cgroup_skb attachment.
//!
//! Programs attached to a cgroup also run for its descendants. The program walks every
//! targeted ancestor level itself, so attaching to both `/a` and `/a/b` would apply `/a/b`'s
//! rules twice. Only the topmost targets (no targeted ancestor) are attached.

use std::collections::BTreeSet;

use crate::engine::model::is_ancestor_path;

/// The ids of the targets that have no targeted strict ancestor.
pub fn topmost<'a>(targets: impl IntoIterator<Item = (u64, &'a str)>) -> BTreeSet<u64> {
    let mut sorted: Vec<(Vec<&str>, u64, &str)> =
        targets.into_iter().map(|(id, p)| (p.split('/').collect(), id, p)).collect();
    // Component-wise order puts each subtree right after its root.
    sorted.sort();
    let mut out = BTreeSet::new();
    let mut top: Option<&str> = None;
    for (_, id, path) in sorted {
        if top.is_some_and(|t| is_ancestor_path(t, path)) {
            continue;
        }
        top = Some(path);
        out.insert(id);
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
}
