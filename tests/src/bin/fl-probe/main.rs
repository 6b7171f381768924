//! Traffic from inside a target cgroup: the tests start this binary in the cgroup and read
//! what it saw as one JSON line on stdout.
//!
//! udp-send ADDR COUNT             send COUNT datagrams (sequence numbers), paced
//! udp-echo-client ADDR COUNT      send COUNT requests, count distinct replies
//! tcp-echo ADDR TIMEOUT_MS        connect, send "ping", expect it back
//! udp-rtt ADDR COUNT              one request at a time to an echo server: RTT percentiles
//! tcp-send ADDR SECONDS           send as fast as possible for SECONDS
//! tcp-recv ADDR SECONDS           read what a TcpSource sends for SECONDS: rate_bps
//! http-get ADDR COUNT             HTTP/1.1 GETs on one kept-alive connection: latency
//! dns-query ADDR NAME MODE        one A query (MODE: sendto, or connect as glibc does)
//! calls OP ARG COUNT              one system call COUNT times: outcomes (see calls.rs)
//! wait ARGS...                    print our pid, wait for a line on stdin, then run ARGS
//! spawn ARGS...                   run ARGS in a child fl-probe, print what it printed
//! threads-timed SECONDS [IN OUT]  two timed threads for the delay tracer (see threads.rs)
//! exec-thread PROG ARGS...        a thread other than the leader execs PROG (threads.rs)
//! clock-server                    a clock reading per line on stdin (see clock.rs)
//! clock-once                      one clock reading
//! clock-spin OFFSET_MS            two threads read the clock until a line on stdin: reads
//!                                 neither true nor shifted
//!
//! For `cargo xtask bench` (see bench.rs):
//! rate OP ARG SECONDS             open PATH | connect ADDR | connect-refused ADDR |
//!                                 udp-connect ADDR | getppid - | pread FILE (4 KiB), as
//!                                 often as possible: per_s
//! owd ADDR COUNT INTERVAL_MS      datagrams to a receiver in this process: one-way delays
//! tcp-rate ADDR SECONDS           one TCP connection to a sink in this process: rate_bps
//! inject-latency SOCKET CGROUP COUNT cold|warm INTERVAL_US
//!                                 Inject call to first dropped datagram, COUNT times
//! spin SECONDS [PERCENT]          one thread busy PERCENT (100) of the time
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bench;
mod calls;
mod clock;
mod threads;

use std::{
    collections::HashSet,
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

fn unspecified_for(addr: &SocketAddr) -> &'static str {
    if addr.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
}

/// Paced so the receiver's socket buffer never overflows: only the fault drops packets.
fn pace(i: usize) {
    if i % 50 == 49 {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// 64 bytes: the sequence number, its complement, then zeros; a receiver can tell any
/// flipped bit (see UdpSink::drain_check).
fn datagram(seq: u64) -> [u8; 64] {
    let mut buf = [0u8; 64];
    buf[..8].copy_from_slice(&seq.to_be_bytes());
    buf[8..16].copy_from_slice(&(!seq).to_be_bytes());
    buf
}

fn udp_send(addr: SocketAddr, count: usize) -> String {
    let s = UdpSocket::bind(unspecified_for(&addr)).unwrap();
    let mut errors = 0;
    for i in 0..count {
        let buf = datagram(i as u64);
        if s.send_to(&buf, addr).is_err() {
            errors += 1;
        }
        pace(i);
    }
    format!(r#"{{"sent":{count},"errors":{errors}}}"#)
}

fn udp_echo_client(addr: SocketAddr, count: usize) -> String {
    let s = UdpSocket::bind(unspecified_for(&addr)).unwrap();
    s.connect(addr).unwrap();
    let r = s.try_clone().unwrap();
    r.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let receiver = std::thread::spawn(move || {
        let mut seen = HashSet::new();
        let mut quiet_since = Instant::now();
        let mut buf = [0u8; 64];
        // Ends 1 s after the last reply.
        while quiet_since.elapsed() < Duration::from_secs(1) {
            if let Ok(n) = r.recv(&mut buf)
                && n >= 8
            {
                seen.insert(u64::from_be_bytes(buf[..8].try_into().unwrap()));
                quiet_since = Instant::now();
            }
        }
        seen.len()
    });
    let mut errors = 0;
    for i in 0..count {
        let mut buf = [0u8; 64];
        buf[..8].copy_from_slice(&(i as u64).to_be_bytes());
        if s.send(&buf).is_err() {
            errors += 1;
        }
        pace(i);
    }
    let received = receiver.join().unwrap();
    format!(r#"{{"sent":{count},"errors":{errors},"received":{received}}}"#)
}

fn tcp_echo(addr: SocketAddr, timeout_ms: u64) -> String {
    let t = Duration::from_millis(timeout_ms);
    let start = Instant::now();
    let result = (|| -> std::io::Result<()> {
        let mut c = TcpStream::connect_timeout(&addr, t)?;
        c.set_read_timeout(Some(t))?;
        c.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf)?;
        if &buf != b"ping" {
            return Err(std::io::Error::other("wrong echo"));
        }
        Ok(())
    })();
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    match result {
        Ok(()) => format!(r#"{{"ok":true,"elapsed_ms":{ms:.3}}}"#),
        Err(e) => format!(
            r#"{{"ok":false,"errno":{},"error":{:?},"elapsed_ms":{ms:.3}}}"#,
            e.raw_os_error().unwrap_or(0),
            e.to_string()
        ),
    }
}

/// Takes `mib` MiB, touching every page, then holds it until killed (or OOM-killed on the
/// way: a memory hog that needs no shell tools, whose `tail` differs between coreutils and
/// busybox).
fn alloc(mib: usize) {
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(mib);
    for _ in 0..mib {
        held.push(vec![1u8; 1 << 20]);
    }
    std::hint::black_box(&held);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return -1.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn stats(mut v: Vec<f64>, sent: usize) -> String {
    v.sort_by(|a, b| a.total_cmp(b));
    format!(
        r#"{{"sent":{sent},"received":{},"median_ms":{:.3},"p10_ms":{:.3},"p90_ms":{:.3},"min_ms":{:.3},"max_ms":{:.3}}}"#,
        v.len(),
        percentile(&v, 0.5),
        percentile(&v, 0.1),
        percentile(&v, 0.9),
        v.first().copied().unwrap_or(-1.0),
        v.last().copied().unwrap_or(-1.0)
    )
}

fn udp_rtt(addr: SocketAddr, count: usize) -> String {
    let s = UdpSocket::bind(unspecified_for(&addr)).unwrap();
    s.connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for i in 0..count as u64 {
        let start = Instant::now();
        if s.send(&i.to_be_bytes()).is_err() {
            continue;
        }
        // Skip late replies to earlier requests.
        while let Ok(n) = s.recv(&mut buf) {
            if n >= 8 && u64::from_be_bytes(buf[..8].try_into().unwrap()) == i {
                rtts.push(start.elapsed().as_secs_f64() * 1000.0);
                break;
            }
        }
    }
    stats(rtts, count)
}

fn tcp_send(addr: SocketAddr, seconds: f64) -> String {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    let buf = vec![7u8; 64 * 1024];
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        match c.write(&buf) {
            Ok(n) => bytes += n as u64,
            Err(_) => break,
        }
    }
    let _ = c.shutdown(std::net::Shutdown::Write);
    format!(r#"{{"bytes":{bytes},"seconds":{:.3}}}"#, start.elapsed().as_secs_f64())
}

fn tcp_recv(addr: SocketAddr, seconds: f64) -> String {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let start = Instant::now();
    let mut bytes = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        match c.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => bytes += n as u64,
            Err(_) => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    format!(
        r#"{{"bytes":{bytes},"seconds":{secs:.3},"rate_bps":{:.0}}}"#,
        bytes as f64 * 8.0 / secs
    )
}

fn http_get(addr: SocketAddr, count: usize) -> String {
    let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut lat = Vec::new();
    let req = format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    for _ in 0..count {
        let start = Instant::now();
        if c.write_all(req.as_bytes()).is_err() {
            break;
        }
        // The test's server answers with a fixed-length body: read until it is complete.
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        let complete = |g: &[u8]| {
            let text = String::from_utf8_lossy(g);
            text.find("\r\n\r\n").is_some_and(|h| {
                let len = text[..h]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                g.len() >= h + 4 + len
            })
        };
        while !complete(&got) {
            match c.read(&mut buf) {
                Ok(0) | Err(_) => return stats(lat, count),
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        lat.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    stats(lat, count)
}

fn dns_query(addr: SocketAddr, name: &str, connected: bool) -> String {
    let s = UdpSocket::bind(unspecified_for(&addr)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let sent = if connected {
        s.connect(addr).unwrap();
        s.send(&q)
    } else {
        s.send_to(&q, addr)
    };
    if let Err(e) = sent {
        return format!(r#"{{"error":{:?}}}"#, e.to_string());
    }
    let mut buf = [0u8; 512];
    match s.recv_from(&mut buf) {
        Ok((n, from)) if n >= 12 => {
            let rcode = buf[3] & 0x0f;
            let answers = u16::from_be_bytes([buf[6], buf[7]]);
            let peer = if connected {
                s.peer_addr().map(|p| p.to_string()).unwrap_or_default()
            } else {
                String::new()
            };
            format!(
                r#"{{"rcode":{rcode},"answers":{answers},"from":"{from}","peer":"{peer}","id_ok":{}}}"#,
                buf[0] == 0xab && buf[1] == 0xcd
            )
        }
        Ok(_) => r#"{"error":"short reply"}"#.to_string(),
        Err(_) => r#"{"timeout":true}"#.to_string(),
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "wait") {
        // A pid target: the test applies the fault to us, then lets us go.
        println!("{}", std::process::id());
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        args.remove(0);
    }
    if args.first().is_some_and(|a| a == "spawn") {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(&args[1..])
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        return;
    }
    if args.first().is_some_and(|a| a == "clock-server") {
        clock::server();
        return;
    }
    if args.first().is_some_and(|a| a == "alloc") {
        alloc(args[1].parse().expect("MIB"));
        return;
    }
    if args.first().is_some_and(|a| a == "lsm-floor") {
        // The bench's floor for the file programs: held until killed.
        let _floor = faultline_tests::bpf::LsmFloor::attach(std::path::Path::new(&args[1]))
            .unwrap_or_else(|e| {
                eprintln!("lsm-floor: {e:#}");
                std::process::exit(1)
            });
        println!("attached");
        loop {
            std::thread::park();
        }
    }
    if args.first().is_some_and(|a| a == "exec-thread") {
        threads::exec_thread(&args[1..]);
        return;
    }
    let addr = || args[1].parse::<SocketAddr>().expect("ADDR");
    let num = || args[2].parse::<usize>().expect("number");
    let out = match args.first().map(String::as_str) {
        Some("udp-send") => udp_send(addr(), num()),
        Some("udp-echo-client") => udp_echo_client(addr(), num()),
        Some("tcp-echo") => tcp_echo(addr(), num() as u64),
        Some("udp-rtt") => udp_rtt(addr(), num()),
        Some("tcp-send") => tcp_send(addr(), args[2].parse().expect("seconds")),
        Some("calls") => calls::run(&args[1], &args[2], args[3].parse().expect("COUNT")),
        Some("tcp-recv") => tcp_recv(addr(), args[2].parse().expect("seconds")),
        Some("threads-timed") => threads::timed(
            args[1].parse().expect("SECONDS"),
            args.get(2).map(|i| (i.as_str(), args.get(3).expect("OUT").as_str())),
        ),
        Some("http-get") => http_get(addr(), num()),
        Some("clock-once") => clock::reading(),
        Some("clock-spin") => clock::spin(args[1].parse().expect("OFFSET_MS")),
        Some("rate") => bench::rate(&args[1], &args[2], args[3].parse().expect("SECONDS")),
        Some("owd") => bench::owd(addr(), num(), args[3].parse().expect("INTERVAL_MS")),
        Some("progs") => bench::progs(args[1].parse().expect("PID")),
        Some("tcp-rate") => bench::tcp_rate(addr(), args[2].parse().expect("SECONDS")),
        Some("spin") => bench::spin(
            args[1].parse().expect("SECONDS"),
            args.get(2).map_or(100.0, |p| p.parse().expect("PERCENT")),
        ),
        Some("inject-latency") => {
            let n = args[3].parse().expect("COUNT");
            let interval = args[5].parse().expect("INTERVAL_US");
            bench::inject_latency(&args[1], &args[2], n, args[4] == "warm", interval);
            return;
        }
        Some("dns-query") => {
            dns_query(addr(), &args[2], args.get(3).is_some_and(|m| m == "connect"))
        }
        _ => {
            eprintln!("usage: fl-probe udp-send|udp-echo-client|tcp-echo ADDR N");
            std::process::exit(2);
        }
    };
    println!("{out}");
}
