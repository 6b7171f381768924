//! Threaded targets for the delay tracer's tests (sys delay).
//!
//! threads-timed SECONDS [IN OUT]: thread A reads 1 byte of /dev/zero then sleeps 1 ms, over
//! and over, timing each round; with two files IN and OUT (opened before the go), a round is
//! an open (and close) of IN, a pread and a pwrite of one byte on it (through a descriptor
//! opened before the go), the same on OUT, then the sleep, and each call is
//! timed on its own (a "round" below is then one call; long ones name their file: "in" or
//! "out"). Thread B counts getppid calls per millisecond. Prints
//! `{"pid","tid_a","tid_b"}`, waits for a line on stdin, runs SECONDS, then prints A's
//! rounds longer than 20 ms (where a hold landed), A's median round, and B's rate inside
//! those rounds and outside them.
//!
//! exec-thread PROG ARGS...: prints `{"pid","tid"}` of a second thread, waits for a line on
//! stdin, and that thread (not the leader) execs PROG.

use std::{
    io::{Read as _, Write as _},
    sync::mpsc,
    time::{Duration, Instant},
};

fn gettid() -> i32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::gettid() }
}

fn wait_for_go() {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

/// One timed call (or round): when it began and how long it took, in ms since the go; the
/// file it worked on, in the two-file form.
type Timed = (f64, f64, Option<&'static str>);

/// IN or OUT: its descriptor, its path, and "in" or "out".
type FileOf = (std::fs::File, String, &'static str);

/// The calls on IN and OUT of one round, each timed from `t0`.
fn file_round(files: &[FileOf; 2], t0: Instant, out: &mut Vec<Timed>) {
    use std::os::unix::fs::FileExt as _;
    let mut buf = [0u8; 1];
    for (f, path, kind) in files {
        for op in 0..3 {
            let s = Instant::now();
            match op {
                0 => drop(std::fs::File::open(path).unwrap()),
                1 => f.read_exact_at(&mut buf, 0).unwrap(),
                _ => f.write_all_at(b"x", 0).unwrap(),
            }
            let at = s.duration_since(t0).as_secs_f64() * 1e3;
            out.push((at, s.elapsed().as_secs_f64() * 1e3, Some(*kind)));
        }
    }
}

pub fn timed(seconds: f64, files: Option<(&str, &str)>) -> String {
    let open = |p: &str| std::fs::OpenOptions::new().read(true).write(true).open(p).unwrap();
    let files =
        files.map(|(i, o)| [(open(i), i.to_string(), "in"), (open(o), o.to_string(), "out")]);
    let (tx_a, rx_a) = mpsc::channel();
    let (tx_b, rx_b) = mpsc::channel();
    let (go_a, start_a) = mpsc::channel::<Instant>();
    let (go_b, start_b) = mpsc::channel::<Instant>();
    let run = Duration::from_secs_f64(seconds);
    let a = std::thread::spawn(move || {
        tx_a.send(gettid()).unwrap();
        let t0 = start_a.recv().unwrap();
        let mut zero = std::fs::File::open("/dev/zero").unwrap();
        let mut buf = [0u8; 1];
        let mut rounds: Vec<Timed> = Vec::new();
        let mut last = Instant::now();
        while t0.elapsed() < run {
            if let Some(files) = &files {
                file_round(files, t0, &mut rounds);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            zero.read_exact(&mut buf).unwrap();
            std::thread::sleep(Duration::from_millis(1));
            let now = Instant::now();
            let at = last.duration_since(t0).as_secs_f64() * 1e3;
            rounds.push((at, now.duration_since(last).as_secs_f64() * 1e3, None));
            last = now;
        }
        rounds
    });
    let b = std::thread::spawn(move || {
        tx_b.send(gettid()).unwrap();
        let t0 = start_b.recv().unwrap();
        let mut buckets = vec![0u32; (seconds * 1000.0) as usize + 2];
        loop {
            for _ in 0..256 {
                // SAFETY: no arguments, cannot fail.
                unsafe { libc::getppid() };
            }
            let ms = t0.elapsed().as_millis() as usize;
            if ms >= buckets.len() {
                return buckets;
            }
            buckets[ms] += 256;
        }
    });
    let (tid_a, tid_b) = (rx_a.recv().unwrap(), rx_b.recv().unwrap());
    println!(r#"{{"pid":{},"tid_a":{tid_a},"tid_b":{tid_b}}}"#, std::process::id());
    std::io::stdout().flush().unwrap();
    wait_for_go();
    let t0 = Instant::now();
    go_a.send(t0).unwrap();
    go_b.send(t0).unwrap();
    let rounds = a.join().unwrap();
    let buckets = b.join().unwrap();
    let mut durs: Vec<f64> = rounds.iter().map(|r| r.1).collect();
    durs.sort_by(f64::total_cmp);
    let median = durs.get(durs.len() / 2).copied().unwrap_or(0.0);
    let long: Vec<Timed> = rounds.iter().copied().filter(|r| r.1 > 20.0).collect();
    // B's whole milliseconds inside a long round, and those touching none (the first and
    // last 50 ms left out: start-up and the end of the run).
    let (mut inside, mut n_in, mut outside, mut n_out) = (0u64, 0u64, 0u64, 0u64);
    for (ms, count) in buckets.iter().enumerate().skip(50) {
        if ms + 50 > buckets.len() {
            break;
        }
        let (lo, hi) = (ms as f64, ms as f64 + 1.0);
        if long.iter().any(|(at, d, _)| lo >= *at && hi <= at + d) {
            inside += u64::from(*count);
            n_in += 1;
        } else if !long.iter().any(|(at, d, _)| hi > *at && lo < at + d) {
            outside += u64::from(*count);
            n_out += 1;
        }
    }
    let per = |sum: u64, n: u64| if n == 0 { 0.0 } else { sum as f64 / n as f64 };
    let long_json: Vec<String> = long
        .iter()
        .map(|(at, d, kind)| {
            let file = kind.map(|k| format!(r#","file":"{k}""#)).unwrap_or_default();
            format!(r#"{{"at_ms":{at:.3},"ms":{d:.3}{file}}}"#)
        })
        .collect();
    let calls_in = rounds.iter().filter(|r| r.2 == Some("in")).count();
    format!(
        r#"{{"rounds":{},"calls_in":{calls_in},"median_ms":{median:.3},"long":[{}],"b_inside":{:.1},"b_inside_ms":{n_in},"b_outside":{:.1},"b_outside_ms":{n_out}}}"#,
        rounds.len(),
        long_json.join(","),
        per(inside, n_in),
        per(outside, n_out),
    )
}

pub fn exec_thread(args: &[String]) {
    use std::os::unix::process::CommandExt as _;
    let (tx, rx) = mpsc::channel();
    let (go, started) = mpsc::channel::<()>();
    let args = args.to_vec();
    let _t = std::thread::spawn(move || {
        tx.send(gettid()).unwrap();
        started.recv().unwrap();
        let e = std::process::Command::new(&args[0]).args(&args[1..]).exec();
        panic!("exec {}: {e}", args[0]);
    });
    let tid = rx.recv().unwrap();
    println!(r#"{{"pid":{},"tid":{tid}}}"#, std::process::id());
    std::io::stdout().flush().unwrap();
    wait_for_go();
    go.send(()).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}
