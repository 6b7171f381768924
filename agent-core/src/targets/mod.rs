//! Target resolution: cgroup paths, pids, containers, pods and the host to cgroup v2
//! directories, and whether a resolved target is still there.
//!
//! The cgroup2 mount is found in mountinfo (hybrid hosts mount it at /sys/fs/cgroup/unified,
//! pure v2 hosts at /sys/fs/cgroup); it is never hard-coded.

pub mod kubelet;
pub mod runtime;

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

use faultline_host::mountinfo;

use crate::engine::{
    error::{Error, Result},
    model::{ContainerRef, PodRef, Resolved, ResolvedCgroup, ResolvedInterface, TargetSpec},
};

/// Resolves targets against one host view (a /proc and a cgroup2 mount).
#[derive(Clone, Debug)]
pub struct Resolver {
    mount: PathBuf,
    proc_root: PathBuf,
    /// The agent's own cgroup and pid: never a target.
    own_cgroup: String,
    own_pid: u32,
    /// The kubelet's pod log directories, which name pods and containers on the node.
    pods_log_dir: PathBuf,
}

impl Resolver {
    /// The running host: /proc and the cgroup2 mount from /proc/self/mountinfo.
    pub fn from_host() -> Result<Self> {
        let mounts = mountinfo::read().map_err(|e| Error::internal("mountinfo", e))?;
        let mount =
            mountinfo::cgroup2(&mounts).map(|m| m.mount_point.clone()).ok_or_else(|| {
                Error::FailedPrecondition("unsupported: no cgroup2 filesystem is mounted".into())
            })?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| Error::internal("reading /proc/self/cgroup", e))?;
        let own_cgroup = cgroup_v2_path(&own).unwrap_or_else(|| "/".to_string());
        Ok(Self::new(mount, PathBuf::from("/proc"), own_cgroup, std::process::id()))
    }

    pub fn new(mount: PathBuf, proc_root: PathBuf, own_cgroup: String, own_pid: u32) -> Self {
        Self { mount, proc_root, own_cgroup, own_pid, pods_log_dir: "/var/log/pods".into() }
    }

    /// Where the kubelet's pod log directories are (the policy's `pods_log_dir`).
    pub fn with_pods_log_dir(mut self, dir: PathBuf) -> Self {
        self.pods_log_dir = dir;
        self
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }

    /// The agent's own cgroup v2 path.
    pub fn own_cgroup(&self) -> &str {
        &self.own_cgroup
    }

    pub fn resolve(&self, target: &TargetSpec) -> Result<Resolved> {
        match target {
            TargetSpec::Interface { name, netns } => {
                resolve_interface(name, netns).map(Resolved::Interface)
            }
            other => self.resolve_cgroup(other).map(Resolved::Cgroup),
        }
    }

    pub fn resolve_cgroup(&self, target: &TargetSpec) -> Result<ResolvedCgroup> {
        match target {
            TargetSpec::Interface { .. } => {
                Err(Error::invalid("target", "a cgroup or pid target is needed here"))
            }
            TargetSpec::CgroupPath(p) => self.resolve_path(p, "target.cgroup_path"),
            TargetSpec::Pid(pid) => self.resolve_pid(*pid),
            TargetSpec::Container(prefix) => {
                let c = self.one_container("/", prefix, "target.container_id")?;
                self.container_cgroup(c, "target.container_id")
            }
            TargetSpec::Pod { pod, container } => {
                let (uid, field, dir) = match pod {
                    PodRef::Uid(uid) => (uid.clone(), "target.pod.uid", None),
                    PodRef::Name { namespace, name } => {
                        let dir = self.pod_by_name(namespace, name)?;
                        (dir.uid.clone(), "target.pod.name", Some(dir))
                    }
                };
                let pod_cgroup = self.pod_cgroup(&uid, field)?;
                match container {
                    Some(ContainerRef::Id(prefix)) => {
                        let c =
                            self.one_container(&pod_cgroup, prefix, "target.pod.container_id")?;
                        self.container_cgroup(c, "target.pod.container_id")
                    }
                    Some(ContainerRef::Name(name)) => {
                        let dir = dir.or_else(|| {
                            kubelet::pods(&self.pods_log_dir).into_iter().find(|p| p.uid == uid)
                        });
                        let c = self.container_by_name(dir, &uid, &pod_cgroup, name)?;
                        let mut cg = self.container_cgroup(c, "target.pod.container_name")?;
                        cg.container_name = Some(name.clone());
                        Ok(cg)
                    }
                    None => {
                        let mut cg = self.resolve_path(&pod_cgroup, field)?;
                        cg.pod_uid = Some(uid);
                        Ok(cg)
                    }
                }
            }
            TargetSpec::Host => {
                let meta = std::fs::metadata(&self.mount)
                    .map_err(|e| Error::internal(&format!("stat {}", self.mount.display()), e))?;
                Ok(ResolvedCgroup {
                    path: "/".into(),
                    id: meta.ino(),
                    level: 0,
                    mount: self.mount.clone(),
                    ..Default::default()
                })
            }
        }
    }

    fn resolve_pid(&self, pid: u32) -> Result<ResolvedCgroup> {
        if pid == self.own_pid {
            return Err(Error::invalid(
                "target.pid",
                format!("{pid} is the agent itself, which is never a target"),
            ));
        }
        let dir = self.proc_root.join(pid.to_string());
        let content = std::fs::read_to_string(dir.join("cgroup"))
            .map_err(|_| Error::NotFound(format!("target.pid: no process {pid}")))?;
        let path = cgroup_v2_path(&content).ok_or_else(|| {
            Error::FailedPrecondition(format!(
                "target.pid: process {pid} has no cgroup v2 membership in {}/cgroup",
                dir.display()
            ))
        })?;
        let mut cg = self.resolve_path(&path, "target.pid")?;
        cg.pid = Some(pid);
        cg.pid_start = start_time(&dir);
        Ok(cg)
    }

    /// The one container under `start` whose id begins with `prefix`.
    /// The pod's cgroup (relative to the mount): exactly one.
    fn pod_cgroup(&self, uid: &str, field: &str) -> Result<String> {
        let mut pods = runtime::find_pods(&self.mount, "/", uid);
        match pods.len() {
            1 => Ok(pods.remove(0)),
            0 => Err(Error::NotFound(format!(
                "{field}: no pod {uid} in the cgroup tree under {}",
                self.mount.display()
            ))),
            _ => Err(Error::invalid(
                field,
                format!("{uid} has several cgroups: {}", pods.join(", ")),
            )),
        }
    }

    /// A pod by namespace and name, from the kubelet's log directories. Several directories
    /// of that name (an earlier pod's logs not yet removed) are told apart by which has a
    /// cgroup on this node.
    fn pod_by_name(&self, namespace: &str, name: &str) -> Result<kubelet::PodDir> {
        let field = "target.pod.name";
        let all = kubelet::pods(&self.pods_log_dir);
        let mut named: Vec<kubelet::PodDir> =
            all.iter().filter(|p| p.namespace == namespace && p.name == name).cloned().collect();
        if named.is_empty() {
            let in_ns: Vec<&str> =
                all.iter().filter(|p| p.namespace == namespace).map(|p| &*p.name).collect();
            let seen = if !in_ns.is_empty() {
                format!("pods of {namespace} here: {}", in_ns.join(", "))
            } else if all.is_empty() {
                "no pod at all there".to_string()
            } else {
                let mut namespaces: Vec<&str> = all.iter().map(|p| &*p.namespace).collect();
                namespaces.dedup();
                format!(
                    "no pod of namespace {namespace}; namespaces here: {}",
                    namespaces.join(", ")
                )
            };
            return Err(Error::NotFound(format!(
                "{field}: no pod {namespace}/{name} on this node ({}: {seen})",
                self.pods_log_dir.display()
            )));
        }
        if named.len() > 1 {
            named.retain(|p| !runtime::find_pods(&self.mount, "/", &p.uid).is_empty());
        }
        match named.len() {
            1 => Ok(named.remove(0)),
            0 => Err(Error::NotFound(format!(
                "{field}: pod {namespace}/{name} has log directories but no cgroup on this node \
                 (not running)"
            ))),
            _ => {
                let uids: Vec<&str> = named.iter().map(|p| &*p.uid).collect();
                Err(Error::invalid(
                    field,
                    format!("{namespace}/{name} is several running pods: uids {}", uids.join(", ")),
                ))
            }
        }
    }

    /// A container of the pod by its name in the pod spec: the kubelet's links give the ids
    /// of its instances, and the one with a cgroup in the pod's is the running one.
    fn container_by_name(
        &self,
        dir: Option<kubelet::PodDir>,
        uid: &str,
        pod_cgroup: &str,
        name: &str,
    ) -> Result<runtime::Found> {
        let field = "target.pod.container_name";
        let Some(dir) = dir else {
            return Err(Error::NotFound(format!(
                "{field}: pod {uid} has no log directory in {}, which names its containers",
                self.pods_log_dir.display()
            )));
        };
        let shown = format!("{}/{}", dir.namespace, dir.name);
        let links = kubelet::containers_log_dir(&self.pods_log_dir);
        let ids = kubelet::container_ids(&links, &dir, name);
        let names = kubelet::container_names(&dir);
        if ids.is_empty() && names.iter().any(|n| n == name) {
            return Err(Error::NotFound(format!(
                "{field}: container {name} of pod {shown} is not running (no link for it in {})",
                links.display()
            )));
        }
        if ids.is_empty() {
            return Err(Error::NotFound(format!(
                "{field}: pod {shown} has no container {name} (containers: {})",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            )));
        }
        let mut running: Vec<runtime::Found> = ids
            .iter()
            .flat_map(|id| runtime::find_containers(&self.mount, pod_cgroup, id))
            .collect();
        match running.len() {
            1 => Ok(running.remove(0)),
            0 => Err(Error::NotFound(format!(
                "{field}: container {name} of pod {shown} is not running (no cgroup for ids {})",
                ids.iter().map(|i| &i[..12]).collect::<Vec<_>>().join(", ")
            ))),
            _ => Err(Error::invalid(
                field,
                format!(
                    "container {name} of pod {shown} runs as several: {}",
                    running.iter().map(|f| &f.id[..12]).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    fn one_container(&self, start: &str, prefix: &str, field: &str) -> Result<runtime::Found> {
        let mut found = runtime::find_containers(&self.mount, start, prefix);
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(Error::NotFound(format!(
                "{field}: no container {prefix} in the cgroup tree under {}{}",
                self.mount.display(),
                if start == "/" { String::new() } else { start.to_string() }
            ))),
            _ => {
                let ids: Vec<String> =
                    found.iter().map(|f| format!("{} ({})", &f.id[..12], f.runtime)).collect();
                Err(Error::invalid(
                    field,
                    format!("{prefix} is ambiguous: it begins {}", ids.join(", ")),
                ))
            }
        }
    }

    fn container_cgroup(&self, c: runtime::Found, field: &str) -> Result<ResolvedCgroup> {
        let mut cg = self.resolve_path(&c.path, field)?;
        // A pod's container by id: its name, if the kubelet's links tell it (cheap: one
        // directory listing), so that its restarted instance (a new id) can be found.
        let links = kubelet::containers_log_dir(&self.pods_log_dir);
        cg.container_name =
            c.pod_uid.as_deref().and_then(|uid| kubelet::container_name_of(&links, uid, &c.id));
        cg.container_id = Some(c.id);
        cg.runtime = Some(c.runtime);
        cg.pod_uid = c.pod_uid;
        Ok(cg)
    }

    /// Why a target resolved earlier is no longer the one that was targeted, if it is not:
    /// its cgroup was removed (a restarted container gets a new one, with a new id), or its
    /// process exited (a reused pid has another start time; a zombie, killed but not yet
    /// reaped by its parent, has exited too).
    pub fn gone(&self, cg: &ResolvedCgroup) -> Option<String> {
        if let (Some(pid), Some(start)) = (cg.pid, cg.pid_start)
            && live_start_time(&self.proc_root.join(pid.to_string())) != Some(start)
        {
            return Some(format!("target gone: process {pid} exited"));
        }
        match std::fs::metadata(cg.fs_path()) {
            Ok(m) if m.ino() == cg.id => None,
            _ => Some(format!("target gone: cgroup {} was removed", cg.path)),
        }
    }

    /// Like `gone`, for any target: an interface is gone when its namespace or the device
    /// (by index and name: a recreated device gets a new index) no longer exists.
    pub fn target_gone(&self, target: &Resolved) -> Option<String> {
        match target {
            Resolved::Cgroup(cg) => self.gone(cg),
            Resolved::Interface(i) => interface_gone(i),
        }
    }

    fn resolve_path(&self, raw: &str, field: &str) -> Result<ResolvedCgroup> {
        let rel = self.relative(raw, field)?;
        let dir = self.mount.join(rel.trim_start_matches('/'));
        let canonical = dir.canonicalize().map_err(|_| {
            Error::NotFound(format!("{field}: no cgroup {rel} under {}", self.mount.display()))
        })?;
        let mount = self.mount.canonicalize().unwrap_or_else(|_| self.mount.clone());
        let inner = canonical
            .strip_prefix(&mount)
            .map_err(|_| Error::invalid(field, format!("{raw} leads outside the cgroup2 mount")))?;
        if !canonical.join("cgroup.procs").exists() {
            return Err(Error::NotFound(format!(
                "{field}: {} is not a cgroup",
                canonical.display()
            )));
        }
        let path = format!("/{}", inner.display());
        let path = if path == "/" { path } else { path.trim_end_matches('/').to_string() };
        let meta = std::fs::metadata(&canonical)
            .map_err(|e| Error::internal(&format!("stat {}", canonical.display()), e))?;
        let level = inner.components().count() as u32;
        Ok(ResolvedCgroup {
            path,
            id: meta.ino(),
            level,
            mount: self.mount.clone(),
            ..Default::default()
        })
    }

    /// Accepts "/a/b", "a/b", or a full path under the mount; refuses "." and "..".
    fn relative(&self, raw: &str, field: &str) -> Result<String> {
        if raw.is_empty() {
            return Err(Error::invalid(field, "must not be empty"));
        }
        let p = Path::new(raw);
        let rel = match p.strip_prefix(&self.mount) {
            Ok(inner) => inner.to_path_buf(),
            Err(_) => p.strip_prefix("/").unwrap_or(p).to_path_buf(),
        };
        let mut out = String::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => {
                    out.push('/');
                    out.push_str(&s.to_string_lossy());
                }
                Component::RootDir => {}
                _ => {
                    return Err(Error::invalid(
                        field,
                        format!("{raw}: '.' and '..' are not allowed"),
                    ));
                }
            }
        }
        Ok(if out.is_empty() { "/".into() } else { out })
    }
}

/// Where a namespace named in a request lives: the agent's own (""), a name made by
/// `ip netns add` (/run/netns/NAME), or a path (/proc/PID/ns/net).
pub fn netns_path(netns: &str) -> std::path::PathBuf {
    if netns.is_empty() {
        PathBuf::from("/proc/self/ns/net")
    } else if netns.starts_with('/') {
        PathBuf::from(netns)
    } else {
        Path::new("/run/netns").join(netns)
    }
}

fn resolve_interface(name: &str, netns: &str) -> Result<ResolvedInterface> {
    use crate::kernel::{netns::Netns, rtnl::Netlink};
    if name.is_empty() || name.len() > 15 || name.contains('/') {
        return Err(Error::invalid(
            "target.interface.name",
            format!("{name:?} is not a device name (1-15 characters)"),
        ));
    }
    if !netns.is_empty()
        && !netns.starts_with('/')
        && (netns.contains('/') || netns == "." || netns == "..")
    {
        return Err(Error::invalid(
            "target.interface.netns",
            format!("{netns:?} is not a namespace name or an absolute path"),
        ));
    }
    let path = netns_path(netns);
    let ns = Netns::open(&path).map_err(|e| {
        Error::NotFound(format!(
            "target.interface.netns: no network namespace {} ({e})",
            path.display()
        ))
    })?;
    let links = Netlink::open_in(&ns.file)
        .and_then(|mut nl| nl.links())
        .map_err(|e| Error::internal("listing devices", e))?;
    let link = links.iter().find(|l| l.name == name).ok_or_else(|| {
        let have: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        Error::NotFound(format!(
            "target.interface.name: no device {name} in namespace {} (it has {})",
            if netns.is_empty() { "of the agent" } else { netns },
            have.join(", ")
        ))
    })?;
    // A path that still opens the namespace later; our own /proc/self would change meaning.
    let netns_path = if netns.is_empty() {
        PathBuf::from(format!("/proc/{}/ns/net", std::process::id()))
    } else {
        path
    };
    Ok(ResolvedInterface {
        name: name.to_string(),
        ifindex: link.ifindex,
        netns: netns.to_string(),
        netns_path,
        netns_ino: ns.ino,
        l2_len: link.l2_len(),
    })
}

fn interface_gone(i: &ResolvedInterface) -> Option<String> {
    use crate::kernel::{netns::Netns, rtnl::Netlink};
    let ns = match Netns::open(&i.netns_path) {
        Ok(ns) if ns.ino == i.netns_ino => ns,
        _ => {
            return Some(format!(
                "target gone: network namespace {} was removed",
                i.netns_path.display()
            ));
        }
    };
    let nl = if i.netns.is_empty() { Netlink::open() } else { Netlink::open_in(&ns.file) };
    match nl.and_then(|mut nl| nl.links()) {
        Ok(links) if !links.iter().any(|l| l.ifindex == i.ifindex && l.name == i.name) => {
            Some(format!("target gone: device {} (index {}) was removed", i.name, i.ifindex))
        }
        // A netlink error says nothing about the device: never fail a fault on it.
        _ => None,
    }
}

/// A process's start time in clock ticks after boot (field 22 of /proc/PID/stat).
fn start_time(proc_dir: &Path) -> Option<u64> {
    stat_fields(proc_dir)?.get(19)?.parse().ok()
}

/// The start time of a process that has not exited: None for a zombie (state Z, or X while
/// it is being reaped), whose /proc entry stays until its parent waits for it.
fn live_start_time(proc_dir: &Path) -> Option<u64> {
    let fields = stat_fields(proc_dir)?;
    if matches!(fields.first().map(String::as_str), Some("Z" | "X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// The fields of /proc/PID/stat after the command name, from the state (field 3) on.
fn stat_fields(proc_dir: &Path) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    Some(stat[stat.rfind(')')? + 1..].split_whitespace().map(str::to_string).collect())
}

/// The cgroup v2 path ("0::/path" line) of a /proc/PID/cgroup text (the parser and its
/// tests are faultline-host's).
pub use faultline_host::cgroup::v2_path as cgroup_v2_path;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    fn fixture() -> (TempDir, Resolver) {
        let d = TempDir::new();
        let mount = d.cgroups(&["a/b", "agent", "other"]);
        std::fs::create_dir_all(d.path().join("proc/42")).unwrap();
        std::fs::write(d.path().join("proc/42/cgroup"), "4:memory:/m\n0::/a/b\n").unwrap();
        std::fs::create_dir_all(d.path().join("proc/43")).unwrap();
        std::fs::write(d.path().join("proc/43/cgroup"), "4:memory:/m\n").unwrap();
        let r = Resolver::new(mount, d.path().join("proc"), "/agent".into(), 7);
        (d, r)
    }

    #[test]
    fn resolves_paths_in_every_spelling() {
        let (_d, r) = fixture();
        for raw in ["/a/b", "a/b", "/a/b/"] {
            let c = r.resolve_cgroup(&TargetSpec::CgroupPath(raw.into())).unwrap();
            assert_eq!(c.path, "/a/b");
            assert_eq!(c.level, 2);
        }
        let full = r.mount().join("a").display().to_string();
        let c = r.resolve_cgroup(&TargetSpec::CgroupPath(full)).unwrap();
        assert_eq!((c.path.as_str(), c.level), ("/a", 1));
    }

    #[test]
    fn resolves_pid_through_proc() {
        let (_d, r) = fixture();
        assert_eq!(r.resolve_cgroup(&TargetSpec::Pid(42)).unwrap().path, "/a/b");
        assert!(matches!(r.resolve(&TargetSpec::Pid(99)), Err(Error::NotFound(_))));
        assert!(matches!(r.resolve(&TargetSpec::Pid(43)), Err(Error::FailedPrecondition(_))));
    }

    #[test]
    fn refuses_malformed_targets() {
        let (_d, r) = fixture();
        let refused = |t: TargetSpec| match r.resolve(&t) {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("{t:?} gave {other:?}"),
        };
        assert_eq!(refused(TargetSpec::CgroupPath("/a/../agent".into())), "target.cgroup_path");
        assert_eq!(refused(TargetSpec::CgroupPath(String::new())), "target.cgroup_path");
        assert_eq!(refused(TargetSpec::Pid(7)), "target.pid");
        assert!(matches!(
            r.resolve(&TargetSpec::CgroupPath("/nope".into())),
            Err(Error::NotFound(_))
        ));
    }

    const UID: &str = "6f1b5c2e-0d3a-4a8e-9a55-2f0c9a1b7e11";
    const UID2: &str = "0a9b8c7d-1e2f-4a5b-8c6d-7e8f9a0b1c2d";

    fn cid(head: &str) -> String {
        format!("{head}{}", "0".repeat(64 - head.len()))
    }

    /// One node per runtime and cgroup driver, as each lays its cgroups out.
    fn layouts() -> Vec<(&'static str, &'static str, String, Option<&'static str>)> {
        let u = UID.replace('-', "_");
        let u2 = UID2.replace('-', "_");
        vec![
            ("docker", "cgroupfs", format!("docker/{}", cid("d0c1")), None),
            ("docker", "systemd", format!("system.slice/docker-{}.scope", cid("d0c2")), None),
            (
                "containerd",
                "cgroupfs",
                format!("kubepods/burstable/pod{UID}/{}", cid("c0c1")),
                Some(UID),
            ),
            (
                "containerd",
                "systemd",
                format!(
                    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{u}.slice/cri-containerd-{}.scope",
                    cid("c0c2")
                ),
                Some(UID),
            ),
            (
                "cri-o",
                "cgroupfs",
                format!("kubepods/besteffort/pod{UID2}/crio-{}", cid("c1010")),
                Some(UID2),
            ),
            (
                "cri-o",
                "systemd",
                format!(
                    "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{u2}.slice/crio-{}.scope",
                    cid("c1020")
                ),
                Some(UID2),
            ),
            ("podman", "systemd", format!("machine.slice/libpod-{}.scope", cid("90d1")), None),
        ]
    }

    #[test]
    fn resolves_containers_of_every_runtime_and_driver() {
        let d = TempDir::new();
        let mut dirs: Vec<String> = layouts().into_iter().map(|l| l.2).collect();
        // What must not match: conmon monitors, a container's own sub-cgroups.
        dirs.push(format!("kubepods/besteffort/pod{UID2}/crio-conmon-{}", cid("c1030")));
        dirs.push(format!("system.slice/docker-{}.scope/init.scope", cid("d0c2")));
        let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let mount = d.cgroups(&refs);
        let r = Resolver::new(mount, d.path().join("proc"), "/agent".into(), 7);
        for (runtime, driver, path, pod) in layouts() {
            let full = path.rsplit(['/', '-']).next().unwrap().trim_end_matches(".scope");
            for prefix in [&full[..12], full] {
                let cg = r
                    .resolve_cgroup(&TargetSpec::Container(prefix.into()))
                    .unwrap_or_else(|e| panic!("{runtime}/{driver} {prefix}: {e}"));
                assert_eq!(cg.path, format!("/{path}"), "{runtime}/{driver}");
                assert_eq!(cg.runtime, Some(runtime), "{runtime}/{driver}");
                assert_eq!(cg.container_id.as_deref(), Some(full));
                assert_eq!(cg.pod_uid.as_deref(), pod, "{runtime}/{driver}");
            }
        }
        // The conmon cgroup's id is no container; "c0c" begins two ids.
        let none = r.resolve_cgroup(&TargetSpec::Container(cid("c1030")));
        assert!(matches!(none, Err(Error::NotFound(_))), "{none:?}");
        match r.resolve_cgroup(&TargetSpec::Container("c0c".into())) {
            Err(Error::InvalidArgument { field, message }) => {
                assert_eq!(field, "target.container_id");
                assert!(
                    message.contains("ambiguous") && message.contains("c0c100000000"),
                    "{message}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resolves_pods_and_their_containers() {
        let d = TempDir::new();
        let dirs: Vec<String> = layouts().into_iter().map(|l| l.2).collect();
        let refs: Vec<&str> = dirs.iter().map(String::as_str).collect();
        let mount = d.cgroups(&refs);
        let r = Resolver::new(mount.clone(), d.path().join("proc"), "/agent".into(), 7);
        let pod = |uid: &str, c: Option<&str>| {
            r.resolve_cgroup(&TargetSpec::Pod {
                pod: PodRef::Uid(uid.into()),
                container: c.map(|c| ContainerRef::Id(c.into())),
            })
        };
        // UID has a pod cgroup under both drivers here: that is two nodes' worth, ambiguous.
        assert!(matches!(pod(UID, None), Err(Error::InvalidArgument { .. })));
        std::fs::remove_dir_all(mount.join(format!("kubepods/burstable/pod{UID}"))).unwrap();
        let cg = pod(UID, None).unwrap();
        assert!(
            cg.path.ends_with(&format!("kubepods-burstable-pod{}.slice", UID.replace('-', "_")))
        );
        assert_eq!(cg.pod_uid.as_deref(), Some(UID));
        let one = pod(UID, Some("c0c2")).unwrap();
        assert!(one.path.starts_with(&cg.path) && one.path.ends_with(".scope"));
        // A container of another pod is not found inside this one.
        assert!(matches!(pod(UID, Some("c1020")), Err(Error::NotFound(_))));
        assert!(matches!(pod(UID2.replace('2', "3").as_str(), None), Err(Error::NotFound(_))));
    }

    #[test]
    fn resolves_pods_and_containers_by_name_from_the_kubelet_logs() {
        let d = TempDir::new();
        let (app, old_app) = (cid("a0a1"), cid("a0a0"));
        let pod_cg = format!("kubepods/burstable/pod{UID}");
        let mount = d.cgroups(&[&format!("{pod_cg}/{app}")]);
        let logs = d.path().join("log");
        let (pods, links) = (logs.join("pods"), logs.join("containers"));
        let dir = pods.join(format!("shop_checkout-7d9_{UID}"));
        // An earlier pod of the same name whose logs are still kept: it has no cgroup.
        let earlier = pods.join(format!("shop_checkout-7d9_{UID2}"));
        for p in [dir.join("app"), dir.join("envoy"), earlier.join("app"), links.clone()] {
            std::fs::create_dir_all(p).unwrap();
        }
        for (id, into) in [(&app, &dir), (&old_app, &dir)] {
            let link = links.join(format!("checkout-7d9_shop_app-{id}.log"));
            std::os::unix::fs::symlink(into.join("app/0.log"), link).unwrap();
        }
        let r = Resolver::new(mount, d.path().join("proc"), "/agent".into(), 7)
            .with_pods_log_dir(pods.clone());
        let named = |ns: &str, name: &str, c: Option<&str>| {
            r.resolve_cgroup(&TargetSpec::Pod {
                pod: PodRef::Name { namespace: ns.into(), name: name.into() },
                container: c.map(|c| ContainerRef::Name(c.into())),
            })
        };
        let cg = named("shop", "checkout-7d9", None).unwrap();
        assert_eq!((cg.path.as_str(), cg.pod_uid.as_deref()), (&*format!("/{pod_cg}"), Some(UID)));
        // The restarted container's earlier id has no cgroup: the running one is found.
        let c = named("shop", "checkout-7d9", Some("app")).unwrap();
        assert_eq!(c.container_id.as_deref(), Some(&*app));
        let err = |r: Result<ResolvedCgroup>| match r {
            Err(Error::NotFound(m)) => m,
            other => panic!("{other:?}"),
        };
        let m = err(named("shop", "checkout-7d9", Some("db")));
        assert!(m.contains("target.pod.container_name") && m.contains("app, envoy"), "{m}");
        let m = err(named("shop", "checkout-7d9", Some("envoy")));
        assert!(m.contains("not running"), "{m}");
        let m = err(named("shop", "cart", None));
        assert!(m.contains("target.pod.name") && m.contains("checkout-7d9"), "{m}");
        let m = err(named("payments", "cart", None));
        assert!(m.contains("namespaces here: shop"), "{m}");
        // Both pods of that name running: which one is meant cannot be told.
        std::fs::create_dir_all(r.mount().join(format!("kubepods/besteffort/pod{UID2}"))).unwrap();
        assert!(matches!(named("shop", "checkout-7d9", None), Err(Error::InvalidArgument { .. })));
        // By uid, a container by name too.
        let by_uid = r
            .resolve_cgroup(&TargetSpec::Pod {
                pod: PodRef::Uid(UID.into()),
                container: Some(ContainerRef::Name("app".into())),
            })
            .unwrap();
        assert_eq!(by_uid.container_id.as_deref(), Some(&*app));
        assert_eq!(by_uid.container_name.as_deref(), Some("app"));
        // By id, the name comes from the kubelet's link of that id.
        let by_id = r.resolve_cgroup(&TargetSpec::Container(app[..12].into())).unwrap();
        assert_eq!(by_id.container_name.as_deref(), Some("app"));
    }

    #[test]
    fn host_is_the_root_cgroup() {
        let (_d, r) = fixture();
        let cg = r.resolve_cgroup(&TargetSpec::Host).unwrap();
        assert_eq!((cg.path.as_str(), cg.level), ("/", 0));
    }

    #[test]
    fn a_removed_or_replaced_cgroup_is_gone() {
        let (d, r) = fixture();
        let cg = r.resolve_cgroup(&TargetSpec::CgroupPath("/other".into())).unwrap();
        assert_eq!(r.gone(&cg), None);
        let dir = r.mount().join("other");
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(r.gone(&cg).unwrap().starts_with("target gone"));
        // Same name again (a restarted container's path): a new directory, not the target.
        d.cgroups(&["other"]);
        let again = r.resolve_cgroup(&TargetSpec::CgroupPath("/other".into())).unwrap();
        if again.id != cg.id {
            assert!(r.gone(&cg).is_some());
        }
    }

    #[test]
    fn reads_start_time_after_the_command_name() {
        let d = TempDir::new();
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 123456 1000 10";
        std::fs::write(d.path().join("stat"), stat).unwrap();
        assert_eq!(start_time(d.path()), Some(123456));
        assert_eq!(live_start_time(d.path()), Some(123456));
        assert_eq!(start_time(&d.path().join("none")), None);
        // A zombie has exited, though its entry stays until its parent reaps it.
        std::fs::write(d.path().join("stat"), stat.replace(")) S ", ")) Z ")).unwrap();
        assert_eq!(start_time(d.path()), Some(123456));
        assert_eq!(live_start_time(d.path()), None);
    }
}
