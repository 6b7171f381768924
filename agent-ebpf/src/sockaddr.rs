//! cgroup sock_addr programs. connect4/6: connect() to matching destinations fails at once
//! with the rule's errno (ACTION_REJECT). connect4/6 and sendmsg4/6: UDP to a resolver that
//! a DNS rule matches is steered to the agent's responder (ACTION_DNS); recvmsg4/6 and
//! getpeername4/6 then show the resolver's address, not the responder's. Shares the rule maps
//! of net.rs. User-space owner: agent-core/src/faults/net.

use aya_ebpf::{
    helpers::{bpf_get_current_ancestor_cgroup_id, bpf_get_socket_cookie, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
};
use faultline_common::net::{
    ACTION_DNS, ACTION_REJECT, DIR_EGRESS, DIR_INGRESS, DnsOrig, FAMILY_V4, FAMILY_V6,
    MAX_RULES_PER_CGROUP, PROTO_UDP, SlotFilter,
};

use crate::{
    dlog::dlog,
    levels,
    maps::{
        FL_DNS_ORIG, FL_HAS_SET_RETVAL, FL_NET_CGROUPS, FL_NET_CONFIG, FL_NET_COUNTERS,
        FL_NET_RULES, FL_NET_STATE,
    },
    net::{bit, chance, expired, matches},
    packet::{Packet, proto_port},
};

const ALLOW: i32 = 1;
const REJECT: i32 = 0;

#[cgroup_sock_addr(connect4)]
pub fn fl_connect4(ctx: SockAddrContext) -> i32 {
    connect(&ctx, false)
}

#[cgroup_sock_addr(connect6)]
pub fn fl_connect6(ctx: SockAddrContext) -> i32 {
    connect(&ctx, true)
}

#[cgroup_sock_addr(sendmsg4)]
pub fn fl_sendmsg4(ctx: SockAddrContext) -> i32 {
    sendmsg(&ctx, false)
}

#[cgroup_sock_addr(sendmsg6)]
pub fn fl_sendmsg6(ctx: SockAddrContext) -> i32 {
    sendmsg(&ctx, true)
}

#[cgroup_sock_addr(recvmsg4)]
pub fn fl_recvmsg4(ctx: SockAddrContext) -> i32 {
    unsteer(&ctx, false, true)
}

#[cgroup_sock_addr(recvmsg6)]
pub fn fl_recvmsg6(ctx: SockAddrContext) -> i32 {
    unsteer(&ctx, true, true)
}

#[cgroup_sock_addr(getpeername4)]
pub fn fl_getpeername4(ctx: SockAddrContext) -> i32 {
    unsteer(&ctx, false, false)
}

#[cgroup_sock_addr(getpeername6)]
pub fn fl_getpeername6(ctx: SockAddrContext) -> i32 {
    unsteer(&ctx, true, false)
}

const NO_SLOT: u32 = u32::MAX;

/// 127.0.0.1 and ::1 as they sit in user_ip4 / user_ip6 (network order in memory).
const LOOPBACK4: u32 = u32::from_ne_bytes([127, 0, 0, 1]);
const LOOPBACK6_LAST: u32 = u32::from_ne_bytes([0, 0, 0, 1]);

/// Points the socket at the responder and remembers where it meant to go.
#[inline(always)]
fn steer(ctx: &SockAddrContext, v6: bool, slot: u32, hi: u64, lo: u64, meta: u64) {
    let Some(rule) = FL_NET_RULES.get(slot) else { return };
    let mut addr = [0u8; 16];
    addr[..8].copy_from_slice(&hi.to_ne_bytes());
    addr[8..].copy_from_slice(&lo.to_ne_bytes());
    let orig = DnsOrig { addr, port: meta as u16, family: (meta >> 48) as u8, _pad: 0, slot };
    // SAFETY: helper on our own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    if FL_DNS_ORIG.insert(cookie, orig, 0).is_err() {
        return;
    }
    let sa = ctx.sock_addr;
    // SAFETY: writing our own context, fields valid for this attach type.
    unsafe {
        if v6 {
            (*sa).user_ip6 = [0, 0, 0, LOOPBACK6_LAST];
            (*sa).user_port = ((rule.redirect_port6 as u16).to_be()) as u32;
        } else {
            (*sa).user_ip4 = LOOPBACK4;
            (*sa).user_port = ((rule.redirect_port4 as u16).to_be()) as u32;
        }
    }
    dlog!(
        "sock_addr: rule {} matched: DNS to port {} steered to the responder (v6 {})",
        slot,
        meta as u16,
        v6 as u8
    );
}

#[inline(always)]
fn sendmsg(ctx: &SockAddrContext, v6: bool) -> i32 {
    let (hi, lo, meta) = destination(ctx, v6);
    if let Some(slot) = walk(|slot, filter| {
        admits(filter, bit(ACTION_DNS), meta) && fl_dns_rule(filter, slot, hi, lo, meta) != 0
    }) {
        steer(ctx, v6, slot, hi, lo, meta);
    }
    ALLOW
}

/// recvmsg (the source of a datagram) and getpeername (a connected peer): a steered socket
/// sees the resolver it asked, not the responder that answered.
#[inline(always)]
fn unsteer(ctx: &SockAddrContext, v6: bool, only_from_responder: bool) -> i32 {
    // SAFETY: helper on our own context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    // SAFETY: only read.
    let Some(orig) = (unsafe { FL_DNS_ORIG.get(cookie) }) else {
        return ALLOW;
    };
    let sa = ctx.sock_addr;
    // SAFETY: reading and writing our own context, fields valid for this attach type.
    unsafe {
        if only_from_responder {
            let Some(rule) = FL_NET_RULES.get(orig.slot) else { return ALLOW };
            let port = u16::from_be((*sa).user_port as u16) as u32;
            let from_responder = if v6 {
                (*sa).user_ip6[3] == LOOPBACK6_LAST && port == rule.redirect_port6
            } else {
                (*sa).user_ip4 == LOOPBACK4 && port == rule.redirect_port4
            };
            if !from_responder {
                return ALLOW;
            }
        }
        if v6 && orig.family == FAMILY_V6 {
            let mut w = [0u32; 4];
            for (i, x) in w.iter_mut().enumerate() {
                *x = u32::from_ne_bytes([
                    orig.addr[i * 4],
                    orig.addr[i * 4 + 1],
                    orig.addr[i * 4 + 2],
                    orig.addr[i * 4 + 3],
                ]);
            }
            (*sa).user_ip6 = w;
        } else if !v6 && orig.family == FAMILY_V4 {
            (*sa).user_ip4 =
                u32::from_ne_bytes([orig.addr[0], orig.addr[1], orig.addr[2], orig.addr[3]]);
        } else {
            return ALLOW;
        }
        (*sa).user_port = (orig.port.to_be()) as u32;
    }
    ALLOW
}

/// Calls `f(slot, filter)` on each rule slot of the current task's targeted cgroups, with the
/// slot's `SlotFilter` bits (the rule functions test them first), until it returns true;
/// returns that slot.
#[inline(always)]
fn walk(mut f: impl FnMut(u32, u64) -> bool) -> Option<u32> {
    let cfg = FL_NET_CONFIG.get(0)?;
    levels::find(
        cfg.levels,
        // SAFETY: helper with a scalar argument; runs in the calling task's context.
        |level| unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) },
        |id| {
            // SAFETY: only read; user space replaces it atomically.
            let set = unsafe { FL_NET_CGROUPS.get(id) }?;
            for i in 0..MAX_RULES_PER_CGROUP {
                if i as u32 >= set.count {
                    break;
                }
                if f(set.slots[i], set.filters[i].bits()) {
                    return Some(set.slots[i]);
                }
            }
            None
        },
    )
}

/// Whether the slot's filter in brief admits a call for one of `actions` to this
/// destination (`meta`, see `Packet::words`). A call has no direction: any rule's admits it.
#[inline(always)]
fn admits(filter: u64, actions: u32, meta: u64) -> bool {
    let (protocol, port) = proto_port(meta);
    SlotFilter::from_bits(filter).admits(actions, DIR_EGRESS | DIR_INGRESS, protocol, port)
}

/// The destination as the rule functions take it (`Packet::words`). Each program reads only
/// the context fields its attach type allows (user_ip4 or user_ip6).
#[inline(always)]
fn destination(ctx: &SockAddrContext, v6: bool) -> (u64, u64, u64) {
    let sa = ctx.sock_addr;
    let mut remote = [0u8; 16];
    // SAFETY: reading our own context, only fields valid for this attach type.
    let (port, protocol) = unsafe { ((*sa).user_port, (*sa).protocol) };
    let family = if v6 {
        // SAFETY: as above (connect6).
        let ip6 = unsafe { (*sa).user_ip6 };
        for (i, w) in ip6.iter().enumerate() {
            remote[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        FAMILY_V6
    } else {
        // SAFETY: as above (connect4). Stored in network order: the bytes are the address.
        let ip4 = unsafe { (*sa).user_ip4 };
        remote[..4].copy_from_slice(&ip4.to_ne_bytes());
        FAMILY_V4
    };
    let remote_port = u16::from_be(port as u16);
    Packet { family, protocol, remote, remote_port, l4: 0 }.words()
}

#[inline(always)]
fn connect(ctx: &SockAddrContext, v6: bool) -> i32 {
    let (hi, lo, meta) = destination(ctx, v6);
    let mut errno = 0;
    // A sentinel, not an Option: 5.10's verifier cannot follow LLVM's split of an Option
    // into a flag and a conditionally written stack slot.
    let mut dns = NO_SLOT;
    // Each slot's filter in brief first, inline: a call only for a slot it admits, to the
    // rule function of its action.
    walk(|slot, filter| {
        if admits(filter, bit(ACTION_REJECT), meta) {
            errno = fl_sock_rule(filter, slot, hi, lo, meta);
            return errno > 0;
        }
        if dns == NO_SLOT
            && admits(filter, bit(ACTION_DNS), meta)
            && fl_dns_rule(filter, slot, hi, lo, meta) != 0
        {
            dns = slot;
        }
        false
    });
    if errno > 0 {
        // SAFETY: reading our own .rodata, frozen by the loader.
        if unsafe { core::ptr::read_volatile(&FL_HAS_SET_RETVAL) } != 0 {
            // SAFETY: helper with a scalar argument.
            unsafe { bpf_set_retval(-errno) };
        }
        return REJECT;
    }
    if dns != NO_SLOT {
        // A connected UDP socket (glibc's resolver connects, then sends).
        steer(ctx, v6, dns, hi, lo, meta);
    }
    ALLOW
}

/// Whether DNS rule `slot` steers this UDP destination (see `destination`). Global and never
/// inlined for the same reason as `fl_net_rule`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fl_dns_rule(filter: u64, slot: u32, hi: u64, lo: u64, meta: u64) -> i32 {
    if !admits(filter, bit(ACTION_DNS), meta) {
        return 0;
    }
    let Some(rule) = FL_NET_RULES.get(slot) else {
        return 0;
    };
    if rule.action != ACTION_DNS || ((meta >> 16) & 0xff) as u32 != PROTO_UDP {
        return 0;
    }
    let pkt = Packet::from_words(hi, lo, meta);
    if !matches(rule, slot, &pkt) || expired(rule) {
        return 0;
    }
    if let Some(c) = FL_NET_COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { (*c).matched += 1 };
    }
    1
}

/// One reject rule against one connect() (see `destination` for the arguments): returns
/// the errno to fail with, or 0. Global and never inlined for the same reason as
/// `fl_net_rule`, and with scalar arguments only, so it is valid for connect4 and connect6.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fl_sock_rule(filter: u64, slot: u32, hi: u64, lo: u64, meta: u64) -> i32 {
    if !admits(filter, bit(ACTION_REJECT), meta) {
        return 0;
    }
    let Some(rule) = FL_NET_RULES.get(slot) else {
        return 0;
    };
    if rule.action != ACTION_REJECT {
        return 0;
    }
    let pkt = Packet::from_words(hi, lo, meta);
    if !matches(rule, slot, &pkt) || expired(rule) {
        return 0;
    }
    let Some(st) = FL_NET_STATE.get_ptr_mut(slot) else {
        return 0;
    };
    // SAFETY: the rule's own state.
    let st = unsafe { &mut *st };
    let counters = FL_NET_COUNTERS.get_ptr_mut(slot);
    if let Some(c) = counters {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { (*c).matched += 1 };
    }
    if !chance(rule, st, rule.threshold) {
        return 0;
    }
    if let Some(c) = counters {
        // SAFETY: as above.
        unsafe { (*c).dropped += 1 };
    }
    // Bounded for the verifier: an errno is 1..=4095 (0: a rule being cleared, see MAP_RULES).
    if rule.errno == 0 {
        return 0;
    }
    let errno = if rule.errno > 4095 { 1 } else { rule.errno as i32 };
    dlog!(
        "sock_addr: rule {} matched: connect to port {} rejected with errno {}",
        slot,
        meta as u16,
        errno
    );
    errno
}
