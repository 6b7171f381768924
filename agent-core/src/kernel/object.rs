//! The compiled kernel programs (agent-ebpf), built by build.rs through aya-build.

use aya::EbpfLoader;
use faultline_common::{delay::DELAY_MAPS, net::NET_MAPS, sys::SYS_MAPS, time::TIME_MAPS};

/// Every family's loader of the shared object creates every map in it: the maps of the other
/// families (`own` excluded) get one entry, so that each load allocates (and the kernel
/// clears) only its own (FL_SYS_PIDS and the delay maps are preallocated at megabytes each).
pub fn shrink_others(loader: &mut EbpfLoader<'_>, own: &[&str]) {
    for m in [NET_MAPS, SYS_MAPS, DELAY_MAPS, TIME_MAPS].concat() {
        if !own.contains(&m) {
            loader.map_max_entries(m, 1);
        }
    }
}

/// The eBPF object every driver loads its programs from.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/faultline-ebpf"))
}
