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
            let prog = load_pass(prog_type, ty, name)?;
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

/// Loads `r0 = 1; exit` (pass, allow) as a program of `prog_type` expecting `attach_type`.
fn load_pass(prog_type: u32, attach_type: u32, name: &str) -> anyhow::Result<OwnedFd> {
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
