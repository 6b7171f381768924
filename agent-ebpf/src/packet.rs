//! Header parsing. cgroup_skb programs see data from the network header (offset 0); tc
//! programs from the link-layer header, so they pass its length as `l3`. Headers are read
//! straight from the packet where its linear part holds them (a load the verifier checks
//! against data_end), else copied out with bpf_skb_load_bytes.

use aya_ebpf::programs::SkBuffContext;
use faultline_common::net::{FAMILY_V4, FAMILY_V6, PROTO_TCP, PROTO_UDP};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;

/// What the rules can match on, with the remote end chosen by direction.
pub struct Packet {
    pub family: u8,
    pub protocol: u32,
    pub remote: [u8; 16],
    /// 0 when the packet carries no port (not TCP/UDP, or a non-first fragment).
    pub remote_port: u16,
    /// Offset of the transport header (0 when unknown).
    pub l4: u16,
}

/// Where `Packet::words`' third word carries a rule function's slot (16 bits) and direction
/// (2 bits): bits the packet leaves free.
const META_SLOT_SHIFT: u32 = 24;
const META_DIR_SHIFT: u32 = 40;

/// `meta` (from `Packet::words`) with a slot and a direction added.
#[inline(always)]
pub fn with_slot(meta: u64, slot: u32, dir: u32) -> u64 {
    meta | ((slot as u64) & 0xffff) << META_SLOT_SHIFT | ((dir as u64) & 3) << META_DIR_SHIFT
}

/// The protocol and port in `meta` (from `Packet::words`): what a slot's filter in brief
/// tests, read without building the packet.
#[inline(always)]
pub fn proto_port(meta: u64) -> (u32, u16) {
    (((meta >> 16) & 0xff) as u32, meta as u16)
}

/// The slot and direction `with_slot` added.
#[inline(always)]
pub fn slot_of(meta: u64) -> (u32, u32) {
    (((meta >> META_SLOT_SHIFT) & 0xffff) as u32, ((meta >> META_DIR_SHIFT) & 3) as u32)
}

impl Packet {
    /// The packet as the scalars a global function may take on 5.10: the 16 address bytes
    /// in two words, and family, protocol and port packed in a third.
    #[inline(always)]
    pub fn words(&self) -> (u64, u64, u64) {
        let mut hi = [0u8; 8];
        let mut lo = [0u8; 8];
        hi.copy_from_slice(&self.remote[..8]);
        lo.copy_from_slice(&self.remote[8..]);
        let meta = (self.family as u64) << 48
            | ((self.protocol as u64) & 0xff) << 16
            | self.remote_port as u64;
        (u64::from_ne_bytes(hi), u64::from_ne_bytes(lo), meta)
    }

    /// The packet `words` made (without the transport header's offset).
    #[inline(always)]
    pub fn from_words(hi: u64, lo: u64, meta: u64) -> Packet {
        let mut remote = [0u8; 16];
        remote[..8].copy_from_slice(&hi.to_ne_bytes());
        remote[8..].copy_from_slice(&lo.to_ne_bytes());
        Packet {
            family: (meta >> 48) as u8,
            protocol: ((meta >> 16) & 0xff) as u32,
            remote,
            remote_port: meta as u16,
            l4: 0,
        }
    }
}

/// `size_of::<T>()` bytes at `off`: in place when the linear data holds them, else copied.
#[inline(always)]
fn read<T: Copy>(ctx: &SkBuffContext, off: usize) -> Option<T> {
    let skb = ctx.skb.skb;
    // SAFETY: reading our own context's data and data_end fields.
    let (data, end) = unsafe { ((*skb).data as usize, (*skb).data_end as usize) };
    let at = data + off;
    if at + core::mem::size_of::<T>() <= end {
        // SAFETY: [at, at + size) lies within the packet's linear data (checked above, which
        // is the bound the verifier checks too).
        return Some(unsafe { core::ptr::read_unaligned(at as *const T) });
    }
    ctx.load(off).ok()
}

/// Parses the IP and transport headers at offset `l3`. `egress` picks destination (egress)
/// or source (ingress) as the remote end. None for packets that are neither IPv4 nor IPv6.
#[inline(always)]
pub fn parse(ctx: &SkBuffContext, egress: bool, l3: usize) -> Option<Packet> {
    // SAFETY: ctx.skb.skb is the program's own context pointer.
    let proto = u16::from_be(unsafe { (*ctx.skb.skb).protocol } as u16);
    if l3 > 64 {
        return None;
    }
    if proto == ETH_P_IP {
        parse_v4(ctx, egress, l3)
    } else if proto == ETH_P_IPV6 {
        parse_v6(ctx, egress, l3)
    } else {
        None
    }
}

#[inline(always)]
fn parse_v4(ctx: &SkBuffContext, egress: bool, l3: usize) -> Option<Packet> {
    let hdr: [u8; 20] = read(ctx, l3)?;
    let ihl = ((hdr[0] & 0x0f) as usize) * 4;
    let frag_off = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
    let protocol = hdr[9] as u32;
    let mut remote = [0u8; 16];
    let at = if egress { 16 } else { 12 };
    remote[0] = hdr[at];
    remote[1] = hdr[at + 1];
    remote[2] = hdr[at + 2];
    remote[3] = hdr[at + 3];
    let l4 = l3 + ihl;
    let (remote_port, l4) =
        if frag_off == 0 { (l4_port(ctx, protocol, l4, egress), l4) } else { (0, 0) };
    Some(Packet { family: FAMILY_V4, protocol, remote, remote_port, l4: l4 as u16 })
}

#[inline(always)]
fn parse_v6(ctx: &SkBuffContext, egress: bool, l3: usize) -> Option<Packet> {
    // Only the fields needed, not the whole 40-byte header: the rule function's stack shares
    // the 512-byte budget with its caller on older kernels.
    let remote: [u8; 16] = read(ctx, l3 + if egress { 24 } else { 8 })?;
    // Two bytes (next header, hop limit), not one: a one-byte bound check compiles to a
    // compare the verifier cannot use.
    let mut next = read::<[u8; 2]>(ctx, l3 + 6)?[0] as u32;
    let mut off = l3 + 40;
    let mut first_fragment = true;
    // Skip the extension headers that may precede the transport header.
    for _ in 0..4 {
        match next {
            // Hop-by-hop, routing, destination options.
            0 | 43 | 60 => {
                let ext: [u8; 2] = ctx.load(off).ok()?;
                next = ext[0] as u32;
                off += (ext[1] as usize + 1) * 8;
            }
            // Fragment: fixed 8 bytes; only the first fragment carries ports.
            44 => {
                let ext: [u8; 4] = ctx.load(off).ok()?;
                next = ext[0] as u32;
                first_fragment = (u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8) == 0;
                off += 8;
            }
            // Authentication header: length in 4-byte units, minus 2.
            51 => {
                let ext: [u8; 2] = ctx.load(off).ok()?;
                next = ext[0] as u32;
                off += (ext[1] as usize + 2) * 4;
            }
            _ => break,
        }
    }
    let protocol = next;
    let (remote_port, l4) =
        if first_fragment { (l4_port(ctx, protocol, off, egress), off) } else { (0, 0) };
    Some(Packet { family: FAMILY_V6, protocol, remote, remote_port, l4: l4 as u16 })
}

#[inline(always)]
fn l4_port(ctx: &SkBuffContext, protocol: u32, off: usize, egress: bool) -> u16 {
    if protocol != PROTO_TCP && protocol != PROTO_UDP {
        return 0;
    }
    // Bounded so the verifier sees a finite offset; real headers never go this deep.
    if off > 512 {
        return 0;
    }
    match read::<[u8; 4]>(ctx, off) {
        Some(p) if egress => u16::from_be_bytes([p[2], p[3]]),
        Some(p) => u16::from_be_bytes([p[0], p[1]]),
        None => 0,
    }
}

/// Offset of the transport payload (after the UDP or TCP header), or None.
#[inline(always)]
pub fn payload(ctx: &SkBuffContext, p: &Packet) -> Option<usize> {
    let l4 = p.l4 as usize;
    if l4 == 0 || l4 > 512 {
        return None;
    }
    if p.protocol == PROTO_UDP {
        return Some(l4 + 8);
    }
    if p.protocol == PROTO_TCP {
        let doff: u8 = ctx.load(l4 + 12).ok()?;
        return Some(l4 + ((doff >> 4) as usize) * 4);
    }
    None
}
