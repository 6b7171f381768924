//! Where stress workers go and what the target's cgroup files say about them.
//!
//! Pure cgroup v2 hosts: the target's cgroup2 directory holds everything. Hybrid hosts
//! (cgroup2 without controllers; cpu, cpuacct, memory and pids as v1 hierarchies): workers
//! also join the target's v1 cgroups, found from a member process's /proc/PID/cgroup, or
//! created alongside (the same relative path) when the cgroup has no process yet; those are
//! removed again at the end. Accounting is read from whichever file holds it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use faultline_host::{cgroup, mountinfo};
use serde::{Deserialize, Serialize};

use crate::{
    engine::{error::Error, model::ResolvedCgroup},
    store::{self, Store},
};

/// v1 controllers workers join on a hybrid host (cpuset and freezer need set-up or would
/// change the target's state, so they are left alone).
const V1_CONTROLLERS: &[&str] = &["cpu", "cpuacct", "memory", "pids"];

/// One v1 hierarchy the workers join.
#[derive(Debug)]
pub struct V1Cgroup {
    /// Controllers mounted together in this hierarchy, e.g. ["cpu", "cpuacct"].
    pub controllers: Vec<String>,
    pub dir: PathBuf,
}

#[derive(Debug)]
pub struct Placement {
    /// The target's cgroup2 directory.
    pub v2: PathBuf,
    pub v1: Vec<V1Cgroup>,
    /// A process of the target (the one named, or the first in cgroup.procs).
    pub member: Option<u32>,
    /// Directories created alongside, deepest last (removed in reverse).
    created: Vec<PathBuf>,
    /// A dry run's placement: makes no directory, lists those it would make here.
    dry: Option<Vec<PathBuf>>,
    /// Where `created` is journaled before each directory is made, under `key`.
    journal: Store<Created>,
    key: String,
}

/// The journal entry of one placement: the directories it created, deepest last.
#[derive(Debug, Serialize, Deserialize)]
pub struct Created {
    key: String,
    dirs: Vec<PathBuf>,
}

impl store::Record for Created {
    const KIND: &'static str = "stress";
    const VERSION: u32 = 1;

    fn key(&self) -> String {
        self.key.clone()
    }

    fn encode(&self) -> Result<Vec<u8>, String> {
        store::json::encode(self)
    }

    fn decode(_version: u32, payload: &[u8]) -> Result<Self, String> {
        store::json::decode(payload)
    }
}

/// Removes what the journal entries list (deepest first), then the entries.
pub fn recover(journal: &Store<Created>, records: Vec<Created>) {
    for r in records {
        for d in r.dirs.iter().rev() {
            match fs::remove_dir(d) {
                Ok(()) => {
                    tracing::info!(cgroup = %d.display(), "removed a v1 cgroup left by a crashed agent")
                }
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(cgroup = %d.display(), error = %err, "could not remove a journaled v1 cgroup")
                }
                Err(_) => {}
            }
        }
        journal.remove(&r.key);
    }
}

/// v1 cgroup mounts whose controllers workers join: (mount point, those controllers).
fn v1_mounts(mounts: &[mountinfo::Mount]) -> Vec<(PathBuf, Vec<String>)> {
    mountinfo::v1_hierarchies(mounts)
        .into_iter()
        .filter_map(|h| {
            let controllers: Vec<String> = h
                .controllers
                .into_iter()
                .filter(|c| V1_CONTROLLERS.contains(&c.as_str()))
                .collect();
            (!controllers.is_empty()).then_some((h.mount, controllers))
        })
        .collect()
}

impl Placement {
    pub fn new(
        target: &ResolvedCgroup,
        journal: &Store<Created>,
    ) -> crate::engine::error::Result<Placement> {
        Self::place(target, journal, false)
    }

    /// Where `new` would place workers, making no directory (`would_make` lists them).
    pub fn dry(
        target: &ResolvedCgroup,
        journal: &Store<Created>,
    ) -> crate::engine::error::Result<Placement> {
        Self::place(target, journal, true)
    }

    /// The v1 directories a dry placement would make.
    pub fn would_make(&self) -> &[PathBuf] {
        self.dry.as_deref().unwrap_or_default()
    }

    fn place(
        target: &ResolvedCgroup,
        journal: &Store<Created>,
        dry: bool,
    ) -> crate::engine::error::Result<Placement> {
        let placing =
            |e: std::io::Error| Error::internal("placing workers in the target's cgroups", e);
        let v2 = target.fs_path();
        let in_v2 = fs::read_to_string(target.mount.join("cgroup.controllers")).unwrap_or_default();
        let mounts = mountinfo::read().map_err(|e| placing(std::io::Error::other(e)))?;
        let member = target.pid.or_else(|| {
            fs::read_to_string(v2.join("cgroup.procs")).ok()?.lines().next()?.parse().ok()
        });
        let proc_cgroup = member.and_then(|p| fs::read_to_string(format!("/proc/{p}/cgroup")).ok());
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let key = format!("{}-{seq}", std::process::id());
        let journal = journal.clone();
        let mut placement = Placement {
            v2,
            v1: Vec::new(),
            member,
            created: Vec::new(),
            dry: dry.then(Vec::new),
            journal,
            key,
        };
        for (mount, controllers) in v1_mounts(&mounts) {
            if controllers.iter().all(|c| in_v2.split_whitespace().any(|v| v == c)) {
                continue;
            }
            let rel = proc_cgroup
                .as_deref()
                .and_then(|t| cgroup::v1_path(t, &controllers))
                .unwrap_or_else(|| target.path.clone());
            let dir = mount.join(rel.trim_start_matches('/'));
            placement.make_dirs(&mount, &dir)?;
            placement.v1.push(V1Cgroup { controllers, dir });
        }
        Ok(placement)
    }

    fn make_dirs(&mut self, mount: &Path, dir: &Path) -> crate::engine::error::Result<()> {
        let mut missing = Vec::new();
        let mut d = dir.to_path_buf();
        while !d.exists() && d.starts_with(mount) && d != mount {
            missing.push(d.clone());
            if !d.pop() {
                break;
            }
        }
        if let Some(would) = &mut self.dry {
            would.extend(missing.into_iter().rev());
            return Ok(());
        }
        for d in missing.into_iter().rev() {
            // Journal first: the directory outlives a crashed agent.
            self.created.push(d.clone());
            self.write_journal().map_err(|e| Error::journal("the v1 cgroups it makes", &e))?;
            fs::create_dir(&d).map_err(|e| {
                Error::internal(&format!("placing workers: making {}", d.display()), e)
            })?;
        }
        Ok(())
    }

    fn write_journal(&self) -> std::result::Result<(), crate::store::PutError> {
        self.journal.put(&Created { key: self.key.clone(), dirs: self.created.clone() })
    }

    /// The cgroup.procs files a worker writes itself into.
    pub fn procs_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = self.v1.iter().map(|c| c.dir.join("cgroup.procs")).collect();
        v.push(self.v2.join("cgroup.procs"));
        v
    }

    fn v1_dir(&self, controller: &str) -> Option<&Path> {
        self.v1.iter().find(|c| c.controllers.iter().any(|n| n == controller)).map(|c| &*c.dir)
    }

    /// CPU time the cgroup used, in microseconds (cgroup2's cpu.stat exists on both layouts).
    pub fn cpu_usage_usec(&self) -> Option<u64> {
        if let Ok(s) = fs::read_to_string(self.v2.join("cpu.stat")) {
            return stat_field(&s, "usage_usec");
        }
        let ns = read_u64(&self.v1_dir("cpuacct")?.join("cpuacct.usage"))?;
        Some(ns / 1000)
    }

    /// CPUs the cgroup may use: its (and its ancestors') quota, the cpuset, the host.
    pub fn allowed_cpus(&self) -> f64 {
        let online = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
            .ok()
            .flatten()
            .unwrap_or(0)
            .max(1) as f64;
        let cpuset = fs::read_to_string(self.v2.join("cpuset.cpus.effective"))
            .ok()
            .and_then(|s| count_cpu_list(&s))
            .map_or(online, |n| n as f64);
        let mut quota = f64::INFINITY;
        // v2: cpu.max up the tree ("max 100000" or "50000 100000").
        let mut d = self.v2.clone();
        while let Ok(s) = fs::read_to_string(d.join("cpu.max")) {
            let mut f = s.split_whitespace();
            if let (Some(q), Some(p)) = (f.next(), f.next())
                && let (Ok(q), Ok(p)) = (q.parse::<f64>(), p.parse::<f64>())
                && p > 0.0
            {
                quota = quota.min(q / p);
            }
            if !d.pop() {
                break;
            }
        }
        // v1: cpu.cfs_quota_us / cpu.cfs_period_us up to the hierarchy's root.
        if let Some(mut d) = self.v1_dir("cpu").map(Path::to_path_buf) {
            loop {
                let q = fs::read_to_string(d.join("cpu.cfs_quota_us"));
                let p = read_u64(&d.join("cpu.cfs_period_us"));
                let Ok(q) = q else { break };
                if let (Ok(q), Some(p)) = (q.trim().parse::<i64>(), p)
                    && q > 0
                    && p > 0
                {
                    quota = quota.min(q as f64 / p as f64);
                }
                if !d.pop() {
                    break;
                }
            }
        }
        online.min(cpuset).min(quota)
    }

    /// The cgroup's memory limit in bytes, if it (or an ancestor) has one.
    pub fn memory_limit(&self) -> Option<u64> {
        let mut limit: Option<u64> = None;
        let mut tighten = |v: u64| limit = Some(limit.map_or(v, |l| l.min(v)));
        let mut d = self.v2.clone();
        while let Ok(s) = fs::read_to_string(d.join("memory.max")) {
            if let Ok(v) = s.trim().parse::<u64>() {
                tighten(v);
            }
            if !d.pop() {
                break;
            }
        }
        if let Some(mut d) = self.v1_dir("memory").map(Path::to_path_buf) {
            // v1 reports "no limit" as a huge page-aligned number.
            while let Some(v) = read_u64(&d.join("memory.limit_in_bytes")) {
                if v < (1 << 62) {
                    tighten(v);
                }
                if !d.pop() {
                    break;
                }
            }
        }
        limit
    }

    /// OOM kills in the cgroup so far (v2 memory.events, v1 memory.oom_control).
    pub fn oom_kills(&self) -> u64 {
        let v2 = fs::read_to_string(self.v2.join("memory.events")).ok();
        let v1 = || fs::read_to_string(self.v1_dir("memory")?.join("memory.oom_control")).ok();
        v2.or_else(v1).and_then(|s| stat_field(&s, "oom_kill")).unwrap_or(0)
    }
}

/// Directories placements made that would not go when their placement ended (another stress
/// fault on the same target still had its workers in them), with their journal key: tried
/// again whenever a placement ends, so the last fault on a target removes them. What is still
/// here when the agent dies stays journaled for the next start.
type Pending = Vec<(Store<Created>, String, Vec<PathBuf>)>;
static PENDING: std::sync::Mutex<Pending> = std::sync::Mutex::new(Vec::new());

/// Removes `dirs` deepest first; whether none is left.
fn remove_all(dirs: &[PathBuf]) -> bool {
    let mut all_gone = true;
    for d in dirs.iter().rev() {
        if let Err(e) = fs::remove_dir(d) {
            all_gone &= e.kind() == std::io::ErrorKind::NotFound;
        }
    }
    all_gone
}

impl Drop for Placement {
    fn drop(&mut self) {
        let mut pending = PENDING.lock().unwrap_or_else(|e| e.into_inner());
        if !self.created.is_empty() {
            let created = std::mem::take(&mut self.created);
            pending.push((self.journal.clone(), self.key.clone(), created));
        }
        pending.retain(|(journal, key, dirs)| {
            let gone = remove_all(dirs);
            if gone {
                journal.remove(key);
            }
            !gone
        });
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    fs::read_to_string(p).ok()?.trim().parse().ok()
}

/// `key value` lines (cpu.stat, memory.events).
fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Number of CPUs in a list like "0-3,6".
fn count_cpu_list(s: &str) -> Option<usize> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut n = 0;
    for part in s.split(',') {
        n += match part.split_once('-') {
            Some((a, b)) => b.parse::<usize>().ok()? + 1 - a.parse::<usize>().ok()?,
            None => {
                part.parse::<usize>().ok()?;
                1
            }
        };
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_journals_of_earlier_releases() {
        for (release, r) in store::fixtures::<Created>() {
            assert!(!r.dirs.is_empty(), "{release}: {r:?}");
            assert!(r.dirs.iter().all(|d| d.is_absolute()), "{release}: {r:?}");
        }
    }

    #[test]
    fn finds_v1_hierarchies_and_paths() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                  35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  36 31 0:33 / /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let m = v1_mounts(&mountinfo::parse(mi));
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].1, vec!["cpu", "cpuacct"]);
        assert_eq!(m[1].0, PathBuf::from("/sys/fs/cgroup/memory"));
        let pc = "4:memory:/a/b\n2:cpu,cpuacct:/c\n0::/x\n";
        assert_eq!(cgroup::v1_path(pc, &m[0].1).as_deref(), Some("/c"));
        assert_eq!(cgroup::v1_path(pc, &m[1].1).as_deref(), Some("/a/b"));
    }

    #[test]
    fn parses_cgroup_files() {
        assert_eq!(stat_field("usage_usec 1234\nuser_usec 5\n", "usage_usec"), Some(1234));
        assert_eq!(stat_field("low 0\noom 2\noom_kill 1\n", "oom_kill"), Some(1));
        assert_eq!(count_cpu_list("0-3,6\n"), Some(5));
        assert_eq!(count_cpu_list("1"), Some(1));
    }
}
