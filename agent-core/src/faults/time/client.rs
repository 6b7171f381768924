//! The agent's handle on one experiment's `faultline __time-skew` process (skewer.rs) and
//! their protocol (the framing is faults/helper.rs's):
//!
//! ```text
//! faultline __time-skew AGENT_PID DEADLINE_NS OFFSET_NS MASK FOLLOW
//! ```
//!
//! - `AGENT_PID`: its parent; it undoes everything and exits when that process dies (a pidfd,
//!   PR_SET_PDEATHSIG SIGTERM, `getppid()` as a backstop). Killed outright, its lease ends.
//! - `DEADLINE_NS`: CLOCK_MONOTONIC; it undoes everything then at the latest, and no lease
//!   it writes reaches past it.
//! - `OFFSET_NS` (signed), `MASK` (clock ids shifted, bit n for id n), `FOLLOW` (1: children
//!   a process forks stay shifted; 0: their copy of the patch is undone before they run).
//!
//! | request     | replies |
//! | ----------- | ------- |
//! | `seize PID` | `ok N` (N threads; PID patched and followed through exec) · `refused PID: REASON` · `error PID: REASON` (try again) |
//! | `stats`     | `ok PATCHED HIT`: processes patched so far (exec'd images included); 1 once a shifted read happened |
//! | `raw FD`    | `ok`: FD, a descriptor of FL_TIME_PIDS (datapath.rs) in the agent, taken with pidfd_getfd; each patched process is listed there from now on, so that its raw clock calls are shifted too |
//! | `stop`      | `ok`, then it undoes everything and exits 0 |

use std::os::fd::RawFd;

use super::super::helper::{Helper, HelperError};

/// The hidden subcommand (`faultline __time-skew ...`), dispatched in agent/src/main.rs.
pub const SUBCOMMAND: &str = "__time-skew";

pub struct SkewerClient {
    helper: Helper,
}

/// What `stats` says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SkewStats {
    pub patched: u64,
    pub hit: bool,
}

impl SkewerClient {
    pub fn spawn(
        deadline_ns: u64,
        offset_ns: i64,
        mask: u64,
        follow: bool,
    ) -> Result<SkewerClient, HelperError> {
        let args = vec![
            SUBCOMMAND.into(),
            std::process::id().to_string(),
            deadline_ns.to_string(),
            offset_ns.to_string(),
            mask.to_string(),
            u8::from(follow).to_string(),
        ];
        Ok(SkewerClient { helper: Helper::spawn(args, Vec::new())? })
    }

    pub fn pid(&self) -> Option<u32> {
        self.helper.pid()
    }

    /// Patches `pid` (every thread; followed through exec). Returns the threads seized.
    pub fn seize(&mut self, pid: i32) -> Result<u32, HelperError> {
        let rest = self.helper.request(&format!("seize {pid}"))?;
        rest.trim().parse().map_err(|_| HelperError::Protocol(rest))
    }

    pub fn stats(&mut self) -> Result<SkewStats, HelperError> {
        let rest = self.helper.request("stats")?;
        let mut it = rest.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next(), it.next()) {
            (Some(Ok(patched)), Some(Ok(hit)), None) => Ok(SkewStats { patched, hit: hit != 0 }),
            _ => Err(HelperError::Protocol(rest)),
        }
    }

    /// Hands the skewer FL_TIME_PIDS: `fd` is its descriptor in this process.
    pub fn raw(&mut self, fd: RawFd) -> Result<(), HelperError> {
        self.helper.request(&format!("raw {fd}")).map(drop)
    }

    /// Undoes everything and waits for the skewer to exit.
    pub fn stop(self) -> Result<(), HelperError> {
        self.helper.stop()
    }
}
