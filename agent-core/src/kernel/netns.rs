//! A scratch network namespace for probes that must create or attach something on a device
//! without touching the node's own interfaces.

use nix::sched::{CloneFlags, setns, unshare};

/// Runs `f` on a new thread that has unshared into a fresh network namespace (only `lo`,
/// down). The namespace disappears with the thread. Never run on a pooled thread: the
/// unshare would stick to it.
pub fn in_scratch_netns<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        // Affects only the calling thread's namespaces.
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
            return Err(format!("unshare(CLONE_NEWNET): {}", std::io::Error::from(e)));
        }
        Ok(f())
    })
    .join()
    .map_err(|_| "probe thread panicked".to_string())?
}

/// A network namespace, held open.
pub struct Netns {
    pub file: std::fs::File,
    /// Inode of the namespace: its identity across processes and restarts.
    pub ino: u64,
    /// A path that opened it (a named namespace keeps one across restarts).
    pub path: std::path::PathBuf,
}

impl Netns {
    pub fn open(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt as _;
        let file = std::fs::File::open(path)?;
        let ino = file.metadata()?.ino();
        // /proc/self changes meaning between processes: keep our pid in the path.
        let path = match path.strip_prefix("/proc/self") {
            Ok(rest) => {
                std::path::Path::new("/proc").join(std::process::id().to_string()).join(rest)
            }
            Err(_) => path.to_path_buf(),
        };
        Ok(Netns { file, ino, path })
    }

    /// The agent's own namespace.
    pub fn own() -> std::io::Result<Self> {
        Self::open(std::path::Path::new("/proc/self/ns/net"))
    }

    /// The namespace of the processes in a cgroup (the first one found in its subtree), or
    /// the agent's own when the cgroup has none.
    pub fn of_cgroup(dir: &std::path::Path) -> std::io::Result<Self> {
        if let Some(pid) = first_pid(dir, 4)
            && let Ok(ns) =
                Self::open(&std::path::Path::new("/proc").join(pid.to_string()).join("ns/net"))
        {
            return Ok(ns);
        }
        Self::own()
    }

    /// A process in the cgroup's subtree.
    pub fn pid_in_cgroup(dir: &std::path::Path) -> Option<u32> {
        first_pid(dir, 4)
    }

    /// Reopens a namespace by inode after a restart: through `hint` (a named namespace's
    /// path), our own, or one a process is in.
    pub fn find(ino: u64, hint: &std::path::Path) -> Option<Self> {
        if let Ok(ns) = Self::open(hint)
            && ns.ino == ino
        {
            return Some(ns);
        }
        if let Ok(own) = Self::own()
            && own.ino == ino
        {
            return Some(own);
        }
        let procs = std::fs::read_dir("/proc").ok()?;
        procs
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
            .find_map(|e| Self::open(&e.path().join("ns/net")).ok().filter(|ns| ns.ino == ino))
    }
}

/// A pid in cgroup `dir` or its descendants (breadth-first, at most `depth` levels down).
fn first_pid(dir: &std::path::Path, depth: u32) -> Option<u32> {
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).ok()?;
    if let Some(pid) = procs.lines().find_map(|l| l.trim().parse().ok()) {
        return Some(pid);
    }
    if depth == 0 {
        return None;
    }
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| first_pid(&e.path(), depth - 1))
}

/// Runs `f` on a scoped thread that has joined the network namespace `ns` (so it may
/// borrow from the caller). The thread ends with `f`, and the namespace switch with it.
pub fn in_netns<T: Send>(ns: &std::fs::File, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(move || {
            // On this scoped thread only.
            setns(ns, CloneFlags::CLONE_NEWNET)?;
            Ok(f())
        })
        .join()
        .map_err(|_| std::io::Error::other("netns thread panicked"))?
    })
}
