//! tc programs on devices (tcx where the kernel has it, clsact + cls_bpf before): every
//! action for interface targets, and for cgroup targets what a cgroup_skb program cannot do
//! (change or copy a packet). User-space owner: agent-core/src/faults/net.

use aya_ebpf::{
    bindings::{__sk_buff, BPF_F_INGRESS, TC_ACT_SHOT, bpf_sock_tuple},
    helpers::{
        bpf_clone_redirect, bpf_ktime_get_ns, bpf_redirect, bpf_sk_lookup_tcp, bpf_sk_lookup_udp,
        bpf_sk_release, bpf_skb_ancestor_cgroup_id,
    },
    macros::classifier,
    programs::{SkBuffContext, TcContext},
};
use faultline_common::net::{
    ACTION_CORRUPT, ACTION_DELAY, ACTION_DROP, ACTION_DUPLICATE, ACTION_RATE, DEV_F_NETLINK,
    DIR_EGRESS, DIR_INGRESS, DUP_MARK, FAMILY_V4, HEARTBEAT_TIMEOUT_NS, IFACE_KEY,
    MAX_RULES_PER_CGROUP, PROTO_TCP, PROTO_UDP,
};

use crate::{
    dlog::{dir_name, dlog},
    levels,
    maps::{FL_HAS_INGRESS_EDT, FL_HEARTBEAT, FL_NET_CGROUPS, FL_NET_CONFIG, FL_TC_DEVS},
    net::{applicable, bit, chance, depart, draw, drop_verdict},
    packet::{parse, payload},
    sockcg::noted_cgroup,
};

/// Continue with the next program, or the device's default action.
const NEXT: i32 = -1;
const SHOT: i32 = TC_ACT_SHOT;
/// Flag in `fl_tc_rule`'s direction argument: the rule belongs to an interface target, so
/// every action applies (not only those a cgroup_skb program cannot do).
const ALL_ACTIONS: u32 = 0x100;
/// Flag: the device has an ifb, so ingress delay and pacing can act.
const HAS_IFB: u32 = 0x200;
/// Flag: a cgroup target's rule met at ingress: only delay and pacing (the rest is done by
/// the cgroup programs).
const INGRESS_EDT: u32 = 0x400;
/// `fl_tc_rule` verdicts.
const VERDICT_DROP: i32 = 1;
const VERDICT_REDIRECT: i32 = 2;

#[classifier]
pub fn fl_tc_egress(ctx: TcContext) -> i32 {
    run(&ctx, DIR_EGRESS)
}

#[classifier]
pub fn fl_tc_ingress(ctx: TcContext) -> i32 {
    run(&ctx, DIR_INGRESS)
}

#[inline(always)]
fn run(ctx: &TcContext, dir: u32) -> i32 {
    let skb = ctx.skb.skb;
    // SAFETY: reading and writing our own context.
    unsafe {
        let mark = (*skb).mark;
        if mark & DUP_MARK != 0 {
            // The copy a duplicate rule sent: let it through once, untouched.
            (*skb).mark = mark & !DUP_MARK;
            return NEXT;
        }
    }
    // SAFETY: reading our own context.
    let ifindex = unsafe { (*skb).ifindex };
    // SAFETY: only read.
    let Some(dev) = (unsafe { FL_TC_DEVS.get(ifindex) }) else {
        return NEXT;
    };
    if dev.flags & DEV_F_NETLINK != 0 {
        // Netlink-attached programs outlive the agent: act only while it is alive.
        let beat = FL_HEARTBEAT.get(0).copied().unwrap_or(0);
        // SAFETY: helper without arguments.
        if unsafe { bpf_ktime_get_ns() }.saturating_sub(beat) > HEARTBEAT_TIMEOUT_NS {
            return NEXT;
        }
    }
    if dir == DIR_INGRESS && dev.ifb != 0 {
        // SAFETY: reading our own context.
        if unsafe { (*skb).ingress_ifindex } == dev.ifb {
            // Back from the ifb after its delay: already handled.
            return NEXT;
        }
    }
    let l3 = dev.l2_len;
    let ifb = if dev.ifb != 0 { HAS_IFB } else { 0 };
    let mut redirect = false;
    // SAFETY: only read; user space replaces it atomically.
    if let Some(set) = unsafe { FL_NET_CGROUPS.get(IFACE_KEY | ifindex as u64) } {
        for i in 0..MAX_RULES_PER_CGROUP {
            if i as u32 >= set.count {
                break;
            }
            match fl_tc_rule(skb, set.slots[i], dir | ALL_ACTIONS | ifb, l3) {
                VERDICT_DROP => return SHOT,
                VERDICT_REDIRECT => redirect = true,
                _ => {}
            }
        }
    }
    let Some(cfg) = FL_NET_CONFIG.get(0) else {
        return NEXT;
    };
    let ingress_edt = dir == DIR_INGRESS && cfg.ingress != 0 && dev.ifb != 0;
    if dir == DIR_EGRESS || ingress_edt {
        let id_of = |level: u32| {
            if dir == DIR_EGRESS {
                // SAFETY: helper call on the program's own context.
                unsafe { bpf_skb_ancestor_cgroup_id(skb, level as i32) }
            } else {
                // Ingress has no socket yet: find the one the packet is for.
                fl_tc_socket_cgroup(skb, l3, level)
            }
        };
        levels::find(cfg.levels, id_of, |id| -> Option<()> {
            // SAFETY: only read.
            let set = unsafe { FL_NET_CGROUPS.get(id) }?;
            for i in 0..MAX_RULES_PER_CGROUP {
                if i as u32 >= set.count {
                    break;
                }
                let flags = if dir == DIR_EGRESS { dir } else { dir | INGRESS_EDT | ifb };
                if fl_tc_rule(skb, set.slots[i], flags, l3) == VERDICT_REDIRECT {
                    redirect = true;
                }
            }
            None
        });
    }
    if redirect {
        // The ifb's fq releases the packet at the departure time set, then the ifb hands it
        // back to this device's receive path.
        // SAFETY: helper with scalar arguments.
        return unsafe { bpf_redirect(dev.ifb, 0) } as i32;
    }
    NEXT
}

/// The cgroup id at `level` of the local socket an ingress packet is for (0 if none).
/// Global and never inlined: the socket lookup and release stay out of the callers' paths.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fl_tc_socket_cgroup(skb: *mut __sk_buff, l3: u32, level: u32) -> u64 {
    let ctx = SkBuffContext::new(skb);
    // "As ingress" the remote end is the source; "as egress" it is the destination (us).
    let (Some(src), Some(dst)) = (parse(&ctx, false, l3 as usize), parse(&ctx, true, l3 as usize))
    else {
        return 0;
    };
    if (src.protocol != PROTO_TCP && src.protocol != PROTO_UDP) || src.remote_port == 0 {
        return 0;
    }
    // SAFETY: plain data; both union views are fully written below.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let size = if src.family == FAMILY_V4 {
        // SAFETY: writing the IPv4 view of our own tuple.
        unsafe {
            let t = &mut tuple.__bindgen_anon_1.ipv4;
            t.saddr =
                u32::from_ne_bytes([src.remote[0], src.remote[1], src.remote[2], src.remote[3]]);
            t.daddr =
                u32::from_ne_bytes([dst.remote[0], dst.remote[1], dst.remote[2], dst.remote[3]]);
            t.sport = src.remote_port.to_be();
            t.dport = dst.remote_port.to_be();
        }
        12
    } else {
        // SAFETY: writing the IPv6 view of our own tuple.
        unsafe {
            let t = &mut tuple.__bindgen_anon_1.ipv6;
            for i in 0..4 {
                t.saddr[i] = u32::from_ne_bytes([
                    src.remote[i * 4],
                    src.remote[i * 4 + 1],
                    src.remote[i * 4 + 2],
                    src.remote[i * 4 + 3],
                ]);
                t.daddr[i] = u32::from_ne_bytes([
                    dst.remote[i * 4],
                    dst.remote[i * 4 + 1],
                    dst.remote[i * 4 + 2],
                    dst.remote[i * 4 + 3],
                ]);
            }
            t.sport = src.remote_port.to_be();
            t.dport = dst.remote_port.to_be();
        }
        36
    };
    // SAFETY: socket lookup in the current namespace; the reference is released below.
    unsafe {
        let sk = if src.protocol == PROTO_TCP {
            bpf_sk_lookup_tcp(skb.cast(), &mut tuple, size, u64::MAX, 0)
        } else {
            bpf_sk_lookup_udp(skb.cast(), &mut tuple, size, u64::MAX, 0)
        };
        if sk.is_null() {
            return 0;
        }
        let id = if core::ptr::read_volatile(&FL_HAS_INGRESS_EDT) != 0 {
            noted_cgroup(sk.cast(), level)
        } else {
            0
        };
        bpf_sk_release(sk.cast());
        id
    }
}

/// One rule against one packet on a device; returns 1 to drop. Global and never inlined,
/// like `fl_net_rule`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn fl_tc_rule(skb: *mut __sk_buff, slot: u32, dir_flags: u32, l3: u32) -> i32 {
    let dir = dir_flags & (DIR_EGRESS | DIR_INGRESS);
    let edt = bit(ACTION_DELAY) | bit(ACTION_RATE);
    let mut actions = bit(ACTION_CORRUPT) | bit(ACTION_DUPLICATE);
    if dir_flags & ALL_ACTIONS != 0 {
        actions |= bit(ACTION_DROP);
        if dir == DIR_EGRESS || dir_flags & HAS_IFB != 0 {
            actions |= edt;
        }
    }
    if dir_flags & INGRESS_EDT != 0 {
        actions = if dir_flags & HAS_IFB != 0 { edt } else { 0 };
    }
    let ctx = SkBuffContext::new(skb);
    let Some(pkt) = parse(&ctx, dir == DIR_EGRESS, l3 as usize) else {
        return 0;
    };
    let Some(m) = applicable(slot, dir, pkt, actions) else {
        return 0;
    };
    let action = m.rule.action;
    dlog!("tc {}: rule {} matched: action {}", dir_name(dir), slot, action);
    if action == ACTION_DROP {
        return drop_verdict(m.rule, m.st, m.counters) * VERDICT_DROP;
    }
    if !chance(m.rule, m.st, m.rule.threshold) {
        return 0;
    }
    if action == ACTION_DELAY || action == ACTION_RATE {
        depart(skb, m.rule, m.st, ctx.len(), m.counters, dir == DIR_INGRESS);
        // Ingress: the packet must go through the ifb's fq to be held.
        return if dir == DIR_INGRESS { VERDICT_REDIRECT } else { 0 };
    }
    if action == ACTION_CORRUPT {
        let Some(start) = payload(&ctx, &m.pkt) else {
            return 0;
        };
        let len = ctx.len() as usize;
        if start >= len {
            return 0;
        }
        let r = draw(m.rule, m.st);
        let at = start + (r as usize % (len - start));
        let Ok(byte) = ctx.load::<u8>(at) else {
            return 0;
        };
        // One bit flipped, checksum untouched: what a bad link does.
        let flipped = byte ^ (1u8 << ((r >> 29) & 7));
        if ctx.store(at, &flipped, 0).is_ok()
            && let Some(c) = m.counters
        {
            // SAFETY: per-CPU value, no concurrent writer on this CPU.
            unsafe { (*c).corrupted += 1 };
        }
        return 0;
    }
    if action == ACTION_DUPLICATE {
        // SAFETY: reading and writing our own context; the helper copies the packet.
        unsafe {
            let mark = (*skb).mark;
            (*skb).mark = mark | DUP_MARK;
            let flags = if dir == DIR_INGRESS { BPF_F_INGRESS as u64 } else { 0 };
            let sent = bpf_clone_redirect(skb, (*skb).ifindex, flags) == 0;
            (*skb).mark = mark;
            if sent && let Some(c) = m.counters {
                (*c).duplicated += 1;
            }
        }
    }
    0
}
