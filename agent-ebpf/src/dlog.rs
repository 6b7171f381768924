//! Debug log lines (aya-log) for diagnosing a program in the field: each is behind FL_DEBUG,
//! a frozen `.rodata` flag, so with the flag off the verifier prunes the log call as dead
//! code and the program runs as it would without it. User space (`faultline serve
//! --debug-bpf`) sets the flag and forwards the lines to its log under the target
//! `faultline_ebpf::<module>`, at debug level.

use faultline_common::net::DIR_EGRESS;

use crate::maps::FL_DEBUG;

/// Whether user space asked for the debug log lines.
#[inline(always)]
pub fn on() -> bool {
    // SAFETY: a frozen .rodata value; volatile so the compiler keeps the load and the branch
    // for the verifier to decide.
    unsafe { core::ptr::read_volatile(&FL_DEBUG) != 0 }
}

/// A packet direction (`DIR_*`) for a log line.
#[inline(always)]
pub fn dir_name(dir: u32) -> &'static str {
    if dir == DIR_EGRESS { "egress" } else { "ingress" }
}

/// `aya_log_ebpf::debug!` when FL_DEBUG is set. The log macros take a context they never
/// use, so none is passed.
macro_rules! dlog {
    ($($arg:tt)*) => {
        if $crate::dlog::on() {
            aya_log_ebpf::debug!((), $($arg)*);
        }
    };
}
pub(crate) use dlog;
