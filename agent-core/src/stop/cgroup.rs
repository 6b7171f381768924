//! What a target's cgroup files say for the stop conditions: its pressure, its OOM kills
//! (cgroup v2 memory.events, or the v1 memory hierarchy's memory.oom_control on a hybrid
//! host), and whether any process is left in it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use faultline_host::{cgroup, mountinfo};

use crate::engine::model::{ResolvedCgroup, Resource};

/// "some avg10" of a PSI file (`/proc/pressure/cpu` or a cgroup's `cpu.pressure`), percent.
pub fn some_avg10(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("some "))?;
    line.split_whitespace().find_map(|w| w.strip_prefix("avg10="))?.parse().ok()
}

/// The PSI file of `resource` for a cgroup: the node's for the root cgroup, which has none.
pub fn pressure_file(target: &ResolvedCgroup, resource: Resource) -> PathBuf {
    if target.path == "/" {
        return node_pressure_file(resource);
    }
    target.fs_path().join(format!("{}.pressure", resource.name()))
}

pub fn node_pressure_file(resource: Resource) -> PathBuf {
    PathBuf::from("/proc/pressure").join(resource.name())
}

/// The percent a PSI file reads now; Err says why it cannot be read (no PSI on this kernel:
/// CONFIG_PSI off or booted with psi=0).
pub fn read_pressure(file: &Path) -> Result<f64, String> {
    let text = fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    some_avg10(&text).ok_or_else(|| format!("{}: no \"some avg10\" line", file.display()))
}

/// A `key value` field of a flat keyed file (memory.events, memory.oom_control).
pub fn field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Where a target's OOM kills are counted.
#[derive(Clone, Debug)]
pub struct OomCounter {
    v2: PathBuf,
    /// The target's v1 memory cgroup directory, once a process of it told where it is.
    v1: Option<PathBuf>,
}

impl OomCounter {
    pub fn new(target: &ResolvedCgroup) -> Self {
        let mut c = OomCounter { v2: target.fs_path(), v1: None };
        c.find_v1();
        c
    }

    /// The count so far; None when no file holds it (yet).
    pub fn read(&mut self) -> Option<u64> {
        if let Some(n) = fs::read_to_string(self.v2.join("memory.events"))
            .ok()
            .and_then(|t| field(&t, "oom_kill"))
        {
            return Some(n);
        }
        if self.v1.is_none() {
            self.find_v1();
        }
        let text = fs::read_to_string(self.v1.as_ref()?.join("memory.oom_control")).ok()?;
        field(&text, "oom_kill")
    }

    /// A process of the target says which v1 memory cgroup it is in.
    fn find_v1(&mut self) {
        let Some(pid) = first_process(&self.v2) else { return };
        let Ok(text) = fs::read_to_string(format!("/proc/{pid}/cgroup")) else { return };
        let Some(rel) = cgroup::v1_path(&text, &["memory"]) else { return };
        let Some(mount) = mountinfo::read().ok().and_then(|m| mountinfo::v1_mount(&m, "memory"))
        else {
            return;
        };
        let dir = cgroup::dir(&mount, &rel);
        if dir.join("memory.oom_control").exists() {
            self.v1 = Some(dir);
        }
    }
}

/// A process in the cgroup or one below it.
fn first_process(dir: &Path) -> Option<i32> {
    if let Some(p) = cgroup::procs(dir).first() {
        return Some(*p);
    }
    fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter(|e| e.path().is_dir())
        .find_map(|e| first_process(&e.path()))
}

/// Whether any process is left in the cgroup or below it (cgroup.events "populated");
/// None when the file cannot be read (the cgroup itself went away).
pub fn populated(target: &ResolvedCgroup) -> Option<bool> {
    let text = fs::read_to_string(target.fs_path().join("cgroup.events")).ok()?;
    field(&text, "populated").map(|v| v != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_psi_and_keyed_files() {
        let psi = "some avg10=63.20 avg60=12.00 avg300=1.00 total=123\n\
                   full avg10=1.00 avg60=0.00 avg300=0.00 total=4\n";
        assert_eq!(some_avg10(psi), Some(63.2));
        assert_eq!(some_avg10("full avg10=1.00\n"), None);
        let events = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(field(events, "oom_kill"), Some(1));
        assert_eq!(field(events, "oom"), Some(1));
        assert_eq!(field("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n", "oom_kill"), Some(2));
        assert_eq!(field("populated 0\nfrozen 0\n", "populated"), Some(0));
    }
}
