//! Every map and load-time global of the kernel programs, in one module that the programs
//! import (no program module defines a map another one uses). User-space owners: the net
//! maps belong to agent-core/src/faults/net, the sys maps to agent-core/src/faults/sys, the
//! delay maps to agent-core/src/faults/delay, the time maps to agent-core/src/faults/time;
//! their names are consts in agent-common.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use faultline_common::{
    delay::{
        DelayArm, DelayConfig, DelayPathKey, DelayRule, DelaySlots, DelayState, MAX_DELAY_RULES,
        MAX_DELAY_THREADS,
    },
    levels::AncestryOffsets,
    net::{
        CgroupRules, CidrKey, DevInfo, DnsClient, DnsOrig, MAX_CIDR_ENTRIES, MAX_PORT_ENTRIES,
        MAX_RULES, NetConfig, NetCounters, NetRule, PortKey, RuleState,
    },
    sys::{MAX_SYS_RULES, SysConfig, SysRule, SysSlots, SysState},
    time::MAX_TIME_PROCS,
    vfs::{NameKey, VfsOffsets},
};

// ---- every program: debug log lines (dlog.rs)

/// Set by user space at load (`GLOBAL_DEBUG`, `faultline serve --debug-bpf`): when 0 the
/// verifier sees every debug log call as dead code, so the programs run as without them.
#[unsafe(no_mangle)]
pub static FL_DEBUG: u32 = 0;

// ---- cgroup_skb packet faults (net.rs), shared by sock_addr (sockaddr.rs) and tc (tc.rs)

/// Set by user space at load (`GLOBAL_HAS_INGRESS_EDT`); when 0 the helper calls it guards
/// are dead code, so the programs load on kernels without them.
#[unsafe(no_mangle)]
pub static FL_HAS_INGRESS_EDT: u32 = 0;

/// Set by user space at load (`GLOBAL_HAS_COARSE_NS`), as FL_HAS_INGRESS_EDT.
#[unsafe(no_mangle)]
pub static FL_HAS_COARSE_NS: u32 = 0;

#[map(name = "FL_NET_RULES")]
pub static FL_NET_RULES: Array<NetRule> = Array::with_max_entries(MAX_RULES, 0);

#[map(name = "FL_NET_CGROUPS")]
pub static FL_NET_CGROUPS: HashMap<u64, CgroupRules> = HashMap::with_max_entries(MAX_RULES, 0);

/// The cgroup_skb programs' own attach point's set (`MAP_SKB_SETS`).
#[map(name = "FL_NET_SKB_SETS")]
#[allow(deprecated)] // BPF_MAP_TYPE_CGRP_STORAGE, its successor, needs 6.2.
pub static FL_NET_SKB_SETS: aya_ebpf::maps::CgroupStorage<CgroupRules> =
    aya_ebpf::maps::CgroupStorage::new();

#[map(name = "FL_NET_CIDRS")]
pub static FL_NET_CIDRS: LpmTrie<CidrKey, u32> = LpmTrie::with_max_entries(MAX_CIDR_ENTRIES, 0);

#[map(name = "FL_NET_PORTS")]
pub static FL_NET_PORTS: LpmTrie<PortKey, u32> = LpmTrie::with_max_entries(MAX_PORT_ENTRIES, 0);

#[map(name = "FL_NET_STATE")]
pub static FL_NET_STATE: Array<RuleState> = Array::with_max_entries(MAX_RULES, 0);

#[map(name = "FL_NET_COUNTERS")]
pub static FL_NET_COUNTERS: PerCpuArray<NetCounters> = PerCpuArray::with_max_entries(MAX_RULES, 0);

#[map(name = "FL_NET_CONFIG")]
pub static FL_NET_CONFIG: Array<NetConfig> = Array::with_max_entries(1, 0);

// ---- sock_addr: connect reject and DNS steering (sockaddr.rs)

/// Set by user space at load (`GLOBAL_HAS_SET_RETVAL`). When 0 the verifier sees the
/// bpf_set_retval call as dead code, so the program still loads on kernels without it
/// (and a rejected connect() fails with EPERM there).
#[unsafe(no_mangle)]
pub static FL_HAS_SET_RETVAL: u32 = 0;

#[map(name = "FL_DNS_ORIG")]
pub static FL_DNS_ORIG: LruHashMap<u64, DnsOrig> = LruHashMap::with_max_entries(16384, 0);

#[map(name = "FL_DNS_CLIENTS")]
pub static FL_DNS_CLIENTS: LruHashMap<DnsClient, DnsOrig> = LruHashMap::with_max_entries(16384, 0);

// ---- system-call faults (sys.rs)

#[map(name = "FL_SYS_RULES")]
pub static FL_SYS_RULES: Array<SysRule> = Array::with_max_entries(MAX_SYS_RULES, 0);

#[map(name = "FL_SYS_STATE")]
pub static FL_SYS_STATE: Array<SysState> = Array::with_max_entries(MAX_SYS_RULES, 0);

#[map(name = "FL_SYS_CGROUPS")]
pub static FL_SYS_CGROUPS: HashMap<u64, SysSlots> = HashMap::with_max_entries(1024, 0);

/// The BPF_LSM_CGROUP open program's own attach point's set (`MAP_SYS_OPEN_SETS`).
#[map(name = "FL_SYS_OPEN_SETS")]
#[allow(deprecated)] // BPF_MAP_TYPE_CGRP_STORAGE, its successor, needs 6.2.
pub static FL_SYS_OPEN_SETS: aya_ebpf::maps::CgroupStorage<SysSlots> =
    aya_ebpf::maps::CgroupStorage::new();

/// By tgid; the fork tracepoint adds children of processes whose rules follow them.
#[map(name = "FL_SYS_PIDS")]
pub static FL_SYS_PIDS: HashMap<u32, SysSlots> = HashMap::with_max_entries(65536, 0);

#[map(name = "FL_SYS_CONFIG")]
pub static FL_SYS_CONFIG: Array<SysConfig> = Array::with_max_entries(1, 0);

/// struct file address -> bit set of the rule slots whose path prefix the file's path
/// matched when a targeted task opened it (read and write hooks see no path).
#[map(name = "FL_SYS_FILES")]
pub static FL_SYS_FILES: LruHashMap<u64, u64> = LruHashMap::with_max_entries(65536, 0);

/// Hash of a path prefix (FNV-1a, 64-bit) -> bit set of the rule slots with that prefix.
#[map(name = "FL_SYS_PATHS")]
pub static FL_SYS_PATHS: HashMap<u64, u64> = HashMap::with_max_entries(MAX_SYS_RULES, 0);

/// Room for the path `bpf_d_path` writes; longer paths never match a prefix.
pub const PATH_BUF: usize = 256;

/// Where the file programs build a path (per CPU: 256 bytes on the stack leave the open
/// programs too little for the walk up the file's directories).
#[map(name = "FL_SYS_PATH_BUF")]
pub static FL_SYS_PATH_BUF: PerCpuArray<[u8; PATH_BUF]> = PerCpuArray::with_max_entries(1, 0);

/// The last component of a path prefix (`vfs::NameKey`) -> bit set of the rule slots whose
/// prefix ends in it: an open whose directories bear none of these names skips `bpf_d_path`.
#[map(name = "FL_SYS_NAMES")]
pub static FL_SYS_NAMES: HashMap<NameKey, u64> = HashMap::with_max_entries(MAX_SYS_RULES, 0);

/// `.rodata`, set by user space at load (see faultline_common::sys::GLOBAL_*).
#[unsafe(no_mangle)]
pub static FL_SYS_AGENT_TGID: u32 = 0;

#[unsafe(no_mangle)]
pub static FL_SYS_HAS_FETCH: u32 = 0;

/// offsetof(struct task_struct, pid) and (.., tgid), from the kernel's BTF.
#[unsafe(no_mangle)]
pub static FL_SYS_TASK_PID: u32 = 0;

#[unsafe(no_mangle)]
pub static FL_SYS_TASK_TGID: u32 = 0;

// ---- system-call latency (delay.rs); user-space owner: agent-core/src/faults/delay

#[map(name = "FL_DELAY_RULES")]
pub static FL_DELAY_RULES: HashMap<u32, DelayRule> = HashMap::with_max_entries(MAX_DELAY_RULES, 0);

#[map(name = "FL_DELAY_STATE")]
pub static FL_DELAY_STATE: Array<DelayState> = Array::with_max_entries(MAX_DELAY_RULES, 0);

#[map(name = "FL_DELAY_CGROUPS")]
pub static FL_DELAY_CGROUPS: HashMap<u64, DelaySlots> = HashMap::with_max_entries(1024, 0);

/// By tgid; the fork tracepoint adds children of processes whose rules follow them.
#[map(name = "FL_DELAY_PIDS")]
pub static FL_DELAY_PIDS: HashMap<u32, DelaySlots> = HashMap::with_max_entries(65536, 0);

/// A path rule's directory -> the slots of the rules with it.
#[map(name = "FL_DELAY_PATHS")]
pub static FL_DELAY_PATHS: HashMap<DelayPathKey, u64> =
    HashMap::with_max_entries(MAX_DELAY_RULES, 0);

#[map(name = "FL_DELAY_CONFIG")]
pub static FL_DELAY_CONFIG: Array<DelayConfig> = Array::with_max_entries(1, 0);

/// tid -> the call the program chose; the tracer takes (deletes) it at the thread's stop.
#[map(name = "FL_DELAY_ARMED")]
pub static FL_DELAY_ARMED: HashMap<u32, DelayArm> = HashMap::with_max_entries(MAX_DELAY_THREADS, 0);

/// tid -> 1: threads under the tracer's PTRACE_SEIZE, written by the tracer.
#[map(name = "FL_DELAY_SEIZED")]
pub static FL_DELAY_SEIZED: HashMap<u32, u32> = HashMap::with_max_entries(MAX_DELAY_THREADS, 0);

/// `.rodata` (faultline_common::delay::GLOBAL_*): the agent's tgid, and
/// offsetof(struct task_struct, blocked) (0: unknown, the check is skipped).
#[unsafe(no_mangle)]
pub static FL_DELAY_AGENT_TGID: u32 = 0;

#[unsafe(no_mangle)]
pub static FL_DELAY_TASK_BLOCKED: u32 = 0;

/// `.rodata` (faultline_common::levels::GLOBAL_ANCESTRY): where tracing programs read a
/// task's ancestor cgroup ids on kernels without the helper for them (levels.rs).
#[unsafe(no_mangle)]
pub static FL_ANCESTRY: AncestryOffsets = AncestryOffsets {
    known: 0,
    task_cgroups: 0,
    css_set_dfl_cgrp: 0,
    cgroup_level: 0,
    cgroup_ancestor_ids: 0,
};

/// `.rodata` (faultline_common::vfs::GLOBAL_VFS): the offsets the walks up a file's
/// directories read (vfs.rs), set by each family that matches paths; `known` 0: never walked.
#[unsafe(no_mangle)]
pub static FL_VFS: VfsOffsets = VfsOffsets {
    known: 0,
    task_fs: 0,
    fs_root: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_max_fds: 0,
    fdt_fd: 0,
    file_f_path: 0,
    dentry_d_parent: 0,
    dentry_d_name: 0,
    dentry_d_inode: 0,
    dentry_d_sb: 0,
    inode_i_ino: 0,
    sb_s_dev: 0,
    mount_mnt: 0,
    mount_mnt_parent: 0,
    mount_mnt_mountpoint: 0,
    vfsmount_mnt_root: 0,
};

// ---- raw-syscall time skew (time.rs)

/// tgid -> the address of its injected time mapping (agent-common/src/time.rs).
#[map(name = "FL_TIME_PIDS")]
pub static FL_TIME_PIDS: HashMap<u32, u64> = HashMap::with_max_entries(MAX_TIME_PROCS, 0);

// ---- tc/tcx device programs (tc.rs)

#[map(name = "FL_TC_DEVS")]
pub static FL_TC_DEVS: HashMap<u32, DevInfo> = HashMap::with_max_entries(1024, 0);

#[map(name = "FL_HEARTBEAT")]
pub static FL_HEARTBEAT: Array<u64> = Array::with_max_entries(1, 0);
