//! What stress tests measure through the target cgroup's own files (never through the agent):
//! memory from memory.current (pure v2) or the v1 memory cgroup's memory.usage_in_bytes (hybrid
//! hosts such as this one), and a small filesystem to fill. CPU: `Cgroup::cpu_usage_s`.

use std::{path::PathBuf, process::Command};

use crate::{Cgroup, TempDir, cgroup2_mount};

/// Whether cgroup2 carries the cpu and memory controllers (pure v2), after asking the root
/// to hand them down. Hybrid hosts keep them in v1 hierarchies.
pub fn pure_v2() -> bool {
    let root = cgroup2_mount();
    let _ = std::fs::write(root.join("cgroup.subtree_control"), "+cpu +memory");
    let have = std::fs::read_to_string(root.join("cgroup.subtree_control")).unwrap_or_default();
    have.split_whitespace().any(|c| c == "cpu") && have.split_whitespace().any(|c| c == "memory")
}

/// The mount point of the v1 hierarchy holding `controller`.
pub fn v1_mount(controller: &str) -> PathBuf {
    faultline_host::cgroup::v1_mount(controller)
        .unwrap()
        .unwrap_or_else(|| panic!("no v1 {controller} hierarchy"))
}

/// A v1 cgroup at the same relative path as a cgroup2 one (a container's, on a hybrid
/// host), removed on drop.
pub struct V1 {
    pub dir: PathBuf,
}

impl V1 {
    pub fn new(controller: &str, cg: &Cgroup) -> V1 {
        let dir = v1_mount(controller).join(cg.rel.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).unwrap();
        V1 { dir }
    }
}

impl Drop for V1 {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Where the cgroup's memory is counted.
pub enum Mem {
    V2(PathBuf),
    V1(V1),
}

impl Mem {
    pub fn new(cg: &Cgroup) -> Mem {
        if pure_v2() { Mem::V2(cg.fs.clone()) } else { Mem::V1(V1::new("memory", cg)) }
    }

    pub fn current(&self) -> u64 {
        let f = match self {
            Mem::V2(d) => d.join("memory.current"),
            Mem::V1(v) => v.dir.join("memory.usage_in_bytes"),
        };
        std::fs::read_to_string(f).unwrap().trim().parse().unwrap()
    }

    pub fn limit(&self, bytes: u64) {
        let (f, v) = match self {
            Mem::V2(d) => (d.join("memory.max"), bytes.to_string()),
            Mem::V1(v) => (v.dir.join("memory.limit_in_bytes"), bytes.to_string()),
        };
        std::fs::write(f, v).unwrap();
    }
}

/// A small filesystem: ext4 on a loop device where the tools exist, else a tmpfs.
pub struct SmallFs {
    pub dir: TempDir,
    pub image: Option<PathBuf>,
}

impl Default for SmallFs {
    fn default() -> Self {
        Self::new()
    }
}

impl SmallFs {
    pub fn new() -> SmallFs {
        let dir = TempDir::new("fill");
        let image = dir.path().with_extension("img");
        let loop_ok = std::fs::write(&image, vec![0u8; 0]).is_ok()
            && Command::new("truncate")
                .args(["-s", "64M"])
                .arg(&image)
                .status()
                .is_ok_and(|s| s.success())
            && Command::new("mkfs.ext4")
                .args(["-q", "-F"])
                .arg(&image)
                .status()
                .is_ok_and(|s| s.success())
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(&image)
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
        if !loop_ok {
            let _ = std::fs::remove_file(&image);
            let ok = Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(ok.success(), "mounting a tmpfs");
        }
        SmallFs { dir, image: loop_ok.then_some(image) }
    }

    pub fn used_percent(&self) -> f64 {
        let c = std::ffi::CString::new(self.dir.path().as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: zeroed statvfs is valid; NUL-terminated path.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
        let used = (st.f_blocks - st.f_bfree) as f64;
        100.0 * used / (used + st.f_bavail as f64)
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
        if let Some(i) = &self.image {
            let _ = std::fs::remove_file(i);
        }
    }
}
