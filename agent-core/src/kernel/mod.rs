//! The kernel side as user space sees it: the compiled eBPF object, BTF offsets, netlink
//! (rtnl), network namespaces, tracefs, and the probes drivers run before they load.

pub mod bpflog;
pub mod btf;
pub mod lsm;
pub mod netns;
pub mod object;
pub mod probes;
pub mod ptrace;
pub mod rtnl;
pub mod tracing;

pub use object::ebpf_object;
