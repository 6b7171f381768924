//! `faultline apply -f`: Chaos Mesh's StressChaos, IOChaos, TimeChaos and PodChaos, as
//! manifests written from Chaos Mesh's API reference, against pods the agent resolves by
//! namespace and name from kubelet log directories the tests lay out as the kubelet does
//! (each pod: containers `app` and `sidecar`, real cgroups and processes). Effects are
//! measured from outside, as the other fault tests do: CPU from the container's cpu.stat,
//! memory as the resident size of its processes, file latency and errors by fl-probe's own
//! clock and errnos, the clock by a server reading it inside, kills by the exit signal, a
//! pause by a counter that stops. Plus: a plan of three documents listed and cancelled by
//! label, a file with one refused document applying nothing, and `mode` picking that many.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    process::{Child, Output},
    time::{Duration, Instant},
};

use faultline_tests::{
    Agent, Cgroup, TempDir, Waiting,
    clock::ClockServer,
    containers::{Counter, nest, random_hex, random_uid, sleeper},
    probe, serial, wait_until,
};

/// One pod: its containers' cgroups (kubepods/burstable/podUID/ID), by name.
struct Pod {
    name: String,
    containers: Vec<(String, Cgroup)>,
    /// The pod's cgroup and those above it, innermost first (removed after the containers).
    chain: Vec<Cgroup>,
    _node: Cgroup,
}

impl Pod {
    fn cg(&self, container: &str) -> &Cgroup {
        &self.containers.iter().find(|(n, _)| n == container).unwrap().1
    }

    fn pod_cg(&self) -> &Cgroup {
        &self.chain[0]
    }
}

/// An agent that resolves pods of namespace `shop` from the log directories laid out here.
struct Kubelet {
    agent: Agent,
    pods: Vec<Pod>,
    _root: Cgroup,
    dir: TempDir,
}

impl Kubelet {
    fn new(tag: &str, names: &[&str]) -> Kubelet {
        let dir = TempDir::new(tag);
        let root = Cgroup::new(tag);
        let (logs, links) = (dir.path().join("log/pods"), dir.path().join("log/containers"));
        std::fs::create_dir_all(&links).unwrap();
        let mut pods = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let node = root.child(&format!("n{i}"));
            let uid = random_uid();
            let (app_id, sidecar_id) = (random_hex(32), random_hex(32));
            let mut chain = nest(&node, &format!("kubepods/burstable/pod{uid}/{app_id}"));
            let app = chain.remove(0);
            let sidecar = chain[0].child(&sidecar_id);
            let pod_logs = logs.join(format!("shop_{name}_{uid}"));
            for (c, id) in [("app", &app_id), ("sidecar", &sidecar_id)] {
                std::fs::create_dir_all(pod_logs.join(c)).unwrap();
                std::os::unix::fs::symlink(
                    pod_logs.join(c).join("0.log"),
                    links.join(format!("{name}_shop_{c}-{id}.log")),
                )
                .unwrap();
            }
            pods.push(Pod {
                name: name.to_string(),
                containers: vec![("app".into(), app), ("sidecar".into(), sidecar)],
                chain,
                _node: node,
            });
        }
        let policy = dir.path().join("policy.toml");
        std::fs::write(&policy, format!("pods_log_dir = \"{}\"\n", logs.display())).unwrap();
        let agent = Agent::start_with(&["--config", policy.to_str().unwrap()]);
        Kubelet { agent, pods, _root: root, dir }
    }

    fn pod(&self, name: &str) -> &Pod {
        self.pods.iter().find(|p| p.name == name).unwrap()
    }

    /// `faultline -o json apply -f FILE` with the manifest written to a file.
    fn apply(&self, yaml: &str) -> Output {
        let file = self.dir.path().join(format!("chaos-{}.yaml", random_hex(4)));
        std::fs::write(&file, yaml).unwrap();
        self.agent.cli(&["-o", "json", "apply", "-f", file.to_str().unwrap()])
    }

    /// `apply --dry-run`: the agent checks every experiment and applies none.
    fn dry_run_ok(&self, yaml: &str) -> Vec<serde_json::Value> {
        let file = self.dir.path().join(format!("chaos-{}.yaml", random_hex(4)));
        std::fs::write(&file, yaml).unwrap();
        let out =
            self.agent.cli(&["-o", "json", "apply", "--dry-run", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "dry run refused: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(self.active(), 0, "a dry run applied");
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The experiments applied.
    fn apply_ok(&self, yaml: &str) -> Vec<serde_json::Value> {
        let out = self.apply(yaml);
        assert!(
            out.status.success(),
            "apply failed: {}\nmanifest:\n{yaml}\nagent log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.agent.log()
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// The error of a refused file (the CLI's stderr).
    fn apply_refused(&self, yaml: &str) -> String {
        let out = self.apply(yaml);
        assert!(
            !out.status.success(),
            "accepted:\n{yaml}\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).to_string()
    }

    fn ls(&self, label: &str) -> Vec<serde_json::Value> {
        let v = self.agent.cli_json(&["ls", "--label", label]);
        v.as_array().unwrap().iter().filter(|e| e["state"] == "active").cloned().collect()
    }

    fn active(&self) -> usize {
        let v = self.agent.cli_json(&["ls"]);
        v.as_array().unwrap().iter().filter(|e| e["state"] == "active").count()
    }
}

/// Resident bytes of the processes in a cgroup (VmRSS of each).
fn resident(cg: &Cgroup) -> u64 {
    cg.procs()
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|s| {
            let kb = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
            kb.trim().trim_end_matches("kB").trim().parse::<u64>().ok()
        })
        .sum::<u64>()
        * 1024
}

/// The signal a child was killed by, waiting up to 10 s; None if it still runs.
fn killed_by(c: &mut Child) -> Option<i32> {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if let Some(st) = c.try_wait().unwrap() {
            return std::os::unix::process::ExitStatusExt::signal(&st);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

fn alive(c: &mut Child) -> bool {
    c.try_wait().unwrap().is_none()
}

/// How many pods' app (`app`) or sidecar processes have ended.
fn dead(p: &mut [(Child, Child)], app: bool) -> usize {
    p.iter_mut().map(|(a, s)| !alive(if app { a } else { s })).filter(|d| *d).count()
}

/// StressChaos with both stressors in the `app` container of one pod: one CPU worker at 50 %
/// for 8 s is 4 CPU seconds in app's cpu.stat, 64 MB (memStress's binary units: 64 MiB)
/// becomes resident in app, the sidecar gets nothing, and the workers are gone at the end.
#[test]
fn stress_chaos_cpu_and_memory_in_the_named_container() {
    let _alone = serial::alone();
    let k = Kubelet::new("cm-stress", &["web-0"]);
    let pod = k.pod("web-0");
    let (app, sidecar) = (pod.cg("app"), pod.cg("sidecar"));
    let (app0, side0) = (app.cpu_usage_s(), sidecar.cpu_usage_s());
    let applied = k.apply_ok(
        r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: StressChaos
metadata:
  name: burn
  namespace: shop
spec:
  mode: one
  selector:
    pods:
      shop: [web-0]
  containerNames: [app]
  stressors:
    cpu:
      workers: 1
      load: 50
    memory:
      workers: 1
      size: 64MB
      oomScoreAdj: 500
  duration: 8s
"#,
    );
    assert_eq!(applied.len(), 2, "cpu and memory: two experiments: {applied:?}");
    let t0 = Instant::now();
    let mut rss = 0;
    while t0.elapsed() < Duration::from_secs(6) {
        rss = resident(app);
        if rss >= 64 << 20 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let oom: Vec<String> = app
        .procs()
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/oom_score_adj")).ok())
        .map(|s| s.trim().to_string())
        .collect();
    eprintln!("app resident {} MiB after {:?}; oom_score_adj {oom:?}", rss >> 20, t0.elapsed());
    assert!(rss >= 64 << 20, "app holds {} MiB, asked 64", rss >> 20);
    assert!(oom.iter().any(|o| o == "500"), "no worker with oomScoreAdj 500: {oom:?}");
    assert!(sidecar.procs().is_empty(), "workers in the sidecar: {:?}", sidecar.procs());
    std::thread::sleep(Duration::from_secs(7).saturating_sub(t0.elapsed()));
    for e in &applied {
        k.agent.wait_ended(e["id"].as_str().unwrap(), Duration::from_secs(15));
    }
    let (used, side) = (app.cpu_usage_s() - app0, sidecar.cpu_usage_s() - side0);
    eprintln!("cpu: app used {used:.3} s over the 8 s fault (asked 4.0), sidecar {side:.3} s");
    assert!((3.2..=4.6).contains(&used), "asked 4 s of CPU, app used {used:.3} s");
    assert!(side < 0.1, "the sidecar used {side:.3} s");
    wait_until("the workers to leave", || app.procs().is_empty());
}

/// Whether this kernel delays system calls; if not, the manifest must be refused by the
/// agent's check with nothing applied.
fn delay_supported(k: &Kubelet, manifest: &str) -> bool {
    let caps = k.agent.caps();
    let row = caps["faults"].as_array().unwrap().iter().find(|f| f["fault"] == "syscall_delay");
    if row.unwrap()["supported"] == true {
        return true;
    }
    let err = k.apply_refused(manifest);
    eprintln!("syscall delay not served here: {err}");
    assert!(err.contains("FAILED_PRECONDITION") && err.contains("document 1"), "{err}");
    assert_eq!(k.active(), 0);
    false
}

/// IOChaos latency with methods [read] under volumePath/path: each read of a file under the
/// path in `app` takes 200 ms longer; reads outside the path, and the sidecar's, do not.
#[test]
fn io_chaos_latency_delays_reads_under_the_path_only() {
    let _alone = serial::alone();
    let k = Kubelet::new("cm-iolat", &["db-0"]);
    let pod = k.pod("db-0");
    let vol = TempDir::new("cm-iolat-vol");
    let v = vol.path().display().to_string();
    for d in ["data", "other"] {
        std::fs::create_dir(format!("{v}/{d}")).unwrap();
        std::fs::write(format!("{v}/{d}/f"), b"x").unwrap();
    }
    let manifest = format!(
        r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: IOChaos
metadata:
  name: slow-disk
  namespace: shop
spec:
  action: latency
  mode: all
  selector:
    pods:
      shop: [db-0]
  containerNames: [app]
  volumePath: {v}
  path: '{v}/data/**/*'
  delay: 200ms
  percent: 100
  methods: [read]
  duration: 60s
"#
    );
    if !delay_supported(&k, &manifest) {
        return;
    }
    let (under, outside, side) = (
        Waiting::start(pod.cg("app"), &["calls", "read", &format!("{v}/data/f"), "5"]),
        Waiting::start(pod.cg("app"), &["calls", "read", &format!("{v}/other/f"), "5"]),
        Waiting::start(pod.cg("sidecar"), &["calls", "read", &format!("{v}/data/f"), "5"]),
    );
    let applied = k.apply_ok(&manifest);
    assert_eq!(applied.len(), 1);
    let params = applied[0]["parameters"].to_string();
    assert!(
        params.contains(&format!("{v}/data\"")),
        "the prefix is the path's directory: {params}"
    );
    let ms = |w: Waiting| -> Vec<f64> {
        let r = w.release();
        r["ms"].as_array().unwrap().iter().map(|m| m.as_f64().unwrap()).collect()
    };
    let (u, o, s) = (ms(under), ms(outside), ms(side));
    eprintln!("read ms under the path {u:?}, outside {o:?}, sidecar {s:?}");
    assert!(u.iter().all(|m| (200.0..=320.0).contains(m)), "reads under the path: {u:?}");
    assert!(o.iter().all(|m| *m < 50.0), "reads outside the path were delayed: {o:?}");
    assert!(s.iter().all(|m| *m < 50.0), "the sidecar's reads were delayed: {s:?}");
    k.agent.cli_json(&["cancel", "--label", "chaos-mesh.org/resource=shop/slow-disk"]);
    assert_eq!(k.active(), 0);
    // No methods ("all" in Chaos Mesh) and no path (the whole volume): the 16 file calls
    // faultline delays under a path, which the agent's check accepts.
    let all = manifest
        .replace("  methods: [read]\n", "")
        .replace(&format!("  path: '{v}/data/**/*'\n"), "");
    let plan = k.dry_run_ok(&all);
    assert_eq!(plan.len(), 1, "{plan:?}");
    assert_eq!(plan[0]["fault"], "syscall_delay", "{}", plan[0]);
}

/// IOChaos fault errno 5 with methods [open] under the volume: opens under it in `app` fail
/// with EIO (a real program, cat, says so); the sidecar and other paths open fine. Where
/// the kernel serves no file backend, the agent's check refuses the file, applying nothing.
#[test]
fn io_chaos_fault_fails_opens_under_the_volume_with_the_errno() {
    let k = Kubelet::new("cm-iofault", &["db-0"]);
    let pod = k.pod("db-0");
    let (vol, other) = (TempDir::new("cm-iofault-vol"), TempDir::new("cm-iofault-other"));
    let (v, o) = (vol.path().display().to_string(), other.path().display().to_string());
    std::fs::write(format!("{v}/f"), b"hello\n").unwrap();
    std::fs::write(format!("{o}/f"), b"hello\n").unwrap();
    let manifest = format!(
        r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: IOChaos
metadata:
  name: broken-disk
  namespace: shop
spec:
  action: fault
  mode: one
  selector:
    pods:
      shop: [db-0]
  containerNames: [app]
  volumePath: {v}
  errno: 5
  percent: 100
  methods: [open]
  duration: 60s
"#
    );
    let caps = k.agent.caps();
    let probe_row =
        caps["probes"].as_array().unwrap().iter().find(|p| p["name"] == "sys_file_backend");
    if probe_row.unwrap()["supported"] != true {
        let err = k.apply_refused(&manifest);
        eprintln!("file calls not served here: {err}");
        assert!(err.contains("FAILED_PRECONDITION") && err.contains("LSM"), "{err}");
        assert_eq!(k.active(), 0);
        return;
    }
    // No methods: the 15 open, read and write calls, which the agent's check accepts.
    let plan = k.dry_run_ok(&manifest.replace("  methods: [open]\n", ""));
    assert_eq!(plan[0]["fault"], "syscall_errno", "{}", plan[0]);
    let applied = k.apply_ok(&manifest);
    assert_eq!(applied.len(), 1);
    let under = probe(Some(pod.cg("app")), &["calls", "open", &format!("{v}/f"), "20"]);
    let elsewhere = probe(Some(pod.cg("app")), &["calls", "open", &format!("{o}/f"), "20"]);
    let side = probe(Some(pod.cg("sidecar")), &["calls", "open", &format!("{v}/f"), "20"]);
    eprintln!("open under the volume {under}, elsewhere {elsewhere}, sidecar {side}");
    assert_eq!(under["errnos"]["5"], 20, "{under}");
    assert_eq!(elsewhere["ok"], 20, "{elsewhere}");
    assert_eq!(side["ok"], 20, "{side}");
    let out = pod.cg("app").command("cat").arg(format!("{v}/f")).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // glibc's message, and busybox's (the VM tier's).
    let eio = stderr.contains("I/O error") || stderr.contains("Input/output error");
    assert!(!out.status.success() && eio, "{stderr}");
    k.agent.cli_json(&["cancel", "--label", "chaos-mesh.org/resource=shop/broken-disk"]);
    let after = probe(Some(pod.cg("app")), &["calls", "open", &format!("{v}/f"), "20"]);
    assert_eq!(after["ok"], 20, "opens still fail after the cancel: {after}");
}

/// TimeChaos timeOffset -10m with clockIds [CLOCK_REALTIME] on `app`: a process there reads
/// ten minutes behind, one in the sidecar true time; true time again after cancel by label.
#[test]
fn time_chaos_shifts_the_named_containers_clock() {
    let k = Kubelet::new("cm-time", &["api-0"]);
    let pod = k.pod("api-0");
    let mut inside = ClockServer::start(Some(pod.cg("app")));
    let mut side = ClockServer::start(Some(pod.cg("sidecar")));
    inside.read().assert_off_by(0.0, "before");
    let applied = k.apply_ok(
        r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: TimeChaos
metadata:
  name: behind
  namespace: shop
spec:
  mode: one
  selector:
    pods:
      shop: [api-0]
  containerNames: [app]
  timeOffset: -10m
  clockIds:
    - CLOCK_REALTIME
  duration: 60s
"#,
    );
    assert_eq!(applied.len(), 1);
    let r = inside.read();
    eprintln!("app reads {:.0} ms off", r.vdso_ms);
    r.assert_off_by(-600_000.0, "a process in app");
    side.read().assert_off_by(0.0, "a process in the sidecar");
    let ended = k.agent.cli_json(&["cancel", "--label", "chaos-mesh.org/kind=TimeChaos"]);
    assert_eq!(ended.as_array().unwrap().len(), 1, "{ended}");
    inside.read().assert_off_by(0.0, "after the cancel");
}

/// PodChaos container-kill (containerNames [app]) kills app's processes with SIGKILL and
/// leaves the sidecar; pod-kill, with no duration (one-shot, as in Chaos Mesh), kills every
/// container of the other pod; a third pod is untouched throughout.
#[test]
fn pod_chaos_container_kill_and_pod_kill() {
    let k = Kubelet::new("cm-kill", &["web-0", "web-1", "web-2"]);
    let mut p: Vec<(Child, Child)> =
        k.pods.iter().map(|pod| (sleeper(pod.cg("app")), sleeper(pod.cg("sidecar")))).collect();
    let applied = k.apply_ok(
        r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: kill-app
  namespace: shop
spec:
  action: container-kill
  mode: one
  selector:
    pods:
      shop: [web-0]
  containerNames: [app]
---
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: kill-pod
  namespace: shop
spec:
  action: pod-kill
  mode: one
  selector:
    pods:
      shop: [web-1]
  gracePeriod: 0
"#,
    );
    assert_eq!(applied.len(), 2, "{applied:?}");
    assert_eq!(killed_by(&mut p[0].0), Some(9), "web-0's app");
    assert!(alive(&mut p[0].1), "web-0's sidecar was killed");
    assert_eq!(killed_by(&mut p[1].0), Some(9), "web-1's app");
    assert_eq!(killed_by(&mut p[1].1), Some(9), "web-1's sidecar");
    assert!(alive(&mut p[2].0) && alive(&mut p[2].1), "web-2 was touched");
    eprintln!("container-kill: web-0 app SIGKILL, sidecar alive; pod-kill: web-1 both SIGKILL");
    for (a, b) in &mut p {
        let _ = a.kill();
        let _ = b.kill();
    }
}

/// PodChaos pod-failure for 2 s: the pod's processes stop (its cgroup frozen), another pod's
/// run on, and they run again at the end.
#[test]
fn pod_chaos_pod_failure_freezes_the_pod_until_the_end() {
    let k = Kubelet::new("cm-fail", &["web-0", "web-1"]);
    let dir = TempDir::new("cm-fail-counters");
    let (a, b) = (
        Counter::start(k.pod("web-0").cg("sidecar"), dir.path(), "a"),
        Counter::start(k.pod("web-1").cg("app"), dir.path(), "b"),
    );
    let applied = k.apply_ok(
        r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: down
  namespace: shop
spec:
  action: pod-failure
  mode: all
  selector:
    pods:
      shop: [web-0]
  duration: 2s
"#,
    );
    let frozen = std::fs::read_to_string(k.pod("web-0").pod_cg().fs.join("cgroup.freeze")).unwrap();
    let (moved, other) = (a.moved_in(Duration::from_millis(500)), b.moves());
    eprintln!("pod-failure: web-0 moved {moved} in 500 ms, cgroup.freeze {}", frozen.trim());
    assert_eq!(frozen.trim(), "1");
    assert_eq!(moved, 0, "the failed pod kept running");
    assert!(other, "the other pod was paused too");
    k.agent.wait_ended(applied[0]["id"].as_str().unwrap(), Duration::from_secs(15));
    assert!(a.moves(), "not thawed at the end");
}

const PLAN: &str = r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: TimeChaos
metadata:
  name: clock
  namespace: shop
spec:
  mode: all
  selector:
    pods:
      shop: [web-0]
  containerNames: [app]
  timeOffset: 1h
  duration: 120s
---
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: freeze
  namespace: shop
spec:
  action: pod-failure
  mode: all
  selector:
    pods:
      shop: [web-1]
  duration: 120s
---
apiVersion: chaos-mesh.org/v1alpha1
kind: StressChaos
metadata:
  name: burn
  namespace: shop
spec:
  mode: all
  selector:
    pods:
      shop: [web-0]
  containerNames: [sidecar]
  stressors:
    cpu:
      workers: 1
      load: 10
  duration: 120s
"#;

/// Three documents applied together, listed by resource label, and ended one resource at a
/// time by `cancel --label`: each cancel takes that resource's effect away and only it.
#[test]
fn a_plan_of_three_documents_is_listed_and_cancelled_by_label() {
    let k = Kubelet::new("cm-plan", &["web-0", "web-1"]);
    let dir = TempDir::new("cm-plan-counters");
    let mut clock = ClockServer::start(Some(k.pod("web-0").cg("app")));
    let frozen = Counter::start(k.pod("web-1").cg("app"), dir.path(), "b");
    let sidecar = k.pod("web-0").cg("sidecar");
    let applied = k.apply_ok(PLAN);
    assert_eq!(applied.len(), 3, "{applied:?}");
    for (resource, kind) in
        [("shop/clock", "TimeChaos"), ("shop/freeze", "PodChaos"), ("shop/burn", "StressChaos")]
    {
        let l = k.ls(&format!("chaos-mesh.org/resource={resource}"));
        assert_eq!(l.len(), 1, "{resource}: {l:?}");
        assert_eq!(l[0]["labels"]["chaos-mesh.org/kind"], kind, "{}", l[0]);
    }
    clock.read().assert_off_by(3_600_000.0, "the plan's clock");
    assert_eq!(frozen.moved_in(Duration::from_millis(300)), 0, "web-1 not frozen");
    assert_eq!(sidecar.procs().len(), 1, "one CPU worker in web-0's sidecar");

    let ended = k.agent.cli_json(&["cancel", "--label", "chaos-mesh.org/resource=shop/freeze"]);
    assert_eq!(ended.as_array().unwrap().len(), 1, "{ended}");
    assert!(frozen.moves(), "web-1 still frozen after its resource's cancel");
    clock.read().assert_off_by(3_600_000.0, "the clock, after another resource's cancel");
    assert_eq!(sidecar.procs().len(), 1, "the worker left with another resource's cancel");
    assert_eq!(k.active(), 2);

    k.agent.cli_json(&["cancel", "--label", "chaos-mesh.org/resource=shop/clock"]);
    clock.read().assert_off_by(0.0, "after the clock's cancel");
    k.agent.cli_json(&["cancel", "--label", "chaos-mesh.org/resource=shop/burn"]);
    wait_until("the worker to leave", || sidecar.procs().is_empty());
    assert_eq!(k.active(), 0);
    eprintln!("plan of 3: listed one per resource label, each cancel ended only its own");
}

/// A file whose third document is refused (a method faultline cannot fault, named by its
/// path), or whose second names a container the pod lacks (refused by the agent's check),
/// applies nothing: the other documents' experiments are absent and their effects too.
#[test]
fn a_file_with_one_refused_document_applies_nothing() {
    let k = Kubelet::new("cm-refuse", &["web-0", "web-1"]);
    let mut clock = ClockServer::start(Some(k.pod("web-0").cg("app")));
    let refused = format!(
        "{PLAN}---\n{}",
        r#"apiVersion: chaos-mesh.org/v1alpha1
kind: IOChaos
metadata:
  name: attrs
  namespace: shop
spec:
  action: fault
  mode: all
  selector:
    pods:
      shop: [web-0]
  volumePath: /var/lib/data
  errno: 5
  methods: [read, getattr]
  duration: 60s
"#
    );
    let err = k.apply_refused(&refused);
    eprintln!("{err}");
    assert!(
        err.contains("document 4 (IOChaos shop/attrs): spec.methods[1]") && err.contains("getattr"),
        "{err}"
    );
    assert_eq!(k.active(), 0, "a refused file left experiments");
    clock.read().assert_off_by(0.0, "the clock after a refused file");

    let bad_container = PLAN.replace("containerNames: [sidecar]", "containerNames: [db]");
    let err = k.apply_refused(&bad_container);
    eprintln!("{err}");
    assert!(err.contains("document 3") && err.contains("NOT_FOUND"), "{err}");
    assert_eq!(k.active(), 0, "a file the agent refused left experiments");
    clock.read().assert_off_by(0.0, "the clock after a file the agent refused");
}

/// `mode: fixed` with value 2 over four named pods kills app in exactly two of them;
/// `mode: one` kills exactly one pod's processes.
#[test]
fn mode_fixed_and_one_pick_that_many_of_the_named_pods() {
    let names = ["web-0", "web-1", "web-2", "web-3"];
    let k = Kubelet::new("cm-mode", &names);
    let mut p: Vec<(Child, Child)> =
        k.pods.iter().map(|pod| (sleeper(pod.cg("app")), sleeper(pod.cg("sidecar")))).collect();
    let applied = k.apply_ok(
        r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: two-apps
  namespace: shop
spec:
  action: container-kill
  mode: fixed
  value: "2"
  selector:
    pods:
      shop: [web-0, web-1, web-2, web-3]
  containerNames: [app]
"#,
    );
    assert_eq!(applied.len(), 2, "{applied:?}");
    wait_until("two apps killed", || dead(&mut p, true) >= 2);
    std::thread::sleep(Duration::from_millis(300));
    let apps = dead(&mut p, true);
    let sides = dead(&mut p, false);
    eprintln!("mode fixed 2: {apps} apps killed, {sides} sidecars");
    assert_eq!((apps, sides), (2, 0));

    let applied = k.apply_ok(
        r#"
apiVersion: chaos-mesh.org/v1alpha1
kind: PodChaos
metadata:
  name: one-pod
  namespace: shop
spec:
  action: pod-kill
  mode: one
  selector:
    namespaces: [shop]
    pods:
      shop: [web-0, web-1, web-2, web-3]
"#,
    );
    assert_eq!(applied.len(), 1, "{applied:?}");
    wait_until("one sidecar killed", || dead(&mut p, false) >= 1);
    std::thread::sleep(Duration::from_millis(300));
    let sides = dead(&mut p, false);
    eprintln!("mode one: {sides} pod killed");
    assert_eq!(sides, 1);
    for (a, b) in &mut p {
        let _ = a.kill();
        let _ = b.kill();
    }
}
