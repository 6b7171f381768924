//! Clock readers for the time-skew tests: every way a program reads the realtime clock.

use std::io::{BufRead as _, Write as _};

fn ts_ns(ts: libc::timespec) -> i128 {
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

/// One reading of each clock path, as a JSON object (nanoseconds; `time_s` in seconds).
pub fn reading() -> String {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime/gettimeofday/time/syscall with pointers to live locals.
    let (vdso, mono, gtod, time_s, raw, raw_gtod) = unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        let vdso = ts_ns(ts);
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
        let mono = ts_ns(ts);
        let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
        libc::gettimeofday(&mut tv, std::ptr::null_mut());
        let gtod = tv.tv_sec as i128 * 1_000_000_000 + tv.tv_usec as i128 * 1000;
        let time_s = libc::time(std::ptr::null_mut()) as i64;
        libc::syscall(libc::SYS_clock_gettime, libc::CLOCK_REALTIME, &mut ts);
        libc::syscall(libc::SYS_gettimeofday, &mut tv, std::ptr::null_mut::<libc::c_void>());
        let raw_gtod = tv.tv_sec as i128 * 1_000_000_000 + tv.tv_usec as i128 * 1000;
        (vdso, mono, gtod, time_s, ts_ns(ts), raw_gtod)
    };
    format!(
        r#"{{"vdso_ns":{vdso},"gettimeofday_ns":{gtod},"time_s":{time_s},"raw_ns":{raw},"raw_gettimeofday_ns":{raw_gtod},"monotonic_ns":{mono},"pid":{}}}"#,
        std::process::id()
    )
}

/// `clock-server`: `ready` once started, then a reading per line on stdin (`exec` execs a
/// fresh `clock-server` in this process, which says `ready` again; `spawn` prints the reading
/// of a child `clock-once`; `run PROG ARGS` runs a program as a child: its exit code and
/// output), until end of file.
pub fn server() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    let mut line = String::new();
    while stdin.lock().read_line(&mut line).is_ok_and(|n| n > 0) {
        match line.trim() {
            "exec" => {
                use std::os::unix::process::CommandExt as _;
                let err = std::process::Command::new(std::env::current_exe().unwrap())
                    .arg("clock-server")
                    .arg("exec'd")
                    .exec();
                panic!("exec: {err}");
            }
            "spawn" => {
                let o = std::process::Command::new(std::env::current_exe().unwrap())
                    .arg("clock-once")
                    .output()
                    .unwrap();
                out.write_all(&o.stdout).unwrap();
            }
            cmd if cmd.starts_with("run ") => {
                // A program of the test's (date, openssl) as a child of this process.
                let words: Vec<&str> = cmd[4..].split_whitespace().collect();
                let o = std::process::Command::new(words[0]).args(&words[1..]).output().unwrap();
                let text = String::from_utf8_lossy(&o.stdout).trim().replace('"', "'");
                writeln!(out, r#"{{"code":{},"stdout":"{text}"}}"#, o.status.code().unwrap_or(-1))
                    .unwrap();
            }
            _ => writeln!(out, "{}", reading()).unwrap(),
        }
        out.flush().unwrap();
        line.clear();
    }
}

/// `clock-spin OFFSET_MS`: until a line (or end of file) on stdin, two threads read
/// CLOCK_REALTIME as fast as they can and count reads that are neither true time nor true
/// time + OFFSET_MS (+- 50 ms), true time being the monotonic clock plus the gap between the
/// two at the start (the offset moves the realtime clock only).
pub fn spin(offset_ms: i64) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    static STOP: AtomicBool = AtomicBool::new(false);
    std::thread::spawn(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        STOP.store(true, Ordering::Relaxed);
    });
    let now = |id| {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a pointer to a live local.
        unsafe { libc::clock_gettime(id, &mut ts) };
        ts_ns(ts)
    };
    let gap = now(libc::CLOCK_REALTIME) - now(libc::CLOCK_MONOTONIC);
    let offset = offset_ms as i128 * 1_000_000;
    let tol = 50_000_000;
    let worker = move || {
        let (mut reads, mut shifted, mut bad) = (0u64, 0u64, 0u64);
        loop {
            // True time brackets the read; a read the thread was stopped in the middle of
            // (the skewer stops every thread to patch or unpatch) is not judged.
            let before = now(libc::CLOCK_MONOTONIC) + gap;
            let real = now(libc::CLOCK_REALTIME);
            let after = now(libc::CLOCK_MONOTONIC) + gap;
            if after - before > tol {
                continue;
            }
            reads += 1;
            let near = |t: i128| t > before - tol && t < after + tol;
            if near(real - offset) {
                shifted += 1;
            } else if !near(real) {
                bad += 1;
            }
            if reads.is_multiple_of(1024) && STOP.load(Ordering::Relaxed) {
                return (reads, shifted, bad);
            }
        }
    };
    let t = std::thread::spawn(worker);
    let (r1, s1, b1) = worker();
    let (r2, s2, b2) = t.join().unwrap();
    format!(r#"{{"reads":{},"shifted":{},"bad":{}}}"#, r1 + r2, s1 + s2, b1 + b2)
}
