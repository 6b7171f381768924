//! What the system-call rules need attached, reconciled after every change: LSM programs (or
//! the same code as fmod_ret) per hook in use, the cgroup socket programs on topmost
//! targeted cgroups, the open program on each targeted cgroup where the kernel has
//! BPF_LSM_CGROUP (so no other task on the node runs it), with that cgroup's rules kept in
//! the attachment's storage (`MAP_SYS_OPEN_SETS`, written here), and the fork/exit
//! tracepoints while a rule targets processes. Every attachment is a link or fd the agent
//! holds, so all of it goes with the agent.

use std::{
    collections::{BTreeSet, HashMap},
    fs::File,
    os::fd::RawFd,
};

use aya::{
    Btf, Ebpf,
    maps::{CgroupStorageKey, MapData},
    programs::{
        CgroupAttachMode, CgroupSock, CgroupSockAddr, FEntry, Lsm, LsmCgroup, RawTracePoint,
        cgroup_sock::CgroupSockLink, cgroup_sock_addr::CgroupSockAddrLink, fentry::FEntryLink,
        lsm::LsmLink, lsm_cgroup::LsmLink as LsmCgroupLink, raw_trace_point::RawTracePointLink,
    },
};
use faultline_common::sys::{
    HOOK_EXEC, HOOK_FORK, HOOK_MKDIR, HOOK_MMAP, HOOK_OPEN, HOOK_READ, HOOK_RENAME, HOOK_UNLINK,
    HOOK_WRITE, SysSlots,
};
use tracing::debug;

use super::fmodret::{self, FmodRet};
use crate::engine::{
    error::{Error, Result, chain},
    model::ResolvedCgroup,
};

/// `MAP_SYS_OPEN_SETS`. aya marks BPF_MAP_TYPE_CGROUP_STORAGE deprecated for
/// BPF_MAP_TYPE_CGRP_STORAGE, which needs 6.2 (and is per cgroup, not per attachment).
#[allow(deprecated)]
pub type OpenSets = aya::maps::CgroupStorage<MapData, SysSlots>;

/// enum bpf_attach_type: a cgroup storage key names the attachment's type.
const BPF_LSM_CGROUP: u32 = 43;

/// How file calls are failed on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileBackend {
    Lsm,
    FmodRet,
}

impl FileBackend {
    pub fn name(self) -> &'static str {
        match self {
            FileBackend::Lsm => "lsm",
            FileBackend::FmodRet => "fmod_ret",
        }
    }
}

/// A file-call program: its LSM form (program, hook) and its fmod_ret form (program,
/// security function). The fmod_ret form of file_free is an fentry program (void function).
pub struct FileProg {
    pub key: &'static str,
    lsm: (&'static str, &'static str),
    fmodret: (&'static str, &'static str),
}

impl FileProg {
    pub fn lsm_name(&self) -> &'static str {
        self.lsm.0
    }

    /// As a dry run names it: "lsm/file_open program fl_sys_file_open".
    pub fn describe(&self, backend: FileBackend) -> String {
        match backend {
            FileBackend::Lsm => format!("lsm/{} program {}", self.lsm.1, self.lsm.0),
            FileBackend::FmodRet if self.key == FREE.key => {
                format!("fentry/{} program {}", self.fmodret.1, self.fmodret.0)
            }
            FileBackend::FmodRet => {
                format!("fmod_ret/{} program {}", self.fmodret.1, self.fmodret.0)
            }
        }
    }
}

const fn prog(
    key: &'static str,
    lsm: (&'static str, &'static str),
    fmodret: (&'static str, &'static str),
) -> FileProg {
    FileProg { key, lsm, fmodret }
}

pub const OPEN: FileProg =
    prog("open", ("fl_sys_file_open", "file_open"), ("fl_sys_file_open", "security_file_open"));
pub const PERMISSION: FileProg = prog(
    "permission",
    ("fl_sys_file_permission", "file_permission"),
    ("fl_sys_file_permission", "security_file_permission"),
);
pub const FREE: FileProg = prog(
    "free",
    ("fl_sys_file_free", "file_free_security"),
    ("fl_sys_fentry_file_free", "security_file_free"),
);
const BY_HOOK: &[(u32, FileProg)] = &[
    (
        HOOK_UNLINK,
        prog(
            "unlink",
            ("fl_sys_inode_unlink", "inode_unlink"),
            ("fl_sys_inode_unlink", "security_inode_unlink"),
        ),
    ),
    (
        HOOK_MKDIR,
        prog(
            "mkdir",
            ("fl_sys_inode_mkdir", "inode_mkdir"),
            ("fl_sys_inode_mkdir", "security_inode_mkdir"),
        ),
    ),
    (
        HOOK_RENAME,
        prog(
            "rename",
            ("fl_sys_inode_rename", "inode_rename"),
            ("fl_sys_fmodret_inode_rename", "security_inode_rename"),
        ),
    ),
    (
        HOOK_MMAP,
        prog(
            "mmap",
            ("fl_sys_mmap_file", "mmap_file"),
            ("fl_sys_fmodret_mmap_file", "security_mmap_file"),
        ),
    ),
    (
        HOOK_EXEC,
        prog(
            "exec",
            ("fl_sys_bprm_check", "bprm_check_security"),
            ("fl_sys_bprm_check", "security_bprm_check"),
        ),
    ),
    (
        HOOK_FORK,
        prog(
            "fork",
            ("fl_sys_task_alloc", "task_alloc"),
            ("fl_sys_task_alloc", "security_task_alloc"),
        ),
    ),
];

/// The file-call programs that `hooks` (union of live rules) need; `paths`: some rule with
/// a path prefix reads or writes, so files are marked at open and forgotten at free.
pub fn file_progs(hooks: u32, paths: bool) -> Vec<&'static FileProg> {
    let rw = 1 << HOOK_READ | 1 << HOOK_WRITE;
    let mut out = Vec::new();
    if hooks & (1 << HOOK_OPEN) != 0 || (paths && hooks & rw != 0) {
        out.push(&OPEN);
    }
    if hooks & rw != 0 {
        out.push(&PERMISSION);
    }
    if paths && hooks & rw != 0 {
        out.push(&FREE);
    }
    out.extend(BY_HOOK.iter().filter(|(h, _)| hooks & (1 << h) != 0).map(|(_, p)| p));
    out
}

/// Held only to be dropped: dropping detaches.
#[expect(dead_code, reason = "the fields are held for their drop")]
enum Held {
    Lsm(LsmLink),
    FEntry(FEntryLink),
    FmodRet(FmodRet),
}

/// The cgroup socket programs, attached together.
const CGROUP_SOCK_ADDR: &[&str] = &[
    "fl_sys_connect4",
    "fl_sys_connect6",
    "fl_sys_bind4",
    "fl_sys_bind6",
    "fl_sys_sendmsg4",
    "fl_sys_sendmsg6",
];
const CGROUP_SOCK_CREATE: &str = "fl_sys_sock_create";
/// file_open as a BPF_LSM_CGROUP program (sys.rs).
pub const CGROUP_OPEN: &str = "fl_sys_cgroup_file_open";

/// The cgroup socket programs as a dry run names them.
pub fn describe_cgroup_programs() -> String {
    format!(
        "cgroup/connect, bind and sendmsg programs {} and cgroup/sock_create program \
         {CGROUP_SOCK_CREATE}",
        CGROUP_SOCK_ADDR.join(", ")
    )
}

struct CgroupLinks {
    _addr: Vec<CgroupSockAddrLink>,
    _create: CgroupSockLink,
}

#[derive(Default)]
pub struct Attachments {
    files: HashMap<&'static str, Held>,
    cgroups: HashMap<u64, CgroupLinks>,
    /// The open program per targeted cgroup, where it is attached by cgroup.
    open_cgroups: HashMap<u64, LsmCgroupLink>,
    tracepoints: Option<(RawTracePointLink, RawTracePointLink)>,
}

fn unsupported(what: &str, e: &(dyn std::error::Error + 'static)) -> Error {
    Error::FailedPrecondition(format!("unsupported: {what}: {}", chain(e)))
}

impl Attachments {
    /// Whether the file program `key` is attached (dry runs).
    pub fn holds_file(&self, key: &str) -> bool {
        self.files.contains_key(key)
    }

    /// Whether cgroup `id` holds the socket programs (dry runs).
    pub fn holds_cgroup(&self, id: u64) -> bool {
        self.cgroups.contains_key(&id)
    }

    /// Whether cgroup `id` holds the open program (dry runs).
    pub fn holds_open_cgroup(&self, id: u64) -> bool {
        self.open_cgroups.contains_key(&id)
    }

    /// Whether the fork and exit tracepoints are attached (dry runs).
    pub fn holds_tracepoints(&self) -> bool {
        self.tracepoints.is_some()
    }

    /// Attaches the file programs in `wanted` that are not yet, then drops the rest.
    pub fn reconcile_files(
        &mut self,
        ebpf: &mut Ebpf,
        backend: FileBackend,
        wanted: &[&'static FileProg],
        object: &[u8],
        fds: &HashMap<String, RawFd>,
    ) -> Result<()> {
        for p in wanted {
            if self.files.contains_key(p.key) {
                continue;
            }
            let held = match backend {
                FileBackend::Lsm => Held::Lsm(attach_lsm(ebpf, p.lsm.0, p.lsm.1)?),
                FileBackend::FmodRet if p.key == FREE.key => {
                    Held::FEntry(attach_fentry(ebpf, p.fmodret.0, p.fmodret.1)?)
                }
                FileBackend::FmodRet => {
                    Held::FmodRet(fmodret::attach(object, fds, p.fmodret.0, p.fmodret.1).map_err(
                        |e| Error::FailedPrecondition(format!("unsupported: fmod_ret: {e}")),
                    )?)
                }
            };
            debug!(program = p.key, backend = backend.name(), "system-call program attached");
            self.files.insert(p.key, held);
        }
        self.files.retain(|k, _| wanted.iter().any(|p| p.key == *k));
        Ok(())
    }

    /// Attaches the cgroup socket programs to each cgroup in `wanted` (topmost targets of
    /// rules with socket calls), then detaches the others.
    pub fn reconcile_cgroups(
        &mut self,
        ebpf: &mut Ebpf,
        wanted: &BTreeSet<u64>,
        cgroups: &HashMap<u64, ResolvedCgroup>,
    ) -> Result<()> {
        by_cgroup(&mut self.cgroups, wanted, cgroups, |cg| attach_cgroup(ebpf, cg))
    }

    /// Attaches the BPF_LSM_CGROUP open program to each cgroup in `wanted` (targets of rules
    /// that need the open hook), then detaches the others. A new attachment's storage is
    /// zeroed (no rules) until `publish_open` writes it.
    pub fn reconcile_open_cgroups(
        &mut self,
        ebpf: &mut Ebpf,
        wanted: &BTreeSet<u64>,
        cgroups: &HashMap<u64, ResolvedCgroup>,
    ) -> Result<()> {
        by_cgroup(&mut self.open_cgroups, wanted, cgroups, |cg| {
            let dir = cgroup_dir(cg)?;
            let prog = cgroup_open(ebpf)?;
            let link =
                prog.attach(&dir).map_err(|e| unsupported("attaching lsm_cgroup/file_open", &e))?;
            debug!(cgroup = %cg.path, "open program attached to the cgroup");
            prog.take_link(link).map_err(|e| Error::internal("taking link", e))
        })
    }

    /// Writes `set` to the storage of the open program's attachment on cgroup `id`, if it has
    /// one: the rules that program reads there.
    pub fn publish_open(&self, sets: &mut OpenSets, id: u64, set: &SysSlots) -> Result<()> {
        if !self.open_cgroups.contains_key(&id) {
            return Ok(());
        }
        sets.insert(CgroupStorageKey::new(id, BPF_LSM_CGROUP), set, 0)
            .map_err(|e| Error::internal("publishing the open program's rules", e))
    }

    /// The fork and exit tracepoints, while `on`.
    pub fn reconcile_tracepoints(&mut self, ebpf: &mut Ebpf, on: bool) -> Result<()> {
        if !on {
            self.tracepoints = None;
            return Ok(());
        }
        if self.tracepoints.is_none() {
            let fork = attach_tracepoint(ebpf, "fl_sys_fork", "sched_process_fork")?;
            let exit = attach_tracepoint(ebpf, "fl_sys_exit", "sched_process_exit")?;
            self.tracepoints = Some((fork, exit));
        }
        Ok(())
    }
}

/// Attaches with `attach` what each cgroup in `wanted` lacks in `held`, then drops (detaches)
/// what is held for the others.
fn by_cgroup<L>(
    held: &mut HashMap<u64, L>,
    wanted: &BTreeSet<u64>,
    cgroups: &HashMap<u64, ResolvedCgroup>,
    mut attach: impl FnMut(&ResolvedCgroup) -> Result<L>,
) -> Result<()> {
    for id in wanted {
        if held.contains_key(id) {
            continue;
        }
        let Some(cg) = cgroups.get(id) else { continue };
        held.insert(*id, attach(cg)?);
    }
    held.retain(|id, _| wanted.contains(id));
    Ok(())
}

fn cgroup_dir(cg: &ResolvedCgroup) -> Result<File> {
    File::open(cg.fs_path())
        .map_err(|e| Error::NotFound(format!("target: cgroup {} vanished: {e}", cg.path)))
}

fn btf() -> Result<Btf> {
    Btf::from_sys_fs().map_err(|e| unsupported("reading the kernel's BTF", &e))
}

fn attach_lsm(ebpf: &mut Ebpf, name: &str, hook: &str) -> Result<LsmLink> {
    let prog: &mut Lsm = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Internal(format!("program {name} missing")))?
        .try_into()
        .map_err(|e| Error::internal(name, e))?;
    if prog.fd().is_err() {
        prog.load(hook, &btf()?).map_err(|e| unsupported(&format!("lsm/{hook}"), &e))?;
    }
    let id = prog.attach().map_err(|e| unsupported(&format!("attaching lsm/{hook}"), &e))?;
    prog.take_link(id).map_err(|e| Error::internal("taking link", e))
}

/// The BPF_LSM_CGROUP open program, loaded at first use. Loading it is also the probe: a
/// kernel before 6.0 refuses the attach type.
pub fn cgroup_open(ebpf: &mut Ebpf) -> Result<&mut LsmCgroup> {
    let prog: &mut LsmCgroup = ebpf
        .program_mut(CGROUP_OPEN)
        .ok_or_else(|| Error::Internal(format!("program {CGROUP_OPEN} missing")))?
        .try_into()
        .map_err(|e| Error::internal(CGROUP_OPEN, e))?;
    if prog.fd().is_err() {
        prog.load("file_open", &btf()?).map_err(|e| unsupported("lsm_cgroup/file_open", &e))?;
    }
    Ok(prog)
}

fn attach_fentry(ebpf: &mut Ebpf, name: &str, func: &str) -> Result<FEntryLink> {
    let prog: &mut FEntry = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Internal(format!("program {name} missing")))?
        .try_into()
        .map_err(|e| Error::internal(name, e))?;
    if prog.fd().is_err() {
        prog.load(func, &btf()?).map_err(|e| unsupported(&format!("fentry/{func}"), &e))?;
    }
    let id = prog.attach().map_err(|e| unsupported(&format!("attaching fentry/{func}"), &e))?;
    prog.take_link(id).map_err(|e| Error::internal("taking link", e))
}

fn attach_tracepoint(ebpf: &mut Ebpf, name: &str, event: &str) -> Result<RawTracePointLink> {
    let prog: &mut RawTracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Internal(format!("program {name} missing")))?
        .try_into()
        .map_err(|e| Error::internal(name, e))?;
    if prog.fd().is_err() {
        prog.load().map_err(|e| unsupported(&format!("raw tracepoint {event}"), &e))?;
    }
    let id = prog
        .attach(event)
        .map_err(|e| unsupported(&format!("attaching raw tracepoint {event}"), &e))?;
    prog.take_link(id).map_err(|e| Error::internal("taking link", e))
}

fn attach_cgroup(ebpf: &mut Ebpf, cg: &ResolvedCgroup) -> Result<CgroupLinks> {
    let dir = cgroup_dir(cg)?;
    let mut addr = Vec::new();
    for name in CGROUP_SOCK_ADDR {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or_else(|| Error::Internal(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| Error::internal(name, e))?;
        if prog.fd().is_err() {
            prog.load().map_err(|e| unsupported(name, &e))?;
        }
        // Cgroup links are multi-attach; the kernel refuses flags on them (see net/cgroups.rs).
        let id = prog.attach(&dir, CgroupAttachMode::Single).map_err(|e| unsupported(name, &e))?;
        addr.push(prog.take_link(id).map_err(|e| Error::internal("taking link", e))?);
    }
    let prog: &mut CgroupSock = ebpf
        .program_mut(CGROUP_SOCK_CREATE)
        .ok_or_else(|| Error::Internal(format!("program {CGROUP_SOCK_CREATE} missing")))?
        .try_into()
        .map_err(|e| Error::internal(CGROUP_SOCK_CREATE, e))?;
    if prog.fd().is_err() {
        prog.load().map_err(|e| unsupported(CGROUP_SOCK_CREATE, &e))?;
    }
    let id = prog
        .attach(&dir, CgroupAttachMode::Single)
        .map_err(|e| unsupported(CGROUP_SOCK_CREATE, &e))?;
    let create = prog.take_link(id).map_err(|e| Error::internal("taking link", e))?;
    debug!(cgroup = %cg.path, "system-call cgroup programs attached");
    Ok(CgroupLinks { _addr: addr, _create: create })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_follow_the_hooks_in_use() {
        let keys = |h, p| file_progs(h, p).iter().map(|p| p.key).collect::<Vec<_>>();
        assert_eq!(keys(1 << HOOK_OPEN, false), ["open"]);
        assert_eq!(keys(1 << HOOK_READ, false), ["permission"]);
        assert_eq!(keys(1 << HOOK_WRITE, true), ["open", "permission", "free"]);
        assert_eq!(keys(1 << HOOK_FORK | 1 << HOOK_MKDIR, false), ["mkdir", "fork"]);
        assert!(keys(0, true).is_empty());
    }
}
