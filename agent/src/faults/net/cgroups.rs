//! The cgroup programs (cgroup_skb ingress/egress, connect4/connect6) attached to topmost
//! targeted cgroups (see attach.rs), through bpf_links that detach when the agent's fds close.

use std::fs::File;

use aya::{
    Ebpf,
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr,
        cgroup_skb::CgroupSkbLink, cgroup_sock_addr::CgroupSockAddrLink,
    },
};
use faultline_common::net::{
    PROG_CONNECT4, PROG_CONNECT6, PROG_EGRESS, PROG_GETPEERNAME4, PROG_GETPEERNAME6, PROG_INGRESS,
    PROG_RECVMSG4, PROG_RECVMSG6, PROG_SENDMSG4, PROG_SENDMSG6,
};
use tracing::debug;

use crate::engine::{
    error::{Error, Result, chain},
    model::ResolvedCgroup,
};

/// What one topmost target holds attached; dropping it detaches everything.
pub struct Links {
    _egress: CgroupSkbLink,
    _ingress: CgroupSkbLink,
    _sock: Vec<CgroupSockAddrLink>,
}

/// The sock_addr programs: reject on connect, DNS steering on connect/sendmsg, and the
/// resolver's address shown back on recvmsg/getpeername.
pub const SOCK_PROGRAMS: &[&str] = &[
    PROG_CONNECT4,
    PROG_CONNECT6,
    PROG_SENDMSG4,
    PROG_SENDMSG6,
    PROG_RECVMSG4,
    PROG_RECVMSG6,
    PROG_GETPEERNAME4,
    PROG_GETPEERNAME6,
];

pub fn attach(ebpf: &mut Ebpf, cg: &ResolvedCgroup) -> Result<Links> {
    let dir = File::open(cg.fs_path())
        .map_err(|e| Error::NotFound(format!("target: cgroup {} vanished: {e}", cg.path)))?;
    let unsupported = |name: &str, e: &(dyn std::error::Error + 'static)| {
        Error::FailedPrecondition(format!(
            "unsupported: attaching {name} to {}: {}",
            cg.path,
            chain(e)
        ))
    };
    let mut skb = |name: &str, ty: CgroupSkbAttachType| -> Result<CgroupSkbLink> {
        let prog: &mut CgroupSkb = ebpf
            .program_mut(name)
            .ok_or_else(|| Error::Internal(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| Error::internal(name, e))?;
        // aya attaches with a bpf_link here (kernel >= 5.7). Cgroup links are always
        // multi-attach (they never replace or block others' programs), and the kernel refuses
        // any flag on them, so the mode must be Single (flags 0), not AllowMultiple.
        let id =
            prog.attach(&dir, ty, CgroupAttachMode::Single).map_err(|e| unsupported(name, &e))?;
        prog.take_link(id).map_err(|e| Error::internal("taking link", e))
    };
    let egress = skb(PROG_EGRESS, CgroupSkbAttachType::Egress)?;
    let ingress = skb(PROG_INGRESS, CgroupSkbAttachType::Ingress)?;
    let mut sock = |name: &str| -> Result<CgroupSockAddrLink> {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or_else(|| Error::Internal(format!("program {name} missing")))?
            .try_into()
            .map_err(|e| Error::internal(name, e))?;
        let id = prog.attach(&dir, CgroupAttachMode::Single).map_err(|e| unsupported(name, &e))?;
        prog.take_link(id).map_err(|e| Error::internal("taking link", e))
    };
    let sock = SOCK_PROGRAMS.iter().map(|p| sock(p)).collect::<Result<Vec<_>>>()?;
    debug!(cgroup = %cg.path, "cgroup programs attached");
    Ok(Links { _egress: egress, _ingress: ingress, _sock: sock })
}
