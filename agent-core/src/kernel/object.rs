//! The compiled kernel programs (agent-ebpf), built by build.rs through aya-build.

/// The eBPF object every driver loads its programs from.
pub fn ebpf_object() -> &'static [u8] {
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/faultline-ebpf"))
}
