//! Time skew: the layout of the data page the skewer injects into each shifted process
//! (written by the skewer, read by the injected vDSO code and by the raw-syscall programs),
//! and the map that tells those programs where a process's data page is. User-space owner:
//! agent-core/src/faults/time (datapath.rs owns the map; the skewer process writes it through
//! a descriptor it inherits; stub.rs owns the injected code).
//!
//! The raw-syscall path: a system call `clock_gettime` or `gettimeofday` (not the vDSO) of a
//! process in FL_TIME_PIDS has its result shifted at the call's exit (fexit on the call's
//! function, bpf_probe_write_user) under the same rule as the vDSO code: the data page's
//! offset, clock mask and lease (`DATA_EXPIRY`), so that both paths start and stop together.

/// tgid -> the address of the process's injected mapping (its data page is at
/// `base + DATA_MAGIC`).
pub const MAP_TIME_PIDS: &str = "FL_TIME_PIDS";
/// Every time map (other families' loaders shrink them to one entry).
pub const TIME_MAPS: &[&str] = &[MAP_TIME_PIDS];
/// Processes shifted at once, node-wide.
pub const MAX_TIME_PROCS: u32 = 16384;

/// Data page fields (byte offsets in the mapping), each a little-endian 64-bit word.
pub const DATA_MAGIC: usize = 0x1000;
/// Signed nanoseconds added to a shifted clock.
pub const DATA_OFFSET: usize = 0x1008;
/// True CLOCK_REALTIME in ns before which the offset applies (0: never).
pub const DATA_EXPIRY: usize = 0x1010;
/// Bit n set: clock id n is shifted.
pub const DATA_MASK: usize = 0x1018;
/// Set to 1 by the first shifted read (the experiment's first hit).
pub const DATA_HIT: usize = 0x1020;
/// "fltime01": marks a mapping as ours.
pub const MAGIC: u64 = u64::from_le_bytes(*b"fltime01");

/// The head of the data page, as the raw-syscall programs read it (at `DATA_MAGIC`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimeData {
    pub magic: u64,
    pub offset_ns: i64,
    pub expiry_ns: i64,
    pub mask: u64,
    pub hit: u64,
}

/// The shifted time for a true realtime reading `true_ns`, or None when the lease is over
/// (or the result would fall before 1970). Shared by both halves (the eBPF programs call it).
#[inline(always)]
pub fn shifted(d: &TimeData, true_ns: i64) -> Option<u64> {
    if true_ns >= d.expiry_ns {
        return None;
    }
    let s = true_ns.checked_add(d.offset_ns)?;
    if s < 0 { None } else { Some(s as u64) }
}
