//! Containers and pods as runtimes lay out their cgroups, made by tests: random ids, nested
//! cgroups, a sleeping process in each.

use std::process::{Child, Stdio};

use crate::Cgroup;

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
