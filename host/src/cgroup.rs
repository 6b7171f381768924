//! Cgroups: where cgroup2 and the v1 hierarchies are mounted, paths relative to a mount (as
//! the agent's API and /proc/PID/cgroup write them), and making, entering and removing a
//! cgroup directory.

use std::{
    ffi::CString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use crate::{Error, Result, mountinfo};

/// The cgroup2 mount point of this process's mount namespace.
pub fn cgroup2_mount() -> Result<PathBuf> {
    let mounts = mountinfo::read()?;
    mountinfo::cgroup2(&mounts).map(|m| m.mount_point.clone()).ok_or(Error::NoCgroup2)
}

/// The mount point of the v1 hierarchy holding `controller`, if the host has one.
pub fn v1_mount(controller: &str) -> Result<Option<PathBuf>> {
    Ok(mountinfo::v1_mount(&mountinfo::read()?, controller))
}

/// The v1 hierarchies of this host (none on a pure cgroup2 host).
pub fn v1_hierarchies() -> Result<Vec<mountinfo::V1Hierarchy>> {
    Ok(mountinfo::v1_hierarchies(&mountinfo::read()?))
}

/// The directory of cgroup `rel` ("/a/b", relative to the mount) under `mount`.
pub fn dir(mount: &Path, rel: &str) -> PathBuf {
    mount.join(rel.trim_start_matches('/'))
}

/// The path of `dir` relative to `mount`, "/"-led ("/" for the mount itself); None when
/// `dir` is not under `mount`.
pub fn rel(mount: &Path, dir: &Path) -> Option<String> {
    let r = dir.strip_prefix(mount).ok()?;
    Some(format!("/{}", r.display()))
}

/// The cgroup2 path (the "0::/path" line) of a /proc/PID/cgroup text.
pub fn v2_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_end_matches(" (deleted)").to_string())
}

/// Why process `pid` is frozen, if a freezer holds it: cgroup.freeze set on its cgroup2
/// cgroup or an ancestor, or a v1 freezer cgroup not THAWED. Its threads report no ptrace
/// stop (or take none) until thawed.
pub fn frozen(pid: i32) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let mounts = mountinfo::read().ok()?;
    if let (Some(m), Some(path)) = (mountinfo::cgroup2(&mounts), v2_path(&text)) {
        let mut d = dir(&m.mount_point, &path);
        loop {
            let f = d.join("cgroup.freeze");
            if std::fs::read_to_string(&f).is_ok_and(|v| v.trim() == "1") {
                return Some(format!("{} is 1", f.display()));
            }
            if d == m.mount_point || !d.pop() {
                break;
            }
        }
    }
    if let (Some(m), Some(path)) =
        (mountinfo::v1_mount(&mounts, "freezer"), v1_path(&text, &["freezer"]))
    {
        let f = dir(&m, &path).join("freezer.state");
        if let Ok(state) = std::fs::read_to_string(&f)
            && state.trim() != "THAWED"
        {
            return Some(format!("{} is {}", f.display(), state.trim()));
        }
    }
    None
}

/// The path in the v1 hierarchy of `controllers` of a /proc/PID/cgroup text
/// ("3:cpu,cpuacct:/a/b").
pub fn v1_path(proc_cgroup: &str, controllers: &[impl AsRef<str>]) -> Option<String> {
    proc_cgroup.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, names, path) = (f.next()?, f.next()?, f.next()?);
        let names: Vec<&str> = names.split(',').collect();
        controllers.iter().all(|c| names.contains(&c.as_ref())).then(|| path.to_string())
    })
}

/// Makes the cgroup directory `dir` (its parent must exist).
pub fn create(dir: &Path) -> Result<()> {
    std::fs::create_dir(dir).map_err(|e| Error::io(format!("mkdir {}", dir.display()), e))
}

/// Moves process `pid` into the cgroup `dir` (0: the calling process).
pub fn enter(dir: &Path, pid: u32) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    std::fs::write(&procs, pid.to_string())
        .map_err(|e| Error::io(format!("writing {pid} to {}", procs.display()), e))
}

/// The processes in cgroup `dir` (none when it cannot be read, such as after its removal).
pub fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes the (empty) cgroup directory `dir`.
pub fn remove(dir: &Path) -> Result<()> {
    std::fs::remove_dir(dir).map_err(|e| Error::io(format!("rmdir {}", dir.display()), e))
}

/// Removes cgroup `dir`, SIGKILLing the processes left in it until it can be, for up to
/// `limit`. For cgroups of the caller's own making only: it kills whatever runs there.
pub fn kill_and_remove(dir: &Path, limit: Duration) -> Result<()> {
    let t0 = Instant::now();
    loop {
        let left = procs(dir);
        if left.is_empty() {
            match std::fs::remove_dir(dir) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if t0.elapsed() >= limit => {
                    return Err(Error::Busy { path: dir.to_path_buf(), reason: e.to_string() });
                }
                Err(_) => {}
            }
        }
        if t0.elapsed() >= limit {
            return Err(Error::Busy {
                path: dir.to_path_buf(),
                reason: format!("processes {left:?} are still in it"),
            });
        }
        for pid in left {
            // SAFETY: kill(2) takes plain integers; the caller owns the cgroup's processes.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Makes `cmd`'s child enter the cgroups `dirs` (writing itself to each cgroup.procs)
/// between fork and exec: it starts in them, and so do all its children. Hooks added to
/// `cmd` before this one run first (such as entering a network namespace).
pub fn enter_before_exec(cmd: &mut Command, dirs: &[PathBuf]) -> Result<()> {
    let files = dirs
        .iter()
        .map(|d| {
            let f = d.join("cgroup.procs");
            CString::new(f.as_os_str().as_encoded_bytes()).map_err(|e| {
                Error::io(
                    format!("cgroup path {}", f.display()),
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
                )
            })
        })
        .collect::<Result<Vec<CString>>>()?;
    // SAFETY: the hook makes only async-signal-safe calls (open, write, close) on C strings
    // built before the fork, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            for f in &files {
                let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if !ok {
                    return Err(err);
                }
            }
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        let m = Path::new("/sys/fs/cgroup/unified");
        assert_eq!(dir(m, "/a/b"), PathBuf::from("/sys/fs/cgroup/unified/a/b"));
        assert_eq!(dir(m, "a"), PathBuf::from("/sys/fs/cgroup/unified/a"));
        assert_eq!(dir(m, "/"), PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(rel(m, &m.join("a b/c")).as_deref(), Some("/a b/c"));
        assert_eq!(rel(m, m).as_deref(), Some("/"));
        assert_eq!(rel(m, Path::new("/sys/fs/cgroup/cpu/a")), None);
    }

    #[test]
    fn parses_proc_pid_cgroup() {
        let hybrid = "12:pids:/kubepods/pod1/abc\n4:memory:/a/b\n2:cpu,cpuacct:/c\n\
                      1:name=systemd:/x\n0::/kubepods/pod1/abc\n";
        assert_eq!(v2_path(hybrid).as_deref(), Some("/kubepods/pod1/abc"));
        assert_eq!(v2_path("0::/gone (deleted)\n").as_deref(), Some("/gone"));
        assert_eq!(v2_path("4:memory:/x\n"), None);
        assert_eq!(v1_path(hybrid, &["cpu", "cpuacct"]).as_deref(), Some("/c"));
        assert_eq!(v1_path(hybrid, &["cpu"]).as_deref(), Some("/c"));
        assert_eq!(v1_path(hybrid, &["memory"]).as_deref(), Some("/a/b"));
        assert_eq!(v1_path(hybrid, &["blkio"]), None);
    }

    #[test]
    fn create_enter_and_remove_report_the_path() {
        let missing = Path::new("/nonexistent-faultline-host/x");
        let e = create(missing).unwrap_err().to_string();
        assert!(e.starts_with("mkdir /nonexistent-faultline-host/x: "), "{e}");
        let e = enter(missing, 0).unwrap_err().to_string();
        assert!(e.contains("/nonexistent-faultline-host/x/cgroup.procs"), "{e}");
        assert!(remove(missing).is_err());
        assert!(procs(missing).is_empty());
        // Already gone counts as removed.
        assert!(kill_and_remove(missing, Duration::ZERO).is_ok());
    }

    #[test]
    fn a_plain_directory_stands_in_for_a_cgroup() {
        let d = std::env::temp_dir().join(format!("faultline-host-cg-{}", std::process::id()));
        create(&d).unwrap();
        std::fs::write(d.join("cgroup.procs"), "12\n34\n").unwrap();
        assert_eq!(procs(&d), vec![12, 34]);
        std::fs::remove_file(d.join("cgroup.procs")).unwrap();
        kill_and_remove(&d, Duration::from_secs(1)).unwrap();
        assert!(!d.exists());
    }
}
