//! The owner of the FL_DELAY_* maps: one instance of the eBPF object whose syscall-exit
//! program (agent-ebpf/src/delay.rs) is attached only while a rule exists (tp_btf, else the
//! same code as a raw tracepoint), the rule slots (by cgroup id or by tgid, as faults/sys),
//! the counters per rule, and the two maps the tracer process shares: FL_DELAY_ARMED (the
//! program writes, the tracer takes) and FL_DELAY_SEIZED (the tracer writes). The maps live
//! as long as the datapath, so the tracer's descriptors stay valid across attach/detach.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    os::fd::{AsFd, BorrowedFd, OwnedFd},
};

use aya::{
    Btf, BtfError, Ebpf, EbpfError, EbpfLoader, Pod,
    maps::{Array, HashMap as BpfHashMap, IterableMap, Map, MapData, MapError},
    programs::{
        BtfTracePoint, FExit, ProgramError, RawTracePoint, fexit::FExitLink,
        raw_trace_point::RawTracePointLink, tp_btf::BtfTracePointLink,
    },
};
use faultline_common::{
    delay::{
        DELAY_F_FOLLOW, DELAY_F_PATH, DELAY_F_SEEDED, DELAY_FEXIT_COPIES, DELAY_MAX_SYSCALL,
        DelayArm, DelayConfig, DelayPathKey, DelayRule, DelaySlots, DelayState,
        GLOBAL_DELAY_AGENT_TGID, GLOBAL_DELAY_TASK_BLOCKED, MAP_DELAY_ARMED, MAP_DELAY_CGROUPS,
        MAP_DELAY_CONFIG, MAP_DELAY_PATHS, MAP_DELAY_PIDS, MAP_DELAY_RULES, MAP_DELAY_SEIZED,
        MAP_DELAY_STATE, MAX_DELAY_RULES, MAX_DELAY_RULES_PER_TARGET,
    },
    levels::GLOBAL_ANCESTRY,
    net::{MAX_CGROUP_LEVEL, MAX_LEVEL_LOOKUPS},
    sys::GLOBAL_SYS_HAS_FETCH,
    vfs::GLOBAL_VFS,
};
use tracing::{debug, info};

use crate::{
    engine::error::chain,
    faults::sys::{sanitize, splitmix, syscalls::x86_64_name},
    kernel::{bpflog, btf, ebpf_object, probes::probe_atomic_fetch},
};

/// The exit program in its two forms, and the fork/exit followers of pid rules.
const PROG_BTF: &str = "fl_delay_sys_exit_btf";
const PROG_RAW: &str = "fl_delay_sys_exit_raw";
const PROG_FORK: &str = "fl_delay_fork";
const PROG_TASK_EXIT: &str = "fl_delay_task_exit";
/// The tracepoint the exit program hooks.
const SYS_EXIT: &str = "sys_exit";

/// getpgid(2) on x86_64: the probe's chosen call (called as getpgid(0): no effect; one
/// argument, so its function has BTF where argument-less ones may not).
pub(super) const NR_PROBE: u32 = 121;

/// The fexit copies' names (agent-ebpf/src/delay.rs).
fn fexit_copy(i: usize) -> String {
    format!("fl_delay_fexit_{i}")
}

/// Where a task's pid and tgid sit, for the fork tracepoint (`.rodata` shared with sys).
const GLOBAL_TASK_PID: &str = "FL_SYS_TASK_PID";
const GLOBAL_TASK_TGID: &str = "FL_SYS_TASK_TGID";

#[derive(Debug, thiserror::Error)]
pub enum DelayError {
    #[error("loading the eBPF object")]
    Load(#[source] EbpfError),
    #[error("the eBPF object is not ELF64")]
    NotElf,
    #[error("map {0} missing from the eBPF object")]
    MapMissing(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("program {0} missing from the eBPF object")]
    ProgramMissing(&'static str),
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("reading the kernel's BTF")]
    Btf(#[source] BtfError),
    #[error("no syscall-exit hook: tp_btf: {tp_btf}; raw_tp: {raw_tp}")]
    NoExitHook { tp_btf: String, raw_tp: String },
    #[error("at most {MAX_DELAY_RULES} system-call delays at once")]
    Full,
    #[error("at most {MAX_DELAY_RULES_PER_TARGET} system-call delays per target")]
    TargetFull,
    #[error("cgroup level {0} is too deep: at most {MAX_CGROUP_LEVEL}")]
    TooDeep(u32),
    #[error("targets may sit at no more than {MAX_LEVEL_LOOKUPS} distinct cgroup depths at once")]
    TooManyLevels,
    #[error("system call number {0} is out of range (at most {max})", max = DELAY_MAX_SYSCALL - 1)]
    SyscallRange(u32),
    #[error("no system-call delay in slot {0}")]
    UnknownSlot(u32),
    #[error("path prefixes need the kernel's file structures from BTF: {0}")]
    NoPathWalk(String),
}

type Result<T, E = DelayError> = std::result::Result<T, E>;

fn map_err(name: &'static str) -> impl Fn(MapError) -> DelayError {
    move |source| DelayError::Map { name, source }
}

fn prog_err(name: &'static str) -> impl Fn(ProgramError) -> DelayError {
    move |source| DelayError::Program { name, source }
}

/// The bitmap of a rule (`DelayRule::syscalls`) for these x86_64 system call numbers.
pub fn syscall_bitmap(nrs: &[u32]) -> Result<[u64; (DELAY_MAX_SYSCALL / 64) as usize]> {
    let mut bits = [0u64; (DELAY_MAX_SYSCALL / 64) as usize];
    for &nr in nrs {
        if nr >= DELAY_MAX_SYSCALL {
            return Err(DelayError::SyscallRange(nr));
        }
        bits[(nr / 64) as usize] |= 1 << (nr % 64);
    }
    Ok(bits)
}

/// Which form of the exit program is attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitHook {
    /// fexit on each delayed system call's function: only those calls pass the program.
    FExit,
    /// tp_btf on sys_exit: every system call on the node passes it.
    TpBtf,
    RawTp,
}

impl ExitHook {
    pub fn name(self) -> &'static str {
        match self {
            ExitHook::FExit => "fexit",
            ExitHook::TpBtf => "tp_btf",
            ExitHook::RawTp => "raw_tp",
        }
    }
}

/// What a rule applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelayTarget {
    /// Every task in the cgroup (id = the cgroup directory's inode) and its descendants;
    /// `level` is its depth under the cgroup2 root (the root is 0).
    Cgroup { id: u64, level: u32 },
    /// Every thread of the process; `follow`: children it forks get the rule too.
    Pid { tgid: u32, follow: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Cgroup(u64),
    Pid(u32),
}

struct Live {
    key: Key,
    /// Path rules: their directory (their bit is set in its FL_DELAY_PATHS entry).
    path: Option<DelayPathKey>,
    /// Cgroup targets: their level.
    level: Option<u32>,
    follow: bool,
    syscalls: [u64; (DELAY_MAX_SYSCALL / 64) as usize],
}

/// A rule's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DelayCounters {
    /// Calls of seized threads that matched the rule's syscalls and target.
    pub seen: u64,
    /// Calls the rule armed (the thread was signalled).
    pub delayed: u64,
    /// Nanoseconds of delay armed, in all.
    pub delay_ns: u64,
}

/// FL_DELAY_ARMED and FL_DELAY_SEIZED, as the datapath holds them and as the tracer opens
/// them from the descriptors it inherits.
pub struct ThreadMaps {
    armed: BpfHashMap<MapData, u32, DelayArm>,
    seized: BpfHashMap<MapData, u32, u32>,
}

impl ThreadMaps {
    /// The maps behind descriptors from `DelayDatapath::tracer_fds` (in another process:
    /// inherited or passed over a socket).
    pub fn from_fds(armed: OwnedFd, seized: OwnedFd) -> Result<Self> {
        Ok(ThreadMaps {
            armed: hash_from_fd(armed, MAP_DELAY_ARMED)?,
            seized: hash_from_fd(seized, MAP_DELAY_SEIZED)?,
        })
    }

    /// The thread is under PTRACE_SEIZE: its calls may be armed from now on.
    pub fn seize(&mut self, tid: u32) -> Result<()> {
        self.seized.insert(tid, 1, 0).map_err(map_err(MAP_DELAY_SEIZED))
    }

    /// The thread is no longer held by the tracer (detached or gone): forget it.
    pub fn release(&mut self, tid: u32) {
        let _ = self.seized.remove(&tid);
        let _ = self.armed.remove(&tid);
    }

    /// The call armed for the thread, removed from the map; None if nothing is armed.
    pub fn take_armed(&mut self, tid: u32) -> Result<Option<DelayArm>> {
        match self.armed.get(&tid, 0) {
            Ok(arm) => {
                let _ = self.armed.remove(&tid);
                Ok(Some(arm))
            }
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(map_err(MAP_DELAY_ARMED)(e)),
        }
    }

    /// The call armed for the thread, left in place.
    pub fn armed(&self, tid: u32) -> Option<DelayArm> {
        self.armed.get(&tid, 0).ok()
    }

    pub fn is_seized(&self, tid: u32) -> bool {
        self.seized.get(&tid, 0).is_ok()
    }

    /// (FL_DELAY_ARMED, FL_DELAY_SEIZED).
    pub fn fds(&self) -> (BorrowedFd<'_>, BorrowedFd<'_>) {
        (self.armed.map().fd().as_fd(), self.seized.map().fd().as_fd())
    }
}

fn hash_from_fd<V: Pod>(fd: OwnedFd, name: &'static str) -> Result<BpfHashMap<MapData, u32, V>> {
    let map = MapData::from_fd(fd).map_err(map_err(name))?;
    BpfHashMap::try_from(Map::HashMap(map)).map_err(map_err(name))
}

/// The exit program's attachment (dropping it detaches).
enum ExitLink {
    /// By system call number: the fexit copy attached to its function, and the link.
    FExit(BTreeMap<u32, (usize, FExitLink)>),
    TpBtf(#[expect(dead_code, reason = "held for its drop")] BtfTracePointLink),
    RawTp(#[expect(dead_code, reason = "held for its drop")] RawTracePointLink),
}

impl ExitLink {
    fn hook(&self) -> ExitHook {
        match self {
            ExitLink::FExit(_) => ExitHook::FExit,
            ExitLink::TpBtf(_) => ExitHook::TpBtf,
            ExitLink::RawTp(_) => ExitHook::RawTp,
        }
    }
}

/// How an instance is loaded: the agent's own (`DelayDatapath::load`) or the probe's.
pub(super) struct LoadOptions {
    /// Calls of this process are never delayed.
    pub agent_tgid: u32,
    /// Skip threads that block the marker (needs task_struct.blocked from BTF).
    pub check_blocked: bool,
    pub debug: bool,
}

pub struct DelayDatapath {
    ebpf: Ebpf,
    _log: Option<bpflog::BpfLog>,
    rules: BpfHashMap<MapData, u32, DelayRule>,
    state: Array<MapData, DelayState>,
    cgroups: BpfHashMap<MapData, u64, DelaySlots>,
    pids: BpfHashMap<MapData, u32, DelaySlots>,
    config: Array<MapData, DelayConfig>,
    paths_map: BpfHashMap<MapData, DelayPathKey, u64>,
    threads: ThreadMaps,
    free: VecDeque<u32>,
    live: BTreeMap<u32, Live>,
    exit: Option<ExitLink>,
    /// Why tp_btf was refused, once it was (the raw tracepoint is used from then on).
    btf_refused: Option<String>,
    /// Why fexit was refused at the last attach (sys_exit was used then).
    fexit_refused: Option<String>,
    /// sys_exit only (asked for by tests, or the kernel refused fexit): fexit is not tried.
    sys_exit_only: bool,
    /// The system call whose function each fexit copy is loaded for.
    fexit_bound: [Option<u32>; DELAY_FEXIT_COPIES],
    followers: Option<(RawTracePointLink, RawTracePointLink)>,
    /// Pid rules can follow children (task_struct pid/tgid offsets known), or why not.
    pub follow: std::result::Result<(), String>,
    /// Threads that block the marker are skipped (task_struct.blocked known), or why not.
    pub blocked_check: std::result::Result<(), String>,
    /// Rules may have a path (the file offsets known), or why not.
    pub paths: std::result::Result<(), String>,
}

impl DelayDatapath {
    /// Creates the maps and loads the object; nothing is attached until the first rule.
    /// `debug` turns the program's debug log lines on (`--debug-bpf`).
    pub fn load(debug: bool) -> Result<Self> {
        Self::load_with(&LoadOptions { agent_tgid: std::process::id(), check_blocked: true, debug })
    }

    pub(super) fn load_with(opts: &LoadOptions) -> Result<Self> {
        let exact = probe_atomic_fetch().is_ok();
        // One read of the kernel's BTF for every offset.
        let kbtf = btf::KernelBtf::read();
        let task = |m| kbtf.as_ref().map_err(Clone::clone).and_then(|b| b.offset("task_struct", m));
        let ids = task("pid").and_then(|p| task("tgid").map(|t| (p, t)));
        let blocked =
            if opts.check_blocked { task("blocked") } else { Err("not asked for".to_string()) };
        let (task_pid, task_tgid) = ids.as_ref().map_or((0, 0), |i| *i);
        let (fetch, blocked_off) = (u32::from(exact), *blocked.as_ref().unwrap_or(&0));
        let files = kbtf.as_ref().map_err(Clone::clone).and_then(btf::KernelBtf::vfs_offsets);
        let files_off = files.clone().unwrap_or_default();
        let ancestry = kbtf.as_ref().map(btf::KernelBtf::ancestry_offsets).unwrap_or_default();
        let mut loader = EbpfLoader::new();
        loader
            .override_global(GLOBAL_DELAY_AGENT_TGID, &opts.agent_tgid, true)
            .override_global(GLOBAL_DELAY_TASK_BLOCKED, &blocked_off, true)
            .override_global(GLOBAL_VFS, &files_off, true)
            .override_global(GLOBAL_ANCESTRY, &ancestry, true)
            .override_global(GLOBAL_SYS_HAS_FETCH, &fetch, true)
            .override_global(GLOBAL_TASK_PID, &task_pid, true)
            .override_global(GLOBAL_TASK_TGID, &task_tgid, true);
        crate::kernel::object::shrink_others(&mut loader, faultline_common::delay::DELAY_MAPS);
        bpflog::configure(&mut loader, opts.debug);
        let sanitized;
        let object: &[u8] = if exact {
            ebpf_object()
        } else {
            sanitized = sanitize::without_fetch(ebpf_object()).ok_or(DelayError::NotElf)?;
            &sanitized
        };
        let mut ebpf = loader.load(object).map_err(DelayError::Load)?;
        let log = if opts.debug { bpflog::forward(&mut ebpf, "delay") } else { None };
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(DelayError::MapMissing(name));
        let rules = take(MAP_DELAY_RULES)?.try_into().map_err(map_err(MAP_DELAY_RULES))?;
        let state = take(MAP_DELAY_STATE)?.try_into().map_err(map_err(MAP_DELAY_STATE))?;
        let cgroups = take(MAP_DELAY_CGROUPS)?.try_into().map_err(map_err(MAP_DELAY_CGROUPS))?;
        let pids = take(MAP_DELAY_PIDS)?.try_into().map_err(map_err(MAP_DELAY_PIDS))?;
        let config = take(MAP_DELAY_CONFIG)?.try_into().map_err(map_err(MAP_DELAY_CONFIG))?;
        let armed = take(MAP_DELAY_ARMED)?.try_into().map_err(map_err(MAP_DELAY_ARMED))?;
        let seized = take(MAP_DELAY_SEIZED)?.try_into().map_err(map_err(MAP_DELAY_SEIZED))?;
        let paths_map = take(MAP_DELAY_PATHS)?.try_into().map_err(map_err(MAP_DELAY_PATHS))?;
        Ok(DelayDatapath {
            ebpf,
            _log: log,
            rules,
            state,
            cgroups,
            pids,
            config,
            paths_map,
            threads: ThreadMaps { armed, seized },
            free: (0..MAX_DELAY_RULES).collect(),
            live: BTreeMap::new(),
            exit: None,
            btf_refused: None,
            fexit_refused: None,
            sys_exit_only: false,
            fexit_bound: [None; DELAY_FEXIT_COPIES],
            followers: None,
            follow: ids.map(drop),
            blocked_check: blocked.map(drop),
            paths: files.map(drop),
        })
    }

    /// What `add_rule` refuses, checked without installing anything: a cgroup too deep, a
    /// path this kernel cannot walk, a full target, too many depths, no free slot.
    fn check_rule(
        &self,
        target: DelayTarget,
        rule: &DelayRule,
    ) -> Result<(Key, Option<u32>, bool)> {
        let (key, level, follow) = match target {
            DelayTarget::Cgroup { level, .. } if level > MAX_CGROUP_LEVEL => {
                return Err(DelayError::TooDeep(level));
            }
            DelayTarget::Cgroup { id, level } => (Key::Cgroup(id), Some(level), false),
            DelayTarget::Pid { tgid, follow } => (Key::Pid(tgid), None, follow),
        };
        if rule.flags & DELAY_F_PATH != 0
            && let Err(why) = &self.paths
        {
            return Err(DelayError::NoPathWalk(why.clone()));
        }
        if self.live.values().filter(|l| l.key == key).count() >= MAX_DELAY_RULES_PER_TARGET {
            return Err(DelayError::TargetFull);
        }
        let levels = self.levels() | level.map_or(0, |l| 1 << l);
        if levels.count_ones() as usize > MAX_LEVEL_LOOKUPS {
            return Err(DelayError::TooManyLevels);
        }
        if self.free.is_empty() {
            return Err(DelayError::Full);
        }
        Ok((key, level, follow))
    }

    /// A dry run's `add_rule`: its checks, installing and attaching nothing.
    pub fn plan_rule(&self, target: DelayTarget, rule: &DelayRule) -> Result<()> {
        self.check_rule(target, rule).map(drop)
    }

    /// The exit program's form a rule delaying `calls` system calls would run under: the
    /// attached one, else the first `attach_exit` tries (fexit, where it may; sys_exit else).
    pub fn planned_hook(&self, calls: usize) -> ExitHook {
        if let Some(h) = self.hook() {
            return h;
        }
        if !self.sys_exit_only && calls <= DELAY_FEXIT_COPIES {
            ExitHook::FExit
        } else if self.btf_refused.is_some() {
            ExitHook::RawTp
        } else {
            ExitHook::TpBtf
        }
    }

    /// Installs `rule` for `target` and attaches the exit program if it was not; returns the
    /// rule's slot (`DelayArm::slot`). `rule.flags` gets DELAY_F_FOLLOW from the target and
    /// DELAY_F_SEEDED from `seed`. On an error nothing is left installed.
    pub fn add_rule(
        &mut self,
        target: DelayTarget,
        mut rule: DelayRule,
        seed: Option<u64>,
    ) -> Result<u32> {
        let (key, level, follow) = self.check_rule(target, &rule)?;
        let slot = self.free.pop_front().ok_or(DelayError::Full)?;
        rule.flags &= !(DELAY_F_FOLLOW | DELAY_F_SEEDED);
        if follow {
            rule.flags |= DELAY_F_FOLLOW;
        }
        if seed.is_some() {
            rule.flags |= DELAY_F_SEEDED;
        }
        let rng = seed.map(splitmix).unwrap_or(0) | 1;
        let mut installing = || -> Result<()> {
            self.state
                .set(slot, DelayState { rng, ..Default::default() }, 0)
                .map_err(map_err(MAP_DELAY_STATE))?;
            self.rules.insert(slot, rule, 0).map_err(map_err(MAP_DELAY_RULES))?;
            let path = (rule.flags & DELAY_F_PATH != 0).then_some(DelayPathKey {
                ino: rule.path_ino,
                dev: rule.path_dev,
                _pad: 0,
            });
            self.live.insert(slot, Live { key, path, level, follow, syscalls: rule.syscalls });
            if let Some(dir) = path {
                self.publish_path(dir)?;
            }
            self.publish(key)?;
            self.reconcile()
        };
        let result = installing();
        if result.is_err() {
            let _ = self.remove_rule(slot);
        }
        result.map(|()| slot)
    }

    /// Removes the rule in `slot`; the exit program is detached with the last rule.
    pub fn remove_rule(&mut self, slot: u32) -> Result<()> {
        let _ = self.rules.remove(&slot);
        let live = self.live.remove(&slot);
        if !self.free.contains(&slot) && slot < MAX_DELAY_RULES {
            self.free.push_back(slot);
        }
        let published = match &live {
            Some(l) => {
                let path = l.path.map_or(Ok(()), |dir| self.publish_path(dir));
                self.publish(l.key).and(path)
            }
            None => Ok(()),
        };
        self.reconcile()?;
        published?;
        live.map(drop).ok_or(DelayError::UnknownSlot(slot))
    }

    /// The counters of the rule in `slot`.
    pub fn counters(&self, slot: u32) -> Result<DelayCounters> {
        let s = self.state.get(&slot, 0).map_err(map_err(MAP_DELAY_STATE))?;
        Ok(DelayCounters { seen: s.seen, delayed: s.delayed, delay_ns: s.delay_ns })
    }

    /// The form of the exit program attached now (None: no rule, nothing attached).
    pub fn hook(&self) -> Option<ExitHook> {
        self.exit.as_ref().map(ExitLink::hook)
    }

    /// Why tp_btf was refused (or not tried), once the raw tracepoint was chosen.
    pub fn tp_btf_refused(&self) -> Option<&str> {
        self.btf_refused.as_deref()
    }

    /// The raw tracepoint from the next attach on, even where tp_btf works (tests, and the
    /// bench's per-hook figures). Takes effect once nothing is attached.
    pub fn force_raw_tp(&mut self) {
        self.force_tp_btf();
        self.btf_refused.get_or_insert_with(|| "raw_tp asked for".into());
    }

    /// sys_exit (tp_btf, else raw_tp) from the next attach on, even where fexit works.
    pub fn force_tp_btf(&mut self) {
        self.sys_exit_only = true;
        self.fexit_refused.get_or_insert_with(|| "sys_exit asked for".into());
    }

    /// Why fexit was refused (or not tried), once sys_exit was chosen.
    pub fn fexit_refused(&self) -> Option<&str> {
        self.fexit_refused.as_deref()
    }

    /// The kernel ids of the exit program's forms loaded so far (to find their links).
    pub fn exit_program_ids(&self) -> Vec<u32> {
        self.ebpf
            .programs()
            .filter(|(name, _)| {
                [PROG_BTF, PROG_RAW].contains(name) || name.starts_with("fl_delay_fexit_")
            })
            .filter_map(|(_, p)| p.info().ok())
            .map(|i| i.id())
            .collect()
    }

    /// The descriptors of (FL_DELAY_ARMED, FL_DELAY_SEIZED) for the tracer process; valid
    /// as long as the datapath. Dup them (without CLOEXEC) into the tracer; it opens them
    /// with `ThreadMaps::from_fds`.
    pub fn tracer_fds(&self) -> (BorrowedFd<'_>, BorrowedFd<'_>) {
        self.threads.fds()
    }

    /// The datapath's own handle on the thread maps (tests, and a tracer in this process).
    pub fn threads(&mut self) -> &mut ThreadMaps {
        &mut self.threads
    }

    fn levels(&self) -> u32 {
        self.live.values().filter_map(|l| l.level).fold(0, |a, l| a | 1 << l)
    }

    /// Writes the slots of the live rules with directory `dir` (removes it with the last).
    fn publish_path(&mut self, dir: DelayPathKey) -> Result<()> {
        let mask = self
            .live
            .iter()
            .filter(|(_, l)| l.path == Some(dir))
            .fold(0u64, |m, (slot, _)| m | 1 << (slot % 64));
        if mask == 0 {
            let _ = self.paths_map.remove(&dir);
            return Ok(());
        }
        self.paths_map.insert(dir, mask, 0).map_err(map_err(MAP_DELAY_PATHS))
    }

    /// Writes `key`'s slot list and the config.
    fn publish(&mut self, key: Key) -> Result<()> {
        let slots: Vec<u32> =
            self.live.iter().filter(|(_, l)| l.key == key).map(|(s, _)| *s).collect();
        let follow = self.live.values().any(|l| l.key == key && l.follow);
        let mut set = DelaySlots {
            count: slots.len() as u32,
            follow: u32::from(follow),
            ..Default::default()
        };
        set.slots[..slots.len()].copy_from_slice(&slots);
        match key {
            Key::Cgroup(id) if slots.is_empty() => {
                let _ = self.cgroups.remove(&id);
            }
            Key::Cgroup(id) => {
                self.cgroups.insert(id, set, 0).map_err(map_err(MAP_DELAY_CGROUPS))?
            }
            Key::Pid(pid) if slots.is_empty() => {
                let _ = self.pids.remove(&pid);
            }
            Key::Pid(pid) => self.pids.insert(pid, set, 0).map_err(map_err(MAP_DELAY_PIDS))?,
        }
        let mut syscalls = [0u64; (DELAY_MAX_SYSCALL / 64) as usize];
        for l in self.live.values() {
            for (a, b) in syscalls.iter_mut().zip(l.syscalls) {
                *a |= b;
            }
        }
        let cfg = DelayConfig {
            levels: self.levels(),
            pids: u32::from(self.live.values().any(|l| matches!(l.key, Key::Pid(_)))),
            syscalls,
            paths: u32::from(self.live.values().any(|l| l.path.is_some())),
            _pad: 0,
        };
        self.config.set(0, cfg, 0).map_err(map_err(MAP_DELAY_CONFIG))
    }

    /// Attaches the exit program while a rule exists (and the fork/exit followers while a
    /// pid rule does); detaches them otherwise.
    fn reconcile(&mut self) -> Result<()> {
        let want = self.wanted_syscalls();
        if self.live.is_empty() {
            if let Some(l) = self.exit.take() {
                debug!(hook = l.hook().name(), "system-call delay exit program detached");
            }
        } else if let Some(ExitLink::FExit(links)) = &self.exit
            && !links.keys().eq(want.iter())
            && let Err(why) = self.retarget_fexit(&want)
        {
            // A function refused: every call through sys_exit while these rules live (the
            // fexit links go first, so no call is judged twice).
            info!(reason = %why, "fexit on a system call refused: using sys_exit");
            self.exit = None;
            self.sys_exit_only |= !why.contains("unknown BTF type");
            self.fexit_refused = Some(why);
            self.exit = Some(self.attach_sys_exit()?);
        } else if self.exit.is_none() {
            let link = self.attach_exit(&want)?;
            info!(hook = link.hook().name(), "system-call delay exit program attached");
            self.exit = Some(link);
        }
        let pids = self.live.values().any(|l| matches!(l.key, Key::Pid(_)));
        if !pids {
            self.followers = None;
        } else if self.followers.is_none() && self.follow.is_ok() {
            let fork = attach_raw(&mut self.ebpf, PROG_FORK, "sched_process_fork")?;
            let exit = attach_raw(&mut self.ebpf, PROG_TASK_EXIT, "sched_process_exit")?;
            self.followers = Some((fork, exit));
        }
        Ok(())
    }

    /// The system call numbers of the live rules.
    fn wanted_syscalls(&self) -> Vec<u32> {
        (0..DELAY_MAX_SYSCALL)
            .filter(|&nr| {
                self.live.values().any(|l| l.syscalls[(nr / 64) as usize] & (1 << (nr % 64)) != 0)
            })
            .collect()
    }

    /// fexit on each wanted call's function first (only those calls pay), then tp_btf on
    /// sys_exit (cheaper than raw_tp: no tracefs, typed context), the raw tracepoint where
    /// both are refused.
    /// fexit is tried again at each attach where only a call's function was missing from the
    /// kernel's BTF (that refuses it for that set of calls only); not once the kernel refused
    /// the program itself, or sys_exit was asked for.
    fn attach_exit(&mut self, want: &[u32]) -> Result<ExitLink> {
        if !self.sys_exit_only {
            if want.len() > DELAY_FEXIT_COPIES {
                debug!(calls = want.len(), "more system calls than fexit copies: sys_exit");
            } else {
                self.exit = Some(ExitLink::FExit(BTreeMap::new()));
                match self.retarget_fexit(want) {
                    Ok(()) => {
                        self.fexit_refused = None;
                        if let Some(l) = self.exit.take() {
                            return Ok(l);
                        }
                    }
                    Err(why) => {
                        info!(reason = %why, "fexit on the system calls refused: using sys_exit");
                        self.exit = None;
                        // The kernel refusing fexit programs (not one function missing from
                        // its BTF) refuses them every time: no new attempt, each of which
                        // would cost a verification.
                        self.sys_exit_only |= !why.contains("unknown BTF type");
                        self.fexit_refused = Some(why);
                    }
                }
            }
        }
        self.attach_sys_exit()
    }

    /// tp_btf on sys_exit, else the raw tracepoint.
    fn attach_sys_exit(&mut self) -> Result<ExitLink> {
        if self.btf_refused.is_none() {
            match attach_btf(&mut self.ebpf) {
                Ok(l) => return Ok(ExitLink::TpBtf(l)),
                Err(e) => {
                    let why = chain(&e);
                    info!(reason = %why, "tp_btf on sys_exit refused: using the raw tracepoint");
                    self.btf_refused = Some(why);
                }
            }
        }
        attach_raw(&mut self.ebpf, PROG_RAW, SYS_EXIT).map(ExitLink::RawTp).map_err(|e| {
            DelayError::NoExitHook {
                tp_btf: self.btf_refused.clone().unwrap_or_default(),
                raw_tp: chain(&e),
            }
        })
    }
}

impl DelayDatapath {
    /// Moves the fexit links to exactly `want`: calls no rule names any more are detached,
    /// new ones attached. A copy stays loaded for its function after it is detached (the
    /// next fault on that call attaches it again without a new verification); a copy bound
    /// to a function no link uses is reloaded for another only when no copy is free.
    fn retarget_fexit(&mut self, want: &[u32]) -> std::result::Result<(), String> {
        let Some(ExitLink::FExit(links)) = &mut self.exit else { return Ok(()) };
        links.retain(|nr, _| want.contains(nr));
        for &nr in want {
            if links.contains_key(&nr) {
                continue;
            }
            let used: BTreeSet<usize> = links.values().map(|(c, _)| *c).collect();
            let bound = &mut self.fexit_bound;
            let copy = (0..DELAY_FEXIT_COPIES)
                .find(|&c| bound[c] == Some(nr))
                .or_else(|| (0..DELAY_FEXIT_COPIES).find(|&c| bound[c].is_none()))
                .or_else(|| (0..DELAY_FEXIT_COPIES).find(|c| !used.contains(c)))
                .ok_or_else(|| format!("more than {DELAY_FEXIT_COPIES} system calls at once"))?;
            if bound[copy].is_some_and(|b| b != nr) {
                unload_copy(&mut self.ebpf, copy);
                bound[copy] = None;
            }
            let link = attach_fexit(&mut self.ebpf, copy, nr);
            bound[copy] = fexit_loaded(&mut self.ebpf, copy).then_some(nr);
            links.insert(nr, (copy, link?));
        }
        Ok(())
    }
}

/// Loads fexit copy `copy` on the function of system call `nr` (unless it is loaded: then
/// for that function) and attaches it.
fn attach_fexit(ebpf: &mut Ebpf, copy: usize, nr: u32) -> std::result::Result<FExitLink, String> {
    // getpgid: the capability probe's call.
    let func = x86_64_name(nr)
        .or((nr == NR_PROBE).then_some("getpgid"))
        .map(|n| format!("__x64_sys_{n}"))
        .ok_or_else(|| format!("no function known for system call {nr}"))?;
    let name = fexit_copy(copy);
    let prog = fexit_prog(ebpf, copy).ok_or_else(|| format!("program {name} missing"))?;
    let refused = |e: ProgramError| format!("fexit on {func}: {}", chain(&e));
    if prog.fd().is_err() {
        let btf =
            Btf::from_sys_fs().map_err(|e| format!("reading the kernel's BTF: {}", chain(&e)))?;
        prog.load(&func, &btf).map_err(refused)?;
    }
    let id = prog.attach().map_err(refused)?;
    prog.take_link(id).map_err(refused)
}

fn fexit_prog(ebpf: &mut Ebpf, copy: usize) -> Option<&mut FExit> {
    ebpf.program_mut(&fexit_copy(copy))?.try_into().ok()
}

fn fexit_loaded(ebpf: &mut Ebpf, copy: usize) -> bool {
    fexit_prog(ebpf, copy).is_some_and(|p| p.fd().is_ok())
}

fn unload_copy(ebpf: &mut Ebpf, copy: usize) {
    if let Some(p) = fexit_prog(ebpf, copy)
        && let Err(e) = p.unload()
    {
        debug!(error = %chain(&e), copy, "unloading an fexit copy");
    }
}

fn attach_btf(ebpf: &mut Ebpf) -> Result<BtfTracePointLink> {
    let prog: &mut BtfTracePoint = ebpf
        .program_mut(PROG_BTF)
        .ok_or(DelayError::ProgramMissing(PROG_BTF))?
        .try_into()
        .map_err(prog_err(PROG_BTF))?;
    if prog.fd().is_err() {
        let btf = Btf::from_sys_fs().map_err(DelayError::Btf)?;
        prog.load(SYS_EXIT, &btf).map_err(prog_err(PROG_BTF))?;
    }
    let id = prog.attach().map_err(prog_err(PROG_BTF))?;
    prog.take_link(id).map_err(prog_err(PROG_BTF))
}

fn attach_raw(ebpf: &mut Ebpf, name: &'static str, event: &str) -> Result<RawTracePointLink> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or(DelayError::ProgramMissing(name))?
        .try_into()
        .map_err(prog_err(name))?;
    if prog.fd().is_err() {
        prog.load().map_err(prog_err(name))?;
    }
    let id = prog.attach(event).map_err(prog_err(name))?;
    prog.take_link(id).map_err(prog_err(name))
}
