//! What the node's operator allows: the policy file (`faultline serve --config FILE`, TOML).
//!
//! A refusal names the rule that made it, so whoever is refused knows what to change (or whom
//! to ask). Protected targets cover their whole subtree and every cgroup above them: faulting
//! /kubepods would hit the kube-system pods inside it.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;

use crate::{
    engine::{
        error::{Error, Result},
        model::{
            Amount, ExperimentSpec, FaultSpec, Resolved, ResolvedCgroup, TargetSpec,
            is_ancestor_path,
        },
    },
    targets::runtime,
};

/// The file as written; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    allow_host: Option<bool>,
    max_duration: Option<String>,
    max_concurrent: Option<usize>,
    max_stress_memory: Option<String>,
    protected_cgroups: Option<Vec<String>>,
    protected_namespaces: Option<Vec<String>>,
    pods_log_dir: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub allow_host: bool,
    pub max_duration: Duration,
    pub max_concurrent: usize,
    pub max_stress_memory: Option<u64>,
    /// Besides these, the root cgroup and the agent's own are always protected.
    pub protected_cgroups: Vec<String>,
    pub protected_namespaces: Vec<String>,
    /// Where the kubelet keeps `<namespace>_<pod>_<uid>` directories: how a pod's namespace
    /// is known without the API server.
    pub pods_log_dir: PathBuf,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_host: false,
            max_duration: Duration::from_secs(3600),
            max_concurrent: 256,
            max_stress_memory: None,
            protected_cgroups: Vec::new(),
            protected_namespaces: vec!["kube-system".into()],
            pods_log_dir: PathBuf::from("/var/log/pods"),
        }
    }
}

impl Policy {
    pub fn load(path: &Path) -> std::result::Result<Policy, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("reading policy {}: {e}", path.display()))?;
        Policy::parse(&text).map_err(|e| format!("policy {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> std::result::Result<Policy, String> {
        let f: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut p = Policy::default();
        if let Some(v) = f.allow_host {
            p.allow_host = v;
        }
        if let Some(v) = f.max_duration {
            p.max_duration =
                humantime::parse_duration(&v).map_err(|e| format!("max_duration: {v:?}: {e}"))?;
        }
        if let Some(v) = f.max_concurrent {
            if v == 0 {
                return Err("max_concurrent: must be at least 1".into());
            }
            p.max_concurrent = v;
        }
        if let Some(v) = f.max_stress_memory {
            p.max_stress_memory =
                Some(crate::units::parse_bytes(&v).map_err(|e| format!("max_stress_memory: {e}"))?);
        }
        if let Some(v) = f.protected_cgroups {
            for c in &v {
                if !c.starts_with('/') || c.split('/').any(|s| s == "..") {
                    return Err(format!(
                        "protected_cgroups: {c:?} is not a path under the cgroup2 mount"
                    ));
                }
            }
            p.protected_cgroups = v.iter().map(|c| c.trim_end_matches('/').to_string()).collect();
        }
        if let Some(v) = f.protected_namespaces {
            p.protected_namespaces = v;
        }
        if let Some(v) = f.pods_log_dir {
            p.pods_log_dir = v;
        }
        Ok(p)
    }

    /// Refuses what the policy does not allow; `active` counts experiments in effect now.
    pub fn check(
        &self,
        spec: &ExperimentSpec,
        target: &Resolved,
        own: &str,
        active: usize,
    ) -> Result<()> {
        if active >= self.max_concurrent {
            return Err(Error::ResourceExhausted(format!(
                "policy max_concurrent ({}): {active} experiments are in effect",
                self.max_concurrent
            )));
        }
        if spec.duration > self.max_duration {
            return Err(Error::PermissionDenied(format!(
                "policy max_duration ({}): duration {} is longer",
                humantime::format_duration(self.max_duration),
                humantime::format_duration(spec.duration)
            )));
        }
        // A percent is only known in bytes once placed: the stress driver checks that one.
        if let FaultSpec::MemoryStress(m) = &spec.fault
            && let Amount::Bytes(b) = m.size
        {
            Self::check_stress_memory(self.max_stress_memory, b)?;
        }
        match target {
            Resolved::Cgroup(cg) => self.check_cgroup(spec, cg, own),
            Resolved::Interface(_) => Ok(()),
        }
    }

    fn check_cgroup(&self, spec: &ExperimentSpec, cg: &ResolvedCgroup, own: &str) -> Result<()> {
        let p = cg.path.as_str();
        if p == "/" {
            if spec.target != TargetSpec::Host {
                return Err(Error::PermissionDenied(
                    "policy protected_cgroups: / is the root cgroup, the whole host; a host-wide \
                     fault is asked for with the host target, which the policy must allow"
                        .into(),
                ));
            }
            if !self.allow_host {
                return Err(Error::PermissionDenied(
                    "policy allow_host: host-wide faults are off (set allow_host = true in the \
                     policy file)"
                        .into(),
                ));
            }
            // The whole host, knowingly: the protections below are about subtrees.
            return Ok(());
        }
        let covers = |q: &str| p == q || is_ancestor_path(q, p) || is_ancestor_path(p, q);
        // Not "inside": an agent running in the root cgroup (a VM's init) may target any other.
        if p == own || is_ancestor_path(p, own) {
            return Err(Error::PermissionDenied(format!(
                "policy protected_cgroups: {p} holds the agent's own cgroup {own}"
            )));
        }
        if let Some(q) = self.protected_cgroups.iter().find(|q| covers(q)) {
            return Err(Error::PermissionDenied(format!(
                "policy protected_cgroups: {p} holds or is inside protected {q}"
            )));
        }
        if self.protected_namespaces.is_empty() {
            return Ok(());
        }
        let namespaces = self.pod_namespaces();
        let mut pods: Vec<(String, String)> = runtime::pod_on_path(p)
            .map(|uid| vec![(p.to_string(), uid)])
            .unwrap_or_else(|| runtime::pods_under(&cg.mount, p));
        pods.sort();
        for (path, uid) in pods {
            if let Some(ns) = namespaces.get(&uid)
                && self.protected_namespaces.contains(ns)
            {
                return Err(Error::PermissionDenied(format!(
                    "policy protected_namespaces: {p} holds pod {uid} ({path}) of namespace {ns}"
                )));
            }
        }
        Ok(())
    }

    /// Pod uid -> namespace, from the kubelet's log directories.
    fn pod_namespaces(&self) -> HashMap<String, String> {
        let Ok(dir) = std::fs::read_dir(&self.pods_log_dir) else { return HashMap::new() };
        dir.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let mut parts = name.splitn(3, '_');
                let (ns, _pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
                Some((runtime::normalize_uid(uid)?, ns.to_string()))
            })
            .collect()
    }

    /// The memory-stress size this policy allows, checked where the size is known in bytes.
    pub fn check_stress_memory(max: Option<u64>, bytes: u64) -> Result<()> {
        match max {
            Some(m) if bytes > m => Err(Error::PermissionDenied(format!(
                "policy max_stress_memory ({m} bytes): {bytes} bytes asked"
            ))),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::testutil::TempDir;

    const SYS_UID: &str = "11111111-2222-4333-8444-555555555555";
    const APP_UID: &str = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";

    fn spec(target: TargetSpec, secs: u64) -> ExperimentSpec {
        ExperimentSpec {
            target,
            fault: FaultSpec::ProcessPause,
            duration: Duration::from_secs(secs),
            labels: BTreeMap::new(),
        }
    }

    fn cg(mount: &Path, path: &str) -> Resolved {
        Resolved::Cgroup(ResolvedCgroup {
            path: path.into(),
            mount: mount.to_path_buf(),
            ..Default::default()
        })
    }

    fn denied(r: Result<()>) -> String {
        match r {
            Err(Error::PermissionDenied(m)) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_shipped_policy_file_parses() {
        let text = include_str!("../../deploy/policy.toml");
        let p = Policy::parse(text).unwrap();
        assert!(!p.allow_host);
        assert_eq!(p.protected_namespaces, ["kube-system"]);
        assert!(Policy::parse("max_duraton = \"1h\"").unwrap_err().contains("unknown field"));
        assert!(Policy::parse("max_duration = \"soon\"").unwrap_err().contains("max_duration"));
        assert!(Policy::parse("protected_cgroups = [\"a/b\"]").is_err());
    }

    #[test]
    fn refusals_name_their_rule() {
        let d = TempDir::new();
        let sys_pod = format!("kubepods/burstable/pod{SYS_UID}");
        let app_pod = format!("kubepods/besteffort/pod{APP_UID}");
        let mount = d.cgroups(&[&format!("{sys_pod}/c1"), &format!("{app_pod}/c2"), "agent", "db"]);
        let logs = d.path().join("logs");
        std::fs::create_dir_all(logs.join(format!("kube-system_coredns-1_{SYS_UID}"))).unwrap();
        std::fs::create_dir_all(logs.join(format!("shop_checkout-7_{APP_UID}"))).unwrap();
        let p = Policy::parse(&format!(
            "max_duration = \"10m\"\nmax_concurrent = 2\nprotected_cgroups = [\"/db\"]\n\
             pods_log_dir = \"{}\"",
            logs.display()
        ))
        .unwrap();
        let path = |s: &str| TargetSpec::CgroupPath(s.into());
        let check = |t: TargetSpec, at: &str| p.check(&spec(t, 60), &cg(&mount, at), "/agent", 0);
        assert!(check(path("x"), &format!("/{app_pod}/c2")).is_ok());
        assert!(check(path("x"), &format!("/{app_pod}")).is_ok());
        let m = denied(check(path("x"), &format!("/{sys_pod}/c1")));
        assert!(m.starts_with("policy protected_namespaces") && m.contains("kube-system"), "{m}");
        // /kubepods holds the kube-system pod.
        assert!(denied(check(path("x"), "/kubepods")).contains("protected_namespaces"));
        assert!(denied(check(path("x"), "/agent")).starts_with("policy protected_cgroups"));
        assert!(denied(check(path("x"), "/db")).contains("protected /db"));
        assert!(denied(check(path("x"), "/")).starts_with("policy protected_cgroups"));
        assert!(denied(check(TargetSpec::Host, "/")).starts_with("policy allow_host"));
        let long =
            p.check(&spec(path("x"), 3600), &cg(&mount, "/kubepods/besteffort"), "/agent", 0);
        assert!(denied(long).starts_with("policy max_duration (10m)"));
        let full = p.check(&spec(path("x"), 60), &cg(&mount, "/kubepods/besteffort"), "/agent", 2);
        assert!(matches!(full, Err(Error::ResourceExhausted(m)) if m.contains("max_concurrent")));
        let host = Policy { allow_host: true, ..p.clone() };
        assert!(host.check(&spec(TargetSpec::Host, 60), &cg(&mount, "/"), "/agent", 0).is_ok());
        // No namespace rule: kube-system pods are fair game.
        let open = Policy { protected_namespaces: Vec::new(), ..p };
        assert!(open.check(&spec(path("x"), 60), &cg(&mount, "/kubepods"), "/agent", 0).is_ok());
    }
}
