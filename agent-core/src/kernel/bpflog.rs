//! The kernel programs' debug log lines (agent-ebpf/src/dlog.rs), for `serve --debug-bpf`:
//! a loader sets FL_DEBUG, and `forward` sends the lines the programs write to their ring
//! buffer (AYA_LOGS) into this process's log through the `log` crate (the agent bridges it
//! into tracing), at debug level under the target `faultline_ebpf::<module>`.
//!
//! With the flag off the lines cost nothing: the verifier prunes every log call as dead code,
//! and the unused ring buffer is shrunk to one page.

use std::io;

use aya::{Ebpf, EbpfLoader};
use aya_log::EbpfLogger;
use faultline_common::GLOBAL_DEBUG;
use tokio::{
    io::{Interest, unix::AsyncFd},
    task::JoinHandle,
};
use tracing::{info, warn};

/// The ring buffer aya-log-ebpf writes to (its name is aya-log's).
const LOG_MAP: &str = "AYA_LOGS";

static ON: u32 = 1;
static OFF: u32 = 0;

/// Sets the debug flag on a loader of the object; with the flag off, the ring buffer is
/// made as small as the kernel allows (aya rounds it up to one page).
pub fn configure(loader: &mut EbpfLoader<'_>, debug: bool) {
    loader.override_global(GLOBAL_DEBUG, if debug { &ON } else { &OFF }, true);
    if !debug {
        loader.map_max_entries(LOG_MAP, 1);
    }
}

/// The forwarding of one loaded object's log lines; dropping it stops the forwarding. It
/// owns the ring buffer, so it must live as long as the programs of that object (their
/// instructions refer to the buffer's file descriptor).
pub struct BpfLog {
    inner: Inner,
}

enum Inner {
    Forwarding(JoinHandle<()>),
    /// Forwarding could not start: the buffer is kept open for the programs all the same.
    Idle {
        _logger: Box<EbpfLogger<&'static dyn log::Log>>,
    },
}

impl Drop for BpfLog {
    fn drop(&mut self) {
        if let Inner::Forwarding(task) = &self.inner {
            task.abort();
        }
    }
}

/// Starts forwarding the log lines of `ebpf` (an object loaded with `configure(.., true)`)
/// on the current tokio runtime. `what` names the object in this process's log. Never
/// fails the caller: on an error it warns and the programs run without their log.
pub fn forward(ebpf: &mut Ebpf, what: &'static str) -> Option<BpfLog> {
    let logger = match EbpfLogger::init(ebpf) {
        Ok(l) => l,
        Err(e) => {
            warn!(object = what, error = %e, "eBPF debug log unavailable");
            return None;
        }
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        warn!(object = what, "eBPF debug log unavailable: no async runtime");
        return Some(BpfLog { inner: Inner::Idle { _logger: Box::new(logger) } });
    };
    let _entered = runtime.enter();
    // SAFETY: the logger owns the ring buffer's file descriptor (an OwnedFd in its map),
    // which stays open and the same while the logger lives; the AsyncFd owns the logger.
    let fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            let (logger, e) = e.into_parts();
            warn!(object = what, error = %e, "eBPF debug log unavailable");
            return Some(BpfLog { inner: Inner::Idle { _logger: Box::new(logger) } });
        }
    };
    let task = runtime.spawn(async move {
        if let Err(e) = pump(fd).await {
            warn!(object = what, error = %e, "eBPF debug log stopped");
        }
    });
    info!(object = what, "eBPF debug log lines forwarded (target faultline_ebpf, level debug)");
    Some(BpfLog { inner: Inner::Forwarding(task) })
}

async fn pump(mut fd: AsyncFd<EbpfLogger<&'static dyn log::Log>>) -> io::Result<()> {
    loop {
        let mut ready = fd.readable_mut().await?;
        ready.get_inner_mut().flush();
        ready.clear_ready();
    }
}
