//! Target resolution: cgroup paths, pids, containers, pods and the host to cgroup v2
//! directories, and whether a resolved target is still there.
//!
//! The cgroup2 mount is found in mountinfo (hybrid hosts mount it at /sys/fs/cgroup/unified,
//! pure v2 hosts at /sys/fs/cgroup); it is never hard-coded.

pub mod runtime;

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Component, Path, PathBuf},
};

use faultline_host::mountinfo;

use crate::engine::{
    error::{Error, Result},
    model::{Resolved, ResolvedCgroup, ResolvedInterface, TargetSpec},
};

/// Resolves targets against one host view (a /proc and a cgroup2 mount).
#[derive(Clone, Debug)]
pub struct Resolver {
    mount: PathBuf,
    proc_root: PathBuf,
    /// The agent's own cgroup and pid: never a target.
    own_cgroup: String,
    own_pid: u32,
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
        Self { mount, proc_root, own_cgroup, own_pid }
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
            TargetSpec::Pod { uid, container } => {
                let pods = runtime::find_pods(&self.mount, "/", uid);
                let pod = match pods.as_slice() {
                    [one] => one,
                    [] => {
                        return Err(Error::NotFound(format!(
                            "target.pod.uid: no pod {uid} in the cgroup tree under {}",
                            self.mount.display()
                        )));
                    }
                    many => {
                        return Err(Error::invalid(
                            "target.pod.uid",
                            format!("{uid} has several cgroups: {}", many.join(", ")),
                        ));
                    }
                };
                match container {
                    Some(prefix) => {
                        let c = self.one_container(pod, prefix, "target.pod.container_id")?;
                        self.container_cgroup(c, "target.pod.container_id")
                    }
                    None => {
                        let mut cg = self.resolve_path(pod, "target.pod.uid")?;
                        cg.pod_uid = Some(uid.clone());
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
            r.resolve_cgroup(&TargetSpec::Pod { uid: uid.into(), container: c.map(String::from) })
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
