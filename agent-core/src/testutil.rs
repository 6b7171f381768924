//! Helpers shared by unit tests.

use std::path::{Path, PathBuf};

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "faultline-unit-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A fake cgroup2 tree with these (relative) cgroups, each with a cgroup.procs file.
    pub fn cgroups(&self, paths: &[&str]) -> PathBuf {
        let mount = self.0.join("cg");
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::write(mount.join("cgroup.procs"), "").unwrap();
        for p in paths {
            let mut dir = mount.clone();
            for part in p.split('/') {
                dir.push(part);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join("cgroup.procs"), "").unwrap();
            }
        }
        mount
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
