//! The process that holds threads for `sys delay`, `faultline __delay-tracer` (its own code
//! is holder.rs), and the agent's handle on it ([`Tracer`]): this file owns the protocol.
//!
//! The exit program (agent-ebpf) chooses a call of a seized thread, writes
//! `FL_DELAY_ARMED[tid]` and sends the thread SIGURG. This process has every thread of the
//! target under `PTRACE_SEIZE` (no syscall tracing, so no cost per call): the thread enters a
//! signal-delivery-stop on its way back to user space, the tracer takes the armed entry,
//! keeps the thread stopped for the entry's `delay_ns` while it goes on serving the other
//! threads, and resumes it with the marker suppressed. Every other signal passes through.
//!
//! One tracer per agent, started with [`Tracer::spawn`]:
//!
//! ```text
//! faultline __delay-tracer AGENT_PID DEADLINE_NS ARMED_FD SEIZED_FD
//! ```
//!
//! - `AGENT_PID`: its parent. It exits (releasing everything) when that process dies (a
//!   pidfd, PR_SET_PDEATHSIG SIGTERM, and `getppid() != AGENT_PID` as a backstop).
//! - `DEADLINE_NS`: CLOCK_MONOTONIC; it releases everything and exits then at the latest.
//! - `ARMED_FD`, `SEIZED_FD`: inherited descriptors of the maps FL_DELAY_ARMED
//!   (tid -> DelayArm) and FL_DELAY_SEIZED (tid -> u32).
//! - fd 0: the control channel, a unix stream socket (one end of a socketpair). One line
//!   per request; exactly one reply line per request, in order:
//!
//! | request       | replies |
//! | ------------- | ------- |
//! | (at start)    | `ready` once it is set up, before any request is read |
//! | `seize PID`   | `ok N` (N threads seized; the process is followed, with the children it forks) · `refused PID: REASON` · `error PID: REASON` |
//! | `release PID` | `ok N` once every thread of PID and of the processes followed from it is detached · `error PID: REASON` |
//! | `stats`       | `ok` then ` SLOT:HOLDS:HELD_NS` for each rule slot that held a thread |
//! | `stop`        | `ok` once everything is released; the process then exits 0 |
//!
//! End of file on fd 0 is a `stop` without the reply.

use std::os::fd::{AsRawFd as _, BorrowedFd};

use super::super::helper::{Helper, HelperError};

/// The hidden subcommand (`faultline __delay-tracer ...`), dispatched in agent/src/main.rs.
pub const SUBCOMMAND: &str = "__delay-tracer";

/// Errors talking to the tracer (the helper channel's).
pub type TracerError = HelperError;

/// What one rule slot's holds added, per `stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotStats {
    pub slot: u32,
    pub holds: u64,
    pub held_ns: u64,
}

/// The agent's side: a running `faultline __delay-tracer` and its control channel.
/// Requests block until their reply (a `release` until the threads are detached).
pub struct Tracer {
    helper: Helper,
}

impl Tracer {
    /// Starts the tracer as a child of the agent (through the spawner thread: PDEATHSIG
    /// SIGTERM), with the two maps' descriptors, and waits for it to be ready.
    pub fn spawn(
        armed: BorrowedFd<'_>,
        seized: BorrowedFd<'_>,
        deadline_ns: u64,
    ) -> Result<Tracer, TracerError> {
        let args = vec![
            SUBCOMMAND.into(),
            std::process::id().to_string(),
            deadline_ns.to_string(),
            armed.as_raw_fd().to_string(),
            seized.as_raw_fd().to_string(),
        ];
        let keep = vec![armed.as_raw_fd(), seized.as_raw_fd()];
        Ok(Tracer { helper: Helper::spawn(args, keep)? })
    }

    pub fn pid(&self) -> Option<u32> {
        self.helper.pid()
    }

    /// Holds process `pid` from now on: every thread, and the threads and processes it
    /// creates. Returns the number of threads seized.
    pub fn seize(&mut self, pid: i32) -> Result<u32, TracerError> {
        count(&self.helper.request(&format!("seize {pid}"))?)
    }

    /// Lets `pid` (and the processes followed from it) go; a held thread resumes at once.
    /// Returns the number of threads detached.
    pub fn release(&mut self, pid: i32) -> Result<u32, TracerError> {
        count(&self.helper.request(&format!("release {pid}"))?)
    }

    /// Holds and held time per rule slot, since the start.
    pub fn stats(&mut self) -> Result<Vec<SlotStats>, TracerError> {
        parse_stats(&self.helper.request("stats")?)
    }

    /// Releases everything and waits for the tracer to exit.
    pub fn stop(self) -> Result<(), TracerError> {
        self.helper.stop()
    }
}

fn count(rest: &str) -> Result<u32, TracerError> {
    rest.trim().parse().map_err(|_| TracerError::Protocol(rest.into()))
}

fn parse_stats(rest: &str) -> Result<Vec<SlotStats>, TracerError> {
    rest.split_whitespace()
        .map(|w| {
            let mut it = w.split(':').map(str::parse::<u64>);
            match (it.next(), it.next(), it.next(), it.next()) {
                (Some(Ok(slot)), Some(Ok(holds)), Some(Ok(held_ns)), None) => {
                    Ok(SlotStats { slot: slot as u32, holds, held_ns })
                }
                _ => Err(TracerError::Protocol(rest.into())),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead as _, BufReader, Write as _},
        os::unix::net::UnixStream,
    };

    use super::*;

    #[test]
    fn stats_replies_parse() {
        assert_eq!(parse_stats("").unwrap(), vec![]);
        assert_eq!(
            parse_stats("3:2:200000000 7:1:5").unwrap(),
            vec![
                SlotStats { slot: 3, holds: 2, held_ns: 200_000_000 },
                SlotStats { slot: 7, holds: 1, held_ns: 5 }
            ]
        );
        assert!(parse_stats("3:2").is_err());
        assert!(parse_stats("3:2:1:0").is_err());
    }

    /// The client against a scripted tracer on the other end of the channel.
    #[test]
    fn client_reads_each_kind_of_reply() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let child = std::process::Command::new("true").spawn().unwrap();
        let script = std::thread::spawn(move || {
            let mut r = BufReader::new(theirs.try_clone().unwrap());
            let mut w = theirs;
            let mut asked = Vec::new();
            for reply in [
                "ok 3",
                "refused 42: traced by 9 (strace)",
                "error 43: no such process",
                "ok 1:2:300",
                "bogus",
                "ok",
            ] {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                asked.push(line.trim().to_string());
                w.write_all(format!("{reply}\n").as_bytes()).unwrap();
            }
            asked
        });
        let mut t = Tracer { helper: Helper::over(child, ours).unwrap() };
        assert_eq!(t.seize(41).unwrap(), 3);
        match t.seize(42) {
            Err(TracerError::Refused(why)) => assert_eq!(why, "42: traced by 9 (strace)"),
            other => panic!("{:?}", other.err()),
        }
        assert!(matches!(t.release(43), Err(TracerError::Failed(_))));
        assert_eq!(t.stats().unwrap(), vec![SlotStats { slot: 1, holds: 2, held_ns: 300 }]);
        assert!(matches!(t.stats(), Err(TracerError::Protocol(_))));
        t.stop().unwrap();
        assert_eq!(
            script.join().unwrap(),
            ["seize 41", "seize 42", "release 43", "stats", "stats", "stop"]
        );
    }
}
