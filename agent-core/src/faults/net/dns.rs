//! The DNS responder: steered queries arrive here (one responder per network namespace,
//! listening on 127.0.0.1 and ::1 in it). A query whose name matches a DNS fault gets the
//! fault's answer (NXDOMAIN, SERVFAIL, or none); every other query goes on to the resolver
//! its socket meant to reach (which the kernel noted in FL_DNS_CLIENTS), and the reply comes
//! back through here.

use std::{
    collections::HashMap,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use faultline_common::net::{DnsClient, DnsOrig, FAMILY_V4, FAMILY_V6};
use tokio::{net::UdpSocket, task::JoinHandle};
use tracing::{debug, warn};

use super::{NetDriver, dnsname};
use crate::{
    engine::{
        error::{Error, Result},
        model::{DnsAnswer, NamePattern},
    },
    kernel::netns::{Netns, in_netns},
};

/// One DNS fault, as the responder applies it.
pub struct DnsFault {
    pub names: Vec<NamePattern>,
    pub answer: DnsAnswer,
    /// 0.0-1.0.
    pub share: f64,
    /// Queries from the target this fault steered here, and those it answered with the fault.
    pub seen: AtomicU64,
    pub faulted: AtomicU64,
}

/// Faults by rule slot; shared with the serving tasks (which never hold the Responder, so
/// dropping the last Registration stops them).
type Faults = Arc<Mutex<HashMap<u32, Arc<DnsFault>>>>;

pub struct Responder {
    pub port4: u16,
    pub port6: u16,
    faults: Faults,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Responders by network namespace, created with the first DNS fault there.
#[derive(Default)]
pub struct Responders {
    by_netns: Mutex<HashMap<u64, Weak<Responder>>>,
}

/// A DNS fault registered with a responder; removing it on drop.
pub struct Registration {
    pub responder: Arc<Responder>,
    pub slot: u32,
    pub fault: Arc<DnsFault>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.responder.faults.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.slot);
    }
}

/// Queries forwarded upstream and not yet answered: our id -> (client, their id, when).
type Pending = Arc<Mutex<HashMap<u16, (SocketAddr, u16, Instant)>>>;

impl Responders {
    pub fn new() -> Self {
        Self::default()
    }

    /// The responder of `netns`, started if there is none.
    /// Whether `netns` has a responder running (a dry run reports it; `get` would start one).
    pub fn running(&self, netns: &Netns) -> bool {
        let map = self.by_netns.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&netns.ino).and_then(Weak::upgrade).is_some()
    }

    pub fn get(&self, netns: &Netns, net: &Arc<NetDriver>) -> Result<Arc<Responder>> {
        let mut map = self.by_netns.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = map.get(&netns.ino).and_then(Weak::upgrade) {
            return Ok(r);
        }
        let r = Arc::new(start(netns, Arc::downgrade(net))?);
        map.insert(netns.ino, Arc::downgrade(&r));
        Ok(r)
    }
}

impl Responder {
    pub fn register(self: &Arc<Self>, slot: u32, fault: DnsFault) -> Registration {
        let fault = Arc::new(fault);
        self.faults.lock().unwrap_or_else(|p| p.into_inner()).insert(slot, fault.clone());
        Registration { responder: self.clone(), slot, fault }
    }
}

fn bind_in(netns: &Netns, addr: SocketAddr) -> Result<std::net::UdpSocket> {
    let s = in_netns(&netns.file, move || std::net::UdpSocket::bind(addr))
        .and_then(|r| r)
        .map_err(|e| {
            Error::internal(&format!("DNS responder socket {addr} in the target's namespace"), e)
        })?;
    s.set_nonblocking(true).map_err(|e| Error::internal("nonblocking", e))?;
    Ok(s)
}

fn tokio_socket(s: std::net::UdpSocket) -> Result<Arc<UdpSocket>> {
    UdpSocket::from_std(s).map(Arc::new).map_err(|e| Error::internal("DNS responder socket", e))
}

/// Binds the listening and forwarding sockets inside the namespace and starts serving.
fn start(netns: &Netns, net: Weak<NetDriver>) -> Result<Responder> {
    let rt = tokio::runtime::Handle::try_current()
        .map_err(|e| Error::internal("DNS responder runtime", e))?;
    let _enter = rt.enter();
    let l4 = bind_in(netns, (Ipv4Addr::LOCALHOST, 0).into())?;
    let l6 = bind_in(netns, (Ipv6Addr::LOCALHOST, 0).into())?;
    let f4 = bind_in(netns, (Ipv4Addr::UNSPECIFIED, 0).into())?;
    let f6 = bind_in(netns, (Ipv6Addr::UNSPECIFIED, 0).into())?;
    let port4 = l4.local_addr().map_err(|e| Error::internal("responder address", e))?.port();
    let port6 = l6.local_addr().map_err(|e| Error::internal("responder address", e))?.port();
    let (l4, l6, f4, f6) =
        (tokio_socket(l4)?, tokio_socket(l6)?, tokio_socket(f4)?, tokio_socket(f6)?);
    let faults: Faults = Arc::default();
    let pending: Pending = Arc::default();
    let shared = Arc::new(Shared { net, pending: pending.clone(), f4: f4.clone(), f6: f6.clone() });
    let tasks = vec![
        tokio::spawn(serve(l4.clone(), shared.clone(), faults.clone())),
        tokio::spawn(serve(l6.clone(), shared, faults.clone())),
        tokio::spawn(relay(f4, l4.clone(), l6.clone(), pending.clone())),
        tokio::spawn(relay(f6, l4, l6, pending)),
    ];
    debug!(port4, port6, "DNS responder started");
    Ok(Responder { port4, port6, faults, tasks })
}

struct Shared {
    net: Weak<NetDriver>,
    pending: Pending,
    f4: Arc<UdpSocket>,
    f6: Arc<UdpSocket>,
}

async fn serve(listen: Arc<UdpSocket>, shared: Arc<Shared>, faults: Faults) {
    let mut buf = vec![0u8; 4096];
    let mut next_id: u16 = 1;
    loop {
        let Ok((n, client)) = listen.recv_from(&mut buf).await else { continue };
        let query = &buf[..n];
        let Some(q) = Query::parse(query) else { continue };
        let key = client_key(client);
        let orig = shared.net.upgrade().and_then(|net| net.dns_client(&key));
        let Some(orig) = orig else {
            // Not steered by us (or forgotten): refuse rather than guess a resolver.
            let _ = listen.send_to(&q.answer(query, RCODE_SERVFAIL), client).await;
            continue;
        };
        let fault = faults.lock().unwrap_or_else(|p| p.into_inner()).get(&orig.slot).cloned();
        if let Some(f) = fault {
            f.seen.fetch_add(1, Ordering::Relaxed);
            if f.names.iter().any(|p| dnsname::matches(p, &q.name)) && chance(f.share) {
                f.faulted.fetch_add(1, Ordering::Relaxed);
                let rcode = match f.answer {
                    DnsAnswer::NxDomain => RCODE_NXDOMAIN,
                    DnsAnswer::ServFail => RCODE_SERVFAIL,
                    DnsAnswer::Drop => continue,
                };
                let _ = listen.send_to(&q.answer(query, rcode), client).await;
                continue;
            }
        }
        // Forward under an id of ours, so answers from one upstream cannot be confused.
        let Some(upstream) = orig_addr(&orig) else { continue };
        let ours = {
            let mut p = shared.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.retain(|_, (_, _, at)| at.elapsed() < Duration::from_secs(10));
            while p.contains_key(&next_id) {
                next_id = next_id.wrapping_add(1);
            }
            p.insert(next_id, (client, q.id, Instant::now()));
            next_id
        };
        next_id = next_id.wrapping_add(1);
        let mut fwd = query.to_vec();
        fwd[..2].copy_from_slice(&ours.to_be_bytes());
        let sock = if upstream.is_ipv4() { &shared.f4 } else { &shared.f6 };
        if let Err(e) = sock.send_to(&fwd, upstream).await {
            warn!(%upstream, error = %e, "forwarding a DNS query");
        }
    }
}

/// Answers from upstream resolvers, back to the client that asked.
async fn relay(upstream: Arc<UdpSocket>, l4: Arc<UdpSocket>, l6: Arc<UdpSocket>, pending: Pending) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, _)) = upstream.recv_from(&mut buf).await else { continue };
        if n < 12 {
            continue;
        }
        let ours = u16::from_be_bytes([buf[0], buf[1]]);
        let Some((client, theirs, _)) =
            pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&ours)
        else {
            continue;
        };
        buf[..2].copy_from_slice(&theirs.to_be_bytes());
        let out = if client.is_ipv4() { &l4 } else { &l6 };
        let _ = out.send_to(&buf[..n], client).await;
    }
}

fn client_key(a: SocketAddr) -> DnsClient {
    let mut addr = [0u8; 16];
    let family = match a {
        SocketAddr::V4(v) => {
            addr[..4].copy_from_slice(&v.ip().octets());
            FAMILY_V4
        }
        SocketAddr::V6(v) => {
            addr.copy_from_slice(&v.ip().octets());
            FAMILY_V6
        }
    };
    DnsClient { addr, port: a.port(), family, _pad: 0 }
}

fn orig_addr(o: &DnsOrig) -> Option<SocketAddr> {
    match o.family {
        FAMILY_V4 => {
            Some((Ipv4Addr::new(o.addr[0], o.addr[1], o.addr[2], o.addr[3]), o.port).into())
        }
        FAMILY_V6 => Some((Ipv6Addr::from(o.addr), o.port).into()),
        _ => None,
    }
}

fn chance(share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    let mut b = [0u8; 8];
    // SAFETY: (nix has no getrandom) writes at most b.len() bytes into b, a live local.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    (u64::from_ne_bytes(b) as f64 / u64::MAX as f64) < share
}

pub const RCODE_SERVFAIL: u16 = 2;
pub const RCODE_NXDOMAIN: u16 = 3;

/// The parts of a DNS query the responder needs.
#[derive(Debug, PartialEq, Eq)]
pub struct Query {
    pub id: u16,
    pub flags: u16,
    /// Lower-case name, labels joined by dots.
    pub name: String,
    /// End of the (first) question in the message.
    pub question_end: usize,
}

impl Query {
    pub fn parse(m: &[u8]) -> Option<Query> {
        if m.len() < 12 || u16::from_be_bytes([m[4], m[5]]) == 0 || m[2] & 0x80 != 0 {
            return None;
        }
        let mut at = 12;
        let mut labels: Vec<String> = Vec::new();
        loop {
            let len = *m.get(at)? as usize;
            at += 1;
            if len == 0 {
                break;
            }
            // Queries do not compress their question; refuse anything else.
            if len > 63 {
                return None;
            }
            labels.push(String::from_utf8_lossy(m.get(at..at + len)?).to_ascii_lowercase());
            at += len;
        }
        let question_end = at + 4;
        if question_end > m.len() {
            return None;
        }
        Some(Query {
            id: u16::from_be_bytes([m[0], m[1]]),
            flags: u16::from_be_bytes([m[2], m[3]]),
            name: labels.join("."),
            question_end,
        })
    }

    /// A reply with no records and `rcode`, echoing the question.
    pub fn answer(&self, query: &[u8], rcode: u16) -> Vec<u8> {
        let mut r = Vec::with_capacity(self.question_end);
        r.extend_from_slice(&self.id.to_be_bytes());
        // QR, the query's opcode and RD, RA, rcode.
        let flags = 0x8000 | (self.flags & 0x7900) | 0x0080 | (rcode & 0xF);
        r.extend_from_slice(&flags.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        r.extend_from_slice(&query[12..self.question_end]);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A query for "Redis.SVC.local" type A, id 0x1234, RD set, with an EDNS record.
    fn query() -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
        for l in ["Redis", "SVC", "local"] {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        q
    }

    #[test]
    fn parses_the_question() {
        let q = Query::parse(&query()).unwrap();
        assert_eq!((q.id, q.name.as_str()), (0x1234, "redis.svc.local"));
        assert_eq!(q.question_end, 12 + 1 + 5 + 1 + 3 + 1 + 5 + 1 + 4);
        assert!(Query::parse(&query()[..20]).is_none());
        let mut reply = query();
        reply[2] |= 0x80;
        assert!(Query::parse(&reply).is_none(), "responses are not queries");
    }

    #[test]
    fn builds_an_nxdomain_answer() {
        let raw = query();
        let q = Query::parse(&raw).unwrap();
        let a = q.answer(&raw, RCODE_NXDOMAIN);
        assert_eq!(&a[..2], &[0x12, 0x34]);
        assert_eq!(u16::from_be_bytes([a[2], a[3]]), 0x8183, "QR RD RA NXDOMAIN");
        assert_eq!(&a[4..12], &[0, 1, 0, 0, 0, 0, 0, 0], "the question only, no EDNS record");
        assert_eq!(&a[12..], &raw[12..q.question_end]);
    }
}
