//! Packet faults: cgroup programs for cgroup targets, tc programs on devices for interface
//! targets and for faults that change or copy packets, and the maps they share.
//! Kernel side: agent-ebpf/src/{net,sockaddr,tc}.rs.

pub mod attach;
mod cgroups;
pub mod devices;
pub mod dns;
pub mod dnsname;
pub mod fq;
pub mod ifb;
pub mod plan;
pub mod rules;

use std::{
    collections::{BTreeMap, VecDeque},
    path::Path,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::Duration,
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, PerCpuValues, lpm_trie::Key},
    programs::{CgroupSkb, ProgramType},
    sys::{BpfHelper, is_helper_supported},
};
use faultline_common::net::{
    ACTION_DELAY, ACTION_DNS, ACTION_RATE, ACTION_REJECT, CgroupRules, CidrKey, DIR_INGRESS,
    DevInfo, DnsClient, DnsOrig, GLOBAL_HAS_COARSE_NS, GLOBAL_HAS_INGRESS_EDT,
    GLOBAL_HAS_SET_RETVAL, IFACE_KEY, MAP_CGROUPS, MAP_CIDRS, MAP_CONFIG, MAP_COUNTERS,
    MAP_DNS_CLIENTS, MAP_HEARTBEAT, MAP_PORTS, MAP_RULES, MAP_SKB_SETS, MAP_STATE, MAP_TC_DEVS,
    MAX_CGROUP_LEVEL, MAX_LEVEL_LOOKUPS, MAX_RULES, MAX_RULES_PER_CGROUP, NetConfig, NetCounters,
    NetRule, PROG_EGRESS, PROG_INGRESS, PROG_TC_EGRESS, PROG_TC_INGRESS, PortKey, RuleState,
    SlotFilter,
};
use tracing::{debug, warn};

use crate::{
    engine::{
        driver::{FaultHandle, monotonic_ns},
        error::{Error, Result, chain},
        model::{Counters, PlanStep, Resolved, ResolvedCgroup, is_ancestor_path},
    },
    faults::plan as dry,
    kernel::bpflog::{self, BpfLog},
};
use devices::{Device, Devices};

pub const BACKEND: &str = "cgroup_skb";
pub const BACKEND_TC: &str = "tc";
/// Reject: the connect4/connect6 programs.
pub const BACKEND_SOCK_ADDR: &str = "cgroup_sock_addr";

pub struct NetDriver {
    state: Arc<Mutex<NetState>>,
    /// connect() can fail with any errno (bpf_set_retval), not only EPERM.
    pub has_set_retval: bool,
    /// tc programs have bpf_skb_set_tstamp (5.18+) and bpf_sk_storage_get: ingress delay
    /// and pacing need both.
    pub has_set_tstamp: bool,
    pub has_tc_sk_storage: bool,
    /// What the ifb redirect probe learned (ingress delay and pacing need it to work): run
    /// when first asked (it loads the object once more and makes a scratch namespace), not
    /// at every start.
    ifb_redirect: std::sync::OnceLock<std::result::Result<String, String>>,
}

/// Whose rules a `MAP_CGROUPS` entry holds.
enum Owner {
    Cgroup(ResolvedCgroup),
    /// Evaluated by the tc programs on that device.
    Interface {
        netns_ino: u64,
        name: String,
    },
}

/// One rule of a target, as the target's set lists it.
struct Slot {
    slot: u32,
    /// The hook groups it needs (cgroups::HOOK_*).
    hooks: u8,
    filter: SlotFilter,
    /// The port buckets its ranges touch (`CgroupRules::candidates`).
    buckets: u32,
}

struct Target {
    owner: Owner,
    slots: Vec<Slot>,
    /// What is attached to this cgroup target (which groups: attach.rs).
    links: Option<cgroups::Links>,
}

impl Target {
    fn hooks(&self) -> u8 {
        self.slots.iter().fold(0, |m, s| m | s.hooks)
    }

    /// The set the programs read for this target.
    fn set(&self) -> CgroupRules {
        CgroupRules::new(self.slots.iter().map(|s| (s.slot, s.filter, s.buckets)))
    }

    fn cgroup(&self) -> Option<&ResolvedCgroup> {
        match &self.owner {
            Owner::Cgroup(c) => Some(c),
            Owner::Interface { .. } => None,
        }
    }
}

struct NetState {
    ebpf: Ebpf,
    /// The programs' debug log lines, forwarded while they live (`--debug-bpf`).
    _log: Option<BpfLog>,
    rules: Array<MapData, NetRule>,
    cgroups: HashMap<MapData, u64, CgroupRules>,
    skb_sets: cgroups::SkbSets,
    cidrs: LpmTrie<MapData, CidrKey, u32>,
    ports: LpmTrie<MapData, PortKey, u32>,
    state_map: Array<MapData, RuleState>,
    counters: PerCpuArray<MapData, NetCounters>,
    config: Array<MapData, NetConfig>,
    tc_devs: HashMap<MapData, u32, DevInfo>,
    dns_clients: HashMap<MapData, DnsClient, DnsOrig>,
    /// Live DNS rules: while there are some, the egress program notes steered queries.
    dns_rules: usize,
    /// Live ingress delay/pacing rules of cgroup targets: the tc ingress program then looks
    /// sockets up.
    ingress_rules: usize,
    heartbeat: Array<MapData, u64>,
    devices: Devices,
    /// Released slots go to the back so a slot is reused as late as possible.
    free: VecDeque<u32>,
    targets: BTreeMap<u64, Target>,
    ncpus: usize,
}

fn map_err(what: &str) -> impl Fn(aya::maps::MapError) -> Error + '_ {
    move |e| Error::internal(what, chain(&e))
}

impl NetDriver {
    /// Loads the programs and takes ownership of their maps. `state_dir` holds the journal
    /// of netlink tc attachments; `debug` turns the programs' debug log lines on (if the
    /// kernel refuses the programs with them, they are loaded without).
    pub fn load(state_dir: &Path, debug: bool) -> std::result::Result<Self, String> {
        match Self::load_with(state_dir, debug) {
            Err(e) if debug => {
                warn!(error = %e, "network programs refused with --debug-bpf: loading them without");
                Self::load_with(state_dir, false)
            }
            loaded => loaded,
        }
    }

    fn load_with(state_dir: &Path, debug: bool) -> std::result::Result<Self, String> {
        let has_set_retval =
            is_helper_supported(ProgramType::CgroupSockAddr, BpfHelper::BPF_FUNC_set_retval)
                .unwrap_or(false);
        let tc_helper = |h| is_helper_supported(ProgramType::SchedClassifier, h).unwrap_or(false);
        let has_set_tstamp = tc_helper(BpfHelper::BPF_FUNC_skb_set_tstamp);
        let has_tc_sk_storage = tc_helper(BpfHelper::BPF_FUNC_sk_storage_get);
        // The helpers, not the ifb probe: ingress delay and pacing are refused at plan time
        // where the redirect does not work (`ifb_redirect`), so no rule reaches the code.
        let has_ingress_edt = has_set_tstamp && has_tc_sk_storage;
        let (retval, ingress_edt) = (u32::from(has_set_retval), u32::from(has_ingress_edt));
        // The coarse clock for rules' expiry, where every program type here has it.
        let coarse = u32::from(
            [ProgramType::CgroupSkb, ProgramType::CgroupSockAddr, ProgramType::SchedClassifier]
                .into_iter()
                .all(|t| {
                    is_helper_supported(t, BpfHelper::BPF_FUNC_ktime_get_coarse_ns).unwrap_or(false)
                }),
        );
        let mut loader = EbpfLoader::new();
        loader
            .override_global(GLOBAL_HAS_SET_RETVAL, &retval, true)
            .override_global(GLOBAL_HAS_INGRESS_EDT, &ingress_edt, true)
            .override_global(GLOBAL_HAS_COARSE_NS, &coarse, true);
        crate::kernel::object::shrink_others(&mut loader, faultline_common::net::NET_MAPS);
        bpflog::configure(&mut loader, debug);
        let mut ebpf = loader
            .load(crate::kernel::ebpf_object())
            .map_err(|e| format!("loading eBPF object: {}", chain(&e)))?;
        let log = if debug { bpflog::forward(&mut ebpf, "net") } else { None };
        for name in [PROG_EGRESS, PROG_INGRESS] {
            let prog: &mut CgroupSkb = ebpf
                .program_mut(name)
                .ok_or_else(|| format!("program {name} missing from the eBPF object"))?
                .try_into()
                .map_err(|e| format!("program {name}: {e}"))?;
            let started = std::time::Instant::now();
            prog.load().map_err(|e| {
                format!("cgroup_skb program {name} refused by the kernel: {}", chain(&e))
            })?;
            let verified = prog.info().ok().and_then(|i| i.verified_instruction_count());
            debug!(
                program = name,
                ?verified,
                load_ms = started.elapsed().as_millis() as u64,
                "program loaded"
            );
        }
        // The sock_addr programs (reject, DNS) and the tc programs (device faults, ingress
        // delay) load when first attached (cgroups.rs, devices.rs): ten programs fewer to
        // verify at each start, which takes seconds in an emulated guest.
        let mut take =
            |name: &str| ebpf.take_map(name).ok_or_else(|| format!("map {name} missing"));
        let rules = take(MAP_RULES)?;
        let cgroups = take(MAP_CGROUPS)?;
        let skb_sets = take(MAP_SKB_SETS)?;
        let cidrs = take(MAP_CIDRS)?;
        let ports = take(MAP_PORTS)?;
        let state_map = take(MAP_STATE)?;
        let counters = take(MAP_COUNTERS)?;
        let config = take(MAP_CONFIG)?;
        let tc_devs = take(MAP_TC_DEVS)?;
        let dns_clients = take(MAP_DNS_CLIENTS)?;
        let heartbeat = take(MAP_HEARTBEAT)?;
        let ncpus = aya::util::nr_cpus().map_err(|(f, e)| format!("reading {f}: {e}"))?;
        let state = NetState {
            rules: rules.try_into().map_err(|e| format!("{MAP_RULES}: {e}"))?,
            cgroups: cgroups.try_into().map_err(|e| format!("{MAP_CGROUPS}: {e}"))?,
            skb_sets: skb_sets.try_into().map_err(|e| format!("{MAP_SKB_SETS}: {e}"))?,
            cidrs: cidrs.try_into().map_err(|e| format!("{MAP_CIDRS}: {e}"))?,
            ports: ports.try_into().map_err(|e| format!("{MAP_PORTS}: {e}"))?,
            state_map: state_map.try_into().map_err(|e| format!("{MAP_STATE}: {e}"))?,
            counters: counters.try_into().map_err(|e| format!("{MAP_COUNTERS}: {e}"))?,
            config: config.try_into().map_err(|e| format!("{MAP_CONFIG}: {e}"))?,
            tc_devs: tc_devs.try_into().map_err(|e| format!("{MAP_TC_DEVS}: {e}"))?,
            dns_clients: dns_clients.try_into().map_err(|e| format!("{MAP_DNS_CLIENTS}: {e}"))?,
            dns_rules: 0,
            ingress_rules: 0,
            heartbeat: heartbeat.try_into().map_err(|e| format!("{MAP_HEARTBEAT}: {e}"))?,
            devices: Devices::new(state_dir),
            ebpf,
            _log: log,
            free: (0..MAX_RULES).collect(),
            targets: BTreeMap::new(),
            ncpus,
        };
        let state = Arc::new(Mutex::new(state));
        spawn_heartbeat(Arc::downgrade(&state));
        let ifb_redirect = std::sync::OnceLock::new();
        Ok(Self { state, has_set_retval, has_set_tstamp, has_tc_sk_storage, ifb_redirect })
    }

    /// Whether a packet a tc ingress program redirects to an ifb comes back (probed once).
    pub fn ifb_redirect(&self) -> &std::result::Result<String, String> {
        self.ifb_redirect.get_or_init(crate::kernel::probes::probe_ifb_redirect)
    }

    /// Installs the rule `compile` builds for a free slot on `target`, with what `extras`
    /// holds (tc programs on devices, fq, an ifb) for as long as the rule lives.
    pub fn apply(
        &self,
        target: &Resolved,
        expires_ns: u64,
        compile: impl FnOnce(u32, u64) -> rules::CompiledRule,
        extras: Extras,
    ) -> Result<Box<dyn FaultHandle>> {
        let Extras { fq, ifb, devices } = extras;
        let mut st = lock(&self.state);
        let slot = st.free.pop_front().ok_or_else(|| {
            Error::ResourceExhausted(format!(
                "at most {MAX_RULES} network experiments can be active"
            ))
        })?;
        let compiled = compile(slot, expires_ns);
        let (key, owner) = key_owner(target);
        let mut handle = NetHandle {
            state: self.state.clone(),
            key,
            slot,
            keys: Keys {
                cidrs: compiled.cidrs.iter().map(|(k, _)| *k).collect(),
                ports: compiled.ports.clone(),
            },
            devices: Vec::new(),
            calls: compiled.rule.action == ACTION_REJECT,
            _fq: fq,
            _ifb: ifb,
        };
        let installing = || -> Result<()> {
            for dev in &devices {
                let NetState { ebpf, tc_devs, devices: devs, .. } = &mut *st;
                devs.acquire(ebpf, tc_devs, dev)?;
                handle.devices.push(dev.ifindex);
            }
            if st.devices.any_netlink() {
                // Netlink-attached programs wait for a fresh heartbeat: give them one now
                // rather than at the next tick.
                let _ = st.heartbeat.set(0, monotonic_ns(), 0);
            }
            st.install(key, owner, slot, &compiled)
        };
        let result = installing();
        // Unlocked first: on an error the handle's drop (which locks) undoes what was done.
        drop(st);
        result?;
        debug!(slot, target = %target.describe(), "net rule installed");
        Ok(Box::new(handle))
    }

    /// What `apply` would install for `compiled` on `target`, with the tc programs on
    /// `devices`: checked against the live rules as `apply` checks them, changing nothing.
    pub fn plan(
        &self,
        target: &Resolved,
        compiled: &rules::CompiledRule,
        devices: &[Device],
    ) -> Result<Vec<PlanStep>> {
        let st = lock(&self.state);
        let slot = *st.free.front().ok_or_else(|| {
            Error::ResourceExhausted(format!(
                "at most {MAX_RULES} network experiments can be active"
            ))
        })?;
        let (key, owner) = key_owner(target);
        let mut steps = Vec::new();
        for dev in devices {
            let on = dry::on_device(&dev.name, dev.ifindex, dev.netns_ino);
            steps.push(if st.devices.plan(dev)? {
                PlanStep::new("none to attach: the tc programs are there (another fault's)", on)
            } else {
                PlanStep::new(
                    format!(
                        "attach tc programs {PROG_TC_EGRESS} (egress) and {PROG_TC_INGRESS} \
                         (ingress): a tcx link, or clsact + cls_bpf where the kernel has no tcx \
                         (the attach is not tried by a dry run)"
                    ),
                    on,
                )
            });
        }
        st.check_install(key, &owner)?;
        let on = match target {
            Resolved::Cgroup(c) => dry::on_cgroup(c),
            Resolved::Interface(i) => dry::on_device(&i.name, i.ifindex, i.netns_ino),
        };
        steps.push(PlanStep::new(
            format!(
                "write a {} rule to slot {slot} of {MAP_RULES} ({} entries in {MAP_CIDRS}, {} in \
                 {MAP_PORTS}) and list it for the target in {MAP_CGROUPS}",
                rules::action_name(compiled.rule.action),
                compiled.cidrs.len(),
                compiled.ports.len()
            ),
            on,
        ));
        if let Owner::Cgroup(cg) = &owner {
            steps.extend(st.plan_links(cg, cgroups::hooks_for(compiled.rule.action)));
        }
        Ok(steps)
    }
}

/// A target's key in `MAP_CGROUPS`, and who owns the rules listed there.
fn key_owner(target: &Resolved) -> (u64, Owner) {
    match target {
        Resolved::Cgroup(c) => (c.id, Owner::Cgroup(c.clone())),
        Resolved::Interface(i) => (
            IFACE_KEY | i.ifindex as u64,
            Owner::Interface { netns_ino: i.netns_ino, name: i.name.clone() },
        ),
    }
}

/// The backend a rule reports: tc programs (an interface target, or devices the rule needs
/// them on), the connect() programs (reject), else the cgroup_skb programs.
pub fn backend(interface: bool, devices: bool, calls: bool) -> &'static str {
    if interface || devices {
        BACKEND_TC
    } else if calls {
        BACKEND_SOCK_ADDR
    } else {
        BACKEND
    }
}

/// Keeps the heartbeat of netlink-attached tc programs fresh while the agent lives.
fn spawn_heartbeat(state: Weak<Mutex<NetState>>) {
    std::thread::spawn(move || {
        while let Some(st) = state.upgrade() {
            {
                let mut st = lock(&st);
                if st.devices.any_netlink() {
                    let _ = st.heartbeat.set(0, monotonic_ns(), 0);
                }
            }
            drop(st);
            std::thread::sleep(Duration::from_millis(250));
        }
    });
}

/// A cgroup target's delay or pacing rule that acts on received packets.
fn ingress_edt(r: &NetRule, owner: &Owner) -> bool {
    matches!(owner, Owner::Cgroup(_))
        && matches!(r.action, ACTION_DELAY | ACTION_RATE)
        && r.directions & DIR_INGRESS != 0
}

fn lock(m: &Mutex<NetState>) -> MutexGuard<'_, NetState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NetState {
    /// What `install` refuses, checked without writing anything: the target's depth, the
    /// depths in use, one namespace per device index, the rules per target.
    fn check_install(&self, key: u64, owner: &Owner) -> Result<()> {
        if let Owner::Cgroup(cg) = owner {
            if cg.level > MAX_CGROUP_LEVEL {
                return Err(Error::invalid(
                    "target",
                    format!(
                        "cgroup {} is {} levels deep; at most {MAX_CGROUP_LEVEL}",
                        cg.path, cg.level
                    ),
                ));
            }
            let levels = self.levels() | (1 << cg.level);
            if levels.count_ones() as usize > MAX_LEVEL_LOOKUPS {
                return Err(Error::ResourceExhausted(format!(
                    "targets may sit at no more than {MAX_LEVEL_LOOKUPS} distinct cgroup depths at once"
                )));
            }
        }
        match (self.targets.get(&key).map(|t| &t.owner), owner) {
            (
                Some(Owner::Interface { netns_ino: a, name }),
                Owner::Interface { netns_ino: b, .. },
            ) if a != b => {
                return Err(Error::FailedPrecondition(format!(
                    "device index {} is already a target in another network namespace ({name}); \
                     faultline's tc programs tell devices apart by interface index alone, so one \
                     index can be a target in one namespace at a time: end that fault first",
                    key & !IFACE_KEY
                )));
            }
            _ => {}
        }
        let existing = self.targets.get(&key).map_or(0, |t| t.slots.len());
        if existing >= MAX_RULES_PER_CGROUP {
            return Err(Error::ResourceExhausted(format!(
                "at most {MAX_RULES_PER_CGROUP} network experiments per target; this one has {existing}"
            )));
        }
        Ok(())
    }

    fn install(
        &mut self,
        key: u64,
        owner: Owner,
        slot: u32,
        c: &rules::CompiledRule,
    ) -> Result<()> {
        self.check_install(key, &owner)?;
        let zero = PerCpuValues::try_from(vec![NetCounters::default(); self.ncpus])
            .map_err(|e| Error::internal("per-CPU counters", e))?;
        self.counters.set(slot, zero, 0).map_err(map_err("resetting counters"))?;
        for (k, v) in &c.cidrs {
            self.cidrs.insert(k, v, 0).map_err(map_err("inserting CIDR"))?;
        }
        for k in &c.ports {
            self.ports.insert(k, 1, 0).map_err(map_err("inserting port range"))?;
        }
        self.state_map.set(slot, c.state, 0).map_err(map_err("writing rule state"))?;
        self.rules.set(slot, c.rule, 0).map_err(map_err("writing rule"))?;
        if c.rule.action == ACTION_DNS {
            self.dns_rules += 1;
        }
        if ingress_edt(&c.rule, &owner) {
            self.ingress_rules += 1;
        }
        let entry =
            self.targets.entry(key).or_insert(Target { owner, slots: Vec::new(), links: None });
        entry.slots.push(Slot {
            slot,
            hooks: cgroups::hooks_for(c.rule.action),
            filter: c.slot_filter(),
            buckets: c.port_buckets(),
        });
        self.publish(key)?;
        self.reconcile()
    }

    /// Removes everything `install` may have written for `slot`; tolerates partial installs.
    fn uninstall(&mut self, key: u64, slot: u32, keys: &Keys) {
        if let Some(t) = self.targets.get_mut(&key) {
            t.slots.retain(|s| s.slot != slot);
        }
        if let Ok(r) = self.rules.get(&slot, 0) {
            if r.action == ACTION_DNS {
                self.dns_rules = self.dns_rules.saturating_sub(1);
            }
            if self.targets.get(&key).is_some_and(|t| ingress_edt(&r, &t.owner)) {
                self.ingress_rules = self.ingress_rules.saturating_sub(1);
            }
        }
        if let Err(e) = self.publish(key) {
            warn!(error = %e, "unpublishing rule");
        }
        if let Err(e) = self.reconcile() {
            warn!(error = %e, "re-attaching after removal");
        }
        // Unpublished first, so no packet reaches the rule while it is deleted.
        // Cleared: all zero is an expired rule (see MAP_RULES).
        let _ = self.rules.set(slot, NetRule::default(), 0);
        let _ = self.state_map.set(slot, RuleState::default(), 0);
        for k in &keys.cidrs {
            let _ = self.cidrs.remove(k);
        }
        for k in &keys.ports {
            let _ = self.ports.remove(k);
        }
        self.free.push_back(slot);
    }

    /// The cgroup programs a rule with `hooks` on `cg` would have attached: the cgroup_skb
    /// ones to `cg` itself, the others to `cg` or to its topmost targeted ancestor, whose
    /// programs serve it too (attach.rs); only those not there yet.
    fn plan_links(&self, cg: &ResolvedCgroup, hooks: u8) -> Vec<PlanStep> {
        let live = self
            .targets
            .iter()
            .filter(|(_, t)| !t.slots.is_empty())
            .filter_map(|(id, t)| t.cgroup().map(|c| (*id, c.path.as_str(), t.hooks())));
        let wanted =
            attach::wanted_hooks(live.chain([(cg.id, cg.path.as_str(), hooks)]), cgroups::HOOK_SKB);
        let mut holders = Vec::new();
        let top = wanted.iter().find_map(|(id, want)| {
            let c = self.targets.get(id)?.cgroup()?;
            let serves = want & !cgroups::HOOK_SKB & hooks;
            (c.id != cg.id && serves != 0 && is_ancestor_path(&c.path, &cg.path))
                .then_some((c, serves))
        });
        if let Some((top, serves)) = top {
            let on =
                dry::on_cgroup(top) + ", a targeted ancestor whose programs serve the target too";
            holders.push((top.id, serves, on));
        }
        if let Some(want) = wanted.get(&cg.id) {
            holders.push((cg.id, *want, dry::on_cgroup(cg)));
        }
        let mut steps = Vec::new();
        for (id, want, on) in holders {
            let held =
                self.targets.get(&id).and_then(|t| t.links.as_ref()).map_or(0, |l| l.hooks());
            let missing = want & !held;
            if missing == 0 {
                let there = cgroups::describe(want).join(", ");
                steps.push(PlanStep::new(format!("none to attach: {there} attached already"), on));
                continue;
            }
            steps.extend(
                cgroups::describe(missing)
                    .into_iter()
                    .map(|d| PlanStep::new(format!("attach {d} (bpf_link)"), on.clone())),
            );
        }
        steps
    }

    fn levels(&self) -> u32 {
        self.targets
            .values()
            .filter(|t| !t.slots.is_empty())
            .filter_map(Target::cgroup)
            .fold(0, |m, c| m | (1 << c.level))
    }

    /// Writes the target's set (one atomic map update each: the hash the sock_addr and tc
    /// programs read, and the storage of its cgroup_skb attachments) and the level mask.
    fn publish(&mut self, key: u64) -> Result<()> {
        match self.targets.get(&key).filter(|t| !t.slots.is_empty()) {
            None => {
                let _ = self.cgroups.remove(&key);
            }
            Some(t) => {
                let set = t.set();
                self.cgroups.insert(key, set, 0).map_err(map_err("publishing rules"))?;
                if let Some(links) = &t.links {
                    links.publish_skb(&mut self.skb_sets, key, &set)?;
                }
            }
        }
        let cfg = NetConfig {
            levels: self.levels(),
            dns: u32::from(self.dns_rules > 0),
            ingress: u32::from(self.ingress_rules > 0),
            _pad: 0,
        };
        self.config.set(0, cfg, 0).map_err(map_err("writing config"))
    }

    /// Attaches what the targets need first (attach.rs), then detaches the rest, so a packet
    /// is never left without a program while a nested target is promoted. A new cgroup_skb
    /// attachment gets its target's set in its storage.
    fn reconcile(&mut self) -> Result<()> {
        let wanted = attach::wanted_hooks(
            self.targets
                .iter()
                .filter(|(_, t)| !t.slots.is_empty())
                .filter_map(|(id, t)| t.cgroup().map(|c| (*id, c.path.as_str(), t.hooks()))),
            cgroups::HOOK_SKB,
        );
        let NetState { targets, ebpf, skb_sets, .. } = self;
        for (id, want) in &wanted {
            let Some(t) = targets.get_mut(id) else { continue };
            let Owner::Cgroup(cg) = &t.owner else { continue };
            let held = t.links.as_ref().map_or(0, |l| l.hooks());
            if held & want != *want {
                let set = t.set();
                let links = t.links.get_or_insert_with(Default::default);
                // Kept even on an error: a later reconcile retries what is missing.
                let added = links.add(ebpf, cg, *want);
                if links.hooks() & !held & cgroups::HOOK_SKB != 0 {
                    links.publish_skb(skb_sets, *id, &set)?;
                }
                added?;
            }
        }
        for (id, t) in targets.iter_mut() {
            match wanted.get(id) {
                Some(want) => {
                    if let Some(l) = &mut t.links {
                        l.retain(*want);
                    }
                }
                None => {
                    if t.links.take().is_some() {
                        debug!(
                            key = id,
                            "cgroup programs detached (covered by an ancestor or empty)"
                        );
                    }
                }
            }
        }
        targets.retain(|_, t| !t.slots.is_empty());
        Ok(())
    }
}

/// The LPM entries a rule owns, removed with it.
struct Keys {
    cidrs: Vec<Key<CidrKey>>,
    ports: Vec<Key<PortKey>>,
}

struct NetHandle {
    state: Arc<Mutex<NetState>>,
    key: u64,
    slot: u32,
    keys: Keys,
    /// Devices whose tc programs this rule holds.
    devices: Vec<i32>,
    /// The rule counts connect() calls, not packets.
    calls: bool,
    /// fq on the egress devices, released after the rule is gone (fields drop after `drop`).
    _fq: Option<fq::FqLease>,
    /// The ifb of ingress delay and pacing, likewise.
    _ifb: Option<ifb::IfbLease>,
}

/// What a rule needs besides its maps.
#[derive(Default)]
pub struct Extras {
    pub fq: Option<fq::FqLease>,
    pub ifb: Option<ifb::IfbLease>,
    /// Devices that need the tc programs.
    pub devices: Vec<Device>,
}

impl FaultHandle for NetHandle {
    fn extend(&self, expires_mono_ns: u64) -> std::result::Result<(), String> {
        let mut st = lock(&self.state);
        let mut rule = st.rules.get(&self.slot, 0).map_err(|e| e.to_string())?;
        rule.expires_ns = expires_mono_ns;
        st.rules.set(self.slot, rule, 0).map_err(|e| e.to_string())
    }

    fn backend(&self) -> &'static str {
        backend(self.key & IFACE_KEY != 0, !self.devices.is_empty(), self.calls)
    }

    fn counters(&self) -> Counters {
        let st = lock(&self.state);
        match st.counters.get(&self.slot, 0) {
            Ok(per_cpu) => per_cpu.iter().fold(Counters::default(), |mut acc, c| {
                if self.calls {
                    acc.calls_seen += c.matched;
                    acc.calls_failed += c.dropped;
                } else {
                    acc.packets_matched += c.matched;
                    acc.packets_dropped += c.dropped;
                    acc.packets_delayed += c.delayed;
                    acc.packets_corrupted += c.corrupted;
                    acc.packets_duplicated += c.duplicated;
                }
                acc
            }),
            Err(e) => {
                warn!(error = %e, slot = self.slot, "reading counters");
                Counters::default()
            }
        }
    }
}

impl Drop for NetHandle {
    fn drop(&mut self) {
        let mut st = lock(&self.state);
        st.uninstall(self.key, self.slot, &self.keys);
        let NetState { tc_devs, devices, .. } = &mut *st;
        for ifindex in self.devices.drain(..) {
            devices.release(tc_devs, ifindex);
        }
    }
}

impl NetDriver {
    /// Where a steered DNS query meant to go, by the address the responder saw it from.
    pub fn dns_client(&self, client: &DnsClient) -> Option<DnsOrig> {
        lock(&self.state).dns_clients.get(client, 0).ok()
    }

    /// Attaches the cgroup programs to a scratch cgroup under `mount` and removes it again:
    /// proves attachment works here without touching any real cgroup.
    pub fn probe_attach(&self, mount: &Path) -> std::result::Result<(), String> {
        let name = format!("faultline-probe-skb-{}", std::process::id());
        let dir = mount.join(&name);
        std::fs::create_dir(&dir)
            .map_err(|e| format!("creating scratch cgroup {}: {e}", dir.display()))?;
        let cg = ResolvedCgroup {
            path: format!("/{name}"),
            id: 0,
            level: 1,
            mount: mount.to_path_buf(),
            ..Default::default()
        };
        let mut links = cgroups::Links::default();
        let result = links
            .add(&mut lock(&self.state).ebpf, &cg, cgroups::HOOK_ALL)
            .map_err(|e| e.to_string());
        drop(links);
        let _ = std::fs::remove_dir(&dir);
        result
    }
}
