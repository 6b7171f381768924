//! The few bpf(2) commands the harness and the bench issue themselves, without the agent:
//! asking the kernel what is attached (the residue checks), and the bench's floors, empty
//! cgroup_skb and connect programs whose run time is the kernel's dispatch cost here.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_ATTACH: i64 = 8;
const BPF_PROG_DETACH: i64 = 9;
const BPF_PROG_QUERY: i64 = 16;
const BPF_PROG_TYPE_CGROUP_SKB: u32 = 8;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
const BPF_PROG_TYPE_LSM: u32 = 29;
const BPF_LSM_CGROUP: u32 = 43;
const BPF_LINK_CREATE: i64 = 28;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// cgroup attach types: inet ingress and egress.
pub const CGROUP_INET_INGRESS: u32 = 0;
pub const CGROUP_INET_EGRESS: u32 = 1;
/// cgroup attach types: connect() of IPv4 and IPv6 sockets.
pub const CGROUP_INET4_CONNECT: u32 = 10;
pub const CGROUP_INET6_CONNECT: u32 = 11;

fn bpf(cmd: i64, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: attr is a zero-padded union bpf_attr of the size passed; the kernel reads and
    // writes only within it.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r) }
}

fn put(attr: &mut [u8; 128], at: usize, v: &[u8]) {
    attr[at..at + v.len()].copy_from_slice(v);
}

/// How many programs are attached directly to `target` (a cgroup or, for tcx types, an
/// ifindex passed as the fd field) for `attach_type` (BPF_PROG_QUERY).
pub fn query(target: u32, attach_type: u32) -> std::io::Result<u32> {
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &target.to_ne_bytes());
    put(&mut attr, 4, &attach_type.to_ne_bytes());
    bpf(BPF_PROG_QUERY, &mut attr)?;
    Ok(u32::from_ne_bytes(attr[24..28].try_into().unwrap_or_default()))
}

/// An empty cgroup_skb program ("return pass") attached to a cgroup's ingress and egress
/// beside any others (BPF_F_ALLOW_MULTI); detached on drop. Its run time (bpf_stats) is the
/// floor under every packet program on the kernel it runs on.
pub struct Floor {
    cgroup: OwnedFd,
    progs: Vec<(u32, OwnedFd)>,
}

/// The program names, as the kernel reports them (bpf_prog_info).
pub const FLOOR_INGRESS: &str = "fl_floor_in";
pub const FLOOR_EGRESS: &str = "fl_floor_eg";
pub const FLOOR_CONNECT4: &str = "fl_floor_c4";
pub const FLOOR_CONNECT6: &str = "fl_floor_c6";
pub const FLOOR_FILE_OPEN: &str = "fl_floor_open";

/// An empty BPF_LSM_CGROUP program on file_open ("allow") linked to a cgroup (kernel 6.0+,
/// bpf an active LSM); unlinked when dropped. Every open on the host then passes the hook's
/// cgroup shim, and each of the cgroup's tasks runs the program: the floor under the agent's
/// file programs.
pub struct LsmFloor {
    _prog: OwnedFd,
    _link: OwnedFd,
}

impl LsmFloor {
    pub fn attach(cgroup_dir: &std::path::Path) -> anyhow::Result<LsmFloor> {
        let vmlinux = std::fs::read("/sys/kernel/btf/vmlinux")?;
        let id = btf_func_id(&vmlinux, "bpf_lsm_file_open")
            .ok_or_else(|| anyhow::anyhow!("bpf_lsm_file_open is not in the kernel's BTF"))?;
        let prog = load(BPF_PROG_TYPE_LSM, BPF_LSM_CGROUP, FLOOR_FILE_OPEN, id)?;
        let cgroup = std::fs::File::open(cgroup_dir)?;
        let mut attr = [0u8; 128];
        put(&mut attr, 0, &(prog.as_raw_fd() as u32).to_ne_bytes());
        put(&mut attr, 4, &(cgroup.as_raw_fd() as u32).to_ne_bytes());
        put(&mut attr, 8, &BPF_LSM_CGROUP.to_ne_bytes());
        let fd = bpf(BPF_LINK_CREATE, &mut attr).map_err(|e| {
            anyhow::anyhow!("link {FLOOR_FILE_OPEN} to {}: {e}", cgroup_dir.display())
        })?;
        // SAFETY: BPF_LINK_CREATE returned a new descriptor we own.
        let link = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(LsmFloor { _prog: prog, _link: link })
    }
}

/// The type id of function `name` in raw BTF (`/sys/kernel/btf/vmlinux`): a walk over the
/// type section, each type's size known from its kind.
pub fn btf_func_id(btf: &[u8], name: &str) -> Option<u32> {
    let u32_at = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(btf.get(at..at + 4)?.try_into().ok()?))
    };
    if btf.get(0..2)? != [0x9f, 0xeb] {
        return None;
    }
    let hdr = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let str_off = u32_at(16)? as usize;
    let types = hdr + type_off;
    let strings = hdr + str_off;
    let (mut at, mut id) = (types, 1u32);
    while at < types + type_len {
        let (name_off, info) = (u32_at(at)? as usize, u32_at(at + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        if kind == 12 {
            let s = btf.get(strings + name_off..)?;
            let end = s.iter().position(|&b| b == 0)?;
            if &s[..end] == name.as_bytes() {
                return Some(id);
            }
        }
        at += 12
            + match kind {
                1 | 14 | 17 => 4,
                3 => 12,
                4 | 5 | 15 | 19 => vlen * 12,
                6 | 13 => vlen * 8,
                _ => 0,
            };
        id += 1;
    }
    None
}

impl Floor {
    /// On a cgroup's inet ingress and egress (cgroup_skb).
    pub fn attach(cgroup_dir: &std::path::Path) -> anyhow::Result<Floor> {
        Self::attach_as(
            cgroup_dir,
            BPF_PROG_TYPE_CGROUP_SKB,
            &[(CGROUP_INET_INGRESS, FLOOR_INGRESS), (CGROUP_INET_EGRESS, FLOOR_EGRESS)],
        )
    }

    /// On a cgroup's connect4 and connect6 (cgroup sock_addr: "allow").
    pub fn attach_connect(cgroup_dir: &std::path::Path) -> anyhow::Result<Floor> {
        Self::attach_as(
            cgroup_dir,
            BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
            &[(CGROUP_INET4_CONNECT, FLOOR_CONNECT4), (CGROUP_INET6_CONNECT, FLOOR_CONNECT6)],
        )
    }

    fn attach_as(
        cgroup_dir: &std::path::Path,
        prog_type: u32,
        what: &[(u32, &str)],
    ) -> anyhow::Result<Floor> {
        let cgroup = OwnedFd::from(std::fs::File::open(cgroup_dir)?);
        let mut floor = Floor { cgroup, progs: Vec::new() };
        for &(ty, name) in what {
            let prog = load(prog_type, ty, name, 0)?;
            let mut attr = [0u8; 128];
            put(&mut attr, 0, &(floor.cgroup.as_raw_fd() as u32).to_ne_bytes());
            put(&mut attr, 4, &(prog.as_raw_fd() as u32).to_ne_bytes());
            put(&mut attr, 8, &ty.to_ne_bytes());
            put(&mut attr, 12, &BPF_F_ALLOW_MULTI.to_ne_bytes());
            bpf(BPF_PROG_ATTACH, &mut attr)
                .map_err(|e| anyhow::anyhow!("attach {name} to {}: {e}", cgroup_dir.display()))?;
            floor.progs.push((ty, prog));
        }
        Ok(floor)
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        for (ty, prog) in &self.progs {
            let mut attr = [0u8; 128];
            put(&mut attr, 0, &(self.cgroup.as_raw_fd() as u32).to_ne_bytes());
            put(&mut attr, 4, &(prog.as_raw_fd() as u32).to_ne_bytes());
            put(&mut attr, 8, &ty.to_ne_bytes());
            let _ = bpf(BPF_PROG_DETACH, &mut attr);
        }
    }
}

/// Loads `r0 = 1; exit` (pass, allow) as a program of `prog_type` expecting `attach_type`
/// (at kernel function `btf_id` of vmlinux for LSM programs, else 0).
fn load(prog_type: u32, attach_type: u32, name: &str, btf_id: u32) -> anyhow::Result<OwnedFd> {
    // BPF_MOV64_IMM(BPF_REG_0, 1); BPF_EXIT_INSN()
    let insns: [u64; 2] = [u64::from_le_bytes([0xb7, 0, 0, 0, 1, 0, 0, 0]), 0x95];
    let license = c"GPL";
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &prog_type.to_ne_bytes());
    put(&mut attr, 4, &(insns.len() as u32).to_ne_bytes());
    put(&mut attr, 8, &(insns.as_ptr() as u64).to_ne_bytes());
    put(&mut attr, 16, &(license.as_ptr() as u64).to_ne_bytes());
    let n = name.len().min(15);
    put(&mut attr, 48, &name.as_bytes()[..n]);
    put(&mut attr, 68, &attach_type.to_ne_bytes());
    put(&mut attr, 108, &btf_id.to_ne_bytes());
    let fd = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| anyhow::anyhow!("load {name}: {e}"))?;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

const BPF_PROG_GET_FD_BY_ID: i64 = 13;
const BPF_OBJ_GET_INFO_BY_FD: i64 = 15;

/// One loaded program, as the kernel reports it (bpf_prog_info); the run figures count only
/// while kernel.bpf_stats_enabled is 1.
#[derive(Clone, Debug)]
pub struct ProgInfo {
    pub id: u32,
    pub prog_type: u32,
    pub name: String,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// The programs the process `pid` holds descriptors of (its /proc fdinfo), each once.
pub fn programs_of(pid: u32) -> anyhow::Result<Vec<ProgInfo>> {
    let mut ids = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))? {
        let Ok(text) = std::fs::read_to_string(e?.path()) else { continue };
        if let Some(id) = text.lines().find_map(|l| l.strip_prefix("prog_id:")) {
            ids.insert(id.trim().parse::<u32>()?);
        }
    }
    // A program may go between the listing and the look-up: skip it.
    Ok(ids.into_iter().filter_map(|id| program(id).ok()).collect())
}

/// bpf_prog_info of program `id` (BPF_PROG_GET_FD_BY_ID, BPF_OBJ_GET_INFO_BY_FD).
pub fn program(id: u32) -> std::io::Result<ProgInfo> {
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &id.to_ne_bytes());
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)?;
    // SAFETY: the call returned a new descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // struct bpf_prog_info up to run_cnt (offset 200) on every kernel since 5.1.
    let mut info = [0u8; 208];
    let mut attr = [0u8; 128];
    put(&mut attr, 0, &(fd.as_raw_fd() as u32).to_ne_bytes());
    put(&mut attr, 4, &(info.len() as u32).to_ne_bytes());
    put(&mut attr, 8, &(info.as_mut_ptr() as u64).to_ne_bytes());
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let u32_at = |at: usize| u32::from_ne_bytes(info[at..at + 4].try_into().unwrap_or_default());
    let u64_at = |at: usize| u64::from_ne_bytes(info[at..at + 8].try_into().unwrap_or_default());
    let name = &info[64..80];
    let end = name.iter().position(|b| *b == 0).unwrap_or(name.len());
    Ok(ProgInfo {
        id,
        prog_type: u32_at(0),
        name: String::from_utf8_lossy(&name[..end]).into_owned(),
        run_time_ns: u64_at(192),
        run_cnt: u64_at(200),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_kernel_function_is_found_in_the_kernels_btf() {
        let Ok(btf) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            eprintln!("no /sys/kernel/btf/vmlinux here");
            return;
        };
        let open = super::btf_func_id(&btf, "bpf_lsm_file_open").expect("bpf_lsm_file_open");
        let free =
            super::btf_func_id(&btf, "bpf_lsm_file_permission").expect("bpf_lsm_file_permission");
        assert!(open > 1 && free > 1 && open != free);
        assert_eq!(super::btf_func_id(&btf, "no_such_function_here"), None);
        assert_eq!(super::btf_func_id(b"not btf", "bpf_lsm_file_open"), None);
    }
}
