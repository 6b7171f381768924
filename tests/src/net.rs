//! Traffic endpoints that live outside the target cgroup, in the test process.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

fn big_rcvbuf(s: &UdpSocket) {
    set_rcvbuf(s, 8 << 20);
}

fn set_rcvbuf(s: &UdpSocket, v: libc::c_int) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: setsockopt with a valid int option; SO_RCVBUFFORCE works as root.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&v as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as u32,
        );
    }
}

/// Counts distinct datagrams (by the sequence number fl-probe writes) arriving on a socket.
pub struct UdpSink {
    sock: UdpSocket,
}

impl UdpSink {
    pub fn bind(addr: &str) -> Self {
        let sock = UdpSocket::bind(addr).unwrap();
        big_rcvbuf(&sock);
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        UdpSink { sock }
    }

    pub fn addr(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    /// Reads until the socket has been quiet for 200 ms; returns distinct datagrams seen.
    pub fn drain(&self) -> usize {
        self.drain_seqs().len()
    }

    /// Every datagram until the socket is quiet: (intact distinct, corrupted, total received).
    /// A datagram is intact when it carries fl-probe's pattern (sequence number, its
    /// complement, zeros) unchanged.
    pub fn drain_check(&self) -> (usize, usize, usize) {
        let mut intact = BTreeSet::new();
        let (mut corrupted, mut total) = (0, 0);
        let mut buf = [0u8; 128];
        while let Ok(n) = self.sock.recv(&mut buf) {
            total += 1;
            let seq = u64::from_be_bytes(buf[..8].try_into().unwrap());
            let ok = n == 64
                && u64::from_be_bytes(buf[8..16].try_into().unwrap()) == !seq
                && buf[16..64].iter().all(|b| *b == 0);
            if ok {
                intact.insert(seq);
            } else {
                corrupted += 1;
            }
        }
        (intact.len(), corrupted, total)
    }

    /// Like `drain`, returning the sequence numbers that arrived.
    pub fn drain_seqs(&self) -> BTreeSet<u64> {
        let mut seen = BTreeSet::new();
        let mut buf = [0u8; 128];
        while let Ok(n) = self.sock.recv(&mut buf) {
            if n >= 8 {
                seen.insert(u64::from_be_bytes(buf[..8].try_into().unwrap()));
            }
        }
        seen
    }
}

/// Counts the datagrams that reach a local port as they arrive, in a thread (so that the
/// socket's buffer never limits a long run).
pub struct UdpCounter {
    pub addr: SocketAddr,
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpCounter {
    pub fn start() -> std::io::Result<UdpCounter> {
        let s = UdpSocket::bind("127.0.0.1:0")?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        // 4 MiB of receive buffer: the sender is paced, only the fault may drop.
        set_rcvbuf(&s, 4 << 20);
        let addr = s.local_addr()?;
        let (count, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let thread = {
            let (count, stop) = (count.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if s.recv(&mut buf).is_ok() {
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        Ok(UdpCounter { addr, count, stop, thread: Some(thread) })
    }

    /// Datagrams received so far, after a quiet period of 200 ms.
    pub fn settle(&self) -> usize {
        let mut last = self.count.load(Ordering::Relaxed);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let now = self.count.load(Ordering::Relaxed);
            if now == last {
                return now;
            }
            last = now;
        }
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A UDP echo server in a thread; counts the requests it saw.
pub struct UdpEcho {
    addr: SocketAddr,
    pub requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl UdpEcho {
    pub fn start(addr: &str) -> Self {
        let sock = UdpSocket::bind(addr).unwrap();
        big_rcvbuf(&sock);
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap();
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 128];
            while !s.load(Ordering::Relaxed) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    r.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        UdpEcho { addr, requests, stop, thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for UdpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP echo server in a thread (one connection at a time is enough for the tests).
pub struct TcpEcho {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpEcho {
    pub fn start(addr: &str) -> std::io::Result<Self> {
        let l = TcpListener::bind(addr)?;
        l.set_nonblocking(true)?;
        let addr = l.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut buf = [0u8; 64];
                        if let Ok(n) = c.read(&mut buf) {
                            let _ = c.write_all(&buf[..n]);
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(TcpEcho { addr, stop, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Bytes received, and when the first and the last of them arrived.
type Received =
    Arc<std::sync::Mutex<(u64, Option<std::time::Instant>, Option<std::time::Instant>)>>;

/// Accepts connections and counts the bytes received, with the time of the first and last.
pub struct TcpSink {
    addr: SocketAddr,
    stats: Received,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpSink {
    pub fn start(l: TcpListener) -> Self {
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stats: Received = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (st, s) = (stats.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                let mut buf = vec![0u8; 256 * 1024];
                while !s.load(Ordering::Relaxed) {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            let now = std::time::Instant::now();
                            let mut g = st.lock().unwrap();
                            g.0 += n as u64;
                            g.1.get_or_insert(now);
                            g.2 = Some(now);
                        }
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                }
            }
        });
        TcpSink { addr, stats, stop, thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Bits per second between the first and the last byte received.
    pub fn rate_bps(&self) -> f64 {
        let g = self.stats.lock().unwrap();
        match (g.1, g.2) {
            (Some(a), Some(b)) if b > a => g.0 as f64 * 8.0 / (b - a).as_secs_f64(),
            _ => 0.0,
        }
    }
}

impl Drop for TcpSink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sends as fast as it can to every connection (fl-probe tcp-recv measures the rate).
pub struct TcpSource {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl TcpSource {
    pub fn start(l: TcpListener) -> Self {
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let _ = c.set_write_timeout(Some(Duration::from_millis(200)));
                let buf = vec![7u8; 64 * 1024];
                while !s.load(Ordering::Relaxed) {
                    match c.write(&buf) {
                        Ok(_) => {}
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                }
            }
        });
        TcpSource { addr, stop, thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for TcpSource {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A minimal HTTP/1.1 server with keep-alive: every request gets "200 OK" and a short body,
/// or "503 Service Unavailable" once told to `fail` (a health endpoint going bad).
pub struct HttpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    failing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(l: TcpListener) -> Self {
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let failing = Arc::new(AtomicBool::new(false));
        let (s, bad) = (stop.clone(), failing.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let _ = c.set_nonblocking(false);
                let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                let mut pending = Vec::new();
                let mut buf = [0u8; 4096];
                while !s.load(Ordering::Relaxed) {
                    match c.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => {
                            pending.extend_from_slice(&buf[..n]);
                            while let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n")
                            {
                                pending.drain(..end + 4);
                                let body = "faultline\n";
                                let status = if bad.load(Ordering::SeqCst) {
                                    "503 Service Unavailable"
                                } else {
                                    "200 OK"
                                };
                                let resp = format!(
                                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{body}",
                                    body.len()
                                );
                                if c.write_all(resp.as_bytes()).is_err() {
                                    break;
                                }
                            }
                        }
                        Err(e)
                            if e.kind() == std::io::ErrorKind::WouldBlock
                                || e.kind() == std::io::ErrorKind::TimedOut => {}
                        Err(_) => break,
                    }
                }
            }
        });
        HttpServer { addr, stop, failing, thread: Some(thread) }
    }

    /// On loopback, at a port of its own.
    pub fn loopback() -> Self {
        HttpServer::start(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every request from now on is answered 503.
    pub fn fail(&self) {
        self.failing.store(true, Ordering::SeqCst);
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A DNS server that answers every A query with 10.1.2.3 (and counts the queries).
pub struct DnsServer {
    addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl DnsServer {
    pub fn start(addr: &str) -> Self {
        let sock = UdpSocket::bind(addr).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let addr = sock.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (q, s) = (queries.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while !s.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { continue };
                if n < 17 {
                    continue;
                }
                q.fetch_add(1, Ordering::Relaxed);
                // The question ends after the name's zero byte and four more bytes.
                let Some(end) = buf[12..n].iter().position(|b| *b == 0).map(|p| 12 + p + 5) else {
                    continue;
                };
                let mut r = buf[..end].to_vec();
                r[2] = 0x81;
                r[3] = 0x80;
                r[6..12].copy_from_slice(&[0, 1, 0, 0, 0, 0]);
                r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 1, 2, 3]);
                let _ = sock.send_to(&r, from);
            }
        });
        DnsServer { addr, queries, stop, thread: Some(thread) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
