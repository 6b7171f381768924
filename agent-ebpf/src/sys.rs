//! System-call faults: a targeted task's call fails with the rule's errno. File calls through
//! BPF LSM hooks (the same programs load as fmod_ret on the security_* functions where the
//! bpf LSM is built but not active); socket calls through cgroup hooks. A task is targeted
//! by its cgroup (FL_SYS_CGROUPS, by ancestor level) or its process (FL_SYS_PIDS, by tgid);
//! the open program attached by cgroup reads its cgroup's rules from FL_SYS_OPEN_SETS.
//! User-space owner: agent-core/src/faults/sys.

use aya_ebpf::{
    helpers::{
        bpf_d_path, bpf_get_current_ancestor_cgroup_id, bpf_get_current_pid_tgid, bpf_get_retval,
        bpf_ktime_get_ns, bpf_set_retval,
    },
    macros::{cgroup_sock, cgroup_sock_addr, fentry, lsm, lsm_cgroup, raw_tracepoint},
    programs::{FEntryContext, LsmContext, RawTracePointContext, SockAddrContext, SockContext},
};
use faultline_common::sys::{
    HOOK_BIND, HOOK_CONNECT, HOOK_EXEC, HOOK_FORK, HOOK_MKDIR, HOOK_MMAP, HOOK_OPEN, HOOK_READ,
    HOOK_RENAME, HOOK_SENDMSG, HOOK_SOCKET, HOOK_UNLINK, HOOK_WRITE, MAX_SYS_RULES_PER_TARGET,
    SYS_F_SEEDED, SysConfig, SysRule, SysSlots, SysState,
};

use crate::{
    atomics,
    calls::{self, next, rodata},
    dlog::dlog,
    levels,
    maps::{
        FL_HAS_SET_RETVAL, FL_SYS_AGENT_TGID, FL_SYS_CGROUPS, FL_SYS_CONFIG, FL_SYS_FILES,
        FL_SYS_NAMES, FL_SYS_OPEN_SETS, FL_SYS_PATH_BUF, FL_SYS_PATHS, FL_SYS_PIDS, FL_SYS_RULES,
        FL_SYS_STATE, PATH_BUF,
    },
    vfs,
};

use faultline_common::{
    sys::{FNV_OFFSET, FNV_PRIME},
    vfs::{NameKey, VfsOffsets},
};

const MAY_WRITE: u32 = 2;
const MAY_READ: u32 = 4;

/// A uniform 32-bit draw: the rule's own generator when seeded, else the kernel's.
#[inline(always)]
fn draw(rule: &SysRule, st: *mut SysState) -> u64 {
    // SAFETY: st points into a map value.
    calls::draw(rule.flags & SYS_F_SEEDED != 0, unsafe { core::ptr::addr_of_mut!((*st).rng) })
}

/// One rule against one matching call: its errno if the call fails, else 0. The rule's
/// expiry is checked here, once every filter has matched: a call that no rule applies to
/// never reads the clock.
#[inline(always)]
fn judge(slot: u32, rule: &SysRule) -> u32 {
    // SAFETY: helper without arguments.
    if rule.expires_ns <= unsafe { bpf_ktime_get_ns() } {
        return 0;
    }
    let Some(st) = FL_SYS_STATE.get_ptr_mut(slot) else {
        return 0;
    };
    // SAFETY: st points into a map value; counters are updated atomically.
    let seen = unsafe { core::ptr::addr_of_mut!((*st).seen) };
    let fail = if rule.every_nth > 0 {
        next(seen).is_multiple_of(rule.every_nth)
    } else {
        atomics::add(seen, 1);
        draw(rule, st) < rule.threshold
    };
    if !fail {
        return 0;
    }
    if rule.max_hits > 0 {
        // SAFETY: as above.
        let claimed = unsafe { core::ptr::addr_of_mut!((*st).claimed) };
        if next(claimed) > rule.max_hits {
            return 0;
        }
    }
    // SAFETY: as above.
    atomics::add(unsafe { core::ptr::addr_of_mut!((*st).failed) }, 1);
    rule.errno
}

/// The slots of the rules whose path prefix `buf[..len]` falls under: the path is hashed
/// once, and at every component boundary the hash of the prefix so far is looked up (a rule
/// for "/data" matches "/data" and "/data/x", never "/data2"). One pass, so the verifier
/// sees a single bounded loop however many rules there are.
#[inline(always)]
fn path_bits(buf: &[u8; PATH_BUF], len: usize) -> u64 {
    let mut h = FNV_OFFSET;
    let mut bits = 0u64;
    // Indexed with a constant bound: the verifier proves each access in range.
    #[allow(clippy::needless_range_loop)]
    for i in 0..PATH_BUF {
        let c = if i < len { buf[i] } else { 0 };
        if (c == b'/' || c == 0) && i > 0 {
            // SAFETY: only read.
            if let Some(b) = unsafe { FL_SYS_PATHS.get(h) } {
                bits |= *b;
            }
        }
        if c == 0 {
            break;
        }
        h = (h ^ u64::from(c)).wrapping_mul(FNV_PRIME);
    }
    bits
}

/// Calls `f(slot, rule)` for each rule of `set` until `f` returns non-zero; returns that
/// value.
#[inline(always)]
fn visit(set: &SysSlots, f: &mut impl FnMut(u32, &SysRule) -> u32) -> u32 {
    for i in 0..MAX_SYS_RULES_PER_TARGET {
        if i as u32 >= set.count {
            break;
        }
        let slot = set.slots[i];
        // An array: user space writes a rule before it lists its slot (MAP_SYS_RULES).
        let Some(rule) = FL_SYS_RULES.get(slot) else { continue };
        let r = f(slot, rule);
        if r != 0 {
            return r;
        }
    }
    0
}

/// Whether the current task is the agent's (never failed).
#[inline(always)]
fn is_agent() -> bool {
    (bpf_get_current_pid_tgid() >> 32) as u32 == rodata(&FL_SYS_AGENT_TGID)
}

/// Calls `f(slot, rule)` for each rule listed for the current task (its process, then its
/// cgroup and ancestors) until `f` returns non-zero; returns that value. Expired rules too:
/// `judge` skips them.
#[inline(always)]
fn each_rule(cfg: &SysConfig, mut f: impl FnMut(u32, &SysRule) -> u32) -> u32 {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if tgid == rodata(&FL_SYS_AGENT_TGID) {
        return 0;
    }
    if cfg.pids != 0 {
        // SAFETY: only read.
        if let Some(set) = unsafe { FL_SYS_PIDS.get(tgid) } {
            let r = visit(set, &mut f);
            if r != 0 {
                return r;
            }
        }
    }
    levels::find(
        cfg.levels,
        // SAFETY: helper with a scalar argument, in task context.
        |level| unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) },
        |id| {
            // SAFETY: only read.
            let set = unsafe { FL_SYS_CGROUPS.get(id) }?;
            let r = visit(set, &mut f);
            (r != 0).then_some(r)
        },
    )
    .unwrap_or(0)
}

/// The errno (positive) the current call at `hook` fails with, or 0. Rules with a path
/// prefix apply only where the file is known (file_open, file_permission: their own walk).
#[inline(always)]
fn decide(hook: u32) -> u32 {
    let Some(cfg) = FL_SYS_CONFIG.get(0) else { return 0 };
    if cfg.hooks & (1 << hook) == 0 {
        return 0;
    }
    each_rule(cfg, |slot, rule| {
        if rule.hooks & (1 << hook) == 0 || rule.path_len > 0 {
            return 0;
        }
        judge_logged(slot, rule, hook)
    })
}

/// `judge`, with the debug log line of a failed call.
#[inline(always)]
fn judge_logged(slot: u32, rule: &SysRule, hook: u32) -> u32 {
    let errno = judge(slot, rule);
    if errno != 0 {
        dlog!("sys: rule {} matched (hook {}): the call fails with errno {}", slot, hook, errno);
    }
    errno
}

/// -errno for an LSM / fmod_ret program, keeping a denial an earlier program returned.
#[inline(always)]
fn verdict(prev: i32, errno: u32) -> i32 {
    if prev != 0 {
        return neg_errno(prev.wrapping_neg() as u32);
    }
    if errno == 0 { 0 } else { neg_errno(errno) }
}

/// -errno, in a form the verifier can bound: 6.12 wants an LSM program's result provably in
/// [-4095, 0], and LLVM's `neg` (or a range check on another register) loses the bound.
#[inline(always)]
fn neg_errno(errno: u32) -> i32 {
    let m = u64::from(errno & 0xfff);
    let r: u64;
    // SAFETY: two ALU instructions on registers.
    unsafe { core::arch::asm!("{r} = 0", "{r} -= {m}", r = out(reg) r, m = in(reg) m) };
    r as i32
}

#[inline(always)]
fn lsm_simple<const RET: usize>(ctx: &LsmContext, hook: u32) -> i32 {
    let prev: i32 = ctx.arg(RET);
    verdict(prev, decide(hook))
}

/// The hooks whose rules may carry a path prefix: open, and read / write (which use the
/// marks file_open leaves).
const FILE_HOOKS: u32 = 1 << HOOK_OPEN | 1 << HOOK_READ | 1 << HOOK_WRITE;

// file_open(struct file *file)
#[lsm(hook = "file_open")]
pub fn fl_sys_file_open(ctx: LsmContext) -> i32 {
    let prev: i32 = ctx.arg(1);
    if prev != 0 {
        return verdict(prev, 0);
    }
    // Every open on the host comes through here.
    let Some(cfg) = FL_SYS_CONFIG.get(0) else { return 0 };
    verdict(0, open_errno(cfg, ctx.arg(0), Walk::Task(cfg)))
}

// The same for the tasks of one cgroup tree (BPF_LSM_CGROUP, 6.0+, where the bpf LSM is
// active): attached to each targeted cgroup, so tasks elsewhere run no program, with that
// cgroup's rules kept with the attachment (FL_SYS_OPEN_SETS): no ancestor walk, no hash. A
// task of a nested target runs its own cgroup's program first, then each targeted
// ancestor's. A denial is the return value 0 with the errno set through bpf_set_retval.
#[lsm_cgroup(hook = "file_open")]
pub fn fl_sys_cgroup_file_open(ctx: LsmContext) -> i32 {
    let Some(cfg) = FL_SYS_CONFIG.get(0) else { return 1 };
    let set = if cfg.open_single != 0 {
        // Attached to one cgroup alone: this one.
        &cfg.open_set
    } else {
        // SAFETY: the helper returns the attachment's storage, never null; user space
        // replaces the value whole, so it is only read.
        unsafe { &*FL_SYS_OPEN_SETS.get_ptr_mut() }
    };
    if set.count == 0 {
        return 1;
    }
    let errno = open_errno(cfg, ctx.arg(0), Walk::Own(set));
    if errno == 0 {
        return 1;
    }
    // SAFETY: helper with a scalar argument; bounded like neg_errno.
    unsafe { bpf_set_retval(neg_errno(errno)) };
    0
}

/// Whose rules a file hook walks: every rule listed for the task (its process, then its
/// cgroup's targeted ancestors, deepest first), or one attachment's own set.
#[derive(Clone, Copy)]
enum Walk<'a> {
    Task(&'a SysConfig),
    Own(&'a SysSlots),
}

impl Walk<'_> {
    /// Calls `f(slot, rule)` on each rule in order until `f` returns non-zero.
    #[inline(always)]
    fn each(self, mut f: impl FnMut(u32, &SysRule) -> u32) -> u32 {
        match self {
            Walk::Task(cfg) => each_rule(cfg, f),
            Walk::Own(set) => visit(set, &mut f),
        }
    }

    /// `judge_logged` for a rule of the walk that applies to the call. An attachment's own
    /// set checks only here, for a rule that would decide, what a task's walk checks first:
    /// that the task is not the agent's, and that no deeper target's program (which runs
    /// first) failed the call already, whose rule is then the one counted.
    #[inline(always)]
    fn judge_logged(self, slot: u32, rule: &SysRule, hook: u32) -> u32 {
        if let Walk::Own(_) = self
            // SAFETY: helper without arguments.
            && (is_agent() || unsafe { bpf_get_retval() } != 0)
        {
            return 0;
        }
        judge_logged(slot, rule, hook)
    }
}

/// The errno a file call at `hook` fails with, or 0. One walk of the task's rules: those
/// without a path decide the call now; those with one (and a hook in `need`) are collected,
/// and only they are checked, by slot, once `bits_of(want)` gave the path bits of the
/// collected slots `want` (a walk up the file's directories, or a lookup of its marks).
/// Among path rules of a cgroup and of its ancestor that both match a call, the lower slot
/// decides here; with the open program attached by cgroup, the deeper target's program runs
/// first and decides. (A second, ordered pass doubled what the verifier explores: past
/// its limit with the debug log lines.)
#[inline(always)]
fn decide_file(walk: Walk, hook: u32, need: u32, bits_of: impl FnOnce(u64) -> u64) -> u32 {
    let mut want = 0u64;
    let errno = walk.each(|slot, rule| {
        if rule.path_len > 0 {
            if rule.hooks & need != 0 {
                want |= 1 << (slot & 63);
            }
            return 0;
        }
        if rule.hooks & (1 << hook) == 0 {
            return 0;
        }
        walk.judge_logged(slot, rule, hook)
    });
    if errno != 0 || want == 0 {
        // The path only for a task with a rule that needs it.
        return errno;
    }
    let bits = bits_of(want) & want;
    if bits == 0 {
        return 0;
    }
    decide_slots(walk, hook, bits)
}

/// The errno of the first rule among the slots in `bits` (live rules of the current task,
/// from its walk) that has `hook` and fails the call, or 0.
#[inline(always)]
fn decide_slots(walk: Walk, hook: u32, bits: u64) -> u32 {
    for slot in 0..64u32 {
        if bits >> slot == 0 {
            break;
        }
        if bits & (1 << slot) == 0 {
            continue;
        }
        let Some(rule) = FL_SYS_RULES.get(slot) else { continue };
        if rule.hooks & (1 << hook) == 0 {
            continue;
        }
        let errno = walk.judge_logged(slot, rule, hook);
        if errno != 0 {
            return errno;
        }
    }
    0
}

/// The errno an open of `file` by the current task fails with, or 0, by the rules `walk`
/// gives; marks the file for the read and write rules with a path.
#[inline(always)]
fn open_errno(cfg: &SysConfig, file: *const u8, walk: Walk) -> u32 {
    if cfg.hooks & FILE_HOOKS == 0 {
        return 0;
    }
    let mut noted: Option<u64> = None;
    let errno = decide_file(walk, HOOK_OPEN, FILE_HOOKS, |want| {
        let bits = path_bits_of(cfg, file as u64, want);
        noted = Some(bits);
        bits
    });
    if errno == 0
        && let Some(bits) = noted
    {
        note_file(cfg, file as u64, bits);
    }
    errno
}

/// The slots of the path rules whose prefix `file`'s path falls under (among those in
/// `want`: 0 when none can), or 0.
#[inline(always)]
fn path_bits_of(cfg: &SysConfig, file: u64, want: u64) -> u64 {
    let Some(o) = vfs::offsets() else { return 0 };
    // The names above the file first: d_path only when one of them ends a wanted prefix.
    if names_above(cfg.names, &o, file) & want == 0 {
        return 0;
    }
    let Some(buf) = FL_SYS_PATH_BUF.get_ptr_mut(0) else { return 0 };
    // SAFETY: this CPU's buffer, used by one program at a time.
    let buf = unsafe { &mut *buf };
    // SAFETY: &file->f_path (offset from the kernel's BTF); d_path writes at most PATH_BUF.
    let n = unsafe {
        let path = (file as *const u8).add(o.file_f_path as usize).cast_mut();
        bpf_d_path(path.cast(), buf.as_mut_ptr().cast(), PATH_BUF as u32)
    };
    // d_path's length counts the trailing NUL.
    if n <= 0 {
        return 0;
    }
    path_bits(buf, (n - 1) as usize)
}

/// The slots of the path rules whose prefix ends in the name of `file` or of a directory
/// above it (FL_SYS_NAMES; a name is read only at a length some rule's last component has):
/// a rule outside this set cannot match the file's path, so d_path is skipped. Every slot
/// when the walk cannot tell (a read failed, or the path is deeper than the walk goes).
#[inline(always)]
fn names_above(lens: u64, o: &VfsOffsets, file: u64) -> u64 {
    let mut bits = 0u64;
    let walked = vfs::walk_up_typed::<true>(o, file, |_, head| {
        let len = head.len;
        if lens & NameKey::len_bit(len) != 0 {
            let word: u64 = vfs::read(head.name, 0)?;
            // SAFETY: only read.
            if let Some(b) = unsafe { FL_SYS_NAMES.get(NameKey::new(word, len)) } {
                bits |= *b;
            }
        }
        Some(())
    });
    if walked == Some(true) { bits } else { u64::MAX }
}

/// Marks an opened file with the slots whose prefix its path falls under, for the read and
/// write hooks (which see no path).
#[inline(always)]
fn note_file(cfg: &SysConfig, file: u64, bits: u64) {
    if cfg.hooks & (1 << HOOK_READ | 1 << HOOK_WRITE) == 0 {
        return;
    }
    if bits != 0 {
        let _ = FL_SYS_FILES.insert(file, bits, 0);
    } else {
        // The address may be a freed file's: forget its marks.
        let _ = FL_SYS_FILES.remove(file);
    }
}

/// read and write: the marks file_open left for path prefixes.
#[inline(always)]
fn file_rw(file: u64, mask: u32, prev: i32) -> i32 {
    if prev != 0 {
        return verdict(prev, 0);
    }
    let hook = if mask & MAY_WRITE != 0 {
        HOOK_WRITE
    } else if mask & MAY_READ != 0 {
        HOOK_READ
    } else {
        return 0;
    };
    let Some(cfg) = FL_SYS_CONFIG.get(0) else { return 0 };
    if cfg.hooks & (1 << hook) == 0 {
        return 0;
    }
    // As file_open: the file's marks are looked up only for a task with a rule that has a
    // path.
    let errno = decide_file(Walk::Task(cfg), hook, 1 << hook, |_| {
        // SAFETY: only read.
        unsafe { FL_SYS_FILES.get(file) }.copied().unwrap_or(0)
    });
    verdict(0, errno)
}

// file_permission(struct file *file, int mask)
#[lsm(hook = "file_permission")]
pub fn fl_sys_file_permission(ctx: LsmContext) -> i32 {
    let file: u64 = ctx.arg(0);
    let mask: u32 = ctx.arg(1);
    file_rw(file, mask, ctx.arg(2))
}

/// Forgets a freed file's marks. Every close on the host comes here: a lock-free lookup
/// first, since the delete takes the bucket lock even for an absent key.
#[inline(always)]
fn forget_file(file: u64) {
    // SAFETY: only read.
    if FL_SYS_CONFIG.get(0).is_some_and(|c| c.paths != 0)
        && unsafe { FL_SYS_FILES.get(file) }.is_some()
    {
        let _ = FL_SYS_FILES.remove(file);
    }
}

// file_free_security(struct file *file): forget the file's marks.
#[lsm(hook = "file_free_security")]
pub fn fl_sys_file_free(ctx: LsmContext) -> i32 {
    forget_file(ctx.arg(0));
    0
}

// security_file_free(struct file *file), for the fmod_ret backend (a void function).
#[fentry(function = "security_file_free")]
pub fn fl_sys_fentry_file_free(ctx: FEntryContext) -> u32 {
    forget_file(ctx.arg(0));
    0
}

// inode_unlink(struct inode *dir, struct dentry *dentry)
#[lsm(hook = "inode_unlink")]
pub fn fl_sys_inode_unlink(ctx: LsmContext) -> i32 {
    lsm_simple::<2>(&ctx, HOOK_UNLINK)
}

// inode_mkdir(struct inode *dir, struct dentry *dentry, umode_t mode)
#[lsm(hook = "inode_mkdir")]
pub fn fl_sys_inode_mkdir(ctx: LsmContext) -> i32 {
    lsm_simple::<3>(&ctx, HOOK_MKDIR)
}

// inode_rename(old_dir, old_dentry, new_dir, new_dentry)
#[lsm(hook = "inode_rename")]
pub fn fl_sys_inode_rename(ctx: LsmContext) -> i32 {
    lsm_simple::<4>(&ctx, HOOK_RENAME)
}

// security_inode_rename(old_dir, old_dentry, new_dir, new_dentry, flags): fmod_ret only.
#[lsm(hook = "inode_rename")]
pub fn fl_sys_fmodret_inode_rename(ctx: LsmContext) -> i32 {
    lsm_simple::<5>(&ctx, HOOK_RENAME)
}

// mmap_file(struct file *file, unsigned long reqprot, unsigned long prot, unsigned long flags)
#[lsm(hook = "mmap_file")]
pub fn fl_sys_mmap_file(ctx: LsmContext) -> i32 {
    lsm_simple::<4>(&ctx, HOOK_MMAP)
}

// security_mmap_file(struct file *file, unsigned long prot, unsigned long flags): fmod_ret.
#[lsm(hook = "mmap_file")]
pub fn fl_sys_fmodret_mmap_file(ctx: LsmContext) -> i32 {
    lsm_simple::<3>(&ctx, HOOK_MMAP)
}

// bprm_check_security(struct linux_binprm *bprm)
#[lsm(hook = "bprm_check_security")]
pub fn fl_sys_bprm_check(ctx: LsmContext) -> i32 {
    lsm_simple::<1>(&ctx, HOOK_EXEC)
}

// task_alloc(struct task_struct *task, unsigned long clone_flags): in the parent's context.
#[lsm(hook = "task_alloc")]
pub fn fl_sys_task_alloc(ctx: LsmContext) -> i32 {
    lsm_simple::<2>(&ctx, HOOK_FORK)
}

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// A cgroup socket hook's verdict: the errno through bpf_set_retval where the kernel has it
/// (5.18+), else the hook's default failure (EPERM).
#[inline(always)]
fn cgroup_verdict(errno: u32) -> i32 {
    if errno == 0 {
        return ALLOW;
    }
    if rodata(&FL_HAS_SET_RETVAL) != 0 {
        // SAFETY: helper with a scalar argument.
        unsafe { bpf_set_retval(0i32.wrapping_sub(errno as i32)) };
    }
    DENY
}

#[cgroup_sock_addr(connect4)]
pub fn fl_sys_connect4(_ctx: SockAddrContext) -> i32 {
    cgroup_verdict(decide(HOOK_CONNECT))
}

#[cgroup_sock_addr(connect6)]
pub fn fl_sys_connect6(_ctx: SockAddrContext) -> i32 {
    cgroup_verdict(decide(HOOK_CONNECT))
}

#[cgroup_sock_addr(bind4)]
pub fn fl_sys_bind4(_ctx: SockAddrContext) -> i32 {
    cgroup_verdict(decide(HOOK_BIND))
}

#[cgroup_sock_addr(bind6)]
pub fn fl_sys_bind6(_ctx: SockAddrContext) -> i32 {
    cgroup_verdict(decide(HOOK_BIND))
}

#[cgroup_sock_addr(sendmsg4)]
pub fn fl_sys_sendmsg4(_ctx: SockAddrContext) -> i32 {
    cgroup_verdict(decide(HOOK_SENDMSG))
}

#[cgroup_sock_addr(sendmsg6)]
pub fn fl_sys_sendmsg6(_ctx: SockAddrContext) -> i32 {
    cgroup_verdict(decide(HOOK_SENDMSG))
}

#[cgroup_sock(sock_create)]
pub fn fl_sys_sock_create(_ctx: SockContext) -> i32 {
    cgroup_verdict(decide(HOOK_SOCKET))
}

/// Pid targets that follow children: a child of a targeted process gets its rules. Runs in
/// the parent (raw tracepoint: no tracefs needed); the child's ids are read at offsets from
/// the kernel's BTF.
#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn fl_sys_fork(ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = FL_SYS_CONFIG.get(0) else { return 0 };
    if cfg.pids == 0 {
        return 0;
    }
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: only read.
    let Some(set) = (unsafe { FL_SYS_PIDS.get(tgid) }) else { return 0 };
    if set.follow == 0 {
        return 0;
    }
    let set = *set;
    // sched_process_fork(struct task_struct *parent, struct task_struct *child)
    let child: *const u8 = ctx.arg(1);
    let Some((pid, child_tgid)) = calls::task_ids(child) else { return 0 };
    // A new thread shares its process's entry.
    if pid == child_tgid {
        let _ = FL_SYS_PIDS.insert(pid, set, 0);
    }
    0
}

/// A targeted process exits: its pid may be reused.
#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn fl_sys_exit(_ctx: RawTracePointContext) -> i32 {
    let Some(cfg) = FL_SYS_CONFIG.get(0) else { return 0 };
    if cfg.pids == 0 {
        return 0;
    }
    let id = bpf_get_current_pid_tgid();
    // Only the thread group leader's exit ends the process's entry.
    if id as u32 == (id >> 32) as u32 {
        let _ = FL_SYS_PIDS.remove(id as u32);
    }
    0
}
