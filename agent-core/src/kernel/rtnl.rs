//! rtnetlink without the `ip` or `tc` binaries: devices, routes, and the qdiscs of a device
//! (add, replace, delete, list). Delay and bandwidth need fq on the egress device; the probe
//! uses the same calls in a scratch network namespace to learn whether fq and netem exist.

use std::{
    io,
    os::fd::{AsRawFd as _, OwnedFd},
};

use nix::{
    sched::{CloneFlags, setns},
    sys::socket::{
        AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto,
        socket,
    },
};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const IFLA_IFNAME: u16 = 3;
const IFLA_NUM_TX_QUEUES: u16 = 31;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTM_NEWQDISC: u16 = 36;
const RTM_DELQDISC: u16 = 37;
const RTM_GETQDISC: u16 = 38;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_DUMP: u16 = 0x300;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;

pub const TC_H_ROOT: u32 = 0xFFFF_FFFF;

/// One qdisc as the kernel reports it; `options` are the raw TCA_OPTIONS, enough to
/// put the qdisc back as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Qdisc {
    pub ifindex: i32,
    pub handle: u32,
    pub parent: u32,
    pub kind: String,
    pub options: Vec<u8>,
}

pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Appends one rtattr (header, payload, padding).
pub fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(payload);
    buf.resize(buf.len() + align4(len) - len, 0);
}

fn tcmsg(ifindex: i32, handle: u32, parent: u32) -> [u8; 20] {
    let mut t = [0u8; 20];
    t[4..8].copy_from_slice(&ifindex.to_ne_bytes());
    t[8..12].copy_from_slice(&handle.to_ne_bytes());
    t[12..16].copy_from_slice(&parent.to_ne_bytes());
    t
}

/// Walks the rtattrs of `buf`.
pub fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]);
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        buf = &buf[align4(len).min(buf.len())..];
    }
    out
}

impl Netlink {
    /// A socket in the network namespace behind `netns` (an open /proc/PID/ns/net or
    /// /run/netns/NAME): it is created on a short-lived thread that joins that namespace, and
    /// stays bound to it.
    pub fn open_in(netns: &std::fs::File) -> io::Result<Self> {
        let fd = netns.try_clone()?;
        std::thread::spawn(move || {
            // On this thread only; the thread ends right after.
            setns(&fd, CloneFlags::CLONE_NEWNET)?;
            Netlink::open()
        })
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))?
    }

    pub fn open() -> io::Result<Self> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkRoute,
        )?;
        Ok(Netlink { fd, seq: 1 })
    }

    /// Sends one request and collects the reply messages (type, payload after nlmsghdr)
    /// until the ack or the end of the dump. A negative ack becomes the error.
    fn request(&mut self, ty: u16, flags: u16, body: &[u8]) -> io::Result<Vec<(u16, Vec<u8>)>> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(16 + body.len());
        msg.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // To the kernel: port id 0, no groups.
        sendto(self.fd.as_raw_fd(), &msg, &NetlinkAddr::new(0, 0), MsgFlags::empty())?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty())?;
            let mut rest = &buf[..n];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                let mty = u16::from_ne_bytes([rest[4], rest[5]]);
                let seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                if len < 16 || len > rest.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "truncated netlink message",
                    ));
                }
                let payload = &rest[16..len];
                rest = &rest[align4(len).min(rest.len())..];
                if seq != self.seq {
                    continue;
                }
                match mty {
                    NLMSG_ERROR => {
                        let code =
                            i32::from_ne_bytes([payload[0], payload[1], payload[2], payload[3]]);
                        return if code == 0 {
                            Ok(out)
                        } else {
                            Err(io::Error::from_raw_os_error(-code))
                        };
                    }
                    NLMSG_DONE => return Ok(out),
                    _ => out.push((mty, payload.to_vec())),
                }
            }
        }
    }

    /// Adds (or, with `replace`, replaces) a qdisc.
    pub fn add_qdisc(&mut self, q: &Qdisc, replace: bool) -> io::Result<()> {
        let mut body = tcmsg(q.ifindex, q.handle, q.parent).to_vec();
        let mut kind = q.kind.as_bytes().to_vec();
        kind.push(0);
        attr(&mut body, TCA_KIND, &kind);
        if !q.options.is_empty() {
            attr(&mut body, TCA_OPTIONS, &q.options);
        }
        let flags = NLM_F_ACK | NLM_F_CREATE | if replace { NLM_F_REPLACE } else { NLM_F_EXCL };
        self.request(RTM_NEWQDISC, flags, &body).map(drop)
    }

    pub fn del_qdisc(&mut self, ifindex: i32, handle: u32, parent: u32) -> io::Result<()> {
        self.request(RTM_DELQDISC, NLM_F_ACK, &tcmsg(ifindex, handle, parent)).map(drop)
    }

    /// Every qdisc of one device.
    pub fn qdiscs(&mut self, ifindex: i32) -> io::Result<Vec<Qdisc>> {
        let replies = self.request(RTM_GETQDISC, NLM_F_DUMP, &tcmsg(0, 0, 0))?;
        Ok(replies
            .into_iter()
            .filter(|(ty, p)| *ty == RTM_NEWQDISC && p.len() >= 20)
            .filter_map(|(_, p)| {
                let idx = i32::from_ne_bytes([p[4], p[5], p[6], p[7]]);
                if idx != ifindex {
                    return None;
                }
                let handle = u32::from_ne_bytes([p[8], p[9], p[10], p[11]]);
                let parent = u32::from_ne_bytes([p[12], p[13], p[14], p[15]]);
                let mut kind = String::new();
                let mut options = Vec::new();
                for (ty, v) in attrs(&p[20..]) {
                    match ty {
                        TCA_KIND => {
                            kind = String::from_utf8_lossy(v).trim_end_matches('\0').to_string()
                        }
                        TCA_OPTIONS => options = v.to_vec(),
                        _ => {}
                    }
                }
                Some(Qdisc { ifindex: idx, handle, parent, kind, options })
            })
            .collect())
    }
}

/// A network device of the socket's namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub ifindex: i32,
    pub name: String,
    pub up: bool,
    pub tx_queues: u32,
    /// ARPHRD_* device type.
    pub arphrd: u16,
}

impl Link {
    /// Bytes before the IP header as tc programs see packets: Ethernet-like devices (lo
    /// included) have a 14-byte header, IP tunnels and tun devices none.
    pub fn l2_len(&self) -> u32 {
        const ARPHRD_ETHER: u16 = 1;
        const ARPHRD_LOOPBACK: u16 = 772;
        if matches!(self.arphrd, ARPHRD_ETHER | ARPHRD_LOOPBACK) { 14 } else { 0 }
    }
}

impl Netlink {
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        // struct ifinfomsg: family, pad, type, index, flags, change.
        let body = [0u8; 16];
        let replies = self.request(RTM_GETLINK, NLM_F_DUMP, &body)?;
        Ok(replies
            .into_iter()
            .filter(|(ty, p)| *ty == RTM_NEWLINK && p.len() >= 16)
            .map(|(_, p)| {
                let ifindex = i32::from_ne_bytes([p[4], p[5], p[6], p[7]]);
                let flags = u32::from_ne_bytes([p[8], p[9], p[10], p[11]]);
                let arphrd = u16::from_ne_bytes([p[2], p[3]]);
                let mut link = Link {
                    ifindex,
                    name: String::new(),
                    up: flags & libc::IFF_UP as u32 != 0,
                    tx_queues: 1,
                    arphrd,
                };
                for (ty, v) in attrs(&p[16..]) {
                    match ty {
                        IFLA_IFNAME => {
                            link.name =
                                String::from_utf8_lossy(v).trim_end_matches('\0').to_string()
                        }
                        IFLA_NUM_TX_QUEUES if v.len() >= 4 => {
                            link.tx_queues = u32::from_ne_bytes([v[0], v[1], v[2], v[3]])
                        }
                        _ => {}
                    }
                }
                link
            })
            .collect())
    }

    /// Creates a device of `kind` (e.g. "ifb") named `name`, up; returns its index.
    pub fn add_link(&mut self, name: &str, kind: &str) -> io::Result<i32> {
        let mut body = vec![0u8; 16];
        // ifinfomsg: flags and change mask at 8 and 12: bring it up as it is created.
        body[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        body[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        attr(&mut body, IFLA_IFNAME, &n);
        let mut info = Vec::new();
        attr(&mut info, IFLA_INFO_KIND, kind.as_bytes());
        attr(&mut body, IFLA_LINKINFO, &info);
        self.request(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL, &body)?;
        self.links()?
            .into_iter()
            .find(|l| l.name == name)
            .map(|l| l.ifindex)
            .ok_or_else(|| io::Error::other(format!("{name} vanished after creation")))
    }

    /// Brings a device up.
    pub fn set_up(&mut self, ifindex: i32) -> io::Result<()> {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        body[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        body[12..16].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        self.request(RTM_NEWLINK, NLM_F_ACK, &body).map(drop)
    }

    pub fn del_link(&mut self, ifindex: i32) -> io::Result<()> {
        let mut body = vec![0u8; 16];
        body[4..8].copy_from_slice(&ifindex.to_ne_bytes());
        self.request(RTM_DELLINK, NLM_F_ACK, &body).map(drop)
    }

    /// The device a packet to `dst` leaves by, from the routing table.
    pub fn route_oif(&mut self, dst: std::net::IpAddr) -> io::Result<Option<i32>> {
        let (family, addr, bits) = match dst {
            std::net::IpAddr::V4(a) => (libc::AF_INET as u8, a.octets().to_vec(), 32u8),
            std::net::IpAddr::V6(a) => (libc::AF_INET6 as u8, a.octets().to_vec(), 128u8),
        };
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
        let mut body = vec![family, bits, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        attr(&mut body, RTA_DST, &addr);
        let replies = self.request(RTM_GETROUTE, NLM_F_ACK, &body)?;
        Ok(replies.into_iter().filter(|(ty, p)| *ty == RTM_NEWROUTE && p.len() >= 12).find_map(
            |(_, p)| {
                attrs(&p[12..])
                    .into_iter()
                    .find(|(ty, v)| *ty == RTA_OIF && v.len() >= 4)
                    .map(|(_, v)| i32::from_ne_bytes([v[0], v[1], v[2], v[3]]))
            },
        ))
    }
}

/// fq's TCA_OPTIONS: packet limits and the horizon, sized so a delay never turns into loss.
pub fn fq_options(limit: u32, flow_limit: u32, horizon_us: u32) -> Vec<u8> {
    const TCA_FQ_PLIMIT: u16 = 1;
    const TCA_FQ_FLOW_PLIMIT: u16 = 2;
    const TCA_FQ_HORIZON: u16 = 14;
    const TCA_FQ_HORIZON_DROP: u16 = 15;
    let mut o = Vec::new();
    attr(&mut o, TCA_FQ_PLIMIT, &limit.to_ne_bytes());
    attr(&mut o, TCA_FQ_FLOW_PLIMIT, &flow_limit.to_ne_bytes());
    attr(&mut o, TCA_FQ_HORIZON, &horizon_us.to_ne_bytes());
    // Cap packets beyond the horizon instead of dropping them.
    attr(&mut o, TCA_FQ_HORIZON_DROP, &[0]);
    o
}

/// netem's options are a bare struct tc_netem_qopt (latency, limit, loss, gap, duplicate, jitter).
pub fn netem_options(limit: u32) -> Vec<u8> {
    let mut o = vec![0u8; 24];
    o[4..8].copy_from_slice(&limit.to_ne_bytes());
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_round_trip_with_padding() {
        let mut b = Vec::new();
        attr(&mut b, TCA_KIND, b"fq\0");
        attr(&mut b, TCA_OPTIONS, &[1, 2, 3, 4, 5]);
        assert_eq!(b.len(), 8 + 12);
        let a = attrs(&b);
        assert_eq!(a, vec![(TCA_KIND, &b"fq\0"[..]), (TCA_OPTIONS, &[1u8, 2, 3, 4, 5][..])]);
    }

    #[test]
    fn fq_options_carry_limits_and_horizon() {
        let o = fq_options(10_000, 1000, 60_000_000);
        let a = attrs(&o);
        assert_eq!(a.len(), 4);
        assert_eq!(a[1], (2, &1000u32.to_ne_bytes()[..]));
        assert_eq!(a[2], (14, &60_000_000u32.to_ne_bytes()[..]));
    }
}
