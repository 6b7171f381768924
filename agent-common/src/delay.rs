//! System-call latency (`sys delay`): the rules the syscall-exit program checks when a
//! targeted, seized thread finishes a call, and what it hands the tracer that holds the
//! thread. User-space owner: agent-core/src/faults/delay (the tracer process reads
//! FL_DELAY_ARMED and writes FL_DELAY_SEIZED through file descriptors it inherits).
//!
//! The flow: the exit program (tp_btf or raw_tp on sys_exit) matches the call (syscall
//! number, target, percent / every-Nth / max-hits), writes `FL_DELAY_ARMED[tid]` and sends
//! the thread SIGURG (`bpf_send_signal_thread`); the thread, under PTRACE_SEIZE by the
//! tracer, enters a signal-delivery-stop on its way back to user space; the tracer takes
//! the armed entry, waits out `delay_ns`, and resumes the thread with the signal suppressed.

pub const MAP_DELAY_RULES: &str = "FL_DELAY_RULES";
pub const MAP_DELAY_STATE: &str = "FL_DELAY_STATE";
pub const MAP_DELAY_CGROUPS: &str = "FL_DELAY_CGROUPS";
pub const MAP_DELAY_PIDS: &str = "FL_DELAY_PIDS";
pub const MAP_DELAY_CONFIG: &str = "FL_DELAY_CONFIG";
/// tid -> DelayArm: a call the program chose, waiting for the tracer to hold its thread.
pub const MAP_DELAY_ARMED: &str = "FL_DELAY_ARMED";
/// tid -> u32 (1): threads the tracer has seized; only these are ever armed.
pub const MAP_DELAY_SEIZED: &str = "FL_DELAY_SEIZED";
/// DelayPathKey (a rule's directory) -> u64: the slots of the rules with that path. A call's
/// file is walked up once and the masks of the directories met are or'ed.
pub const MAP_DELAY_PATHS: &str = "FL_DELAY_PATHS";

/// Every delay map: other families' loaders of the shared object shrink them to one entry
/// (FL_DELAY_PIDS, _ARMED and _SEIZED are preallocated at about 5-7 MB each).
pub const DELAY_MAPS: &[&str] = &[
    MAP_DELAY_RULES,
    MAP_DELAY_STATE,
    MAP_DELAY_CGROUPS,
    MAP_DELAY_PIDS,
    MAP_DELAY_ARMED,
    MAP_DELAY_SEIZED,
    MAP_DELAY_PATHS,
];

/// `.rodata`: the agent's and the tracer's tgids, whose calls are never delayed.
pub const GLOBAL_DELAY_AGENT_TGID: &str = "FL_DELAY_AGENT_TGID";
/// `.rodata`: offsetof(struct task_struct, blocked), from the kernel's BTF. A thread that
/// blocks the marker signal would stop at some later, unrelated point: its calls are seen
/// but never armed. 0: unknown, not checked.
pub const GLOBAL_DELAY_TASK_BLOCKED: &str = "FL_DELAY_TASK_BLOCKED";

/// The marker signal: SIGURG, whose default action is to ignore it, so a marker left
/// pending after the tracer died does nothing.
pub const DELAY_SIGNAL: u32 = 23;

pub const MAX_DELAY_RULES: u32 = 64;
/// Copies of the fexit program (`fl_delay_fexit_<i>`): system-call functions hooked at once.
pub const DELAY_FEXIT_COPIES: usize = 16;
/// Rules on one cgroup or one process.
pub const MAX_DELAY_RULES_PER_TARGET: usize = 8;
/// Syscall numbers the bitmap covers (x86_64 has fewer than 512).
pub const DELAY_MAX_SYSCALL: u32 = 512;
/// Threads armed or seized at once.
pub const MAX_DELAY_THREADS: u32 = 65536;

/// The rule's decisions come from its own generator (seeded), not the kernel's.
pub const DELAY_F_SEEDED: u32 = 1;
/// Pid targets: children the process forks while the rule lives get it too.
pub const DELAY_F_FOLLOW: u32 = 2;
/// Jitter drawn from a normal distribution (sigma = jitter), else uniform in +-jitter.
pub const DELAY_F_NORMAL: u32 = 4;
/// Only calls on a file at or under the directory (path_dev, path_ino) match.
pub const DELAY_F_PATH: u32 = 8;

/// Where a call's file descriptor is, for path rules: none (the call names no file by a
/// descriptor), the first argument, the fifth (mmap), or the result (the open family).
pub const PATH_FD_NONE: u8 = 0;
pub const PATH_FD_ARG0: u8 = 1;
pub const PATH_FD_ARG4: u8 = 2;
pub const PATH_FD_RET: u8 = 3;

/// Where x86_64 system call `nr` carries the descriptor of the file it works on.
pub const fn path_fd(nr: u32) -> u8 {
    match nr {
        // read write pread64 pwrite64 readv writev fsync fdatasync sync_file_range fallocate
        // preadv pwritev preadv2 pwritev2
        0 | 1 | 17 | 18 | 19 | 20 | 74 | 75 | 277 | 285 | 295 | 296 | 327 | 328 => PATH_FD_ARG0,
        // mmap(addr, len, prot, flags, fd, off)
        9 => PATH_FD_ARG4,
        // open creat openat openat2
        2 | 85 | 257 | 437 => PATH_FD_RET,
        _ => PATH_FD_NONE,
    }
}

/// Chance, of this, that a matching call is delayed.
pub const DELAY_PROB_ONE: u64 = 1 << 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DelayRule {
    /// Bit n set: syscall number n (x86_64 numbering) is delayed.
    pub syscalls: [u64; (DELAY_MAX_SYSCALL / 64) as usize],
    /// Added latency before the call's result reaches the caller.
    pub latency_ns: u64,
    /// Uniform: +- jitter_ns around latency_ns; normal: its standard deviation. The result
    /// is clamped to [0, latency + jitter].
    pub jitter_ns: u64,
    /// Chance that a matching call is delayed, of `DELAY_PROB_ONE` (ignored when every_nth > 0).
    pub threshold: u64,
    /// Delay exactly every Nth matching call instead (0: off).
    pub every_nth: u64,
    /// After this many delays calls run at full speed again (0: no limit).
    pub max_hits: u64,
    /// Kernel monotonic clock (bpf_ktime_get_ns) after which the rule is ignored.
    pub expires_ns: u64,
    pub flags: u32,
    /// DELAY_F_PATH: the directory's (or file's) device, in the kernel's dev_t encoding
    /// (major << 20 | minor), and inode number (the program matches through FL_DELAY_PATHS;
    /// these say which entry is the rule's).
    pub path_dev: u32,
    pub path_ino: u64,
}

/// A directory (or file) of a path rule: its device in the kernel's encoding and its inode.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DelayPathKey {
    pub ino: u64,
    pub dev: u32,
    pub _pad: u32,
}

/// A rule's counters, shared by all CPUs (updated with atomic adds).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DelayState {
    /// Calls that matched the rule's syscalls and target.
    pub seen: u64,
    /// Calls the rule chose to delay (armed for the tracer).
    pub delayed: u64,
    /// Nanoseconds of delay armed, in all.
    pub delay_ns: u64,
    /// Delays claimed against max_hits (may run past it; `delayed` does not).
    pub claimed: u64,
    /// Generator state for seeded rules.
    pub rng: u64,
}

/// What the program hands the tracer for one chosen call.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DelayArm {
    /// How long to hold the thread.
    pub delay_ns: u64,
    /// The rule's slot (its experiment), for the tracer's own accounting.
    pub slot: u32,
    /// The syscall number that was chosen.
    pub syscall: u32,
}

/// The rule slots on one cgroup or one process; only the first `count` are valid.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DelaySlots {
    pub count: u32,
    /// DELAY_F_FOLLOW set on any of them: the fork tracepoint copies the entry to children.
    pub follow: u32,
    pub slots: [u32; MAX_DELAY_RULES_PER_TARGET],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DelayConfig {
    /// Bit n set: some targeted cgroup sits at level n.
    pub levels: u32,
    /// Non-zero while some rule targets processes by pid.
    pub pids: u32,
    /// Union of the live rules' syscall bitmaps: other calls return at once.
    pub syscalls: [u64; (DELAY_MAX_SYSCALL / 64) as usize],
    /// Non-zero while some rule has a path: a chosen call's file is walked (FL_DELAY_PATHS).
    pub paths: u32,
    pub _pad: u32,
}
