//! `calls OP ARG COUNT`: one system call (or a small fixed sequence ending in it) COUNT
//! times; reports how many succeeded, the errnos seen, and the first 200 outcomes in order
//! ('.' success, 'x' failure) so tests can check every-Nth and max-hits patterns, and how
//! long each of the first 200 took in ms (`ms`: sys delay).

use std::{
    collections::BTreeMap,
    ffi::CString,
    io::{Read as _, Seek as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    time::Duration,
};

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(-1)
}

fn last() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
}

/// Runs `op` `count` times: Ok(()) or Err(errno) each time.
fn each(count: usize, mut op: impl FnMut(usize) -> Result<(), i32>) -> String {
    let mut ok = 0;
    let mut errnos: BTreeMap<i32, usize> = BTreeMap::new();
    let mut seq = String::new();
    let mut ms = Vec::new();
    for i in 0..count {
        let t0 = std::time::Instant::now();
        let r = op(i);
        if ms.len() < 200 {
            ms.push(format!("{:.3}", t0.elapsed().as_secs_f64() * 1e3));
        }
        match r {
            Ok(()) => ok += 1,
            Err(e) => *errnos.entry(e).or_default() += 1,
        }
        if seq.len() < 200 {
            seq.push(if r.is_ok() { '.' } else { 'x' });
        }
    }
    let errs: Vec<String> = errnos.iter().map(|(e, n)| format!(r#""{e}":{n}"#)).collect();
    format!(
        r#"{{"calls":{count},"ok":{ok},"errnos":{{{}}},"seq":"{seq}","ms":[{}]}}"#,
        errs.join(","),
        ms.join(",")
    )
}

pub fn run(op: &str, arg: &str, count: usize) -> String {
    let path = || CString::new(arg).unwrap_or_default();
    match op {
        "connect" => {
            let addr: SocketAddr = arg.parse().expect("ADDR");
            each(count, |_| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .map(drop)
                    .map_err(|e| errno(&e))
            })
        }
        "bind" => each(count, |_| UdpSocket::bind(arg).map(drop).map_err(|e| errno(&e))),
        "socket" => each(count, |_| {
            // SAFETY: plain socket(2); the descriptor is closed at once.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
            if fd < 0 {
                return Err(last());
            }
            // SAFETY: closing our own descriptor.
            unsafe { libc::close(fd) };
            Ok(())
        }),
        "sendto" => {
            let addr: SocketAddr = arg.parse().expect("ADDR");
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            each(count, |_| s.send_to(b"x", addr).map(drop).map_err(|e| errno(&e)))
        }
        "open" => each(count, |_| std::fs::File::open(arg).map(drop).map_err(|e| errno(&e))),
        "read" => {
            let mut f = std::fs::File::open(arg).expect("open for read");
            let mut b = [0u8; 1];
            each(count, |_| {
                f.rewind().map_err(|e| errno(&e))?;
                f.read(&mut b).map(drop).map_err(|e| errno(&e))
            })
        }
        "write" => {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(arg)
                .expect("open for write");
            each(count, |_| f.write(b"x").map(drop).map_err(|e| errno(&e)))
        }
        "fsync" => {
            let f = std::fs::OpenOptions::new().create(true).append(true).open(arg).expect("open");
            each(count, |_| f.sync_all().map_err(|e| errno(&e)))
        }
        "unlink" => each(count, |i| {
            let p = format!("{arg}/fl-unlink-{i}");
            std::fs::write(&p, b"x").map_err(|e| errno(&e))?;
            std::fs::remove_file(&p).map_err(|e| errno(&e))
        }),
        "mkdir" => each(count, |i| {
            let p = format!("{arg}/fl-mkdir-{i}");
            std::fs::create_dir(&p).map_err(|e| errno(&e))?;
            let _ = std::fs::remove_dir(&p);
            Ok(())
        }),
        "rename" => each(count, |i| {
            let (a, b) = (format!("{arg}/fl-ren-{i}"), format!("{arg}/fl-ren-{i}.b"));
            std::fs::write(&a, b"x").map_err(|e| errno(&e))?;
            let r = std::fs::rename(&a, &b).map_err(|e| errno(&e));
            let _ = std::fs::remove_file(&a);
            let _ = std::fs::remove_file(&b);
            r
        }),
        "fork" => each(count, |_| {
            // SAFETY: fork(2); the child exits at once without touching any state.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(last());
            }
            if pid == 0 {
                // SAFETY: leaving the child immediately.
                unsafe { libc::_exit(0) };
            }
            // SAFETY: reaping our own child.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            Ok(())
        }),
        "exec" => each(count, |_| {
            std::process::Command::new(arg).status().map(drop).map_err(|e| errno(&e))
        }),
        "mmap" => {
            let f = std::fs::File::open(arg).expect("open for mmap");
            each(count, |_| {
                // SAFETY: a private read-only mapping of one page, unmapped at once.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        4096,
                        libc::PROT_READ,
                        libc::MAP_PRIVATE,
                        f.as_raw_fd(),
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    return Err(last());
                }
                // SAFETY: unmapping what we just mapped.
                unsafe { libc::munmap(p, 4096) };
                Ok(())
            })
        }
        "stat" => {
            let c = path();
            each(count, |_| {
                // SAFETY: stat(2) into a local buffer.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                if unsafe { libc::stat(c.as_ptr(), &mut st) } != 0 { Err(last()) } else { Ok(()) }
            })
        }
        _ => {
            eprintln!("calls: unknown op {op}");
            std::process::exit(2);
        }
    }
}
