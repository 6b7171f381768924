//! A process that reads its clocks when asked (`fl-probe clock-server`, or the Go program
//! tests/go/clock), for the time-skew tests: started before a fault, asked during and after it.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
};

use crate::{Cgroup, probe_bin};

pub struct ClockServer {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    pub pid: i32,
}

/// What one reading said, against the test's own clock at the time.
#[derive(Debug)]
pub struct Reading {
    pub json: serde_json::Value,
    /// vDSO clock_gettime(CLOCK_REALTIME) minus true time, in ms.
    pub vdso_ms: f64,
    pub gettimeofday_ms: f64,
    /// time() minus true seconds.
    pub time_s: i64,
    /// The same through the raw system calls (`syscall(SYS_clock_gettime)`, ..gettimeofday).
    pub raw_ms: f64,
    pub raw_gettimeofday_ms: f64,
    /// How long the request took: the reading was taken somewhere in it.
    pub rtt_ms: f64,
}

fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128
}

impl ClockServer {
    /// Starts in `cg` (or here when None).
    pub fn start(cg: Option<&Cgroup>) -> ClockServer {
        Self::start_program(cg, probe_bin(), &["clock-server"])
    }

    /// The Go clock server (readings only: no exec, spawn or run), built by `cargo xtask
    /// test` with Debian's Go toolchain: $FL_GO_CLOCK_BIN, else target/go/fl-clock-go.
    pub fn start_go(cg: Option<&Cgroup>) -> ClockServer {
        let bin = std::env::var_os("FL_GO_CLOCK_BIN").map_or_else(
            || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/go/fl-clock-go"),
            std::path::PathBuf::from,
        );
        assert!(
            bin.exists(),
            "{} is missing: `cargo xtask test` builds it (Debian's golang-go, `cargo xtask setup`)",
            bin.display()
        );
        Self::start_program(cg, bin, &[])
    }

    fn start_program(cg: Option<&Cgroup>, bin: std::path::PathBuf, args: &[&str]) -> ClockServer {
        let mut cmd = match cg {
            Some(cg) => cg.command(&bin),
            None => Command::new(&bin),
        };
        let mut child = cmd
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let input = child.stdin.take().unwrap();
        let output = BufReader::new(child.stdout.take().unwrap());
        let pid = child.id() as i32;
        let mut s = ClockServer { child, input, output, pid };
        s.ready();
        s
    }

    fn ready(&mut self) {
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready", "the clock server said {line:?}");
    }

    fn ask(&mut self, what: &str) -> Reading {
        let before = now_ns();
        self.input.write_all(format!("{what}\n").as_bytes()).unwrap();
        self.answer(before)
    }

    /// Asks for a reading without waiting for it (`answer` takes it).
    pub fn ask_later(&mut self) -> i128 {
        let before = now_ns();
        self.input.write_all(b"read\n").unwrap();
        before
    }

    /// Whether an answer is ready to be read within `within` (false: the process did not
    /// run to answer, e.g. it is stopped).
    pub fn answers_within(&mut self, within: std::time::Duration) -> bool {
        use std::os::fd::AsRawFd as _;
        if !self.output.buffer().is_empty() {
            return true;
        }
        let mut p = libc::pollfd {
            fd: self.output.get_ref().as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one live descriptor.
        unsafe { libc::poll(&mut p, 1, within.as_millis() as i32) > 0 }
    }

    /// The answer to a request sent at `before` (now_ns).
    pub fn answer(&mut self, before: i128) -> Reading {
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        let after = now_ns();
        let json: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        // The reading was taken between before and after: against their midpoint.
        let mid = (before + after) / 2;
        let ms = |k: &str| (json[k].as_i64().unwrap() as i128 - mid) as f64 / 1e6;
        Reading {
            vdso_ms: ms("vdso_ns"),
            gettimeofday_ms: ms("gettimeofday_ns"),
            time_s: json["time_s"].as_i64().unwrap() - (mid / 1_000_000_000) as i64,
            raw_ms: ms("raw_ns"),
            raw_gettimeofday_ms: ms("raw_gettimeofday_ns"),
            rtt_ms: (after - before) as f64 / 1e6,
            json,
        }
    }

    pub fn read(&mut self) -> Reading {
        self.ask("read")
    }

    /// Execs a fresh clock server in the same process, then reads.
    pub fn exec_then_read(&mut self) -> Reading {
        // Its next request only after the new image is up: what the old one had read ahead
        // of `exec` would be lost.
        self.input.write_all(b"exec\n").unwrap();
        self.ready();
        self.read()
    }

    /// Runs `prog args` (split at spaces) as its child: (exit code, stdout).
    pub fn run(&mut self, cmdline: &str) -> (i64, String) {
        self.input.write_all(format!("run {cmdline}\n").as_bytes()).unwrap();
        let mut line = String::new();
        self.output.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        (v["code"].as_i64().unwrap(), v["stdout"].as_str().unwrap().to_string())
    }

    /// A child it forks and execs (`clock-once`) reads once.
    pub fn child_reads(&mut self) -> Reading {
        self.ask("spawn")
    }
}

impl Drop for ClockServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Reading {
    /// Every vDSO path (clock_gettime, gettimeofday, time) reads `offset_ms` off, +- 50 ms
    /// and half the request's round trip (time() +- 1 s more: it counts whole seconds).
    /// The raw system calls read `offset_ms` off (+- 50 ms and half the round trip).
    pub fn assert_raw_off_by(&self, offset_ms: f64, what: &str) {
        let tol = 50.0 + self.rtt_ms / 2.0;
        for (path, v) in [
            ("syscall(SYS_clock_gettime)", self.raw_ms),
            ("syscall(SYS_gettimeofday)", self.raw_gettimeofday_ms),
        ] {
            assert!(
                (v - offset_ms).abs() < tol,
                "{what}: {path} read {v:.1} ms off true time, not {offset_ms} ms: {}",
                self.json
            );
        }
    }

    pub fn assert_off_by(&self, offset_ms: f64, what: &str) {
        let tol = 50.0 + self.rtt_ms / 2.0;
        for (path, v) in [("clock_gettime", self.vdso_ms), ("gettimeofday", self.gettimeofday_ms)] {
            assert!(
                (v - offset_ms).abs() < tol,
                "{what}: {path} read {v:.1} ms off true time, not {offset_ms} ms: {}",
                self.json
            );
        }
        let want_s = (offset_ms / 1000.0).round() as i64;
        // Whole seconds, and the same half round trip as the others: a loaded emulated guest
        // took seconds to answer once, and time() read 2 s off while the others were in.
        let tol_s = 1 + (self.rtt_ms / 2000.0).ceil() as i64;
        assert!(
            (self.time_s - want_s).abs() <= tol_s,
            "{what}: time() read {} s off, not {want_s} s: {}",
            self.time_s,
            self.json
        );
    }
}
