//! Packet-fault rules: what the cgroup_skb programs read, keyed as described on each map.

/// `Array<NetRule>` by slot: one rule per active network experiment. An array, whose lookup
/// the verifier inlines (a hash lookup is a helper call and a hash): user space writes a rule
/// before its slot is published in `MAP_CGROUPS` and clears it (all zero: expired) after it
/// is unpublished, so a program reads a whole rule, except a packet already past the set
/// when its rule is cleared, which may see zeros for some fields (a zero threshold, delay,
/// rate or expiry acts as no rule).
pub const MAP_RULES: &str = "FL_NET_RULES";
/// `HashMap<u64 cgroup id, CgroupRules>`: the rule slots that apply to one targeted cgroup
/// (read by the sock_addr and tc programs, which walk the caller's targeted ancestors).
pub const MAP_CGROUPS: &str = "FL_NET_CGROUPS";
/// `CgroupStorage<CgroupRules>`: the same set, kept with each cgroup_skb attachment (one per
/// targeted cgroup and direction, key: cgroup id and attach type), so the cgroup_skb programs
/// read their own attach point's rules with one helper call: no ancestor walk, no hash.
pub const MAP_SKB_SETS: &str = "FL_NET_SKB_SETS";
/// `LpmTrie<CidrKey, u32>`: the remote CIDRs of every rule that has some (value: CIDR_*).
pub const MAP_CIDRS: &str = "FL_NET_CIDRS";
/// `LpmTrie<PortKey, u32>`: the remote port ranges of every rule that has some, as prefixes.
pub const MAP_PORTS: &str = "FL_NET_PORTS";
/// `Array<RuleState>` by slot: per-rule state the programs update.
pub const MAP_STATE: &str = "FL_NET_STATE";
/// `PerCpuArray<NetCounters>` indexed by slot.
pub const MAP_COUNTERS: &str = "FL_NET_COUNTERS";
/// `Array<NetConfig>` with one element.
pub const MAP_CONFIG: &str = "FL_NET_CONFIG";

/// The net maps with more than one entry: other families' loaders of the shared object
/// shrink them to one (`kernel::object::shrink_others`).
pub const NET_MAPS: &[&str] = &[
    MAP_RULES,
    MAP_CGROUPS,
    MAP_CIDRS,
    MAP_PORTS,
    MAP_STATE,
    MAP_COUNTERS,
    MAP_TC_DEVS,
    MAP_DNS_ORIG,
    MAP_DNS_CLIENTS,
];

/// Program names (ELF symbols) of the cgroup programs attached to each targeted cgroup.
pub const PROG_EGRESS: &str = "fl_skb_egress";
pub const PROG_INGRESS: &str = "fl_skb_ingress";
pub const PROG_CONNECT4: &str = "fl_connect4";
pub const PROG_CONNECT6: &str = "fl_connect6";

/// `.rodata` flag set by user space: the kernel has bpf_set_retval for sock_addr programs
/// (5.18+), so a rejected connect() can fail with any errno, not only EPERM.
pub const GLOBAL_HAS_SET_RETVAL: &str = "FL_HAS_SET_RETVAL";
/// `.rodata` flag: the kernel has bpf_ktime_get_coarse_ns for these programs (5.11+), so a
/// rule's expiry is checked against the last tick's time (no clock-source read; a rule may
/// outlive its deadline by one tick). Delay and pacing read the precise clock regardless.
pub const GLOBAL_HAS_COARSE_NS: &str = "FL_HAS_COARSE_NS";
/// `.rodata` flag: tc programs have bpf_skb_set_tstamp (5.18+: only a departure time marked
/// monotonic survives the redirect of an ingress packet to the ifb) and bpf_sk_storage_get
/// (to find the receiving socket's cgroup). Ingress delay and pacing need both.
pub const GLOBAL_HAS_INGRESS_EDT: &str = "FL_HAS_INGRESS_EDT";

pub const MAX_RULES: u32 = 4096;
pub const MAX_RULES_PER_CGROUP: usize = 16;
/// Port buckets of `CgroupRules::candidates`: a port's bucket is its low bits.
pub const PORT_BUCKETS: usize = 32;
pub const MAX_PORT_RANGES: usize = 8;
pub const MAX_CIDR_ENTRIES: u32 = 65536;
/// A port range splits into at most 30 prefixes; ranges of all rules share this.
pub const MAX_PORT_ENTRIES: u32 = 65536;
/// Deepest cgroup level a target may sit at (the root is level 0).
pub const MAX_CGROUP_LEVEL: u32 = 31;
/// Distinct target levels the programs look up per packet.
pub const MAX_LEVEL_LOOKUPS: usize = 8;

pub const DIR_INGRESS: u32 = 1;
pub const DIR_EGRESS: u32 = 2;

/// IP protocol numbers; `PROTO_ICMP` matches ICMPv6 on IPv6 too.
pub const PROTO_ANY: u32 = 0;
pub const PROTO_ICMP: u32 = 1;
pub const PROTO_TCP: u32 = 6;
pub const PROTO_UDP: u32 = 17;
pub const PROTO_ICMPV6: u32 = 58;

/// The rule has a CIDR list: the remote address must hit an included CIDR of this rule.
pub const RULE_F_CIDRS: u32 = 1;
/// The rule has port ranges: the remote port must hit one of this rule's port prefixes.
pub const RULE_F_PORTS: u32 = 2;
/// Random draws come from the rule's own generator seeded with `seed` (reproducible).
pub const RULE_F_SEEDED: u32 = 4;

pub const ACTION_DROP: u32 = 1;
/// Egress: hold the packet (EDT, `skb->tstamp`) for delay + jitter; fq on the device releases it.
pub const ACTION_DELAY: u32 = 2;
/// Egress: pace the rule's packets to `rate_bps` (EDT), shared by all of them.
pub const ACTION_RATE: u32 = 3;
/// connect(): fail at once with `errno` (cgroup connect4/connect6 programs).
pub const ACTION_REJECT: u32 = 4;
/// tc: flip one random bit of the payload, checksum left as it was.
pub const ACTION_CORRUPT: u32 = 5;
/// tc: send the packet twice.
pub const ACTION_DUPLICATE: u32 = 6;
/// UDP to a resolver: steered to the agent's DNS responder (sock_addr programs), which
/// answers matching names with the fault and forwards the rest.
pub const ACTION_DNS: u32 = 7;

/// `LruHashMap<u64 socket cookie, DnsOrig>`: where a steered socket meant to send.
pub const MAP_DNS_ORIG: &str = "FL_DNS_ORIG";
/// `LruHashMap<DnsClient, DnsOrig>`: the same, by the address the responder sees the query
/// come from (written by the egress program, read by the responder to forward).
pub const MAP_DNS_CLIENTS: &str = "FL_DNS_CLIENTS";

pub const PROG_SENDMSG4: &str = "fl_sendmsg4";
pub const PROG_SENDMSG6: &str = "fl_sendmsg6";
pub const PROG_RECVMSG4: &str = "fl_recvmsg4";
pub const PROG_RECVMSG6: &str = "fl_recvmsg6";
pub const PROG_GETPEERNAME4: &str = "fl_getpeername4";
pub const PROG_GETPEERNAME6: &str = "fl_getpeername6";

/// `MAP_CGROUPS` keys of interface targets: this bit plus the ifindex (cgroup ids, inode
/// numbers, never set it). Only the tc programs look these up.
pub const IFACE_KEY: u64 = 1 << 63;

/// `HashMap<u32 ifindex, DevInfo>`: devices carrying faultline's tc programs.
pub const MAP_TC_DEVS: &str = "FL_TC_DEVS";
/// `Array<u64>` with one element: the agent's last heartbeat (bpf_ktime_get_ns clock).
pub const MAP_HEARTBEAT: &str = "FL_HEARTBEAT";
/// tc programs attached through netlink (no tcx) outlive the agent; they act only while the
/// heartbeat is younger than this, so a dead agent's faults stop within it.
pub const HEARTBEAT_TIMEOUT_NS: u64 = 1_500_000_000;
/// Marks the copy a duplicate rule sends, so the programs let it pass untouched.
pub const DUP_MARK: u32 = 0x4000_0000;

pub const PROG_TC_EGRESS: &str = "fl_tc_egress";
pub const PROG_TC_INGRESS: &str = "fl_tc_ingress";

/// `DevInfo::flags`: programs on this device were attached through netlink (see heartbeat).
pub const DEV_F_NETLINK: u32 = 1;

pub const MODEL_RANDOM: u32 = 0;
pub const MODEL_NTH: u32 = 1;
/// Gilbert-Elliott: a good state that passes and a bad state that drops.
pub const MODEL_GE: u32 = 2;

pub const DIST_UNIFORM: u32 = 0;
pub const DIST_NORMAL: u32 = 1;

/// LPM values: an address that hits an `CIDR_EXCLUDE` entry (the longer prefix wins) does not match.
pub const CIDR_INCLUDE: u32 = 1;
pub const CIDR_EXCLUDE: u32 = 2;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// Probability scale: an action fires when `bpf_get_prandom_u32() < threshold`, so
/// `threshold = p * 2^32`, and 100% is `1 << 32`.
pub const PROB_ONE: u64 = 1 << 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetRule {
    /// CLOCK_MONOTONIC time after which the program ignores the rule, so a fault ends on
    /// time even when user space is stopped (within a tick: see `GLOBAL_HAS_COARSE_NS`).
    pub expires_ns: u64,
    /// Chance that the action applies to a matching packet; see `PROB_ONE`.
    pub threshold: u64,
    /// Initial generator state when `RULE_F_SEEDED` is set.
    pub seed: u64,
    /// ACTION_DELAY: base latency, and jitter (half-width for uniform, sigma for normal).
    pub delay_ns: u64,
    pub jitter_ns: u64,
    /// ACTION_DELAY: weight of the previous jitter draw in the next one, of `PROB_ONE`.
    pub correlation: u64,
    /// ACTION_RATE: bits per second, and the burst allowance as time at that rate.
    pub rate_bps: u64,
    pub burst_ns: u64,
    /// MODEL_GE: chances to enter and to leave the bad (dropping) state, of `PROB_ONE`.
    pub ge_enter: u64,
    pub ge_leave: u64,
    pub action: u32,
    /// `DIR_*` bits.
    pub directions: u32,
    /// `PROTO_*`.
    pub protocol: u32,
    /// `RULE_F_*` bits.
    pub flags: u32,
    /// ACTION_DROP: `MODEL_*`.
    pub model: u32,
    /// MODEL_NTH: drop exactly every Nth matching packet.
    pub every_nth: u32,
    /// ACTION_DELAY: `DIST_*`.
    pub distribution: u32,
    /// ACTION_REJECT: the errno connect() fails with.
    pub errno: u32,
    /// ACTION_DNS: the responder's ports on 127.0.0.1 and ::1.
    pub redirect_port4: u32,
    pub redirect_port6: u32,
}

/// A steered DNS socket's intended destination (`MAP_DNS_ORIG`, `MAP_DNS_CLIENTS`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DnsOrig {
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub family: u8,
    pub _pad: u8,
    /// The DNS rule that steered it.
    pub slot: u32,
}

/// Source of a steered query as the responder sees it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct DnsClient {
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub family: u8,
    pub _pad: u8,
}

/// What the programs keep per rule between packets (`MAP_STATE`). Updated without atomics:
/// exact for one sending thread; concurrent senders on several CPUs may rarely race.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleState {
    /// Matching packets seen (MODEL_NTH).
    pub count: u64,
    /// xorshift64* state for seeded rules.
    pub rng: u64,
    /// ACTION_RATE: departure time of the next packet.
    pub t_next: u64,
    /// ACTION_DELAY: previous jitter draw (for correlation).
    pub last: u64,
    /// MODEL_GE: 1 while in the bad state.
    pub bad: u32,
    pub _pad: u32,
}

/// The slots of the rules on one cgroup; only the first `count` are valid. Each slot comes
/// with its rule's filter in brief, so a packet or call the rule cannot match leaves without
/// looking the rule up.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupRules {
    pub count: u32,
    pub _pad: u32,
    pub slots: [u32; MAX_RULES_PER_CGROUP],
    pub filters: [SlotFilter; MAX_RULES_PER_CGROUP],
    /// By direction (`dir_index`) and port bucket (`port_bucket`): the slots (bit i for
    /// `slots[i]`) whose rule may match a packet with such a port, so a packet meets only
    /// those; a packet no rule could match leaves after one load. Kept by `CgroupRules::new`.
    pub candidates: [[u16; PORT_BUCKETS]; 2],
    /// By direction: every slot any of its buckets names (a direction with none needs no
    /// parsing).
    pub any: [u16; 2],
    pub _pad2: [u16; 2],
}

/// A packet's or call's port bucket in `CgroupRules::candidates`.
#[inline(always)]
pub fn port_bucket(port: u16) -> usize {
    port as usize & (PORT_BUCKETS - 1)
}

/// A direction's row in `CgroupRules::candidates`: 0 egress, 1 ingress.
#[inline(always)]
pub fn dir_index(dir: u32) -> usize {
    usize::from(dir == DIR_INGRESS)
}

/// The port buckets (a bit each) a port range touches.
pub fn range_buckets(lo: u16, hi: u16) -> u32 {
    if hi < lo {
        return 0;
    }
    if (hi - lo) as usize >= PORT_BUCKETS - 1 {
        return u32::MAX;
    }
    (lo..=hi).fold(0, |m, p| m | 1 << port_bucket(p))
}

impl CgroupRules {
    /// The set of `entries` (slot, filter, the port buckets its rule's ranges touch:
    /// `u32::MAX` without ports), in their order; at most `MAX_RULES_PER_CGROUP`.
    pub fn new(entries: impl IntoIterator<Item = (u32, SlotFilter, u32)>) -> Self {
        let mut set = CgroupRules::default();
        for (i, (slot, filter, buckets)) in
            entries.into_iter().take(MAX_RULES_PER_CGROUP).enumerate()
        {
            set.count += 1;
            set.slots[i] = slot;
            set.filters[i] = filter;
            let buckets = if filter.has_ports == 0 { u32::MAX } else { buckets };
            for dir in [DIR_EGRESS, DIR_INGRESS] {
                if u32::from(filter.directions) & dir == 0 {
                    continue;
                }
                for (b, c) in set.candidates[dir_index(dir)].iter_mut().enumerate() {
                    if buckets & (1 << b) != 0 {
                        *c |= 1 << i;
                        set.any[dir_index(dir)] |= 1 << i;
                    }
                }
            }
        }
        set
    }
}

/// A rule's filter in brief (`CgroupRules::filters`): what it acts on, its direction bits,
/// protocol and the span of its port ranges. Passing it is necessary, not sufficient: the
/// rule itself holds the exact ranges and CIDRs. Eight bytes, so the programs hand it to
/// their rule functions as one scalar (`bits`).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotFilter {
    /// `ACTION_*`.
    pub action: u8,
    /// `DIR_*` bits.
    pub directions: u8,
    /// `PROTO_*` (`PROTO_ICMP` admits ICMPv6 too).
    pub protocol: u8,
    /// 1: the rule has port ranges, so a packet without a port cannot match.
    pub has_ports: u8,
    /// The lowest and highest port of its ranges (0 and 65535 without ranges).
    pub port_lo: u16,
    pub port_hi: u16,
}

impl SlotFilter {
    #[inline(always)]
    pub fn bits(self) -> u64 {
        // SAFETY: eight bytes of plain integers, no padding.
        unsafe { core::mem::transmute::<SlotFilter, u64>(self) }
    }

    #[inline(always)]
    pub fn from_bits(bits: u64) -> SlotFilter {
        // SAFETY: every bit pattern is a valid SlotFilter.
        unsafe { core::mem::transmute::<u64, SlotFilter>(bits) }
    }
    /// Whether a packet or call with these properties may match the rule.
    #[inline(always)]
    pub fn admits(&self, actions: u32, dir: u32, protocol: u32, port: u16) -> bool {
        actions & (1 << (self.action & 31)) != 0
            && u32::from(self.directions) & dir != 0
            && (self.protocol == 0
                || u32::from(self.protocol) == protocol
                || (u32::from(self.protocol) == PROTO_ICMP && protocol == PROTO_ICMPV6))
            && (self.has_ports == 0 || (port != 0 && port >= self.port_lo && port <= self.port_hi))
    }
}

/// LPM trie key data (after the kernel's u32 prefix length): the rule slot in big-endian
/// bytes, the family, then the address (IPv4 in the first 4 bytes). The prefix length counts
/// 40 bits for slot and family plus the CIDR's own prefix.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CidrKey {
    pub slot: [u8; 4],
    pub family: u8,
    pub addr: [u8; 16],
    pub _pad: [u8; 3],
}

/// LPM trie key data for ports: the rule slot and the port, both big-endian, so a port
/// range is stored as prefixes of `CIDR`-style length 32 + n.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortKey {
    pub slot: [u8; 4],
    pub port: [u8; 2],
    pub _pad: [u8; 2],
}

/// Bits of `PortKey` before the port.
pub const PORT_KEY_HEADER_BITS: u32 = 32;

/// Bits of `CidrKey` before the address.
pub const CIDR_KEY_HEADER_BITS: u32 = 40;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// Packets that matched the rule's filter (before the probability).
    pub matched: u64,
    /// Packets the rule dropped.
    pub dropped: u64,
    /// Packets the rule delayed or paced (their departure time moved).
    pub delayed: u64,
    pub corrupted: u64,
    pub duplicated: u64,
}

/// A device with faultline's tc programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevInfo {
    /// Bytes before the IP header (14 on Ethernet-like devices, lo included; 0 on tun).
    pub l2_len: u32,
    /// `DEV_F_*`.
    pub flags: u32,
    /// Index of the ifb device ingress delay and pacing send this device's packets through
    /// (its fq holds them), or 0.
    pub ifb: u32,
    pub _pad: u32,
}

/// Socket storage: a socket's cgroup ids by level. The cgroup programs note them (a
/// socket's cgroup never changes) so the tc ingress program, which has no helper for a
/// socket's cgroup, can tell whose a received packet is.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct SockCgroups {
    pub ids: [u64; MAX_CGROUP_LEVEL as usize + 1],
    pub filled: u32,
    pub _pad: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetConfig {
    /// Bit n set: some targeted cgroup sits at level n, so the programs look up the packet's
    /// ancestor at that level.
    pub levels: u32,
    /// Non-zero while a DNS fault exists: the egress program then notes steered queries.
    pub dns: u32,
    /// Non-zero while a cgroup target has ingress delay or pacing: the tc ingress program
    /// then looks up the receiving socket's cgroup.
    pub ingress: u32,
    pub _pad: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_filter_admits_what_its_rule_may_match() {
        let drop = 1 << ACTION_DROP;
        let f = SlotFilter {
            action: ACTION_DROP as u8,
            directions: DIR_EGRESS as u8,
            protocol: PROTO_UDP as u8,
            has_ports: 1,
            port_lo: 53,
            port_hi: 6380,
        };
        assert!(f.admits(drop, DIR_EGRESS, PROTO_UDP, 53));
        assert!(f.admits(drop, DIR_EGRESS, PROTO_UDP, 6380));
        assert!(!f.admits(drop, DIR_EGRESS, PROTO_UDP, 52), "below the span");
        assert!(!f.admits(drop, DIR_EGRESS, PROTO_UDP, 6381), "above the span");
        assert!(!f.admits(drop, DIR_EGRESS, PROTO_UDP, 0), "no port, rule has ports");
        assert!(!f.admits(drop, DIR_INGRESS, PROTO_UDP, 53), "direction");
        assert!(!f.admits(drop, DIR_EGRESS, PROTO_TCP, 53), "protocol");
        assert!(!f.admits(1 << ACTION_REJECT, DIR_EGRESS, PROTO_UDP, 53), "action");
        let any = SlotFilter { protocol: PROTO_ANY as u8, has_ports: 0, port_hi: 65535, ..f };
        assert!(any.admits(drop, DIR_EGRESS, PROTO_ICMPV6, 0));
        let icmp = SlotFilter { protocol: PROTO_ICMP as u8, ..any };
        assert!(icmp.admits(drop, DIR_EGRESS, PROTO_ICMPV6, 0), "ICMP admits ICMPv6");
        assert!(!icmp.admits(drop, DIR_EGRESS, PROTO_UDP, 0));
        assert_eq!(SlotFilter::from_bits(f.bits()), f);
    }

    #[test]
    fn port_ranges_touch_the_buckets_of_their_ports() {
        assert_eq!(range_buckets(9, 9), 1 << 9);
        assert_eq!(range_buckets(31, 33), 1 << 31 | 1 | 2);
        assert_eq!(range_buckets(1000, 1030), !(1 << port_bucket(1031)));
        assert_eq!(range_buckets(1000, 1031), u32::MAX);
        assert_eq!(range_buckets(0, 65535), u32::MAX);
        assert_eq!(range_buckets(5, 4), 0);
    }

    #[test]
    fn a_packet_meets_only_the_slots_that_may_match_its_direction_and_port() {
        let udp9 = SlotFilter {
            action: ACTION_DROP as u8,
            directions: (DIR_EGRESS | DIR_INGRESS) as u8,
            protocol: PROTO_UDP as u8,
            has_ports: 1,
            port_lo: 9,
            port_hi: 9,
        };
        let any_egress = SlotFilter {
            directions: DIR_EGRESS as u8,
            protocol: PROTO_ANY as u8,
            has_ports: 0,
            port_lo: 0,
            port_hi: 65535,
            ..udp9
        };
        let set = CgroupRules::new([(7, udp9, range_buckets(9, 9)), (3, any_egress, 0)]);
        assert_eq!((set.count, set.slots[0], set.slots[1]), (2, 7, 3));
        let at = |dir, port| set.candidates[dir_index(dir)][port_bucket(port)];
        assert_eq!(at(DIR_EGRESS, 9), 0b11);
        assert_eq!(at(DIR_EGRESS, 9 + 32), 0b11, "same bucket: the filter tells them apart");
        assert_eq!(at(DIR_EGRESS, 11111), 0b10, "no port rule there");
        assert_eq!(at(DIR_EGRESS, 0), 0b10, "a packet without a port");
        assert_eq!(at(DIR_INGRESS, 9), 0b01);
        assert_eq!(at(DIR_INGRESS, 11111), 0, "nothing for this packet: one load and out");
        assert_eq!(set.any, [0b11, 0b01]);
        assert_eq!(CgroupRules::new([]).candidates, [[0; PORT_BUCKETS]; 2]);
    }
}
