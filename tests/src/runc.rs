//! Real containers: runc runs an OCI bundle whose rootfs is busybox-static (and fl-probe with
//! the libraries it links), its cgroup placed where Docker or the kubelet put theirs, below
//! a top cgroup of the test's own. runc keeps its state under the bundle's directory
//! (`--root`), so nothing is shared with a runc of the host. Debian's podman does not run on
//! this hybrid-cgroup host (crun refuses the layout, its runc setup sets RLIMIT_NPROC, which
//! is not permitted here); runc on a bundle without `rlimits` does.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::Duration,
};

use faultline_host::cgroup;

use crate::{Netns, TempDir, cgroup2_mount, containers, probe_bin, unique};

/// Where the container's cgroup goes, as each runtime names it (the agent finds all three by
/// name; see agent-core/src/targets/runtime.rs).
#[derive(Clone, Debug)]
pub enum Layout {
    /// Docker's cgroupfs driver: `docker/<id>`.
    Docker,
    /// Docker's systemd driver: `system.slice/docker-<id>.scope`.
    DockerSystemd,
    /// The kubelet's cgroupfs driver with containerd: `kubepods/burstable/pod<uid>/<id>`.
    Kubelet { pod_uid: String },
}

impl Layout {
    fn path(&self, id: &str) -> String {
        match self {
            Layout::Docker => format!("docker/{id}"),
            Layout::DockerSystemd => format!("system.slice/docker-{id}.scope"),
            Layout::Kubelet { pod_uid } => format!("kubepods/burstable/pod{pod_uid}/{id}"),
        }
    }
}

/// How to run a container: `Container::builder(layout)....run()`.
pub struct Builder {
    layout: Layout,
    memory: Option<u64>,
    netns: Option<PathBuf>,
    init: Vec<String>,
}

impl Builder {
    /// The memory limit (linux.resources.memory.limit).
    pub fn memory(mut self, bytes: u64) -> Self {
        self.memory = Some(bytes);
        self
    }

    /// Joins this network namespace (default: the host's, as `--network host`).
    pub fn netns(mut self, ns: &Netns) -> Self {
        self.netns = Some(ns.path());
        self
    }

    /// The container's first process (default `sleep 600`).
    pub fn init(mut self, args: &[&str]) -> Self {
        self.init = args.iter().map(|s| s.to_string()).collect();
        self
    }

    pub fn run(self) -> Container {
        let dir = TempDir::new("runc");
        let id = containers::random_hex(32);
        let top = format!("faultline-it-{}", unique("runc"));
        let cgroup = format!("/{top}/{}", self.layout.path(&id));
        let bundle = dir.path().join("bundle");
        rootfs(&bundle.join("rootfs"));
        let config = config(&self, &cgroup);
        std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&config).unwrap())
            .unwrap();
        let c = Container { id, cgroup, top, bundle, dir };
        c.start();
        c
    }
}

/// A container run by runc: its bundle, state and cgroups are removed on drop, whatever the
/// test did to it.
pub struct Container {
    /// The 64-hex container id (also runc's name for it).
    pub id: String,
    /// Its cgroup, relative to the cgroup2 mount, "/"-led.
    pub cgroup: String,
    /// The test's top cgroup the layout sits under (in every hierarchy).
    top: String,
    bundle: PathBuf,
    /// Bundle and runc state (`--root`).
    dir: TempDir,
}

impl Container {
    pub fn builder(layout: Layout) -> Builder {
        Builder { layout, memory: None, netns: None, init: vec!["sleep".into(), "600".into()] }
    }

    /// The id prefix `--container` takes.
    pub fn short_id(&self) -> &str {
        &self.id[..12]
    }

    /// Its cgroup2 directory.
    pub fn fs(&self) -> PathBuf {
        cgroup::dir(&cgroup2_mount(), &self.cgroup)
    }

    /// The processes in its cgroup2 cgroup.
    pub fn procs(&self) -> Vec<i32> {
        cgroup::procs(&self.fs())
    }

    /// Its cgroup directory in the v1 hierarchy of `controller`, on a hybrid host.
    pub fn v1_dir(&self, controller: &str) -> Option<PathBuf> {
        let mount = cgroup::v1_mount(controller).ok()??;
        Some(cgroup::dir(&mount, &self.cgroup))
    }

    /// The rootfs as the host sees it (the container's `/`).
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }

    fn runc(&self) -> Command {
        let mut cmd = Command::new("runc");
        cmd.arg("--root").arg(self.dir.path().join("state"));
        cmd
    }

    fn runc_ok(&self, args: &[&str]) -> Output {
        let out = self.runc().args(args).stdin(Stdio::null()).output().expect("running runc");
        assert!(
            out.status.success(),
            "runc {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `runc run -d`: the init process detached. runc hands its own stdout and stderr to the
    /// init process, so they go to a file (a pipe would stay open as long as the container
    /// runs); runc's errors land there too.
    fn start(&self) {
        let log_path = self.dir.path().join("init.log");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).unwrap();
        let status = self
            .runc()
            .args(["run", "-d", "--bundle"])
            .arg(&self.bundle)
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .expect("running runc");
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        assert!(status.success(), "runc run {}: {status}\n{log}", self.id);
    }

    /// `runc state`: "running", "paused", "stopped", ...; None once deleted.
    pub fn status(&self) -> Option<String> {
        let out = self.runc().args(["state", &self.id]).output().unwrap();
        if !out.status.success() {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["status"].as_str().map(str::to_string)
    }

    /// The init process's pid on the host (0 once stopped).
    pub fn pid(&self) -> i32 {
        let out = self.runc_ok(&["state", &self.id]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["pid"].as_i64().unwrap_or(0) as i32
    }

    /// Runs `args` inside the container (`runc exec`) and returns what it printed.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.runc().arg("exec").arg(&self.id).args(args).stdin(Stdio::null()).output().unwrap()
    }

    /// fl-probe inside the container, its JSON line parsed.
    pub fn probe(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["/bin/fl-probe"];
        full.extend_from_slice(args);
        let out = self.exec(&full);
        assert!(
            out.status.success(),
            "fl-probe {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("fl-probe {args:?} printed {:?}: {e}", String::from_utf8_lossy(&out.stdout))
        })
    }

    /// `runc delete -f`: the processes killed, the container's cgroups removed.
    pub fn delete(&self) {
        self.runc_ok(&["delete", "-f", &self.id]);
    }

    /// What a runtime does on a restart: the container goes (and its cgroups with it), and a
    /// new one runs under the same id and cgroup path, in new cgroup directories.
    pub fn restart(&self) {
        self.delete();
        self.start();
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.runc().args(["delete", "-f", &self.id]).output();
        // runc removes the container's own cgroups, not the layout's parents.
        let mut mounts = vec![cgroup2_mount()];
        mounts.extend(cgroup::v1_hierarchies().unwrap_or_default().into_iter().map(|h| h.mount));
        for m in mounts {
            let top = m.join(&self.top);
            let mut dir = cgroup::dir(&m, &self.cgroup);
            while dir.starts_with(&top) {
                if dir.exists()
                    && let Err(e) = cgroup::kill_and_remove(&dir, Duration::from_secs(2))
                {
                    eprintln!("warning: {e}");
                }
                if !dir.pop() {
                    break;
                }
            }
        }
    }
}

/// busybox-static as sh, sleep, cat and nc; fl-probe with the shared libraries it links.
fn rootfs(root: &Path) {
    for d in ["bin", "proc", "dev", "sys", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let busybox = Path::new("/bin/busybox");
    assert!(busybox.exists(), "no /bin/busybox: run `cargo xtask setup` (busybox-static)");
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for tool in ["sh", "sleep", "cat", "echo", "nc"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(tool)).unwrap();
    }
    copy_with_libraries(&probe_bin(), &root.join("bin/fl-probe"), root);
}

/// Copies `bin` to `to` and each library `ldd` names to the same path under `root` (a
/// static binary names none).
fn copy_with_libraries(bin: &Path, to: &Path, root: &Path) {
    std::fs::copy(bin, to).unwrap();
    let out = Command::new("ldd").arg(bin).output().expect("running ldd");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux... (0x...)"
        let path = line.split("=>").last().unwrap_or("").split_whitespace().next().unwrap_or("");
        if !path.starts_with('/') {
            continue;
        }
        let dest = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(path, &dest).unwrap();
    }
}

/// The OCI config: no `rlimits` (setting one is not permitted on these hosts), the cgroup
/// path given, the memory limit if any, the host's or the given network namespace.
fn config(b: &Builder, cgroup: &str) -> serde_json::Value {
    let caps = ["CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"];
    let mut namespaces: Vec<serde_json::Value> =
        ["pid", "ipc", "uts", "mount"].iter().map(|t| serde_json::json!({ "type": t })).collect();
    if let Some(ns) = &b.netns {
        namespaces.push(serde_json::json!({ "type": "network", "path": ns }));
    }
    let mut resources = serde_json::json!({ "devices": [{ "allow": false, "access": "rwm" }] });
    if let Some(bytes) = b.memory {
        resources["memory"] = serde_json::json!({ "limit": bytes, "swap": bytes });
    }
    serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": { "uid": 0, "gid": 0 },
            "args": b.init,
            "env": ["PATH=/bin"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps, "ambient": caps
            },
            "noNewPrivileges": true
        },
        "root": { "path": "rootfs", "readonly": false },
        "hostname": "fl-runc",
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            {
                "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
            },
            { "destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"] }
        ],
        "linux": {
            "cgroupsPath": cgroup,
            "resources": resources,
            "namespaces": namespaces,
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/sys", "/proc/sysrq-trigger"]
        }
    })
}
