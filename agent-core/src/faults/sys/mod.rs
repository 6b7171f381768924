//! System-call faults. Each rule sits in a slot of FL_SYS_RULES and is listed for its target
//! (a cgroup id, or a process's tgid); the kernel programs in agent-ebpf/src/sys.rs check
//! them. What the live rules need is attached (attach.rs) and detached with the last rule.

pub mod attach;
pub mod fmodret;
pub(crate) mod sanitize;
pub mod syscalls;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    os::fd::RawFd,
    sync::{Arc, Mutex, MutexGuard},
};

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{Array, HashMap as BpfHashMap, MapData, MapError},
    programs::{Lsm, ProgramType},
    sys::{BpfHelper, is_helper_supported},
};
use faultline_common::{
    net::{GLOBAL_HAS_SET_RETVAL, MAX_CGROUP_LEVEL, MAX_LEVEL_LOOKUPS},
    sys::{
        CGROUP_HOOKS, GLOBAL_SYS_AGENT_TGID, GLOBAL_SYS_HAS_FETCH, HOOK_OPEN, HOOK_READ,
        HOOK_WRITE, MAP_SYS_CGROUPS, MAP_SYS_CONFIG, MAP_SYS_NAMES, MAP_SYS_OPEN_SETS,
        MAP_SYS_PATHS, MAP_SYS_PIDS, MAP_SYS_RULES, MAP_SYS_STATE, MAX_SYS_RULES,
        MAX_SYS_RULES_PER_TARGET, SYS_F_FOLLOW, SYS_F_SEEDED, SYS_PATH_MAX, SYS_PROB_ONE,
        SysConfig, SysRule, SysSlots, SysState, fnv1a,
    },
    vfs::{GLOBAL_VFS, NameKey, last_name},
};
use tracing::{info, warn};

use self::attach::{Attachments, FileBackend, OpenSets};
use crate::{
    engine::{
        driver::{FaultDriver, FaultHandle},
        error::{Error, Result, chain},
        model::{Counters, FaultSpec, Plan, PlanStep, Resolved, ResolvedCgroup, SyscallErrno},
    },
    faults::{net::attach::topmost, plan},
    kernel::{
        bpflog::{self, BpfLog},
        btf::KernelBtf,
        ebpf_object,
    },
};

pub const BACKEND_CGROUP: &str = "cgroup_sock";

/// Where a task's pid and tgid sit, for the fork tracepoint (`.rodata`).
const GLOBAL_TASK_PID: &str = "FL_SYS_TASK_PID";
const GLOBAL_TASK_TGID: &str = "FL_SYS_TASK_TGID";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Key {
    Cgroup(u64),
    Pid(u32),
}

struct Live {
    key: Key,
    hooks: u32,
    /// FNV-1a of the path prefix, if any.
    path: Option<u64>,
    /// The prefix's last component (FL_SYS_NAMES), if any.
    name: Option<NameKey>,
    follow: bool,
}

struct State {
    ebpf: Ebpf,
    /// The programs' debug log lines, forwarded while they live (`--debug-bpf`).
    _log: Option<BpfLog>,
    /// The object loaded, and map name -> fd, for relocating fmod_ret programs.
    object: &'static [u8],
    fds: HashMap<String, RawFd>,
    rules: Array<MapData, SysRule>,
    counters: Array<MapData, SysState>,
    cgroups: BpfHashMap<MapData, u64, SysSlots>,
    /// The same sets, with each attachment of the open program by cgroup.
    open_sets: OpenSets,
    pids: BpfHashMap<MapData, u32, SysSlots>,
    config: Array<MapData, SysConfig>,
    /// Hash of a path prefix -> slots with that prefix.
    paths: BpfHashMap<MapData, u64, u64>,
    /// The last component of a path prefix -> slots whose prefix ends in it.
    names: BpfHashMap<MapData, NameKey, u64>,
    free: VecDeque<u32>,
    live: BTreeMap<u32, Live>,
    /// The cgroup of each cgroup target, and of each pid target (for the socket programs).
    cgroup_of: HashMap<Key, ResolvedCgroup>,
    attach: Attachments,
    /// The file backend, once chosen (`SysDriver::files`; None: not yet, or file calls
    /// cannot be failed here).
    backend: Option<FileBackend>,
    /// With the LSM backend: the open program also loads as BPF_LSM_CGROUP (6.0+), so it is
    /// attached to each targeted cgroup while every open rule targets cgroups.
    open_by_cgroup: bool,
    /// The cgroup whose set the config carries for the open program (`SysConfig::
    /// open_single`): the one cgroup it is attached to, once the others are detached.
    open_single: Option<u64>,
}

pub struct SysDriver {
    state: Arc<Mutex<State>>,
    /// How file calls are failed here, or why they cannot be: learned when first asked
    /// (loading the file program with the kernel's types costs a second in an emulated guest,
    /// and most agents never fail a file call).
    files: std::sync::OnceLock<std::result::Result<FileBackend, String>>,
    /// Socket calls can fail with any errno (bpf_set_retval), not only EPERM.
    pub has_set_retval: bool,
    /// Every-Nth and max hits are exact under concurrent calls (atomic fetch-and-add).
    pub exact: bool,
    /// Whether pid targets can follow children, or why not.
    pub follow: std::result::Result<(), String>,
    /// Whether path prefixes work (the offsets of the walk up a file's directories known),
    /// or why not.
    pub paths: std::result::Result<(), String>,
}

/// The system-call driver, loaded when first needed (a fault, a dry run or a capability
/// probe): its programs take a third of a second to load here and seconds in an emulated
/// guest, and an agent that never fails a call never pays for them.
pub struct LazySys {
    debug: bool,
    cell: std::sync::OnceLock<std::result::Result<Arc<SysDriver>, String>>,
}

impl LazySys {
    pub fn new(debug: bool) -> Self {
        Self { debug, cell: std::sync::OnceLock::new() }
    }

    /// The driver, loaded on the first call (later calls wait for it), or why it cannot be.
    pub fn get(&self) -> &std::result::Result<Arc<SysDriver>, String> {
        self.cell.get_or_init(|| {
            let driver = SysDriver::load(self.debug).map(Arc::new);
            if let Err(e) = &driver {
                warn!(error = %e, "system-call faults unavailable");
            }
            driver
        })
    }
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn map_err(what: &str) -> impl Fn(aya::maps::MapError) -> Error + '_ {
    move |e| Error::internal(what, chain(&e))
}

impl SysDriver {
    /// Loads the programs (the file ones attach with the first rule that needs them);
    /// `debug` turns the programs' debug log lines on (if the kernel refuses the programs
    /// with them, they are loaded without).
    pub fn load(debug: bool) -> std::result::Result<Self, String> {
        let loaded = match Self::load_with(debug) {
            Err(e) if debug => {
                warn!(error = %e, "system-call programs refused with --debug-bpf: loading them without");
                return Self::load_with(false);
            }
            loaded => loaded?,
        };
        // With the debug lines, the file programs are tried now: if only the lines kept them
        // out, file calls are worth more than the lines.
        if debug
            && loaded.files().is_err()
            && let Ok(plain) = Self::load_with(false)
            && plain.files().is_ok()
        {
            warn!("file system-call programs refused with --debug-bpf: loaded without");
            return Ok(plain);
        }
        Ok(loaded)
    }

    fn load_with(debug: bool) -> std::result::Result<Self, String> {
        let has_set_retval =
            is_helper_supported(ProgramType::CgroupSockAddr, BpfHelper::BPF_FUNC_set_retval)
                .unwrap_or(false);
        let exact = crate::kernel::probes::probe_atomic_fetch().is_ok();
        // One read of the kernel's BTF for every offset (5-6 MB each time).
        let kbtf = crate::kernel::btf::KernelBtf::read();
        let offset = |s, m| kbtf.as_ref().map_err(Clone::clone).and_then(|b| b.offset(s, m));
        let vfs = kbtf.as_ref().map_err(Clone::clone).and_then(KernelBtf::vfs_offsets);
        let vfs_off = vfs.clone().unwrap_or_default();
        let task = |m| offset("task_struct", m);
        let fork = task("pid").and_then(|p| task("tgid").map(|t| (p, t)));
        let (tgid, fetch, retval) =
            (std::process::id(), u32::from(exact), u32::from(has_set_retval));
        let (task_pid, task_tgid) = fork.as_ref().map_or((0, 0), |f| *f);
        let mut loader = EbpfLoader::new();
        loader
            .override_global(GLOBAL_SYS_AGENT_TGID, &tgid, true)
            .override_global(GLOBAL_VFS, &vfs_off, true)
            .override_global(GLOBAL_SYS_HAS_FETCH, &fetch, true)
            .override_global(GLOBAL_HAS_SET_RETVAL, &retval, true)
            .override_global(GLOBAL_TASK_PID, &task_pid, true)
            .override_global(GLOBAL_TASK_TGID, &task_tgid, true);
        crate::kernel::object::shrink_others(&mut loader, faultline_common::sys::SYS_MAPS);
        bpflog::configure(&mut loader, debug);
        if std::env::var_os("FAULTLINE_DEBUG_VERIFIER").is_some() {
            loader
                .verifier_log_level(aya::VerifierLogLevel::VERBOSE | aya::VerifierLogLevel::STATS);
        }
        // Leaked once: the fmod_ret loader relocates the same bytes later.
        let object: &'static [u8] = if exact {
            ebpf_object()
        } else {
            let clean =
                sanitize::without_fetch(ebpf_object()).ok_or("the eBPF object is not ELF64")?;
            Box::leak(clean.into_boxed_slice())
        };
        let mut ebpf =
            loader.load(object).map_err(|e| format!("loading eBPF object: {}", chain(&e)))?;
        // Before the log forwarding takes its ring buffer: the fmod_ret programs refer to it.
        let fds = ebpf
            .maps()
            .filter_map(|(n, m)| fmodret::map_fd(m).map(|fd| (n.to_string(), fd)))
            .collect();
        let log = if debug { bpflog::forward(&mut ebpf, "sys") } else { None };
        let mut take = |name: &str| {
            ebpf.take_map(name).ok_or_else(|| format!("map {name} missing from the object"))
        };
        let rules = take(MAP_SYS_RULES)?;
        let counters = take(MAP_SYS_STATE)?;
        let cgroups = take(MAP_SYS_CGROUPS)?;
        let open_sets = take(MAP_SYS_OPEN_SETS)?;
        let pids = take(MAP_SYS_PIDS)?;
        let config = take(MAP_SYS_CONFIG)?;
        let paths = take(MAP_SYS_PATHS)?;
        let names = take(MAP_SYS_NAMES)?;
        let state = State {
            rules: rules.try_into().map_err(|e| format!("{MAP_SYS_RULES}: {e}"))?,
            counters: counters.try_into().map_err(|e| format!("{MAP_SYS_STATE}: {e}"))?,
            cgroups: cgroups.try_into().map_err(|e| format!("{MAP_SYS_CGROUPS}: {e}"))?,
            open_sets: open_sets.try_into().map_err(|e| format!("{MAP_SYS_OPEN_SETS}: {e}"))?,
            pids: pids.try_into().map_err(|e| format!("{MAP_SYS_PIDS}: {e}"))?,
            config: config.try_into().map_err(|e| format!("{MAP_SYS_CONFIG}: {e}"))?,
            paths: paths.try_into().map_err(|e| format!("{MAP_SYS_PATHS}: {e}"))?,
            names: names.try_into().map_err(|e| format!("{MAP_SYS_NAMES}: {e}"))?,
            ebpf,
            _log: log,
            object,
            fds,
            free: (0..MAX_SYS_RULES).collect(),
            live: BTreeMap::new(),
            cgroup_of: HashMap::new(),
            attach: Attachments::default(),
            backend: None,
            open_by_cgroup: false,
            open_single: None,
        };
        Ok(SysDriver {
            state: Arc::new(Mutex::new(state)),
            files: std::sync::OnceLock::new(),
            has_set_retval,
            exact,
            follow: fork.map(drop),
            paths: vfs.map(drop),
        })
    }

    /// How file calls are failed here, or why they cannot be (chosen on the first call).
    pub fn files(&self) -> &std::result::Result<FileBackend, String> {
        self.files.get_or_init(|| {
            let mut st = lock(&self.state);
            let State { ebpf, object, fds, .. } = &mut *st;
            let files = file_backend(ebpf, object, fds);
            match &files {
                Ok(b) => info!(backend = b.name(), "file system calls can be failed"),
                Err(e) => info!(reason = %e, "file system calls cannot be failed here"),
            }
            st.backend = files.as_ref().ok().copied();
            if st.backend == Some(FileBackend::Lsm) {
                match attach::cgroup_open(&mut st.ebpf) {
                    Ok(_) => st.open_by_cgroup = true,
                    Err(e) => info!(reason = %e, "opens are judged by a host-wide program"),
                }
            }
            files
        })
    }

    /// What `apply_errno` refuses before it writes a rule: calls this kernel cannot fail
    /// (or not with this errno), a path or follow it cannot do, a cgroup too deep. Returns
    /// the hooks, the file backend, the key the rule is listed under.
    fn check(
        &self,
        target: &ResolvedCgroup,
        spec: &SyscallErrno,
    ) -> Result<(u32, Option<FileBackend>, Key)> {
        let field = "fault.syscall_errno";
        let hooks = syscalls::hooks(&spec.syscalls).map_err(|(name, why)| {
            Error::FailedPrecondition(format!("unsupported: {field}.syscalls: {name}: {why}"))
        })?;
        let file_hooks = hooks & !CGROUP_HOOKS;
        let file_backend = if file_hooks == 0 {
            None
        } else {
            Some(self.files().clone().map_err(|why| {
                Error::FailedPrecondition(format!(
                    "unsupported: failing {} needs the bpf LSM (active) or fmod_ret on the kernel's \
                     security functions: {why}",
                    spec.syscalls.join(", ")
                ))
            })?)
        };
        if hooks & CGROUP_HOOKS != 0 && spec.errno != libc::EPERM && !self.has_set_retval {
            return Err(Error::FailedPrecondition(format!(
                "unsupported: {field}.errno: failing socket calls with {} needs bpf_set_retval in \
                 cgroup programs (kernel 5.18+); this kernel can only fail them with EPERM",
                crate::errno::name(spec.errno)
            )));
        }
        if let (Some(_), Err(why)) = (&spec.path_prefix, &self.paths) {
            return Err(Error::FailedPrecondition(format!(
                "unsupported: {field}.path_prefix: {why}"
            )));
        }
        if let (true, Err(why)) = (spec.follow_children, &self.follow) {
            return Err(Error::FailedPrecondition(format!(
                "unsupported: {field}.follow_children: {why}"
            )));
        }
        if target.level > MAX_CGROUP_LEVEL {
            return Err(Error::invalid(
                "target",
                format!(
                    "cgroup {} is {} levels deep; at most {MAX_CGROUP_LEVEL}",
                    target.path, target.level
                ),
            ));
        }
        let key = match target.pid {
            Some(pid) => Key::Pid(pid),
            None => Key::Cgroup(target.id),
        };
        Ok((hooks, file_backend, key))
    }

    fn apply_errno(
        &self,
        target: &ResolvedCgroup,
        spec: &SyscallErrno,
        expires_ns: u64,
    ) -> Result<Box<dyn FaultHandle>> {
        let (hooks, file_backend, key) = self.check(target, spec)?;
        let mut rule = SysRule {
            hooks,
            errno: spec.errno as u32,
            threshold: ((spec.percent / 100.0) * SYS_PROB_ONE as f64).round() as u64,
            every_nth: spec.every_nth.unwrap_or(0),
            max_hits: spec.max_hits.unwrap_or(0),
            expires_ns,
            flags: 0,
            path_len: 0,
            path: [0; SYS_PATH_MAX],
        };
        if spec.follow_children {
            rule.flags |= SYS_F_FOLLOW;
        }
        if spec.seed.is_some() {
            rule.flags |= SYS_F_SEEDED;
        }
        if let Some(p) = &spec.path_prefix {
            rule.path[..p.len()].copy_from_slice(p.as_bytes());
            rule.path_len = p.len() as u32;
        }
        let mut st = lock(&self.state);
        st.free_slot(key)?;
        let slot = st.free.pop_front().ok_or_else(full)?;
        let live = Live {
            key,
            hooks,
            path: spec.path_prefix.as_deref().map(|p| fnv1a(p.as_bytes())),
            name: spec.path_prefix.as_deref().map(|p| NameKey::of(last_name(p.as_bytes()))),
            follow: spec.follow_children,
        };
        st.cgroup_of.insert(key, target.clone());
        let handle = SysHandle {
            state: self.state.clone(),
            slot,
            backend: backend_name(file_backend, hooks & CGROUP_HOOKS != 0),
        };
        let seed = spec.seed.map(splitmix).unwrap_or(0);
        let installing = || -> Result<()> {
            st.counters
                .set(slot, SysState { rng: seed | 1, ..Default::default() }, 0)
                .map_err(map_err("resetting counters"))?;
            st.rules.set(slot, rule, 0).map_err(map_err("writing rule"))?;
            // Listed first, so that the handle's drop undoes a half-written path.
            let (path, name) = (live.path, live.name);
            st.live.insert(slot, live);
            if let Some(h) = path {
                set_bit(&mut st.paths, h, slot, true).map_err(map_err("inserting path"))?;
            }
            if let Some(n) = name {
                set_bit(&mut st.names, n, slot, true).map_err(map_err("inserting path name"))?;
            }
            st.publish(key)?;
            if st.levels().count_ones() as usize > MAX_LEVEL_LOOKUPS {
                return Err(Error::ResourceExhausted(format!(
                    "targets may sit at no more than {MAX_LEVEL_LOOKUPS} distinct cgroup depths at once"
                )));
            }
            st.reconcile()
        };
        let result = installing();
        // Unlocked first: on an error the handle's drop (which locks) undoes what was done.
        drop(st);
        result?;
        Ok(Box::new(handle))
    }
}

impl SysDriver {
    /// What `apply_errno` would write and attach, checked as it checks (a dry run): the
    /// rule's slot, then each program it needs that is not attached yet.
    fn plan_errno(&self, target: &ResolvedCgroup, spec: &SyscallErrno) -> Result<Plan> {
        let (hooks, file_backend, key) = self.check(target, spec)?;
        let st = lock(&self.state);
        let slot = st.free_slot(key)?;
        if let Key::Cgroup(_) = key
            && (st.levels() | 1 << target.level).count_ones() as usize > MAX_LEVEL_LOOKUPS
        {
            return Err(Error::ResourceExhausted(format!(
                "targets may sit at no more than {MAX_LEVEL_LOOKUPS} distinct cgroup depths at once"
            )));
        }
        let on_target = match key {
            Key::Pid(pid) => format!("pid {pid} of {}", plan::on_cgroup(target)),
            Key::Cgroup(_) => plan::on_cgroup(target),
        };
        let listed = match key {
            Key::Pid(_) => MAP_SYS_PIDS,
            Key::Cgroup(_) => MAP_SYS_CGROUPS,
        };
        let share = match spec.every_nth {
            Some(n) => format!("every {n}th call"),
            None => format!("{}% of calls", spec.percent),
        };
        let mut steps = vec![PlanStep::new(
            format!(
                "write a rule failing {} with {} ({share}{}{}) to slot {slot} of \
                 {MAP_SYS_RULES} and list it for the target in {listed}",
                spec.syscalls.join(", "),
                crate::errno::name(spec.errno),
                spec.max_hits.map(|m| format!(", at most {m}")).unwrap_or_default(),
                spec.path_prefix.as_deref().map(|p| format!(", under {p}")).unwrap_or_default(),
            ),
            on_target.clone(),
        )];
        let rw = 1 << HOOK_READ | 1 << HOOK_WRITE;
        let by_cgroup_open = st.open_by_cgroup
            && matches!(key, Key::Cgroup(_))
            && !st.live.values().any(|l| matches!(l.key, Key::Pid(_)));
        if let Some(b) = file_backend {
            let paths = spec.path_prefix.is_some() && hooks & rw != 0;
            for p in attach::file_progs(hooks & !CGROUP_HOOKS, paths) {
                if p.key == attach::OPEN.key && by_cgroup_open {
                    let on = plan::on_cgroup(target);
                    steps.push(if st.attach.holds_open_cgroup(target.id) {
                        PlanStep::new(
                            "none to attach: the lsm_cgroup/file_open program is there",
                            on,
                        )
                    } else {
                        PlanStep::new(
                            format!("attach lsm_cgroup/file_open program {}", attach::CGROUP_OPEN),
                            on,
                        )
                    });
                    continue;
                }
                let what = p.describe(b);
                steps.push(if st.attach.holds_file(p.key) {
                    PlanStep::new(format!("none to attach: {what} is there"), "the host")
                } else {
                    PlanStep::new(
                        format!(
                            "attach {what} (it runs for every task; the rule picks the target's)"
                        ),
                        "the host",
                    )
                });
            }
        }
        if hooks & CGROUP_HOOKS != 0 {
            let mut by_id: HashMap<u64, &ResolvedCgroup> =
                st.cgroup_of.values().map(|c| (c.id, c)).collect();
            by_id.insert(target.id, target);
            let sockets = st
                .live
                .values()
                .filter(|l| l.hooks & CGROUP_HOOKS != 0)
                .filter_map(|l| st.cgroup_of.get(&l.key))
                .map(|c| (c.id, c.path.as_str()))
                .chain([(target.id, target.path.as_str())]);
            let top =
                topmost(sockets).into_iter().filter_map(|id| by_id.get(&id).copied()).find(|c| {
                    c.id == target.id
                        || crate::engine::model::is_ancestor_path(&c.path, &target.path)
                });
            if let Some(top) = top {
                let what = attach::describe_cgroup_programs();
                let on = plan::on_cgroup(top);
                steps.push(if st.attach.holds_cgroup(top.id) {
                    PlanStep::new(format!("none to attach: {what} are there"), on)
                } else {
                    PlanStep::new(format!("attach {what} (bpf_link)"), on)
                });
            }
        }
        if matches!(key, Key::Pid(_)) && !st.attach.holds_tracepoints() {
            steps.push(PlanStep::new(
                "attach raw tracepoints sched_process_fork and sched_process_exit (fl_sys_fork, \
                 fl_sys_exit) while a rule targets a process",
                "the host",
            ));
        }
        let backend = backend_name(file_backend, hooks & CGROUP_HOOKS != 0);
        Ok(Plan { resolved: None, backend: backend.into(), steps })
    }
}

pub(crate) fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn backend_name(files: Option<FileBackend>, sockets: bool) -> &'static str {
    match (files, sockets) {
        (Some(FileBackend::Lsm), true) => "lsm+cgroup_sock",
        (Some(FileBackend::FmodRet), true) => "fmod_ret+cgroup_sock",
        (Some(b), false) => b.name(),
        (None, _) => BACKEND_CGROUP,
    }
}

/// LSM where the bpf LSM is active and takes our program, else fmod_ret where the kernel
/// takes it, else why neither.
fn file_backend(
    ebpf: &mut Ebpf,
    object: &[u8],
    fds: &HashMap<String, RawFd>,
) -> std::result::Result<FileBackend, String> {
    let lsm = match crate::kernel::lsm::bpf_lsm_inactive() {
        None => {
            aya::Btf::from_sys_fs().map_err(|e| format!("no kernel BTF: {e}")).and_then(|btf| {
                let prog: &mut Lsm = ebpf
                    .program_mut(attach::OPEN.lsm_name())
                    .ok_or("program missing")?
                    .try_into()
                    .map_err(|e: aya::programs::ProgramError| chain(&e))?;
                prog.load("file_open", &btf).map_err(|e| chain(&e))
            })
        }
        Some(why) => Err(why),
    };
    let lsm_err = match lsm {
        Ok(()) => return Ok(FileBackend::Lsm),
        Err(e) => e,
    };
    match fmodret::attach(object, fds, "fl_sys_file_open", "security_file_open") {
        Ok(_probe) => {
            info!(lsm = %lsm_err, "the bpf LSM cannot serve file calls; fmod_ret can");
            Ok(FileBackend::FmodRet)
        }
        Err(e) => Err(format!("bpf LSM: {lsm_err}; fmod_ret: {e}")),
    }
}

fn full() -> Error {
    Error::ResourceExhausted(format!("at most {MAX_SYS_RULES} system-call faults at once"))
}

impl State {
    /// The slot a new rule for `key` would take, if the target and the map have room.
    fn free_slot(&self, key: Key) -> Result<u32> {
        if self.live.values().filter(|l| l.key == key).count() >= MAX_SYS_RULES_PER_TARGET {
            return Err(Error::ResourceExhausted(format!(
                "at most {MAX_SYS_RULES_PER_TARGET} system-call faults per target"
            )));
        }
        self.free.front().copied().ok_or_else(full)
    }

    fn levels(&self) -> u32 {
        self.live
            .values()
            .filter_map(|l| match l.key {
                Key::Cgroup(_) => self.cgroup_of.get(&l.key).map(|c| 1 << c.level),
                Key::Pid(_) => None,
            })
            .fold(0, |a, b| a | b)
    }

    /// The slots of `key`'s live rules.
    fn set_of(&self, key: Key) -> SysSlots {
        let slots: Vec<u32> =
            self.live.iter().filter(|(_, l)| l.key == key).map(|(s, _)| *s).collect();
        let follow = self.live.values().any(|l| l.key == key && l.follow);
        let mut set =
            SysSlots { count: slots.len() as u32, follow: u32::from(follow), ..Default::default() };
        set.slots[..slots.len()].copy_from_slice(&slots);
        set
    }

    /// Writes `key`'s slot list and the config.
    fn publish(&mut self, key: Key) -> Result<()> {
        let set = self.set_of(key);
        let slots = &set.slots[..set.count as usize];
        match key {
            Key::Cgroup(id) if slots.is_empty() => {
                let _ = self.cgroups.remove(&id);
            }
            Key::Cgroup(id) => {
                self.cgroups.insert(id, set, 0).map_err(map_err("publishing rules"))?;
                self.attach.publish_open(&mut self.open_sets, id, &set)?;
            }
            Key::Pid(pid) if slots.is_empty() => {
                let _ = self.pids.remove(&pid);
            }
            Key::Pid(pid) => self.pids.insert(pid, set, 0).map_err(map_err("publishing rules"))?,
        }
        if slots.is_empty() {
            self.cgroup_of.remove(&key);
        }
        self.write_config()
    }

    /// Writes the config from the live rules.
    fn write_config(&mut self) -> Result<()> {
        let (open_single, open_set) = match self.open_single {
            Some(id) => (1, self.set_of(Key::Cgroup(id))),
            None => (0, SysSlots::default()),
        };
        let cfg = SysConfig {
            levels: self.levels(),
            pids: u32::from(self.live.values().any(|l| matches!(l.key, Key::Pid(_)))),
            hooks: self.live.values().fold(0, |a, l| a | l.hooks),
            paths: u32::from(self.live.values().any(|l| l.path.is_some())),
            names: self
                .live
                .values()
                .filter_map(|l| l.name)
                .fold(0, |a, n| a | NameKey::len_bit(n.len)),
            open_single,
            _pad: 0,
            open_set,
        };
        self.config.set(0, cfg, 0).map_err(map_err("writing config"))
    }

    /// Attaches what the live rules need and detaches the rest.
    fn reconcile(&mut self) -> Result<()> {
        let file_hooks = self.live.values().fold(0, |a, l| a | (l.hooks & !CGROUP_HOOKS));
        let rw = 1 << HOOK_READ | 1 << HOOK_WRITE;
        let paths = self.live.values().any(|l| l.path.is_some() && l.hooks & rw != 0);
        let mut wanted = attach::file_progs(file_hooks, paths);
        let by_id: HashMap<u64, ResolvedCgroup> =
            self.cgroup_of.values().map(|c| (c.id, c.clone())).collect();
        // The open program by cgroup while no rule that needs it targets a process (a pid
        // target's cgroup holds other tasks too).
        let opens =
            |l: &&Live| l.hooks & (1 << HOOK_OPEN) != 0 || (l.path.is_some() && l.hooks & rw != 0);
        let by_cgroup = self.open_by_cgroup
            && wanted.iter().any(|p| p.key == attach::OPEN.key)
            && !self.live.values().filter(opens).any(|l| matches!(l.key, Key::Pid(_)));
        // Each targeted cgroup its own attachment, which reads that cgroup's rules alone.
        let open_cgroups: BTreeSet<u64> = if by_cgroup {
            wanted.retain(|p| p.key != attach::OPEN.key);
            self.live
                .values()
                .filter(opens)
                .filter_map(|l| self.cgroup_of.get(&l.key))
                .map(|c| c.id)
                .collect()
        } else {
            BTreeSet::new()
        };
        // The config names the one attachment only while there is one: cleared before a
        // second is attached, set once the others are gone.
        let single = match (open_cgroups.len(), open_cgroups.first()) {
            (1, Some(id)) => Some(*id),
            _ => None,
        };
        if self.open_single.is_some() && self.open_single != single {
            self.open_single = None;
            self.write_config()?;
        }
        // What takes over is attached (and given its rules) before what it replaces goes.
        if by_cgroup {
            self.attach.reconcile_open_cgroups(&mut self.ebpf, &open_cgroups, &by_id)?;
            for id in &open_cgroups {
                if let Ok(set) = self.cgroups.get(id, 0) {
                    self.attach.publish_open(&mut self.open_sets, *id, &set)?;
                }
            }
        }
        if let Some(b) = self.backend {
            let State { ebpf, attach, fds, object, .. } = self;
            attach.reconcile_files(ebpf, b, &wanted, object, fds)?;
        }
        if !by_cgroup {
            self.attach.reconcile_open_cgroups(&mut self.ebpf, &open_cgroups, &by_id)?;
        }
        let sockets: Vec<(u64, &str)> = self
            .live
            .values()
            .filter(|l| l.hooks & CGROUP_HOOKS != 0)
            .filter_map(|l| self.cgroup_of.get(&l.key))
            .map(|c| (c.id, c.path.as_str()))
            .collect();
        let wanted = topmost(sockets);
        self.attach.reconcile_cgroups(&mut self.ebpf, &wanted, &by_id)?;
        let pids = self.live.values().any(|l| matches!(l.key, Key::Pid(_)));
        self.attach.reconcile_tracepoints(&mut self.ebpf, pids)?;
        if single.is_some() && self.open_single != single {
            self.open_single = single;
            self.write_config()?;
        }
        Ok(())
    }
}

struct SysHandle {
    state: Arc<Mutex<State>>,
    slot: u32,
    backend: &'static str,
}

impl FaultHandle for SysHandle {
    fn extend(&self, expires_mono_ns: u64) -> std::result::Result<(), String> {
        let mut st = lock(&self.state);
        let mut rule = st.rules.get(&self.slot, 0).map_err(|e| e.to_string())?;
        rule.expires_ns = expires_mono_ns;
        st.rules.set(self.slot, rule, 0).map_err(|e| e.to_string())
    }

    fn backend(&self) -> &'static str {
        self.backend
    }

    fn counters(&self) -> Counters {
        let st = lock(&self.state);
        match st.counters.get(&self.slot, 0) {
            Ok(c) => Counters { calls_seen: c.seen, calls_failed: c.failed, ..Default::default() },
            Err(e) => {
                warn!(error = %e, slot = self.slot, "reading counters");
                Counters::default()
            }
        }
    }
}

/// Sets or clears `slot`'s bit in the slot set at `key` (the entry goes with its last bit).
fn set_bit<K: Pod>(
    map: &mut BpfHashMap<MapData, K, u64>,
    key: K,
    slot: u32,
    on: bool,
) -> std::result::Result<(), MapError> {
    let old = map.get(&key, 0).unwrap_or(0);
    let bits = if on { old | 1 << slot } else { old & !(1 << slot) };
    if bits == 0 { map.remove(&key) } else { map.insert(key, bits, 0) }
}

impl Drop for SysHandle {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        // All zero: expired, should a call already past the set still read it.
        let _ = st.rules.set(self.slot, SysRule::NONE, 0);
        if let Some(l) = st.live.remove(&self.slot) {
            if let Some(h) = l.path {
                let _ = set_bit(&mut st.paths, h, self.slot, false);
            }
            if let Some(n) = l.name {
                let _ = set_bit(&mut st.names, n, self.slot, false);
            }
            if let Err(e) = st.publish(l.key) {
                warn!(error = %e, "unpublishing a system-call rule");
            }
        }
        st.free.push_back(self.slot);
        if let Err(e) = st.reconcile() {
            warn!(error = %e, "detaching system-call programs");
        }
    }
}

impl FaultDriver for SysDriver {
    fn apply(
        &self,
        target: &Resolved,
        fault: &FaultSpec,
        expires: u64,
    ) -> Result<Box<dyn FaultHandle>> {
        let FaultSpec::SyscallErrno(spec) = fault else {
            return Err(Error::Internal(format!("the syscall family was handed {}", fault.kind())));
        };
        let cg =
            target.cgroup("syscall_errno acts on a task's calls: use a cgroup or pid target")?;
        self.apply_errno(cg, spec, expires)
    }

    fn plan(&self, target: &Resolved, fault: &FaultSpec) -> Result<Plan> {
        let FaultSpec::SyscallErrno(spec) = fault else {
            return Err(Error::Internal(format!("the syscall family was handed {}", fault.kind())));
        };
        let cg =
            target.cgroup("syscall_errno acts on a task's calls: use a cgroup or pid target")?;
        self.plan_errno(cg, spec)
    }
}
