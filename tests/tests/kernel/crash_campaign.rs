//! The crash campaign: a random mix of API calls (injects of every family this kernel serves
//! that leaves state beyond the agent's descriptors, cancels, faults left to expire), the
//! agent SIGKILLed at a random moment (between calls, or while an Inject is in flight),
//! restarted on the same state directory, and after every recovery the invariants checked:
//! - every experiment the API acknowledged is accounted for: active (and acting) while its
//!   deadline has not passed, expired after it, cancelled only if the campaign cancelled it;
//!   none lost, none doubled (each inject carries a label of its own);
//! - nothing in the kernel belongs to no live experiment: no cgroup program
//!   (BPF_PROG_QUERY) on a campaign cgroup, no frozen cgroup, no v1 cgroup the stress
//!   placement made, no traced or stopped process, no faultline worker or helper process, no
//!   fq qdisc it installed, no ifb device, no tc program on a device.
//!
//! `cargo xtask crash-campaign [--kills N] [--seed S] [--vm KERNEL]` runs it
//! (FL_CAMPAIGN_KILLS, FL_CAMPAIGN_SEED), on this host or alone in a Debian guest, where fq,
//! ifb and clsact serve the delay and corrupt faults this host cannot; `cargo xtask test`
//! runs a short form on the host (the VM tier skips it: a round in an emulated guest takes
//! seconds). The report gives kills, calls, outcomes and violations; a failure names its
//! seed and round, to replay it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use faultline_tests::{Agent, Cgroup, Netns, bpf, faultline_bin, net::UdpSink, probe, wait_for};

/// xorshift64*: reproducible from the seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Loss,
    ConnectErrno,
    Pause,
    SysDelay,
    Skew,
    Cpu,
    Memory,
    /// Egress delay: fq on the device (`lo`), journaled.
    NetDelay,
    /// Ingress delay: an ifb device, journaled.
    IngressDelay,
    /// Corrupt on a device (`lo` of the campaign's own namespace): tc programs (clsact over
    /// netlink, journaled, or tcx links).
    Corrupt,
}

const FAMILIES: [Family; 10] = [
    Family::Loss,
    Family::ConnectErrno,
    Family::Pause,
    Family::SysDelay,
    Family::Skew,
    Family::Cpu,
    Family::Memory,
    Family::NetDelay,
    Family::IngressDelay,
    Family::Corrupt,
];

/// The target index of the device family (after the four cgroups).
const DEVICE: usize = 4;

impl Family {
    /// Stress goes to the empty cgroup (its v1 cgroups are then made, and journaled).
    fn on_empty(self) -> bool {
        matches!(self, Family::Cpu | Family::Memory)
    }

    /// Whether the agent's capabilities say this kernel serves it.
    fn served(self, caps: &serde_json::Value) -> bool {
        let fault = |name: &str| {
            caps["faults"].as_array().unwrap().iter().find(|f| f["fault"] == name).cloned()
        };
        // Stress and pause need cgroups only, which every kernel here has: not in the table.
        let ok = |name: &str| fault(name).is_none_or(|f| f["supported"] == true);
        match self {
            Family::Loss => ok("net_loss"),
            Family::ConnectErrno => ok("syscall_errno"),
            Family::Pause => ok("process_pause"),
            Family::SysDelay => ok("syscall_delay"),
            Family::Skew => ok("time_skew"),
            Family::Cpu => ok("cpu_stress"),
            Family::Memory => ok("memory_stress"),
            Family::NetDelay => ok("net_delay"),
            // Its reason names what net_delay cannot do: ingress, where it says so.
            Family::IngressDelay => {
                ok("net_delay") && fault("net_delay").is_some_and(|f| f["reason"] == "")
            }
            Family::Corrupt => ok("net_corrupt"),
        }
    }

    /// The fault's CLI words after the target.
    fn args(self, port: u16) -> Vec<String> {
        let v: &[&str] = match self {
            Family::Loss => &["--percent", "100", "--protocol", "udp", "--port", ""],
            Family::ConnectErrno => &["--syscall", "connect", "--errno", "ECONNREFUSED"],
            Family::Pause => &[],
            Family::SysDelay => &["--syscall", "fsync", "--latency", "10ms"],
            Family::Skew => &["--offset", "+1h"],
            Family::Cpu => &["--load", "5", "--workers", "1"],
            Family::Memory => &["--size", "16mb"],
            Family::NetDelay => &["--latency", "20ms", "--device", "lo"],
            Family::IngressDelay => &["--latency", "20ms", "--direction", "ingress"],
            Family::Corrupt => &["--percent", "5"],
        };
        let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
        if self == Family::Loss {
            *v.last_mut().unwrap() = port.to_string();
        }
        v
    }

    fn verb(self) -> [&'static str; 2] {
        match self {
            Family::Loss => ["net", "loss"],
            Family::ConnectErrno => ["sys", "fail"],
            Family::Pause => ["process", "pause"],
            Family::SysDelay => ["sys", "delay"],
            Family::Skew => ["time", "skew"],
            Family::Cpu => ["stress", "cpu"],
            Family::Memory => ["stress", "mem"],
            Family::NetDelay | Family::IngressDelay => ["net", "delay"],
            Family::Corrupt => ["net", "corrupt"],
        }
    }
}

/// An experiment the campaign knows of.
struct Known {
    family: Family,
    target: usize,
    label: String,
    /// When it ends at the latest (acknowledged at + duration), as the campaign's clock says.
    deadline: Instant,
    /// The API answered the Inject (otherwise it was in flight when the agent died, and may
    /// or may not exist).
    acked: bool,
    cancelled: bool,
}

/// Either side of a deadline this close is not judged (clocks, the check's own time).
const MARGIN: Duration = Duration::from_millis(1500);

struct Campaign {
    rng: Rng,
    seed: u64,
    agent: Agent,
    /// Busy cgroups (a sleeper each) and, last, the empty one stress goes to.
    cgroups: Vec<Cgroup>,
    sleepers: Vec<std::process::Child>,
    /// The corrupt fault's device is `lo` in here.
    netns: Netns,
    /// The families this kernel serves.
    families: Vec<Family>,
    sink: UdpSink,
    known: BTreeMap<String, Known>,
    serial: u64,
    round: u64,
    killed_at: Instant,
    calls: u64,
    violations: Vec<String>,
    /// Outcomes seen at the last check: resumed (active after a restart), expired, cancelled.
    outcomes: BTreeMap<&'static str, u64>,
}

impl Campaign {
    fn new(seed: u64) -> Campaign {
        let cgroups: Vec<Cgroup> = ["crash-a", "crash-b", "crash-c", "crash-empty"]
            .iter()
            .map(|t| Cgroup::new(t))
            .collect();
        // For the whole campaign (a 1,000-kill run takes longer than the harness's sleeper).
        let sleepers = cgroups[..3]
            .iter()
            .map(|cg| cg.command("sleep").arg("86400").stdout(Stdio::null()).spawn().unwrap())
            .collect();
        let agent = Agent::start();
        let families: Vec<Family> =
            FAMILIES.iter().copied().filter(|f| f.served(agent.caps())).collect();
        eprintln!("crash campaign: families this kernel serves: {families:?}");
        Campaign {
            rng: Rng(seed.max(1)),
            seed,
            agent,
            cgroups,
            sleepers,
            netns: Netns::new("crash"),
            families,
            sink: UdpSink::bind("127.0.0.1:0"),
            known: BTreeMap::new(),
            serial: 0,
            round: 0,
            killed_at: Instant::now(),
            calls: 0,
            violations: Vec::new(),
            outcomes: BTreeMap::new(),
        }
    }

    fn violation(&mut self, what: String) {
        eprintln!("VIOLATION seed {} round {}: {what}", self.seed, self.round);
        // What the agent said of the experiment named, across its restarts.
        if let Some(id) = what
            .split_whitespace()
            .find(|w| w.len() == 12 && w.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            for line in self.agent.log().lines().filter(|l| l.contains(id)) {
                eprintln!("    {line}");
            }
        }
        self.violations.push(format!("round {}: {what}", self.round));
    }

    /// The CLI's Inject of a random family, as a child process (so the agent can die while it
    /// is in flight).
    fn inject_command(&mut self) -> (Command, String, Family, usize, Duration) {
        let family = self.families[self.rng.below(self.families.len() as u64) as usize];
        let target = match family {
            Family::Corrupt => DEVICE,
            f if f.on_empty() => 3,
            _ => self.rng.below(3) as usize,
        };
        let secs = 2 + self.rng.below(14);
        self.serial += 1;
        let label = format!("{}-{}", self.seed, self.serial);
        let mut cmd = Command::new(faultline_bin());
        cmd.arg("--endpoint").arg(&self.agent.socket).args(family.verb());
        if target == DEVICE {
            cmd.args(["--interface", "lo", "--netns", &self.netns.name]);
        } else {
            cmd.args(["--cgroup", &self.cgroups[target].rel]);
        }
        cmd.args(family.args(self.sink.addr().port()));
        cmd.args(["--for", &format!("{secs}s"), "--label", &format!("campaign={label}")]);
        cmd.args(["-o", "json"]).stdout(Stdio::piped()).stderr(Stdio::piped());
        (cmd, label, family, target, Duration::from_secs(secs))
    }

    fn record(
        &mut self,
        out: std::process::Output,
        label: String,
        f: Family,
        t: usize,
        d: Duration,
    ) {
        let at = Instant::now();
        let acked = out.status.success();
        let id = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["id"].as_str().map(String::from));
        let key = id.unwrap_or_else(|| format!("unacked:{label}"));
        self.known.insert(
            key,
            Known { family: f, target: t, label, deadline: at + d, acked, cancelled: false },
        );
    }

    fn inject(&mut self) {
        let (mut cmd, label, f, t, d) = self.inject_command();
        self.calls += 1;
        let out = cmd.output().unwrap();
        self.record(out, label, f, t, d);
    }

    fn cancel(&mut self) {
        let now = Instant::now();
        let live: Vec<String> = self
            .known
            .iter()
            .filter(|(id, k)| {
                k.acked && !k.cancelled && k.deadline > now && !id.starts_with("unacked")
            })
            .map(|(id, _)| id.clone())
            .collect();
        if live.is_empty() {
            return;
        }
        let id = live[self.rng.below(live.len() as u64) as usize].clone();
        self.calls += 1;
        let out = self.agent.cli(&["cancel", &id]);
        if out.status.success() {
            self.known.get_mut(&id).unwrap().cancelled = true;
        }
    }

    /// A few calls, then SIGKILL: between calls, or while an Inject is in flight.
    fn round(&mut self) {
        self.round += 1;
        for _ in 0..=self.rng.below(3) {
            match self.rng.below(10) {
                0..=6 => self.inject(),
                7 | 8 => self.cancel(),
                _ => std::thread::sleep(Duration::from_millis(200 + self.rng.below(1300))),
            }
        }
        if self.rng.below(2) == 0 {
            let (mut cmd, label, f, t, d) = self.inject_command();
            self.calls += 1;
            let child = cmd.spawn().unwrap();
            std::thread::sleep(Duration::from_micros(self.rng.below(40_000)));
            self.kill();
            let out = child.wait_with_output().unwrap();
            self.record(out, label, f, t, d);
        } else {
            self.kill();
        }
        self.agent.restart();
        self.check();
    }

    fn kill(&mut self) {
        self.killed_at = Instant::now();
        self.agent.signal(libc::SIGKILL);
        assert!(self.agent.wait_exit(Duration::from_secs(10)).is_some(), "SIGKILL did not end it");
    }

    /// The agent's experiments of this campaign: label -> (id, state, reason).
    fn listed(&self) -> BTreeMap<String, Vec<(String, String, String)>> {
        let mut by_label: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
        for e in self.agent.cli_json(&["ls"]).as_array().unwrap() {
            let Some(label) = e["labels"]["campaign"].as_str() else { continue };
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            by_label.entry(label.to_string()).or_default().push((s("id"), s("state"), s("reason")));
        }
        by_label
    }

    fn check(&mut self) {
        let listed = self.listed();
        let now = Instant::now();
        // Accounting.
        let mut active: Vec<(Family, usize, Instant)> = Vec::new();
        let known: Vec<(String, Family, usize, String, Instant, bool, bool)> = self
            .known
            .iter()
            .map(|(id, k)| {
                (id.clone(), k.family, k.target, k.label.clone(), k.deadline, k.acked, k.cancelled)
            })
            .collect();
        for (id, family, target, label, deadline, acked, cancelled) in known {
            let entries = listed.get(&label).cloned().unwrap_or_default();
            if entries.len() > 1 {
                self.violation(format!("{family:?} {label} doubled: {entries:?}"));
            }
            let Some((lid, state, reason)) = entries.into_iter().next() else {
                // The agent keeps ended experiments in memory only: one that ended (cancelled,
                // or its deadline passed) before the last kill may be gone with it; one alive
                // at the kill must be there.
                if acked && !cancelled && deadline > self.killed_at + MARGIN {
                    self.violation(format!("{family:?} {id} acknowledged, then lost"));
                }
                continue;
            };
            if acked && lid != id {
                self.violation(format!("{id} listed as {lid}"));
            }
            let early = now + MARGIN < deadline;
            let late = now > deadline + MARGIN;
            match state.as_str() {
                "active" if late => {
                    self.violation(format!("{family:?} {lid} outlived its deadline"))
                }
                "active" => {
                    active.push((family, target, deadline));
                    *self.outcomes.entry("active after a restart").or_default() += 1;
                }
                "expired" if early && !cancelled => {
                    self.violation(format!("{family:?} {lid} expired before its deadline"))
                }
                "expired" => *self.outcomes.entry("expired").or_default() += 1,
                "cancelled" if !cancelled => {
                    self.violation(format!("{family:?} {lid} cancelled, not by the campaign"))
                }
                "cancelled" => *self.outcomes.entry("cancelled").or_default() += 1,
                // An Inject in flight at the kill was journaled and then refused or cut
                // short: it was never acknowledged, and its state says what became of it.
                "failed" if !acked => {
                    *self.outcomes.entry("unacknowledged, failed").or_default() += 1
                }
                other => self.violation(format!("{family:?} {lid} {other}: {reason}")),
            }
        }
        // The active ones act.
        for &(family, t, deadline) in &active {
            // One about to expire may be gone by the time it is measured.
            if deadline < Instant::now() + MARGIN {
                continue;
            }
            let paused = active.iter().any(|(f, at, _)| *f == Family::Pause && *at == t);
            let acts = match family {
                Family::Corrupt => device_programs(&self.netns) > 0,
                Family::NetDelay | Family::IngressDelay => self.cgroups[t].programs() > 0,
                // A process started in a frozen cgroup would wait there.
                Family::Loss if paused => self.cgroups[t].programs() > 0,
                Family::Loss => {
                    probe(
                        Some(&self.cgroups[t]),
                        &["udp-send", &self.sink.addr().to_string(), "20"],
                    );
                    self.sink.drain() == 0
                }
                Family::ConnectErrno => self.cgroups[t].programs() > 0,
                Family::Pause => frozen(&self.cgroups[t]),
                Family::SysDelay => self.cgroups[t].procs().iter().any(|p| tracer_of(*p) != 0),
                Family::Cpu | Family::Memory => !self.cgroups[t].procs().is_empty(),
                // The vDSO patch has no outside sign this test reads.
                Family::Skew => true,
            };
            if !acts {
                let cg = &self.cgroups[t];
                let on: Vec<String> = listed
                    .values()
                    .flatten()
                    .filter(|(_, s, _)| s == "active")
                    .map(|(id, _, _)| id.clone())
                    .collect();
                self.violation(format!(
                    "{family:?} on cgroup {t} is active but does not act (skb programs {}, sock                      programs {}, active here: {on:?})",
                    cg.skb_programs(),
                    cg.sock_programs()
                ));
                for line in
                    self.agent.log().lines().rev().take(40).collect::<Vec<_>>().into_iter().rev()
                {
                    eprintln!("    {line}");
                }
            }
        }
        // Nothing left without a live experiment (converging for a moment: an expiry may be
        // firing as this runs).
        let settle = Instant::now();
        let active: Vec<(Family, usize)> = active.iter().map(|(f, t, _)| (*f, *t)).collect();
        let leftovers = loop {
            let l = self.leftovers(&active);
            if l.is_empty() || settle.elapsed() > Duration::from_secs(3) {
                break l;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        for l in leftovers {
            self.violation(l);
        }
        // Forget what has ended for good.
        let now = Instant::now();
        self.known.retain(|_, k| k.deadline + MARGIN > now && !k.cancelled);
    }

    /// Kernel objects and processes no active experiment explains.
    fn leftovers(&self, active: &[(Family, usize)]) -> Vec<String> {
        let has = |t: usize, fs: &[Family]| active.iter().any(|(f, at)| *at == t && fs.contains(f));
        let mut out = Vec::new();
        let packets = [Family::Loss, Family::ConnectErrno, Family::NetDelay, Family::IngressDelay];
        let any = |fs: &[Family]| active.iter().any(|(f, _)| fs.contains(f));
        if !any(&[Family::Corrupt]) && device_programs(&self.netns) > 0 {
            out.push(format!(
                "{} tc programs on lo, no corrupt fault",
                device_programs(&self.netns)
            ));
        }
        if !any(&[Family::NetDelay]) && qdiscs("lo").contains("qdisc fq ") {
            out.push(format!("fq left on lo, no delay: {}", qdiscs("lo").trim()));
        }
        if !any(&[Family::IngressDelay]) {
            let links = ip(&["-o", "link", "show"]);
            if let Some(l) = links.lines().find(|l| l.contains("flifb")) {
                out.push(format!("an ifb device left, no ingress delay: {l}"));
            }
        }
        for (t, cg) in self.cgroups.iter().enumerate() {
            if !has(t, &packets) && cg.programs() > 0 {
                out.push(format!(
                    "cgroup {t}: {} programs, no packet or connect fault",
                    cg.programs()
                ));
            }
            if !has(t, &[Family::Pause]) && frozen(cg) {
                out.push(format!("cgroup {t} frozen, no pause"));
            }
            let stressed = has(t, &[Family::Cpu, Family::Memory]);
            if t == 3 && !stressed && !cg.procs().is_empty() {
                out.push(format!("stress workers left: {:?}", cg.procs()));
            }
            if t == 3 && !stressed {
                for v1 in v1_dirs(cg) {
                    out.push(format!("v1 cgroup left: {v1}"));
                }
            }
            if !has(t, &[Family::SysDelay, Family::Skew]) {
                for p in cg.procs() {
                    if tracer_of(p) != 0 || stopped(p) {
                        out.push(format!("process {p} of cgroup {t} traced or stopped"));
                    }
                }
            }
        }
        if active.is_empty() {
            let helpers = helpers();
            if !helpers.is_empty() {
                out.push(format!("faultline processes with no experiment: {helpers:?}"));
            }
        }
        out
    }

    fn report(&self, kills: u64, took: Duration) -> String {
        format!(
            "crash campaign: seed {}, {kills} kills, {} API calls, {:.0} s; outcomes seen at the \
             checks {:?}; {} violations",
            self.seed,
            self.calls,
            took.as_secs_f64(),
            self.outcomes,
            self.violations.len()
        )
    }
}

/// tc programs on `lo` of the namespace: tcx links (6.6+) and clsact filters over netlink.
fn device_programs(ns: &Netns) -> u32 {
    // BPF_TCX_INGRESS, BPF_TCX_EGRESS, queried by ifindex (lo is 1) from inside.
    let tcx = ns.run(|| [46, 47].iter().map(|t| bpf::query(1, *t).unwrap_or(0)).sum::<u32>());
    let filters: u32 = ["ingress", "egress"]
        .iter()
        .map(|dir| {
            let out = Command::new("tc")
                .args(["-n", &ns.name, "filter", "show", "dev", "lo", dir])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            out.lines().filter(|l| l.contains("bpf")).count() as u32
        })
        .sum();
    tcx + filters
}

fn ip(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// `tc qdisc show dev DEV` in the agent's namespace.
fn qdiscs(dev: &str) -> String {
    Command::new("tc")
        .args(["qdisc", "show", "dev", dev])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn frozen(cg: &Cgroup) -> bool {
    std::fs::read_to_string(cg.fs.join("cgroup.freeze")).is_ok_and(|s| s.trim() == "1")
}

fn status_field(pid: i32, field: &str) -> Option<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_string()))
}

fn tracer_of(pid: i32) -> i32 {
    status_field(pid, "TracerPid:").and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn stopped(pid: i32) -> bool {
    status_field(pid, "State:").is_some_and(|s| s.starts_with('T') || s.starts_with('t'))
}

/// The cgroup's path in each v1 hierarchy, where one exists (the stress placement makes
/// them for a target whose processes are not in v1 cgroups).
fn v1_dirs(cg: &Cgroup) -> Vec<String> {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    mounts
        .lines()
        .filter(|l| l.split(" - ").nth(1).is_some_and(|t| t.starts_with("cgroup ")))
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| format!("{m}{}", cg.rel))
        .filter(|p| std::path::Path::new(p).exists())
        .collect()
}

/// The faultline binary's helper processes (its `__` subcommands: stress workers, thaw
/// guards, tracers), whichever agent started them.
fn helpers() -> Vec<(i32, String)> {
    let bin = std::fs::canonicalize(faultline_bin()).unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        if std::fs::read_link(e.path().join("exe")).ok().as_ref() != Some(&bin) {
            continue;
        }
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let args: Vec<String> =
            cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        if args.get(1).is_some_and(|a| a.starts_with("__")) {
            out.push((pid, args.join(" ")));
        }
    }
    out
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn crash_campaign() {
    let kills = env_u64("FL_CAMPAIGN_KILLS").unwrap_or(50);
    let seed = env_u64("FL_CAMPAIGN_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
            as u64
    });
    eprintln!("crash campaign: seed {seed}, {kills} kills (FL_CAMPAIGN_SEED={seed} replays it)");
    let t0 = Instant::now();
    let mut c = Campaign::new(seed);
    for _ in 0..kills {
        c.round();
    }
    // The end: the last faults expire or are cancelled, and nothing is left at all.
    for id in c.known.keys().filter(|id| !id.starts_with("unacked")).cloned().collect::<Vec<_>>() {
        let _ = c.agent.cli(&["cancel", &id]);
    }
    wait_for("every campaign fault to end", Duration::from_secs(20), || {
        c.listed().values().flatten().all(|(_, state, _)| state != "active" && state != "pending")
    });
    let rest = c.leftovers(&[]);
    c.round += 1;
    for l in rest {
        c.violation(format!("at the end: {l}"));
    }
    let report = c.report(kills, t0.elapsed());
    eprintln!("{report}");
    for s in &mut c.sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
    assert!(
        c.violations.is_empty(),
        "{report}; replay with FL_CAMPAIGN_SEED={seed} FL_CAMPAIGN_KILLS={kills}:\n{}",
        c.violations.join("\n")
    );
}
