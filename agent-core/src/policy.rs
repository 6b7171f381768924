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
use toml::Spanned;

use crate::{
    engine::{
        error::{Error, Result},
        model::{
            Amount, ExperimentSpec, FaultSpec, Resolved, ResolvedCgroup, TargetSpec,
            is_ancestor_path,
        },
    },
    targets::{kubelet, runtime},
};

/// The file as written; every key is optional. Values that are checked after parsing keep
/// their place in the file, so a refusal can name the line.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    allow_host: Option<bool>,
    max_duration: Option<Spanned<String>>,
    max_concurrent: Option<Spanned<usize>>,
    max_stress_memory: Option<Spanned<String>>,
    protected_cgroups: Option<Vec<Spanned<String>>>,
    protected_namespaces: Option<Vec<String>>,
    pods_log_dir: Option<PathBuf>,
    guards: Option<crate::stop::node::GuardsFile>,
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub allow_host: bool,
    pub max_duration: Duration,
    pub max_concurrent: usize,
    /// In bytes; a percent in the file is of the host's memory (MemTotal) at start.
    pub max_stress_memory: Option<u64>,
    /// The percent the file gave for max_stress_memory, if it gave one (for the start log).
    pub max_stress_memory_percent: Option<f64>,
    /// Besides these, the root cgroup and the agent's own are always protected.
    pub protected_cgroups: Vec<String>,
    pub protected_namespaces: Vec<String>,
    /// Where the kubelet keeps `<namespace>_<pod>_<uid>` directories: how a pod's namespace
    /// is known without the API server.
    pub pods_log_dir: PathBuf,
    /// Node-wide conditions that halt the agent (`[guards]`).
    pub guards: crate::stop::node::Guards,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allow_host: false,
            max_duration: Duration::from_secs(3600),
            max_concurrent: 256,
            max_stress_memory: None,
            max_stress_memory_percent: None,
            protected_cgroups: Vec::new(),
            protected_namespaces: vec!["kube-system".into()],
            pods_log_dir: PathBuf::from("/var/log/pods"),
            guards: Default::default(),
        }
    }
}

/// Why a policy file was refused. `message` is one line naming the file, the place and the
/// key; `excerpt` is, for a TOML error, the toml crate's own rendering of it (the line of
/// the file with a caret under the column), for a person reading the agent's stderr.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyError {
    pub message: String,
    pub excerpt: Option<String>,
}

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

impl PolicyError {
    fn at(text: &str, span: std::ops::Range<usize>, what: String) -> Self {
        let (line, column) = line_column(text, span.start);
        PolicyError { message: format!("line {line}, column {column}: {what}"), excerpt: None }
    }

    fn in_file(self, path: &Path) -> Self {
        PolicyError { message: format!("policy {}: {}", path.display(), self.message), ..self }
    }
}

/// 1-based line and column (in characters) of byte `offset` of `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// `"10%"` as a percent in (0, 100], or None when `s` is not written as a percent.
fn percent_of(s: &str) -> Option<std::result::Result<f64, String>> {
    let n = s.trim().strip_suffix('%')?;
    Some(
        n.trim()
            .parse::<f64>()
            .ok()
            .filter(|p| p.is_finite() && *p > 0.0 && *p <= 100.0)
            .ok_or_else(|| format!("{s:?}: a percent of the host's memory must be > 0 and <= 100")),
    )
}

impl Policy {
    pub fn load(path: &Path) -> std::result::Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|e| PolicyError {
            message: format!("reading policy {}: {e}", path.display()),
            excerpt: None,
        })?;
        Policy::parse(&text).map_err(|e| e.in_file(path))
    }

    /// A percent for max_stress_memory is of this host's memory (MemTotal).
    pub fn parse(text: &str) -> std::result::Result<Policy, PolicyError> {
        Policy::parse_with_memory(text, crate::wire::validate_stress::host_memory())
    }

    /// `parse` with the host's memory given, in bytes.
    pub fn parse_with_memory(
        text: &str,
        host_memory: u64,
    ) -> std::result::Result<Policy, PolicyError> {
        let f: File = toml::from_str(text).map_err(|e| {
            let what = e.message().trim().to_string();
            let mut err = match e.span() {
                Some(span) => PolicyError::at(text, span, what),
                None => PolicyError { message: what, excerpt: None },
            };
            err.excerpt = Some(e.to_string().trim_end().to_string());
            err
        })?;
        let bad = |span: std::ops::Range<usize>, what: String| PolicyError::at(text, span, what);
        let mut p = Policy::default();
        if let Some(v) = f.allow_host {
            p.allow_host = v;
        }
        if let Some(v) = f.max_duration {
            p.max_duration = humantime::parse_duration(v.get_ref()).map_err(|e| {
                bad(v.span(), format!("max_duration: {:?}: {e} (examples: 30m, 1h)", v.get_ref()))
            })?;
            if p.max_duration.is_zero() {
                return Err(bad(v.span(), "max_duration: must be more than 0".into()));
            }
        }
        if let Some(v) = f.max_concurrent {
            if *v.get_ref() == 0 {
                return Err(bad(v.span(), "max_concurrent: must be at least 1".into()));
            }
            p.max_concurrent = *v.get_ref();
        }
        if let Some(v) = f.max_stress_memory {
            let written = v.get_ref();
            let bytes = match percent_of(written) {
                Some(Ok(pct)) => {
                    p.max_stress_memory_percent = Some(pct);
                    (host_memory as f64 * pct / 100.0) as u64
                }
                Some(Err(e)) => return Err(bad(v.span(), format!("max_stress_memory: {e}"))),
                None => crate::units::parse_bytes(written).map_err(|e| {
                    bad(
                        v.span(),
                        format!("max_stress_memory: {e}, or a percent of the host's memory (10%)"),
                    )
                })?,
            };
            p.max_stress_memory = Some(bytes);
        }
        if let Some(v) = f.protected_cgroups {
            for c in &v {
                let path = c.get_ref();
                if !path.starts_with('/') || path.split('/').any(|s| s == "..") {
                    return Err(bad(
                        c.span(),
                        format!(
                            "protected_cgroups: {path:?} is not a path under the cgroup2 mount \
                             (it starts with /, like /system.slice/kubelet.service)"
                        ),
                    ));
                }
            }
            p.protected_cgroups = v
                .iter()
                .map(|c| match c.get_ref().trim_end_matches('/') {
                    "" => "/".to_string(),
                    t => t.to_string(),
                })
                .collect();
        }
        if let Some(v) = f.protected_namespaces {
            p.protected_namespaces = v;
        }
        if let Some(v) = f.pods_log_dir {
            p.pods_log_dir = v;
        }
        if let Some(g) = f.guards {
            p.guards = crate::stop::node::Guards::from_file(g, host_memory)
                .map_err(|(span, what)| bad(span, what))?;
        }
        Ok(p)
    }

    /// Every value in force, on one line, for the agent's start log.
    pub fn summary(&self) -> String {
        let memory = match (self.max_stress_memory, self.max_stress_memory_percent) {
            (None, _) => "none".to_string(),
            (Some(b), None) => crate::units::human_bytes(b),
            (Some(b), Some(pct)) => {
                format!("{pct}% of the host's memory ({})", crate::units::human_bytes(b))
            }
        };
        format!(
            "allow_host={} max_duration={} max_concurrent={} max_stress_memory={memory} \
             protected_cgroups={:?} protected_namespaces={:?} pods_log_dir={} guards={}",
            self.allow_host,
            crate::units::human_duration(self.max_duration),
            self.max_concurrent,
            self.protected_cgroups,
            self.protected_namespaces,
            self.pods_log_dir.display(),
            self.guards.summary()
        )
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
                crate::units::human_duration(self.max_duration),
                crate::units::human_duration(spec.duration)
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
        // A pid target of a fault that acts on that process alone (its system calls, a signal
        // to it) does not reach the rest of its cgroup: the root cgroup is no reason to refuse
        // it (on hybrid hosts and in VMs most processes sit there). The agent's own pid is
        // refused when resolving; a protected cgroup other than the root still covers its
        // processes, whichever way they are named.
        if p == "/" && matches!(spec.target, TargetSpec::Pid(_)) && spec.fault.acts_on_process() {
            return Ok(());
        }
        if p == "/" {
            if let TargetSpec::Pid(pid) = spec.target {
                return Err(Error::PermissionDenied(format!(
                    "policy protected_cgroups: process {pid} sits in the root cgroup /, and {} \
                     acts on a pid's whole cgroup, here the whole host (only syscall_errno, \
                     syscall_delay and process_kill act on the process alone); a host-wide \
                     fault is asked for with the host target, which the policy must allow",
                    spec.fault.kind()
                )));
            }
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
        kubelet::pods(&self.pods_log_dir).into_iter().map(|p| (p.uid, p.namespace)).collect()
    }

    /// The memory-stress size this policy allows, checked where the size is known in bytes.
    pub fn check_stress_memory(max: Option<u64>, bytes: u64) -> Result<()> {
        match max {
            Some(m) if bytes > m => {
                let (mut max, mut asked) =
                    (crate::units::human_bytes(m), crate::units::human_bytes(bytes));
                // Rounded to the same figure ("512MiB" and "512.0MiB"): the bytes tell apart.
                if max.replace(".0", "") == asked.replace(".0", "") {
                    (max, asked) = (format!("{m} bytes"), format!("{bytes} bytes"));
                }
                Err(Error::PermissionDenied(format!(
                    "policy max_stress_memory ({max}): {asked} asked"
                )))
            }
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
            lease: None,
            stop: Vec::new(),
            expect_hit_within: crate::engine::model::DEFAULT_EXPECT_HIT_WITHIN,
            follow: false,
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
        assert_eq!(p.max_stress_memory, Some(4 << 30));
    }

    fn refused(text: &str) -> PolicyError {
        Policy::parse_with_memory(text, 8 << 30).unwrap_err()
    }

    #[test]
    fn a_bad_file_is_refused_naming_the_line_and_the_key() {
        let e = refused("allow_host = false\nmax_duraton = \"1h\"\n");
        assert!(e.message.starts_with("line 2, column 1: unknown field `max_duraton`"), "{e}");
        assert!(!e.message.contains('\n'), "{e}");
        // The toml crate's own rendering, with the line and a caret under the key.
        let excerpt = e.excerpt.unwrap();
        assert!(
            excerpt.contains("2 | max_duraton = \"1h\"") && excerpt.contains("^^^"),
            "{excerpt}"
        );
        let e = refused("\nmax_duration = \"soon\"");
        assert!(e.message.starts_with("line 2, column 16: max_duration: \"soon\""), "{e}");
        assert_eq!(e.excerpt, None);
        let e = refused("protected_cgroups = [\"/ok\", \"a/b\"]");
        assert!(e.message.contains("column 29: protected_cgroups: \"a/b\" is not a path"), "{e}");
        assert!(refused("max_concurrent = 0").message.contains("at least 1"));
        assert!(refused("max_duration = \"0s\"").message.contains("more than 0"));
        assert!(refused("max_stress_memory = \"lots\"").message.contains("or a percent"));
        let e = refused("max_stress_memory = \"150%\"");
        assert!(e.message.contains("must be > 0 and <= 100"), "{e}");
        let e = Policy::load(Path::new("/nonexistent/policy.toml")).unwrap_err();
        assert!(e.message.starts_with("reading policy /nonexistent/policy.toml: "), "{e}");
    }

    #[test]
    fn max_stress_memory_takes_bytes_or_a_percent_of_the_host() {
        let p = Policy::parse_with_memory("max_stress_memory = \"10%\"", 8 << 30).unwrap();
        assert_eq!(p.max_stress_memory, Some((8u64 << 30) / 10));
        assert_eq!(p.max_stress_memory_percent, Some(10.0));
        assert!(p.summary().contains("max_stress_memory=10% of the host's memory (819.2MiB)"));
        let p = Policy::parse_with_memory("max_stress_memory = \"512MiB\"", 8 << 30).unwrap();
        assert_eq!((p.max_stress_memory, p.max_stress_memory_percent), (Some(512 << 20), None));
        let denied = Policy::check_stress_memory(p.max_stress_memory, 1 << 30).unwrap_err();
        assert_eq!(denied.to_string(), "policy max_stress_memory (512MiB): 1GiB asked");
        let close = Policy::check_stress_memory(p.max_stress_memory, (512 << 20) + 1);
        assert!(close.unwrap_err().to_string().contains("(536870912 bytes): 536870913 bytes"));
    }

    #[test]
    fn the_summary_names_every_value() {
        let s = Policy::default().summary();
        assert_eq!(
            s,
            "allow_host=false max_duration=1h max_concurrent=256 max_stress_memory=none \
             protected_cgroups=[] protected_namespaces=[\"kube-system\"] \
             pods_log_dir=/var/log/pods guards=none"
        );
        let g = Policy::parse("[guards]\nnode_psi_io_above = 60\n").unwrap().summary();
        assert!(g.ends_with("guards=node psi.io>60"), "{g}");
        let bad = Policy::parse("[guards]\nnode_psi_io_above = 0\n").unwrap_err();
        assert!(bad.message.starts_with("line 2, column 21: guards.node_psi_io_above"), "{bad}");
    }

    #[test]
    fn a_pid_in_the_root_cgroup_may_be_the_target_of_what_acts_on_the_process_alone() {
        let d = TempDir::new();
        let mount = d.cgroups(&["agent", "db"]);
        let p = Policy { protected_cgroups: vec!["/db".into()], ..Policy::default() };
        let kill = FaultSpec::ProcessKill(crate::engine::model::ProcessKill {
            signal: 9,
            mode: crate::engine::model::KillMode::All,
            interval: None,
        });
        let with = |fault: FaultSpec, t: TargetSpec| ExperimentSpec { fault, ..spec(t, 60) };
        let pid = TargetSpec::Pid(4242);
        assert!(p.check(&with(kill.clone(), pid.clone()), &cg(&mount, "/"), "/agent", 0).is_ok());
        // In a protected cgroup, the process is protected however it is named.
        let m = denied(p.check(&with(kill.clone(), pid.clone()), &cg(&mount, "/db"), "/agent", 0));
        assert!(m.contains("protected /db"), "{m}");
        // A pause (or any fault on the whole cgroup) of a pid in the root cgroup is host-wide.
        let m = denied(p.check(&spec(pid.clone(), 60), &cg(&mount, "/"), "/agent", 0));
        assert!(m.starts_with("policy protected_cgroups: process 4242 sits in the root cgroup"));
        assert!(m.contains("process_pause acts on a pid's whole cgroup"), "{m}");
        // Named as a cgroup, the root stays refused.
        let m = denied(p.check(
            &with(kill, TargetSpec::CgroupPath("/".into())),
            &cg(&mount, "/"),
            "/agent",
            0,
        ));
        assert!(m.starts_with("policy protected_cgroups: / is the root cgroup"), "{m}");
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
