//! Containers and pods as the cgroup tree shows them.
//!
//! Every runtime names its cgroups after the container id, so the tree alone finds them,
//! without talking to the runtime's socket:
//! - Docker: `/docker/<id>` (cgroupfs driver), `/system.slice/docker-<id>.scope` (systemd).
//! - containerd under Kubernetes: `/kubepods/<qos>/pod<uid>/<id>` (cgroupfs),
//!   `.../kubepods-<qos>-pod<uid_>.slice/cri-containerd-<id>.scope` (systemd).
//! - CRI-O: `.../pod<uid>/crio-<id>` (cgroupfs), `.../crio-<id>.scope` (systemd); its
//!   `crio-conmon-<id>` monitor cgroups are not the container.
//! - Podman: `libpod-<id>.scope`, `libpod_parent/libpod-<id>`.

use std::path::{Path, PathBuf};

/// A container cgroup found in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// Relative to the cgroup2 mount, "/"-led.
    pub path: String,
    pub id: String,
    pub runtime: &'static str,
    /// The Kubernetes pod the container belongs to, if any.
    pub pod_uid: Option<String>,
}

/// Directories below the mount deeper than this are not searched (kind-in-docker nodes reach
/// about 8).
const MAX_DEPTH: usize = 12;

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && is_hex(s)
}

/// The runtime and id a container cgroup's directory name carries, if it is one. `parent` is
/// the name of the directory holding it: bare ids take their runtime from there.
pub fn container_of(name: &str, parent: &str) -> Option<(&'static str, String)> {
    let scoped = [
        ("docker-", "docker"),
        ("cri-containerd-", "containerd"),
        ("crio-", "cri-o"),
        ("libpod-", "podman"),
    ];
    let stem = name.strip_suffix(".scope").unwrap_or(name);
    for (prefix, runtime) in scoped {
        if let Some(id) = stem.strip_prefix(prefix)
            && is_container_id(id)
        {
            return Some((runtime, id.to_string()));
        }
    }
    if is_container_id(name) {
        let runtime = if parent == "docker" { "docker" } else { "containerd" };
        return Some((runtime, name.to_string()));
    }
    None
}

/// The pod uid (with dashes) of a pod cgroup's directory name: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid_with_underscores>.slice` (systemd).
pub fn pod_of(name: &str) -> Option<String> {
    let raw = match name.strip_suffix(".slice") {
        Some(slice) => &slice[slice.rfind("-pod")? + 4..],
        None => name.strip_prefix("pod")?,
    };
    normalize_uid(raw)
}

/// A pod uid in its canonical form (lower case, dashes), from either spelling; None if it is
/// not a uid.
pub fn normalize_uid(raw: &str) -> Option<String> {
    let uid = raw.replace('_', "-").to_ascii_lowercase();
    let groups: Vec<&str> = uid.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    (lens == [8, 4, 4, 4, 12] && groups.iter().all(|g| is_hex(g))).then_some(uid)
}

/// Walks the tree under `mount` (or `mount/start`) depth first, calling `visit` with each
/// directory's path relative to the mount, its name and its parent's name. `visit` returns
/// whether to descend.
fn walk(mount: &Path, start: &str, visit: &mut dyn FnMut(&str, &str, &str) -> bool) {
    let mut stack: Vec<(PathBuf, String, usize)> =
        vec![(mount.join(start.trim_start_matches('/')), start.trim_end_matches('/').into(), 0)];
    while let Some((dir, rel, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        let parent = rel.rsplit('/').next().unwrap_or("").to_string();
        for e in entries.flatten() {
            // Cgroup directories are never symlinks; file_type does not follow them.
            if !e.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let child = format!("{rel}/{name}");
            if visit(&child, &name, &parent) && depth + 1 < MAX_DEPTH {
                stack.push((e.path(), child, depth + 1));
            }
        }
    }
}

/// The pod uid of the innermost pod directory on a cgroup path.
pub fn pod_on_path(path: &str) -> Option<String> {
    path.rsplit('/').find_map(pod_of)
}

/// Containers under `start` whose id begins with `prefix`, outermost cgroup per id (nested
/// cgroups of one container are inside it).
pub fn find_containers(mount: &Path, start: &str, prefix: &str) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    walk(mount, start, &mut |rel, name, parent| {
        let Some((runtime, id)) = container_of(name, parent) else { return true };
        if id.starts_with(prefix) && !found.iter().any(|f| f.id == id) {
            found.push(Found { path: rel.to_string(), id, runtime, pod_uid: pod_on_path(rel) });
        }
        // Nested runtimes (a kind node is a container) keep their containers inside.
        true
    });
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found
}

/// The cgroup directories of the pod with this uid (one per pod, but a kind cluster on the
/// node can hold a second copy of the tree).
pub fn find_pods(mount: &Path, start: &str, uid: &str) -> Vec<String> {
    let mut found = Vec::new();
    walk(mount, start, &mut |rel, name, _| match pod_of(name) {
        Some(u) if u == uid => {
            found.push(rel.to_string());
            false
        }
        // Pods do not nest in pods; containers of other pods need not be read.
        Some(_) => false,
        None => true,
    });
    found.sort();
    found
}

/// Every pod directory under `start`, with its uid.
pub fn pods_under(mount: &Path, start: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    walk(mount, start, &mut |rel, name, _| match pod_of(name) {
        Some(uid) => {
            found.push((rel.to_string(), uid));
            false
        }
        None => true,
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const UID: &str = "6f1b5c2e-0d3a-4a8e-9a55-2f0c9a1b7e11";

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[test]
    fn names_of_each_runtime() {
        let a = id('a');
        assert_eq!(container_of(&format!("docker-{a}.scope"), "system.slice").unwrap().0, "docker");
        assert_eq!(container_of(&a, "docker").unwrap(), ("docker", a.clone()));
        assert_eq!(container_of(&a, "pod1").unwrap().0, "containerd");
        assert_eq!(
            container_of(&format!("cri-containerd-{a}.scope"), "x").unwrap().0,
            "containerd"
        );
        assert_eq!(container_of(&format!("crio-{a}.scope"), "x").unwrap().0, "cri-o");
        assert_eq!(container_of(&format!("crio-{a}"), "x").unwrap().0, "cri-o");
        assert_eq!(container_of(&format!("libpod-{a}.scope"), "x").unwrap().0, "podman");
        assert_eq!(container_of(&format!("crio-conmon-{a}.scope"), "x"), None);
        assert_eq!(container_of("docker-abc.scope", "x"), None);
        assert_eq!(container_of(&id('g'), "x"), None);
    }

    #[test]
    fn pod_names_in_both_drivers() {
        let under = UID.replace('-', "_");
        assert_eq!(pod_of(&format!("pod{UID}")).as_deref(), Some(UID));
        assert_eq!(pod_of(&format!("kubepods-burstable-pod{under}.slice")).as_deref(), Some(UID));
        assert_eq!(pod_of(&format!("kubepods-pod{under}.slice")).as_deref(), Some(UID));
        assert_eq!(pod_of("kubepods-burstable.slice"), None);
        assert_eq!(pod_of("pods"), None);
        assert_eq!(normalize_uid(&UID.to_uppercase()).as_deref(), Some(UID));
    }
}
