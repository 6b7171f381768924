//! The guest's initramfs, in three concatenated cpio segments: a base (busybox, the host's
//! ip and tc with their libraries, /init), the kernel's modules, and the payload (static
//! binaries and the job to run). Base and modules are cached; the payload is per run.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::{cpio::Cpio, kernels::Kernel};

/// Modules the tests need, loaded (with their dependencies) by /init.
pub const MODULES: &[&str] =
    &["sch_fq", "sch_netem", "sch_ingress", "cls_bpf", "sch_tbf", "ifb", "veth"];

/// Host tools copied into the guest with their shared libraries: busybox's own `ip` and
/// `tc` cannot add fq or netem.
const HOST_TOOLS: &[&str] = &["/usr/sbin/ip", "/usr/sbin/tc"];

const INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
for m in $(cat /etc/modules.load); do insmod "/lib/modules/$m" || echo "insmod $m failed"; done
ip link set lo up
echo "FAULTLINE-VM-READY $(uname -r)"
cd /
sh /job.sh
rc=$?
echo "FAULTLINE-EXIT=$rc"
echo "$rc" > /dev/ttyS1
sync
poweroff -f
"#;

/// What the cached base segment depends on.
pub fn base_key() -> String {
    // Bump when what goes into the base changes beyond /init.
    format!("{INIT}\nbase-layout-2\n{HOST_TOOLS:?}")
}

/// A cpio with its directories created on demand.
struct Tree {
    cpio: Cpio,
    dirs: BTreeSet<String>,
}

impl Tree {
    fn new() -> Self {
        Tree { cpio: Cpio::new(), dirs: BTreeSet::new() }
    }

    fn mkdir_p(&mut self, path: &str) {
        let mut cur = String::new();
        for part in path.trim_matches('/').split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            if self.dirs.insert(cur.clone()) {
                self.cpio.dir(&cur);
            }
        }
    }

    fn parent(&mut self, path: &str) {
        if let Some((dir, _)) = path.rsplit_once('/') {
            self.mkdir_p(dir);
        }
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.parent(path);
        self.cpio.file(path, mode, data);
    }

    fn copy(&mut self, path: &str, from: &Path) -> anyhow::Result<()> {
        let data = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
        self.file(path, 0o755, &data);
        Ok(())
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parent(path);
        self.cpio.symlink(path, target);
    }
}

/// Shared libraries of a dynamically linked host binary, from ldd.
fn libraries(bin: &str) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd").arg(bin).output().with_context(|| format!("ldd {bin}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')).map(PathBuf::from))
        .collect())
}

/// busybox, its applets, the host's ip and tc (with libraries and netem tables), and /init.
pub fn base(busybox: &Path, out: &Path) -> anyhow::Result<()> {
    let mut t = Tree::new();
    for d in ["/proc", "/sys", "/dev", "/tmp", "/run", "/etc", "/var/lib", "/root"] {
        t.mkdir_p(d);
    }
    t.copy("/bin/busybox", busybox)?;
    let mut provided: BTreeSet<String> = BTreeSet::new();
    for tool in HOST_TOOLS {
        t.copy(tool, Path::new(tool))?;
        provided.insert(tool.to_string());
        for lib in libraries(tool)? {
            let real = lib.canonicalize().unwrap_or(lib.clone());
            let path = lib.display().to_string();
            if provided.insert(path.clone()) {
                t.copy(&path, &real)?;
            }
        }
    }
    // netem's delay distribution tables.
    let tc_lib = Path::new("/usr/lib/x86_64-linux-gnu/tc");
    if let Ok(rd) = std::fs::read_dir(tc_lib) {
        for e in rd.filter_map(Result::ok) {
            t.copy(&e.path().display().to_string(), &e.path())?;
        }
    }
    let list = Command::new(busybox).arg("--list-full").output().context("busybox --list-full")?;
    // Busybox's own ip and tc would shadow the real ones on PATH: leave those applets out.
    let tool_names: Vec<&str> = HOST_TOOLS.iter().filter_map(|t| t.rsplit('/').next()).collect();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let path = format!("/{applet}");
        let name = applet.rsplit('/').next().unwrap_or(applet);
        if !provided.contains(&path) && path != "/bin/busybox" && !tool_names.contains(&name) {
            t.symlink(&path, "/bin/busybox");
        }
    }
    t.file("/init", 0o755, INIT.as_bytes());
    t.file("/etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    t.file("/etc/group", 0o644, b"root:x:0:\n");
    t.cpio.write_to(out).with_context(|| format!("writing {}", out.display()))
}

/// The `depends=` list in a module's .modinfo section.
fn depends(ko: &[u8]) -> Vec<String> {
    let key = b"depends=";
    ko.windows(key.len())
        .position(|w| w == key)
        .map(|at| {
            let rest = &ko[at + key.len()..];
            let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.display().to_string();
    if name.ends_with(".xz") {
        let out = Command::new("xz").arg("-dc").arg(path).output().context("xz -dc")?;
        if !out.status.success() {
            bail!("xz -dc {name} failed");
        }
        return Ok(out.stdout);
    }
    if name.ends_with(".zst") {
        let out = Command::new("zstd").arg("-dc").arg(path).output().context("zstd -dc")?;
        return Ok(out.stdout);
    }
    Ok(std::fs::read(path)?)
}

/// The kernel's modules the tests need (decompressed, dependencies first) and their load list.
pub fn modules(kernel: &Kernel, out: &Path) -> anyhow::Result<()> {
    let mut index: HashMap<String, PathBuf> = HashMap::new();
    let mut stack = vec![kernel.modules.join("kernel")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)?.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str())
                && let Some(stem) = n.split(".ko").next().filter(|_| n.contains(".ko"))
            {
                index.insert(stem.replace('-', "_"), p.clone());
            }
        }
    }
    let mut order: Vec<String> = Vec::new();
    fn visit(
        name: &str,
        index: &HashMap<String, PathBuf>,
        order: &mut Vec<String>,
        t: &mut Tree,
    ) -> anyhow::Result<()> {
        let key = name.replace('-', "_");
        if order.contains(&key) {
            return Ok(());
        }
        let Some(path) = index.get(&key) else {
            // Built into this kernel.
            return Ok(());
        };
        let data = read_module(path)?;
        for dep in depends(&data) {
            visit(&dep, index, order, t)?;
        }
        t.file(&format!("/lib/modules/{key}.ko"), 0o644, &data);
        order.push(key);
        Ok(())
    }
    let mut t = Tree::new();
    for m in MODULES {
        visit(m, &index, &mut order, &mut t)?;
    }
    let load: String = order.iter().map(|m| format!("{m}.ko\n")).collect();
    t.file("/etc/modules.load", 0o644, load.as_bytes());
    t.cpio.write_to(out).with_context(|| format!("writing {}", out.display()))
}

/// Binaries at the given guest paths, plus /job.sh.
pub fn payload(files: &[(String, PathBuf)], job: &str, out: &Path) -> anyhow::Result<()> {
    let mut t = Tree::new();
    for (guest, host) in files {
        t.copy(guest, host)?;
    }
    t.file("/job.sh", 0o755, job.as_bytes());
    t.cpio.write_to(out).with_context(|| format!("writing {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_module_dependencies() {
        let ko = b"\x00license=GPL\x00depends=a,b-c\x00retpoline=Y\x00";
        assert_eq!(depends(ko), vec!["a".to_string(), "b-c".to_string()]);
        assert!(depends(b"\x00depends=\x00").is_empty());
    }
}
