//! At start, before experiments are resumed: every process whose vDSO still jumps into a
//! mapping of ours (a skewer killed outright: its lease is over, so the jump is inert) gets its
//! vDSO written back. No journal is needed: the mapping carries its magic and the entries' own
//! bytes (stub.rs). A process another tracer holds is left alone.

use std::path::Path;

use tracing::{info, warn};

use super::inject::{self, InjectError};
use crate::{
    engine::error::chain,
    kernel::ptrace::{ptrace, status_field, tasks, wait},
    store::{BoxFuture, Recoverer},
};

pub struct Leftovers;

impl Recoverer for Leftovers {
    fn kind(&self) -> &'static str {
        "time_skew"
    }

    fn run<'a>(&'a self, _state_dir: &Path) -> BoxFuture<'a> {
        Box::pin(async {
            let done = tokio::task::spawn_blocking(repair_all).await.unwrap_or_default();
            for (pid, r) in done {
                match r {
                    Ok(()) => info!(pid, "vDSO written back (left by a killed time skewer)"),
                    Err(e) => warn!(pid, error = %chain(&e), "a vDSO a killed time skewer left"),
                }
            }
        })
    }
}

/// Processes (other than this one) whose vDSO holds the skewer's jump: each written back.
pub fn repair_all() -> Vec<(i32, Result<(), InjectError>)> {
    let own = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let pids = dir.flatten().filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok());
    pids.filter(|&p| p != own && inject::left_behind(p)).map(|pid| (pid, repair(pid))).collect()
}

fn repair(pid: i32) -> Result<(), InjectError> {
    if status_field(pid, "TracerPid").is_some_and(|t| t != 0) {
        return Ok(());
    }
    let mut held = Vec::new();
    for t in tasks(pid).unwrap_or_default() {
        if ptrace(libc::PTRACE_SEIZE, t, 0, 0).is_ok()
            && ptrace(libc::PTRACE_INTERRUPT, t, 0, 0).is_ok()
            && wait(t).is_ok_and(|s| libc::WIFSTOPPED(s))
        {
            held.push(t);
        }
    }
    // Taken over with no offset and an expiry in the past, then written back.
    let r = inject::install(pid, &held, 0, 0, 0).and_then(|p| inject::remove(&p, &held));
    for t in held {
        let _ = ptrace(libc::PTRACE_DETACH, t, 0, 0);
    }
    r
}
