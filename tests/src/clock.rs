//! A process that reads its clocks when asked (`fl-probe clock-server`), for the time-skew
//! tests: started before a fault, asked during and after it.

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
    pub raw_ms: f64,
    /// How long the request took: the reading was taken somewhere in it.
    pub rtt_ms: f64,
}

fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i128
}

impl ClockServer {
    /// Starts in `cg` (or here when None).
    pub fn start(cg: Option<&Cgroup>) -> ClockServer {
        let mut cmd = match cg {
            Some(cg) => cg.command(probe_bin()),
            None => Command::new(probe_bin()),
        };
        let mut child = cmd
            .arg("clock-server")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting fl-probe clock-server");
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
        assert_eq!(line.trim(), "ready", "fl-probe clock-server said {line:?}");
    }

    fn ask(&mut self, what: &str) -> Reading {
        let before = now_ns();
        self.input.write_all(format!("{what}\n").as_bytes()).unwrap();
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
    /// and half the request's round trip (time() +- 1 s: it counts whole seconds).
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
        assert!(
            (self.time_s - want_s).abs() <= 1,
            "{what}: time() read {} s off, not {want_s} s: {}",
            self.time_s,
            self.json
        );
    }
}
