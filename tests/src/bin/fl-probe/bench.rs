//! Measurements for `cargo xtask bench` (host and VM tier): rates of one operation, one-way
//! delay, TCP goodput, and the time from an Inject call to the first packet it affects.
//! Each prints one JSON line, like the rest of fl-probe.

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use faultline_proto::v1::{self as pb, fault_service_client::FaultServiceClient};

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the machine, so a
/// sender and a receiver can compare timestamps.
fn mono_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime into a local struct.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// User + system CPU seconds this process used so far.
fn cpu_s() -> f64 {
    // SAFETY: getrusage into a zeroed local struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return -1.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Percentiles of `v` (in ms) as JSON fields.
fn dist(mut v: Vec<f64>) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        r#""n":{},"median_ms":{:.4},"p10_ms":{:.4},"p90_ms":{:.4},"p99_ms":{:.4},"min_ms":{:.4},"max_ms":{:.4}"#,
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.1),
        pct(&v, 0.9),
        pct(&v, 0.99),
        v.first().copied().unwrap_or(-1.0),
        v.last().copied().unwrap_or(-1.0)
    )
}

/// `rate OP ARG SECONDS`: one operation as often as possible for SECONDS.
/// open PATH: open(2) + close; connect ADDR: TCP connect + close (RST, so no TIME_WAIT
/// piles up); connect-refused ADDR: TCP connect to a port nobody listens on (success is
/// ECONNREFUSED); udp-connect ADDR: socket + connect + close of a UDP socket.
pub fn rate(op: &str, arg: &str, seconds: f64) -> String {
    let mut ops = 0u64;
    let mut errors = 0u64;
    let mut step: Box<dyn FnMut() -> bool> = match op {
        // A null system call (no libc cache).
        "getppid" => Box::new(|| {
            // SAFETY: getppid has no arguments and cannot fail.
            unsafe { libc::syscall(libc::SYS_getppid) };
            true
        }),
        // 4 KiB of a file in the page cache.
        "pread" => {
            use std::os::unix::fs::FileExt as _;
            let f = std::fs::File::open(arg).expect("FILE");
            let mut buf = vec![0u8; 4096];
            Box::new(move || f.read_at(&mut buf, 0).is_ok())
        }
        "open" => {
            let path = arg.to_string();
            Box::new(move || std::fs::File::open(&path).is_ok())
        }
        "connect" => {
            let addr: SocketAddr = arg.parse().expect("ADDR");
            Box::new(move || match TcpStream::connect(addr) {
                Ok(s) => {
                    let l = libc::linger { l_onoff: 1, l_linger: 0 };
                    use std::os::fd::AsRawFd as _;
                    // SAFETY: SO_LINGER on our own socket, from a local struct.
                    unsafe {
                        libc::setsockopt(
                            s.as_raw_fd(),
                            libc::SOL_SOCKET,
                            libc::SO_LINGER,
                            (&l as *const libc::linger).cast(),
                            std::mem::size_of::<libc::linger>() as u32,
                        )
                    };
                    true
                }
                Err(_) => false,
            })
        }
        "connect-refused" => {
            // No listener: SYN, RST, ECONNREFUSED, all inside the call on loopback; no
            // accept queue or TIME_WAIT to limit the rate.
            let addr: SocketAddr = arg.parse().expect("ADDR");
            Box::new(move || {
                TcpStream::connect(addr)
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
            })
        }
        "udp-connect" => {
            let addr: SocketAddr = arg.parse().expect("ADDR");
            Box::new(move || UdpSocket::bind("127.0.0.1:0").and_then(|s| s.connect(addr)).is_ok())
        }
        _ => {
            eprintln!("rate: unknown op {op}");
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    let limit = Duration::from_secs_f64(seconds);
    while start.elapsed() < limit {
        // Check the clock every 64 operations only.
        for _ in 0..64 {
            if step() {
                ops += 1;
            } else {
                errors += 1;
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_s();
    format!(
        r#"{{"op":"{op}","ops":{ops},"errors":{errors},"seconds":{secs:.3},"per_s":{:.1},"cpu_s":{cpu:.4},"per_cpu_s":{:.1}}}"#,
        ops as f64 / secs,
        ops as f64 / cpu
    )
}

/// `owd ADDR COUNT INTERVAL_MS`: a receiver on ADDR (in this process) and COUNT datagrams to
/// it, one every INTERVAL_MS, each carrying its send time: the one-way delay of each.
pub fn owd(addr: SocketAddr, count: usize, interval_ms: f64) -> String {
    let rx = UdpSocket::bind(addr).expect("bind the receiver");
    rx.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let receiver = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut delays = Vec::new();
            let mut buf = [0u8; 64];
            let mut quiet = Instant::now();
            // Stops 2 s after the sender finished and nothing more arrived for 1 s.
            while !(done.load(Ordering::Relaxed) && quiet.elapsed() > Duration::from_secs(2)) {
                if let Ok(n) = rx.recv(&mut buf)
                    && n >= 16
                {
                    let sent = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                    delays.push(mono_ns().saturating_sub(sent) as f64 / 1e6);
                    quiet = Instant::now();
                }
            }
            delays
        })
    };
    let tx = UdpSocket::bind(if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap();
    let mut errors = 0;
    let t0 = Instant::now();
    for i in 0..count {
        let due = t0 + Duration::from_secs_f64(interval_ms * i as f64 / 1000.0);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let mut buf = [0u8; 64];
        buf[..8].copy_from_slice(&(i as u64).to_be_bytes());
        buf[8..16].copy_from_slice(&mono_ns().to_be_bytes());
        if tx.send_to(&buf, addr).is_err() {
            errors += 1;
        }
    }
    done.store(true, Ordering::Relaxed);
    let delays = receiver.join().unwrap();
    format!(r#"{{"sent":{count},"errors":{errors},{}}}"#, dist(delays))
}

/// `tcp-rate ADDR SECONDS`: a sink on ADDR (in this process) and one connection sending to
/// it as fast as it can for SECONDS. The rate is what the sink received between its first
/// byte + 1 s (past slow start and the shaper's first burst) and the end.
pub fn tcp_rate(addr: SocketAddr, seconds: f64) -> String {
    let l = TcpListener::bind(addr).expect("bind the sink");
    let sink = std::thread::spawn(move || {
        let (mut c, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        let mut first: Option<Instant> = None;
        let mut mark: Option<(Instant, u64)> = None;
        loop {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let now = Instant::now();
                    let f = *first.get_or_insert(now);
                    total += n as u64;
                    if mark.is_none() && now.duration_since(f) >= Duration::from_secs(1) {
                        mark = Some((now, total));
                    }
                }
            }
        }
        let end = Instant::now();
        (mark, total, end)
    });
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    let buf = vec![7u8; 64 * 1024];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        if c.write(&buf).is_err() {
            break;
        }
    }
    // What was queued but not yet delivered at the deadline does not count: cut the
    // connection rather than wait for the shaper to drain it.
    let _ = c.shutdown(std::net::Shutdown::Both);
    drop(c);
    let (mark, total, end) = sink.join().unwrap();
    let (rate, secs) = match mark {
        Some((t, b)) => {
            let s = end.duration_since(t).as_secs_f64().max(1e-3);
            ((total - b) as f64 * 8.0 / s, s)
        }
        None => (-1.0, 0.0),
    };
    format!(r#"{{"bytes":{total},"seconds":{secs:.3},"rate_bps":{rate:.0}}}"#)
}

async fn client(socket: &str) -> FaultServiceClient<tonic::transport::Channel> {
    let path = socket.to_string();
    let ch =
        tonic::transport::Endpoint::from_static("http://localhost")
            .connect_with_connector(tower::service_fn(move |_| {
                let path = path.clone();
                async move {
                    tokio::net::UnixStream::connect(path).await.map(hyper_util::rt::TokioIo::new)
                }
            }))
            .await
            .expect("connecting to the agent");
    FaultServiceClient::new(ch)
}

fn loss_req(cgroup: &str, percent: f64, port: u16) -> pb::InjectRequest {
    pb::InjectRequest {
        target: Some(pb::Target { kind: Some(pb::target::Kind::CgroupPath(cgroup.to_string())) }),
        fault: Some(pb::Fault {
            kind: Some(pb::fault::Kind::NetLoss(pb::NetLoss {
                percent,
                filter: Some(pb::PacketFilter {
                    direction: pb::Direction::Egress as i32,
                    protocol: pb::Protocol::Udp as i32,
                    remote_ports: vec![pb::PortRange { first: port.into(), last: port.into() }],
                    ..Default::default()
                }),
                ..Default::default()
            })),
        }),
        duration: Some(prost_types::Duration { seconds: 600, nanos: 0 }),
        labels: [("bench".to_string(), "inject-latency".to_string())].into(),
        lease: None,
        ..Default::default()
    }
}

/// Send time of every datagram (index = sequence number) and whether sendto() took it.
#[derive(Default)]
struct SendLog {
    sent: Mutex<Vec<(u64, bool)>>,
    /// Send time of the newest datagram that arrived.
    last_arrival_sent: AtomicU64,
    arrived: Mutex<Vec<bool>>,
}

/// `inject-latency SOCKET CGROUP COUNT cold|warm INTERVAL_US`, run inside CGROUP: a stream
/// of numbered datagrams (one every INTERVAL_US) from this process to itself, COUNT times a
/// 100% egress loss Inject for its port through the agent at SOCKET, and for each the time
/// from the call's return to the first datagram it dropped (negative: the fault was in
/// place before the call returned). Warm: another experiment keeps the cgroup's programs
/// attached, so an Inject only adds a rule; cold: every Inject is the cgroup's first.
pub fn inject_latency(socket: &str, cgroup: &str, count: usize, warm: bool, interval_us: u64) {
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let port = rx.local_addr().unwrap().port();
    let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
    tx.connect(rx.local_addr().unwrap()).unwrap();
    let log = Arc::new(SendLog::default());
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seq = 0u64;
            let start = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let t = mono_ns();
                let mut buf = [0u8; 16];
                buf[..8].copy_from_slice(&seq.to_be_bytes());
                buf[8..].copy_from_slice(&t.to_be_bytes());
                let ok = tx.send(&buf).is_ok();
                log.sent.lock().unwrap().push((t, ok));
                seq += 1;
                let due = start + Duration::from_micros(interval_us * seq);
                if let Some(w) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(w);
                }
            }
        })
    };
    let receiver = {
        let (log, stop) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::Relaxed) {
                if let Ok(n) = rx.recv(&mut buf)
                    && n >= 16
                {
                    let seq = u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize;
                    let sent = u64::from_be_bytes(buf[8..16].try_into().unwrap());
                    let mut a = log.arrived.lock().unwrap();
                    if a.len() <= seq {
                        a.resize(seq + 1, false);
                    }
                    a[seq] = true;
                    log.last_arrival_sent.fetch_max(sent, Ordering::Relaxed);
                }
            }
        })
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut after_return = Vec::new();
    let mut after_call = Vec::new();
    let mut gaps = Vec::new();
    let mut call_ms = Vec::new();
    let mut undetected = 0;
    rt.block_on(async {
        let mut c = client(socket).await;
        let keep = if warm {
            // Another port: attached programs, a rule that this stream never meets.
            let r = c.inject(loss_req(cgroup, 1e-6, 9)).await.expect("warm-up inject");
            r.into_inner().experiment.map(|e| e.id)
        } else {
            None
        };
        let mut resumed_at = mono_ns();
        for _ in 0..count {
            // The stream flows again: a datagram sent after the last Cancel arrived.
            let t = Instant::now();
            while log.last_arrival_sent.load(Ordering::Relaxed) <= resumed_at
                && t.elapsed() < Duration::from_secs(5)
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            let t_call = mono_ns();
            let r = c.inject(loss_req(cgroup, 100.0, port)).await.expect("inject");
            let t_ret = mono_ns();
            let id = r.into_inner().experiment.map(|e| e.id).unwrap_or_default();
            // Let the stream run into the fault; then find the first datagram it took, among
            // those sent at least 5 ms ago (younger ones may still be on their way).
            let mut first = None;
            let wait = Instant::now();
            while first.is_none() && wait.elapsed() < Duration::from_secs(2) {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let horizon = mono_ns() - 5_000_000;
                let sent = log.sent.lock().unwrap();
                let arrived = log.arrived.lock().unwrap();
                let lost = |i: usize| !sent[i].1 || !arrived.get(i).copied().unwrap_or(false);
                let from = sent.partition_point(|(t, _)| *t < t_call);
                let to = sent.partition_point(|(t, _)| *t < horizon);
                first = (from..to).find(|&i| lost(i)).map(|i| {
                    let prev = if i > 0 { sent[i - 1].0 } else { sent[i].0 };
                    (sent[i].0, sent[i].0 - prev)
                });
            }
            match first {
                Some((t_eff, gap)) => {
                    after_return.push((t_eff as f64 - t_ret as f64) / 1e6);
                    after_call.push((t_eff - t_call) as f64 / 1e6);
                    gaps.push(gap as f64 / 1e6);
                }
                None => undetected += 1,
            }
            call_ms.push((t_ret - t_call) as f64 / 1e6);
            c.cancel(pb::CancelRequest { id }).await.expect("cancel");
            resumed_at = mono_ns();
        }
        if let Some(id) = keep {
            c.cancel(pb::CancelRequest { id }).await.expect("cancel the warm-up experiment");
        }
    });
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    receiver.join().unwrap();
    let before = after_return.iter().filter(|v| **v <= 0.0).count();
    let raw: Vec<String> = after_return.iter().map(|v| format!("{v:.4}")).collect();
    println!(
        r#"{{"injects":{count},"undetected":{undetected},"in_effect_at_return":{before},"after_return":{{{}}},"after_call":{{{}}},"call":{{{}}},"resolution":{{{}}},"raw_after_return_ms":[{}]}}"#,
        dist(after_return),
        dist(after_call),
        dist(call_ms),
        dist(gaps),
        raw.join(",")
    );
}

/// `spin SECONDS [PERCENT]`: one thread busy for PERCENT (default 100) of every 10 ms (a
/// competing process in a cgroup).
pub fn spin(seconds: f64, percent: f64) -> String {
    let start = Instant::now();
    let period = std::time::Duration::from_millis(10);
    let busy = period.mul_f64((percent / 100.0).clamp(0.0, 1.0));
    let mut x = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        while t.elapsed() < busy {
            for i in 0..1_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x);
        }
        if busy < period {
            std::thread::sleep(period - busy);
        }
    }
    r#"{"spun":true}"#.to_string()
}

/// The programs process `pid` holds, by name: total run time (ns) and runs so far (counted
/// while kernel.bpf_stats_enabled is 1). The VM tier's per-hook program time.
pub fn progs(pid: u32) -> String {
    let mut by_name: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for p in faultline_tests::bpf::programs_of(pid).expect("the agent's programs") {
        let e = by_name.entry(p.name).or_default();
        e.0 += p.run_time_ns;
        e.1 += p.run_cnt;
    }
    let items: Vec<String> =
        by_name.iter().map(|(n, (ns, runs))| format!(r#""{n}":[{ns},{runs}]"#)).collect();
    format!("{{{}}}", items.join(","))
}
