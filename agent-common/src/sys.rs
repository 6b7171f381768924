//! System-call faults: the rules that the LSM (or fmod_ret) programs and the cgroup socket
//! hooks check when a targeted task makes a call. User-space owner: agent-core/src/faults/sys.

/// `Array<SysRule>` by slot. An array, whose lookup the verifier inlines (a hash lookup is
/// a helper call and a hash), as `net::MAP_RULES`: user space writes a rule before its slot
/// is published in a target's set and clears it (`SysRule::NONE`: expired) after it is
/// unpublished; only a deadline extension rewrites a published rule (its expiry alone
/// changes).
pub const MAP_SYS_RULES: &str = "FL_SYS_RULES";
pub const MAP_SYS_STATE: &str = "FL_SYS_STATE";
/// `HashMap<u64 cgroup id, SysSlots>`: the rule slots of one targeted cgroup, for the
/// host-wide programs (which walk the caller's targeted ancestors).
pub const MAP_SYS_CGROUPS: &str = "FL_SYS_CGROUPS";
/// `CgroupStorage<SysSlots>`: the same set, kept with each attachment of the BPF_LSM_CGROUP
/// open program (one per targeted cgroup; key: cgroup id and BPF_LSM_CGROUP), so that
/// program reads its own attach point's rules with one helper call: no ancestor walk, no
/// hash. A task of a nested target runs its own cgroup's program, then each targeted
/// ancestor's.
pub const MAP_SYS_OPEN_SETS: &str = "FL_SYS_OPEN_SETS";
pub const MAP_SYS_PIDS: &str = "FL_SYS_PIDS";
pub const MAP_SYS_CONFIG: &str = "FL_SYS_CONFIG";
pub const MAP_SYS_FILES: &str = "FL_SYS_FILES";
pub const MAP_SYS_PATHS: &str = "FL_SYS_PATHS";
pub const MAP_SYS_NAMES: &str = "FL_SYS_NAMES";

/// The sys maps with more than one entry: other families' loaders of the shared object
/// shrink them to one (`kernel::object::shrink_others`).
pub const SYS_MAPS: &[&str] = &[
    MAP_SYS_RULES,
    MAP_SYS_STATE,
    MAP_SYS_CGROUPS,
    MAP_SYS_PIDS,
    MAP_SYS_FILES,
    MAP_SYS_PATHS,
    MAP_SYS_NAMES,
];

/// FNV-1a (64-bit), the hash of path prefixes in FL_SYS_PATHS, on both sides.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
pub const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    let mut i = 0;
    while i < bytes.len() {
        h = (h ^ bytes[i] as u64).wrapping_mul(FNV_PRIME);
        i += 1;
    }
    h
}

/// `.rodata`: the agent's own tgid, whose calls are never failed.
pub const GLOBAL_SYS_AGENT_TGID: &str = "FL_SYS_AGENT_TGID";
/// `.rodata`: the kernel has atomic fetch-and-add (5.12+), so max hits and every-Nth are
/// exact under concurrent calls; without it two CPUs may race on the counters.
pub const GLOBAL_SYS_HAS_FETCH: &str = "FL_SYS_HAS_FETCH";

pub const MAX_SYS_RULES: u32 = 64;
/// Rules on one cgroup or one process.
pub const MAX_SYS_RULES_PER_TARGET: usize = 8;
/// Longest path prefix, in bytes.
pub const SYS_PATH_MAX: usize = 128;

/// Hooks, as bit numbers in `SysRule::hooks`: where the kernel lets a program fail a call.
/// open, openat, openat2, creat: security_file_open.
pub const HOOK_OPEN: u32 = 0;
/// read, readv, pread64, preadv, sendfile's input: security_file_permission(MAY_READ).
pub const HOOK_READ: u32 = 1;
/// write, writev, pwrite64, pwritev, fallocate: security_file_permission(MAY_WRITE).
pub const HOOK_WRITE: u32 = 2;
/// unlink, unlinkat: security_inode_unlink.
pub const HOOK_UNLINK: u32 = 3;
/// mkdir, mkdirat: security_inode_mkdir.
pub const HOOK_MKDIR: u32 = 4;
/// rename, renameat, renameat2: security_inode_rename.
pub const HOOK_RENAME: u32 = 5;
/// mmap, mprotect to executable: security_mmap_file.
pub const HOOK_MMAP: u32 = 6;
/// execve, execveat: security_bprm_check.
pub const HOOK_EXEC: u32 = 7;
/// fork, vfork, clone, clone3: security_task_alloc.
pub const HOOK_FORK: u32 = 8;
/// connect (IPv4 and IPv6): cgroup connect4/6.
pub const HOOK_CONNECT: u32 = 9;
/// bind (IPv4 and IPv6): cgroup bind4/6.
pub const HOOK_BIND: u32 = 10;
/// sendmsg, sendto on UDP sockets: cgroup sendmsg4/6.
pub const HOOK_SENDMSG: u32 = 11;
/// socket (IPv4 and IPv6): cgroup sock_create.
pub const HOOK_SOCKET: u32 = 12;

/// The hooks the cgroup socket programs serve; the rest need the LSM or fmod_ret programs.
pub const CGROUP_HOOKS: u32 =
    1 << HOOK_CONNECT | 1 << HOOK_BIND | 1 << HOOK_SENDMSG | 1 << HOOK_SOCKET;
/// Hooks that know the file's path, so a path prefix can apply.
pub const PATH_HOOKS: u32 = 1 << HOOK_OPEN | 1 << HOOK_READ | 1 << HOOK_WRITE;

/// The rule's decisions come from its own generator (seeded), not the kernel's.
pub const SYS_F_SEEDED: u32 = 1;
/// Pid targets: children the process forks while the rule lives get it too.
pub const SYS_F_FOLLOW: u32 = 2;

/// Chance, of this, that a matching call fails.
pub const SYS_PROB_ONE: u64 = 1 << 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SysRule {
    /// Bit set of HOOK_*.
    pub hooks: u32,
    /// Positive errno the call fails with.
    pub errno: u32,
    /// Chance that a matching call fails, of `SYS_PROB_ONE` (ignored when every_nth > 0).
    pub threshold: u64,
    /// Fail exactly every Nth matching call instead (0: off).
    pub every_nth: u64,
    /// After this many failures calls succeed again (0: no limit).
    pub max_hits: u64,
    /// Kernel monotonic clock (bpf_ktime_get_ns) after which the rule is ignored.
    pub expires_ns: u64,
    pub flags: u32,
    /// Bytes of `path` that a file's path must start with (0: any file).
    pub path_len: u32,
    pub path: [u8; SYS_PATH_MAX],
}

impl SysRule {
    /// A cleared slot: no hook, expired.
    pub const NONE: SysRule = SysRule {
        hooks: 0,
        errno: 0,
        threshold: 0,
        every_nth: 0,
        max_hits: 0,
        expires_ns: 0,
        flags: 0,
        path_len: 0,
        path: [0; SYS_PATH_MAX],
    };
}

/// A rule's counters, shared by all CPUs (updated with atomic adds).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysState {
    /// Calls that matched the rule.
    pub seen: u64,
    /// Calls the rule failed.
    pub failed: u64,
    /// Failures claimed against max_hits (may run past it; `failed` does not).
    pub claimed: u64,
    /// Generator state for seeded rules.
    pub rng: u64,
}

/// The rule slots on one cgroup or one process; only the first `count` are valid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysSlots {
    pub count: u32,
    /// SYS_F_FOLLOW set on any of them: the fork tracepoint copies the entry to children.
    pub follow: u32,
    pub slots: [u32; MAX_SYS_RULES_PER_TARGET],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysConfig {
    /// Bit n set: some targeted cgroup sits at level n.
    pub levels: u32,
    /// Non-zero while some rule targets processes by pid.
    pub pids: u32,
    /// Union of the live rules' hooks: other hooks return at once.
    pub hooks: u32,
    /// Non-zero while a rule has a path prefix: file_open then marks matching files.
    pub paths: u32,
    /// The lengths of the path rules' last components (`vfs::NameKey::len_bit`): a walk up
    /// an opened file's directories reads a name only at these lengths.
    pub names: u64,
    /// Non-zero while the cgroup-attached open program is attached to one cgroup alone:
    /// `open_set` is then that cgroup's set, which the program reads here (an array lookup
    /// the verifier inlines) instead of through the storage helper. User space clears it
    /// before a second attachment exists and sets it after the last but one is gone.
    pub open_single: u32,
    pub _pad: u32,
    pub open_set: SysSlots,
}
