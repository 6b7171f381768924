//! cgroup_skb ingress/egress: packet faults for targeted cgroups.
//! User-space owner of these maps: agent-core/src/faults/net.
//!
//! One attachment per targeted cgroup serves every experiment on it: the program reads its
//! attach point's set from the attachment's cgroup storage (`FL_NET_SKB_SETS`), takes the
//! slots whose rules may match the packet's direction and port bucket, and tests each one's
//! filter in brief (`SlotFilter`) before its rule.

use aya_ebpf::{
    bindings::__sk_buff,
    helpers::{
        bpf_get_prandom_u32, bpf_get_socket_cookie, bpf_ktime_get_coarse_ns, bpf_ktime_get_ns,
        bpf_skb_set_tstamp,
    },
    macros::cgroup_skb,
    maps::lpm_trie::Key,
    programs::SkBuffContext,
};
use faultline_common::net::{
    ACTION_DELAY, ACTION_DROP, ACTION_RATE, CIDR_INCLUDE, CIDR_KEY_HEADER_BITS, CidrKey,
    DIR_EGRESS, DIR_INGRESS, DIST_NORMAL, DnsClient, FAMILY_V4, MAX_RULES_PER_CGROUP, MODEL_GE,
    MODEL_NTH, NetCounters, NetRule, PORT_KEY_HEADER_BITS, PROB_ONE, PROTO_ANY, PROTO_ICMP,
    PROTO_ICMPV6, PROTO_UDP, PortKey, RULE_F_CIDRS, RULE_F_PORTS, RULE_F_SEEDED, RuleState,
    dir_index, port_bucket,
};

use crate::{
    dlog::{dir_name, dlog},
    maps::{
        FL_DNS_CLIENTS, FL_DNS_ORIG, FL_HAS_COARSE_NS, FL_HAS_INGRESS_EDT, FL_NET_CIDRS,
        FL_NET_CONFIG, FL_NET_COUNTERS, FL_NET_PORTS, FL_NET_RULES, FL_NET_SKB_SETS, FL_NET_STATE,
    },
    normal,
    packet::{Packet, parse, proto_port, slot_of, with_slot},
    sockcg::fl_sock_note,
};

/// BPF_SKB_TSTAMP_DELIVERY_MONO (BPF_SKB_CLOCK_MONOTONIC since 6.11): the time is a
/// departure time on the monotonic clock, which a redirect from ingress keeps.
const SKB_TSTAMP_MONO: u32 = 1;

/// An ingress tstamp further ahead than this is a receive time on the wall clock, not a
/// departure time an earlier rule set.
const MAX_INGRESS_HOLD_NS: u64 = 3_600_000_000_000;

const PASS: i32 = 1;
const DROP: i32 = 0;
/// Egress only: drop, and report congestion (NET_XMIT_CN path) rather than EPERM, so a UDP
/// sender sees a silent loss as on a real network instead of a send error.
const DROP_CN: i32 = 2;

#[cgroup_skb(egress)]
pub fn fl_skb_egress(ctx: SkBuffContext) -> i32 {
    match run(&ctx, DIR_EGRESS) {
        Ok(r) | Err(r) => r,
    }
}

#[cgroup_skb(ingress)]
pub fn fl_skb_ingress(ctx: SkBuffContext) -> i32 {
    match run(&ctx, DIR_INGRESS) {
        Ok(r) | Err(r) => r,
    }
}

#[inline(always)]
fn run(ctx: &SkBuffContext, dir: u32) -> Result<i32, i32> {
    let drop = if dir == DIR_EGRESS { DROP_CN } else { DROP };
    let Some(cfg) = FL_NET_CONFIG.get(0) else {
        return Ok(PASS);
    };
    if dir == DIR_EGRESS && cfg.dns != 0 {
        fl_dns_note(ctx.skb.skb);
    }
    if cfg.ingress != 0 {
        fl_sock_note(ctx.skb.skb);
    }
    // The rules of the cgroup this program is attached to, kept with the attachment: a
    // packet of a nested target runs its own cgroup's program and each targeted ancestor's.
    // SAFETY: the helper returns the attachment's storage, never null; user space replaces
    // the value whole (RCU), so it is only read.
    let set = unsafe { &*FL_NET_SKB_SETS.get_ptr_mut() };
    let di = dir_index(dir);
    if set.any[di] == 0 {
        return Ok(PASS);
    }
    // Parsed once; the rule function gets it as scalars.
    let Some(pkt) = parse(ctx, dir == DIR_EGRESS, 0) else {
        return Ok(PASS);
    };
    let (hi, lo, meta) = pkt.words();
    let (protocol, port) = proto_port(meta);
    let actions = skb_actions(dir);
    // Only the slots whose rules may match this direction and port: each one's filter in
    // brief, then the rule function for those it admits.
    let candidates = u32::from(set.candidates[di][port_bucket(port)]);
    for i in 0..MAX_RULES_PER_CGROUP {
        // (Not trailing_zeros: its table lookup loses the verifier's bound on i.)
        let rest = candidates >> i;
        if rest == 0 {
            break;
        }
        if rest & 1 == 0 {
            continue;
        }
        if !set.filters[i].admits(actions, dir, protocol, port) {
            continue;
        }
        if fl_net_rule(ctx.skb.skb, hi, lo, with_slot(meta, set.slots[i], dir)) != 0 {
            return Ok(drop);
        }
    }
    Ok(PASS)
}

/// What the cgroup_skb programs act on: delay and pacing at egress only (ingress delay is the
/// device programs' job).
#[inline(always)]
fn skb_actions(dir: u32) -> u32 {
    if dir == DIR_EGRESS {
        bit(ACTION_DROP) | bit(ACTION_DELAY) | bit(ACTION_RATE)
    } else {
        bit(ACTION_DROP)
    }
}

/// Evaluates one rule for one packet (the packet as `Packet::words`, with the slot and the
/// direction added by `with_slot`): returns 1 to drop; a delay or pacing rule moves the
/// packet's departure time (`skb->tstamp`, for fq on the device) instead.
///
/// A global (exported, never inlined) function: the verifier checks it once on its own
/// instead of once per loop iteration of every caller, which keeps verification linear in
/// the number of rules a packet may meet. It takes only the context and scalars (what
/// global functions may take on 5.10); no per-CPU scratch that a softirq on the same CPU
/// could overwrite mid-run.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fl_net_rule(skb: *mut __sk_buff, hi: u64, lo: u64, meta: u64) -> i32 {
    let (slot, dir) = slot_of(meta);
    let actions = skb_actions(dir);
    let pkt = Packet::from_words(hi, lo, meta);
    let ctx = SkBuffContext::new(skb);
    let Some(m) = applicable(slot, dir, pkt, actions) else {
        return 0;
    };
    if m.rule.action == ACTION_DROP {
        let dropped = drop_verdict(m.rule, m.st, m.counters);
        dlog!("cgroup_skb {}: rule {} matched: loss, dropped {}", dir_name(dir), slot, dropped);
        return dropped;
    }
    if chance(m.rule, m.st, m.rule.threshold) {
        depart(skb, m.rule, m.st, ctx.len(), m.counters, false);
        let what = if m.rule.action == ACTION_RATE { "rate" } else { "delay" };
        dlog!("cgroup_skb {}: rule {} matched: {}, departure moved", dir_name(dir), slot, what);
    }
    0
}

/// A query a DNS rule steered, leaving for the responder: remembers where its socket meant to
/// send, by the source address and port the responder will see. Global like `fl_net_rule`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fl_dns_note(skb: *mut __sk_buff) -> i32 {
    // SAFETY: helper on our own context.
    let cookie = unsafe { bpf_get_socket_cookie(skb.cast()) };
    // SAFETY: only read.
    let Some(orig) = (unsafe { FL_DNS_ORIG.get(cookie) }) else {
        return 0;
    };
    let orig = *orig;
    let ctx = SkBuffContext::new(skb);
    // Parsed "as ingress", the remote end is the packet's source: the client.
    let Some(src) = parse(&ctx, false, 0) else {
        return 0;
    };
    if src.protocol != PROTO_UDP || src.remote_port == 0 {
        return 0;
    }
    let client = DnsClient { addr: src.remote, port: src.remote_port, family: src.family, _pad: 0 };
    let _ = FL_DNS_CLIENTS.insert(client, orig, 0);
    1
}

pub const fn bit(action: u32) -> u32 {
    1 << action
}

/// A rule that applies to a packet, with what evaluating it needs.
pub struct Match<'a> {
    pub rule: &'a NetRule,
    pub st: &'a mut RuleState,
    pub counters: Option<*mut NetCounters>,
    pub pkt: Packet,
}

/// Looks up rule `slot` and checks it against the packet: for this direction, one of
/// `actions` (a mask of `bit(ACTION_*)`), matching the filter, then live. Counts the match.
/// The clock is read only for a rule the packet matched.
#[inline(always)]
pub fn applicable<'a>(slot: u32, dir: u32, pkt: Packet, actions: u32) -> Option<Match<'a>> {
    // An array: the lookup is a bounds check the verifier inlines. User space writes a rule
    // only while no published set holds its slot (see MAP_RULES).
    let rule = FL_NET_RULES.get(slot)?;
    if rule.directions & dir == 0
        || rule.action > 31
        || actions & bit(rule.action) == 0
        || !matches(rule, slot, &pkt)
        || expired(rule)
    {
        return None;
    }
    // SAFETY: the rule's own state; see RuleState on concurrent updates.
    let st = unsafe { &mut *FL_NET_STATE.get_ptr_mut(slot)? };
    let counters = FL_NET_COUNTERS.get_ptr_mut(slot);
    if let Some(c) = counters {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { (*c).matched += 1 };
    }
    Some(Match { rule, st, counters, pkt })
}

/// Whether `rule`'s deadline has passed: on the coarse clock where the kernel has it for
/// these programs (FL_HAS_COARSE_NS: the last tick's time, no clock-source read), else on
/// the precise one. The verifier sees the other call as dead code.
#[inline(always)]
pub fn expired(rule: &NetRule) -> bool {
    // SAFETY: helpers without arguments; the flag is our own frozen .rodata.
    let now = unsafe {
        if core::ptr::read_volatile(&FL_HAS_COARSE_NS) != 0 {
            bpf_ktime_get_coarse_ns()
        } else {
            bpf_ktime_get_ns()
        }
    };
    rule.expires_ns <= now
}

/// 1 when a loss rule drops the packet (and counts it), else 0.
#[inline(always)]
pub fn drop_verdict(rule: &NetRule, st: &mut RuleState, counters: Option<*mut NetCounters>) -> i32 {
    if !drops(rule, st) {
        return 0;
    }
    if let Some(c) = counters {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { (*c).dropped += 1 };
    }
    1
}

/// Moves the packet's departure time for a delay or pacing rule.
#[inline(always)]
pub fn depart(
    skb: *mut __sk_buff,
    rule: &NetRule,
    st: &mut RuleState,
    len: u32,
    counters: Option<*mut NetCounters>,
    ingress: bool,
) {
    // The precise clock: departure times are what fq releases packets by.
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // From the later of now and a departure time already set (TCP pacing, earlier rules).
    // At ingress tstamp is the receive time (possibly wall clock) unless a rule set it.
    // SAFETY: reading our own context.
    let queued = unsafe { (*skb).tstamp };
    let mut t =
        if queued > now && (!ingress || queued < now + MAX_INGRESS_HOLD_NS) { queued } else { now };
    if rule.action == ACTION_RATE && rule.rate_bps > 0 {
        let cost = (len as u64) * 8_000_000_000 / rule.rate_bps;
        let floor = now.saturating_sub(rule.burst_ns);
        let start = if st.t_next > floor { st.t_next } else { floor };
        st.t_next = start + cost;
        if start > t {
            t = start;
        }
    } else if rule.action == ACTION_DELAY {
        t += delay(rule, st);
    }
    if ingress {
        // SAFETY: the call is only live where the kernel has the helper (FL_HAS_INGRESS_EDT);
        // a plain write would be cleared by the redirect.
        unsafe {
            if core::ptr::read_volatile(&FL_HAS_INGRESS_EDT) != 0 {
                bpf_skb_set_tstamp(skb, t, SKB_TSTAMP_MONO);
            }
        }
    } else {
        // SAFETY: writing our own context; fq on the device releases the packet then.
        unsafe { (*skb).tstamp = t };
    }
    if let Some(c) = counters {
        // SAFETY: per-CPU value, no concurrent writer on this CPU.
        unsafe { (*c).delayed += 1 };
    }
}

/// A uniform 32-bit draw: the rule's own generator when seeded, else the kernel's.
#[inline(always)]
pub fn draw(rule: &NetRule, st: &mut RuleState) -> u64 {
    if rule.flags & RULE_F_SEEDED != 0 {
        // xorshift64*
        let mut x = st.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        st.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32
    } else {
        // SAFETY: helper without arguments.
        (unsafe { bpf_get_prandom_u32() }) as u64
    }
}

#[inline(always)]
pub fn chance(rule: &NetRule, st: &mut RuleState, threshold: u64) -> bool {
    if threshold >= PROB_ONE {
        return true;
    }
    draw(rule, st) < threshold
}

#[inline(always)]
fn drops(rule: &NetRule, st: &mut RuleState) -> bool {
    if rule.model == MODEL_NTH {
        st.count += 1;
        return rule.every_nth != 0 && st.count.is_multiple_of(rule.every_nth as u64);
    }
    if rule.model == MODEL_GE {
        // Move between the states first, then the state decides.
        if st.bad != 0 {
            if chance(rule, st, rule.ge_leave) {
                st.bad = 0;
            }
        } else if chance(rule, st, rule.ge_enter) {
            st.bad = 1;
        }
        return st.bad != 0;
    }
    chance(rule, st, rule.threshold)
}

/// Latency plus jitter for one packet, never below zero.
#[inline(always)]
fn delay(rule: &NetRule, st: &mut RuleState) -> u64 {
    if rule.jitter_ns == 0 {
        return rule.delay_ns;
    }
    let mut r = draw(rule, st);
    if rule.correlation > 0 {
        // netem-style: blend with the previous draw.
        r = (r * (PROB_ONE - rule.correlation) + st.last * rule.correlation) >> 32;
        st.last = r;
    }
    let offset: i64 = if rule.distribution == DIST_NORMAL {
        let q = normal::QUANTILES[(r >> 24) as usize & 0xff] as i64;
        q * rule.jitter_ns as i64 / normal::SCALE
    } else {
        ((r * 2 * rule.jitter_ns) >> 32) as i64 - rule.jitter_ns as i64
    };
    let d = rule.delay_ns as i64 + offset;
    if d < 0 { 0 } else { d as u64 }
}

#[inline(always)]
pub fn matches(rule: &NetRule, slot: u32, p: &Packet) -> bool {
    if rule.protocol != PROTO_ANY
        && rule.protocol != p.protocol
        && !(rule.protocol == PROTO_ICMP && p.protocol == PROTO_ICMPV6)
    {
        return false;
    }
    let slot_be = slot.to_be_bytes();
    if rule.flags & RULE_F_PORTS != 0 {
        if p.remote_port == 0 {
            return false;
        }
        let key = Key::new(
            PORT_KEY_HEADER_BITS + 16,
            PortKey { slot: slot_be, port: p.remote_port.to_be_bytes(), _pad: [0; 2] },
        );
        if FL_NET_PORTS.get(&key).is_none() {
            return false;
        }
    }
    if rule.flags & RULE_F_CIDRS != 0 {
        let bits = if p.family == FAMILY_V4 { 32 } else { 128 };
        let key = Key::new(
            CIDR_KEY_HEADER_BITS + bits,
            CidrKey { slot: slot_be, family: p.family, addr: p.remote, _pad: [0; 3] },
        );
        match FL_NET_CIDRS.get(&key) {
            Some(v) if *v == CIDR_INCLUDE => {}
            _ => return false,
        }
    }
    true
}
