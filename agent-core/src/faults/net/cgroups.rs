//! The cgroup programs attached to targeted cgroups (which ones where: attach.rs), through
//! bpf_links that detach when the agent's fds close, and the rules the cgroup_skb programs
//! keep with each of their attachments (`MAP_SKB_SETS`, cgroup storage: written here). Only the hook groups the target's rules
//! need are attached: an attached hook type costs every socket on the host something (the
//! kernel enables it host-wide, and unconnected UDP sendmsg then takes the socket lock).

use std::fs::File;

use aya::{
    Ebpf,
    maps::{CgroupStorageKey, MapData},
    programs::{
        CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSockAddr,
        cgroup_skb::CgroupSkbLink, cgroup_sock_addr::CgroupSockAddrLink,
    },
};
use faultline_common::net::{
    ACTION_DNS, ACTION_REJECT, CgroupRules, PROG_CONNECT4, PROG_CONNECT6, PROG_EGRESS,
    PROG_GETPEERNAME4, PROG_GETPEERNAME6, PROG_INGRESS, PROG_RECVMSG4, PROG_RECVMSG6,
    PROG_SENDMSG4, PROG_SENDMSG6,
};
use tracing::debug;

use crate::engine::{
    error::{Error, Result, chain},
    model::ResolvedCgroup,
};

/// `MAP_SKB_SETS`. aya marks BPF_MAP_TYPE_CGROUP_STORAGE deprecated for
/// BPF_MAP_TYPE_CGRP_STORAGE, which needs 6.2 (and is per cgroup, not per attachment).
#[allow(deprecated)]
pub type SkbSets = aya::maps::CgroupStorage<MapData, CgroupRules>;

/// enum bpf_attach_type: a cgroup storage key names the attachment's type.
const BPF_CGROUP_INET_INGRESS: u32 = 0;
const BPF_CGROUP_INET_EGRESS: u32 = 1;

/// cgroup_skb egress: the packet faults, and DNS (below).
pub const HOOK_SKB_EGRESS: u8 = 1;
/// connect4/connect6: reject, and DNS steering of connected UDP.
pub const HOOK_CONNECT: u8 = 2;
/// sendmsg, recvmsg, getpeername: DNS steering of unconnected UDP and the resolver's
/// address shown back.
pub const HOOK_DNS: u8 = 4;
/// cgroup_skb ingress: the packet faults.
pub const HOOK_SKB_INGRESS: u8 = 8;
pub const HOOK_SKB: u8 = HOOK_SKB_EGRESS | HOOK_SKB_INGRESS;
pub const HOOK_ALL: u8 = HOOK_SKB | HOOK_CONNECT | HOOK_DNS;

/// The hook groups a rule with this action is evaluated in.
pub fn hooks_for(action: u32) -> u8 {
    match action {
        ACTION_REJECT => HOOK_CONNECT,
        // The egress program notes each steered query's source address and port, which the
        // socket may get only when it sends (an unbound UDP socket's port is picked after the
        // sendmsg hook ran): the responder, which sees the query from that address, looks up
        // by it where the query was meant to go. Nothing DNS needs runs at ingress.
        ACTION_DNS => HOOK_SKB_EGRESS | HOOK_CONNECT | HOOK_DNS,
        _ => HOOK_SKB,
    }
}

pub const CONNECT_PROGRAMS: &[&str] = &[PROG_CONNECT4, PROG_CONNECT6];
pub const DNS_PROGRAMS: &[&str] = &[
    PROG_SENDMSG4,
    PROG_SENDMSG6,
    PROG_RECVMSG4,
    PROG_RECVMSG6,
    PROG_GETPEERNAME4,
    PROG_GETPEERNAME6,
];

/// Each hook group of `hooks` as a dry run names it: the attach type and the programs.
pub fn describe(hooks: u8) -> Vec<String> {
    let mut out = Vec::new();
    if hooks & HOOK_SKB_EGRESS != 0 {
        out.push(format!("cgroup_skb/egress program {PROG_EGRESS}"));
    }
    if hooks & HOOK_SKB_INGRESS != 0 {
        out.push(format!("cgroup_skb/ingress program {PROG_INGRESS}"));
    }
    if hooks & HOOK_CONNECT != 0 {
        out.push(format!("cgroup/connect4 and connect6 programs {}", CONNECT_PROGRAMS.join(", ")));
    }
    if hooks & HOOK_DNS != 0 {
        out.push(format!(
            "cgroup/sendmsg, recvmsg and getpeername programs {}",
            DNS_PROGRAMS.join(", ")
        ));
    }
    out
}

/// What one topmost target holds attached; dropping a group detaches it.
#[derive(Default)]
pub struct Links {
    skb_egress: Option<CgroupSkbLink>,
    skb_ingress: Option<CgroupSkbLink>,
    connect: Option<Vec<CgroupSockAddrLink>>,
    dns: Option<Vec<CgroupSockAddrLink>>,
}

impl Links {
    pub fn hooks(&self) -> u8 {
        (if self.skb_egress.is_some() { HOOK_SKB_EGRESS } else { 0 })
            | (if self.skb_ingress.is_some() { HOOK_SKB_INGRESS } else { 0 })
            | (if self.connect.is_some() { HOOK_CONNECT } else { 0 })
            | (if self.dns.is_some() { HOOK_DNS } else { 0 })
    }

    /// Attaches the groups of `want` not yet attached; on an error those already held stay.
    pub fn add(&mut self, ebpf: &mut Ebpf, cg: &ResolvedCgroup, want: u8) -> Result<()> {
        let missing = want & !self.hooks();
        if missing == 0 {
            return Ok(());
        }
        let dir = File::open(cg.fs_path())
            .map_err(|e| Error::NotFound(format!("target: cgroup {} vanished: {e}", cg.path)))?;
        if missing & HOOK_SKB_EGRESS != 0 {
            self.skb_egress =
                Some(attach_skb(ebpf, cg, &dir, PROG_EGRESS, CgroupSkbAttachType::Egress)?);
        }
        if missing & HOOK_SKB_INGRESS != 0 {
            self.skb_ingress =
                Some(attach_skb(ebpf, cg, &dir, PROG_INGRESS, CgroupSkbAttachType::Ingress)?);
        }
        if missing & HOOK_CONNECT != 0 {
            self.connect = Some(attach_sock(ebpf, cg, &dir, CONNECT_PROGRAMS)?);
        }
        if missing & HOOK_DNS != 0 {
            self.dns = Some(attach_sock(ebpf, cg, &dir, DNS_PROGRAMS)?);
        }
        debug!(cgroup = %cg.path, hooks = self.hooks(), "cgroup programs attached");
        Ok(())
    }

    /// Writes `set` to the storage of each cgroup_skb attachment held on cgroup `id`: what
    /// those programs read. An attachment's storage starts zeroed (no rules) until this runs.
    pub fn publish_skb(&self, sets: &mut SkbSets, id: u64, set: &CgroupRules) -> Result<()> {
        for (held, ty) in [
            (self.skb_egress.is_some(), BPF_CGROUP_INET_EGRESS),
            (self.skb_ingress.is_some(), BPF_CGROUP_INET_INGRESS),
        ] {
            if held {
                sets.insert(CgroupStorageKey::new(id, ty), set, 0)
                    .map_err(|e| Error::internal("publishing the cgroup_skb rules", e))?;
            }
        }
        Ok(())
    }

    /// Detaches the groups outside `want`.
    pub fn retain(&mut self, want: u8) {
        if want & HOOK_SKB_EGRESS == 0 {
            self.skb_egress = None;
        }
        if want & HOOK_SKB_INGRESS == 0 {
            self.skb_ingress = None;
        }
        if want & HOOK_CONNECT == 0 {
            self.connect = None;
        }
        if want & HOOK_DNS == 0 {
            self.dns = None;
        }
    }
}

fn unsupported(cg: &ResolvedCgroup, name: &str, e: &(dyn std::error::Error + 'static)) -> Error {
    Error::FailedPrecondition(format!("unsupported: attaching {name} to {}: {}", cg.path, chain(e)))
}

fn attach_skb(
    ebpf: &mut Ebpf,
    cg: &ResolvedCgroup,
    dir: &File,
    name: &str,
    ty: CgroupSkbAttachType,
) -> Result<CgroupSkbLink> {
    let prog: &mut CgroupSkb = ebpf
        .program_mut(name)
        .ok_or_else(|| Error::Internal(format!("program {name} missing")))?
        .try_into()
        .map_err(|e| Error::internal(name, e))?;
    // aya attaches with a bpf_link here (kernel >= 5.7). Cgroup links are always multi-attach
    // (they never replace or block others' programs), and the kernel refuses any flag on
    // them, so the mode must be Single (flags 0), not AllowMultiple.
    let id =
        prog.attach(dir, ty, CgroupAttachMode::Single).map_err(|e| unsupported(cg, name, &e))?;
    prog.take_link(id).map_err(|e| Error::internal("taking link", e))
}

fn attach_sock(
    ebpf: &mut Ebpf,
    cg: &ResolvedCgroup,
    dir: &File,
    names: &[&str],
) -> Result<Vec<CgroupSockAddrLink>> {
    names
        .iter()
        .map(|&name| {
            let prog: &mut CgroupSockAddr = ebpf
                .program_mut(name)
                .ok_or_else(|| Error::Internal(format!("program {name} missing")))?
                .try_into()
                .map_err(|e| Error::internal(name, e))?;
            // Loaded with its first attachment (not at the agent's start).
            if prog.fd().is_err() {
                prog.load().map_err(|e| {
                    Error::FailedPrecondition(format!(
                        "unsupported: cgroup sock_addr program {name} refused by the kernel: {}",
                        chain(&e)
                    ))
                })?;
            }
            let id = prog
                .attach(dir, CgroupAttachMode::Single)
                .map_err(|e| unsupported(cg, name, &e))?;
            prog.take_link(id).map_err(|e| Error::internal("taking link", e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use faultline_common::net::{ACTION_DNS, ACTION_DROP, ACTION_REJECT};

    use super::*;

    #[test]
    fn each_action_gets_only_the_hooks_it_is_evaluated_in() {
        assert_eq!(hooks_for(ACTION_DROP), HOOK_SKB_EGRESS | HOOK_SKB_INGRESS);
        assert_eq!(hooks_for(ACTION_REJECT), HOOK_CONNECT);
        // DNS: every sock_addr hook and the egress program that notes the steered queries;
        // no cgroup_skb ingress.
        assert_eq!(hooks_for(ACTION_DNS), HOOK_SKB_EGRESS | HOOK_CONNECT | HOOK_DNS);
        assert_eq!(hooks_for(ACTION_DNS) & HOOK_SKB_INGRESS, 0);
    }

    #[test]
    fn a_dry_run_names_each_hook_group_with_its_programs() {
        assert_eq!(
            describe(HOOK_SKB),
            [
                "cgroup_skb/egress program fl_skb_egress",
                "cgroup_skb/ingress program fl_skb_ingress"
            ]
        );
        let connect = describe(HOOK_CONNECT);
        assert_eq!(connect.len(), 1);
        assert!(
            connect[0].contains("fl_connect4") && connect[0].contains("fl_connect6"),
            "{connect:?}"
        );
        assert_eq!(describe(HOOK_ALL).len(), 4);
        assert!(describe(0).is_empty());
    }
}
