//! Trivial programs the capability probe loads and attaches to learn what the kernel allows.
//! Each one lets everything through. User-space owner: agent-core/src/caps.rs.

use aya_ebpf::{
    helpers::bpf_redirect,
    macros::{cgroup_sock_addr, classifier, lsm, map},
    maps::Array,
    programs::{LsmContext, SockAddrContext, TcContext},
};

/// Calls seen by fl_probe_lsm: an LSM program can attach on a kernel where the bpf LSM is
/// not active, and then never runs. Only a hit proves the hook works.
#[map(name = "FL_PROBE_HITS")]
static FL_PROBE_HITS: Array<u64> = Array::with_max_entries(1, 0);

#[cgroup_sock_addr(connect4)]
pub fn fl_probe_connect4(_ctx: SockAddrContext) -> i32 {
    1
}

#[classifier]
pub fn fl_probe_tc(_ctx: TcContext) -> i32 {
    // TC_ACT_UNSPEC: continue with the next program / default action.
    -1
}

/// The ifb fl_probe_redirect sends packets to (index 0).
#[map(name = "FL_PROBE_ARG")]
static FL_PROBE_ARG: Array<u32> = Array::with_max_entries(1, 0);

/// Redirects every received packet to the ifb in FL_PROBE_ARG, and lets it pass when it
/// comes back: whether it does is what the probe learns (kernels before 6.4 drop it).
#[classifier]
pub fn fl_probe_redirect(ctx: TcContext) -> i32 {
    let ifb = FL_PROBE_ARG.get(0).copied().unwrap_or(0);
    // SAFETY: reading our own context.
    if ifb == 0 || unsafe { (*ctx.skb.skb).ingress_ifindex } == ifb {
        return -1;
    }
    // SAFETY: helper with scalar arguments.
    unsafe { bpf_redirect(ifb, 0) as i32 }
}

#[lsm(hook = "file_open")]
pub fn fl_probe_lsm(_ctx: LsmContext) -> i32 {
    if let Some(hits) = FL_PROBE_HITS.get_ptr_mut(0) {
        // SAFETY: a counter in our own map; a lost increment does not matter.
        unsafe { *hits += 1 };
    }
    0
}
