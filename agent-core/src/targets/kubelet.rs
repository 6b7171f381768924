//! Pods and containers by name, from what the kubelet writes on every node, so no API server
//! is asked:
//! - `/var/log/pods/NAMESPACE_NAME_UID/CONTAINER/N.log`: one directory per pod (and one per
//!   container name inside it), for as long as the pod's logs are kept;
//! - `/var/log/containers/NAME_NAMESPACE_CONTAINER-ID.log`: one link per container instance
//!   (restarts add one), pointing into the pod's directory; the only place the node maps a
//!   container's name to its runtime id.
//!
//! Namespaces, pod names and container names are DNS names: they hold no `_`, so the
//! underscores split them unambiguously.

use std::path::{Path, PathBuf};

use super::runtime::normalize_uid;

/// One pod's log directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodDir {
    pub namespace: String,
    pub name: String,
    /// Canonical (lower case, dashes).
    pub uid: String,
    pub dir: PathBuf,
}

/// Every pod directory under `pods_log_dir` (none when it does not exist), sorted.
pub fn pods(pods_log_dir: &Path) -> Vec<PodDir> {
    let Ok(entries) = std::fs::read_dir(pods_log_dir) else { return Vec::new() };
    let mut pods: Vec<PodDir> = entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let mut parts = file.splitn(3, '_');
            let (ns, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
            Some(PodDir {
                namespace: ns.to_string(),
                name: name.to_string(),
                uid: normalize_uid(uid)?,
                dir: e.path(),
            })
        })
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name, &a.uid).cmp(&(&b.namespace, &b.name, &b.uid)));
    pods
}

/// The container names the pod's directory holds, sorted.
pub fn container_names(pod: &PodDir) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(&pod.dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The runtime ids (64 hex digits) of the instances of container `container` of `pod`, from
/// the links in `containers_log_dir`; a link that points into another pod's directory (an
/// earlier pod of the same name) is not this pod's. Sorted.
pub fn container_ids(containers_log_dir: &Path, pod: &PodDir, container: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(containers_log_dir) else { return Vec::new() };
    let want = format!("{}_{}_{}-", pod.name, pod.namespace, container);
    let mut ids: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let id = file.strip_suffix(".log")?.strip_prefix(&want)?;
            let is_id = id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit());
            let into_pod = match std::fs::read_link(e.path()) {
                Ok(target) => target.starts_with(&pod.dir),
                // Not a link (copied logs): its name is all there is.
                Err(_) => true,
            };
            (is_id && into_pod).then(|| id.to_ascii_lowercase())
        })
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The name in the pod spec of container instance `id` (64 hex digits) of pod `uid`, from
/// its link in `containers_log_dir` (which must point into that pod's directory).
pub fn container_name_of(containers_log_dir: &Path, uid: &str, id: &str) -> Option<String> {
    let suffix = format!("-{id}.log");
    std::fs::read_dir(containers_log_dir).ok()?.flatten().find_map(|e| {
        let file = e.file_name().to_string_lossy().into_owned();
        // POD_NAMESPACE_CONTAINER-ID.log
        let container = file.strip_suffix(&suffix)?.splitn(3, '_').nth(2)?;
        // .../NAMESPACE_NAME_UID/CONTAINER/N.log
        let target = std::fs::read_link(e.path()).ok()?;
        let pod_dir = target.parent()?.parent()?.file_name()?.to_string_lossy().into_owned();
        let of_pod = normalize_uid(pod_dir.rsplit('_').next()?)? == uid;
        (of_pod && !container.is_empty()).then(|| container.to_string())
    })
}

/// Where the kubelet puts the container links: `containers` beside the pods directory.
pub fn containers_log_dir(pods_log_dir: &Path) -> PathBuf {
    pods_log_dir.parent().unwrap_or(Path::new("/")).join("containers")
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "6f1b5c2e-0d3a-4a8e-9a55-2f0c9a1b7e11";
    const UID2: &str = "0a1b2c3d-0d3a-4a8e-9a55-2f0c9a1b7e22";

    fn id(c: char) -> String {
        std::iter::repeat_n(c, 64).collect()
    }

    #[test]
    fn pods_containers_and_their_ids_from_the_log_directories() {
        let root = std::env::temp_dir().join(format!("fl-kubelet-{}", std::process::id()));
        let (pods_dir, links) = (root.join("pods"), root.join("containers"));
        let pod = pods_dir.join(format!("shop_checkout-7d9_{UID}"));
        let old = pods_dir.join(format!("shop_checkout-7d9_{UID2}"));
        for d in [pod.join("app"), pod.join("envoy"), old.join("app"), links.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(pods_dir.join("not-a-pod")).unwrap();
        let link = |container: &str, id: &str, into: &Path| {
            std::os::unix::fs::symlink(
                into.join(container).join("0.log"),
                links.join(format!("checkout-7d9_shop_{container}-{id}.log")),
            )
            .unwrap();
        };
        link("app", &id('a'), &pod);
        link("app", &id('b'), &pod); // restarted
        link("app", &id('c'), &old); // the earlier pod of that name
        link("envoy", &id('e'), &pod);

        assert_eq!(containers_log_dir(&pods_dir), links);
        let found = pods(&pods_dir);
        let names: Vec<(&str, &str, &str)> =
            found.iter().map(|p| (&*p.namespace, &*p.name, &*p.uid)).collect();
        assert_eq!(names, [("shop", "checkout-7d9", UID2), ("shop", "checkout-7d9", UID)]);
        let this = found.iter().find(|p| p.uid == UID).unwrap();
        assert_eq!(container_names(this), ["app", "envoy"]);
        assert_eq!(container_ids(&links, this, "app"), [id('a'), id('b')]);
        assert_eq!(container_ids(&links, this, "envoy"), [id('e')]);
        assert!(container_ids(&links, this, "db").is_empty());
        // Back from an instance's id to its name, in this pod only.
        assert_eq!(container_name_of(&links, UID, &id('b')).as_deref(), Some("app"));
        assert_eq!(container_name_of(&links, UID, &id('e')).as_deref(), Some("envoy"));
        assert_eq!(container_name_of(&links, UID, &id('c')), None);
        assert_eq!(container_name_of(&links, UID, &id('f')), None);
        assert!(pods(&root.join("missing")).is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
