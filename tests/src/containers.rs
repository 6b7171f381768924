//! Containers and pods as runtimes lay out their cgroups, made by tests: random ids, nested
//! cgroups, a sleeping process in each.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use crate::{Cgroup, wait_until};

/// `bytes` random bytes as hex (a container id is 32).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    use std::io::Read as _;
    std::fs::File::open("/dev/urandom").unwrap().read_exact(&mut b).unwrap();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A pod uid in the kubelet's form.
pub fn random_uid() -> String {
    let h = random_hex(16);
    format!("{}-{}-4{}-8{}-{}", &h[0..8], &h[8..12], &h[13..16], &h[17..20], &h[20..32])
}

/// Makes `rel` (slash-separated) below `base` one cgroup at a time; the returned cgroups are
/// removed innermost first.
pub fn nest(base: &Cgroup, rel: &str) -> Vec<Cgroup> {
    let mut made: Vec<Cgroup> = Vec::new();
    for part in rel.split('/') {
        let next = made.last().unwrap_or(base).child(part);
        made.push(next);
    }
    made.reverse();
    made
}

/// `sleep 600` in the cgroup.
pub fn sleeper(cg: &Cgroup) -> Child {
    cg.command("sleep").arg("600").stdout(Stdio::null()).spawn().unwrap()
}

/// A shell in `cg` that writes an ever-growing number to a file every 20 ms: whether the
/// cgroup's processes run (a pause, a kill).
pub struct Counter {
    child: Child,
    file: PathBuf,
}

impl Counter {
    pub fn start(cg: &Cgroup, dir: &Path, name: &str) -> Counter {
        let file = dir.join(name);
        let script =
            format!("i=0; while :; do i=$((i+1)); echo $i > {}; sleep 0.02; done", file.display());
        let child = cg.command("sh").args(["-c", &script]).stdout(Stdio::null()).spawn().unwrap();
        let c = Counter { child, file };
        wait_until("counter running", || c.value() > 0);
        c
    }

    pub fn value(&self) -> u64 {
        std::fs::read_to_string(&self.file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
    }

    /// Whether it advances again (by 2, so a write in flight at a freeze does not count),
    /// given up to 5 s: a loaded machine may run the shell late, but never not at all.
    pub fn moves(&self) -> bool {
        let (a, t0) = (self.value(), Instant::now());
        while t0.elapsed() < Duration::from_secs(5) {
            if self.value() >= a + 2 {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// How far it moved in `d`.
    pub fn moved_in(&self, d: Duration) -> u64 {
        let a = self.value();
        std::thread::sleep(d);
        self.value().saturating_sub(a)
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
