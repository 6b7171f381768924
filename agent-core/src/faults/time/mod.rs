//! Time skew: the realtime clocks of chosen processes moved by an offset, the node's left
//! alone. Each process's vDSO clock functions are patched to jump to injected code (stub.rs)
//! that adds the offset while a lease holds; vdso.rs reads the vDSO image and builds the
//! patch, inject.rs applies it through ptrace, skewer.rs is the per-experiment process that
//! does so, follows the processes and renews the lease, client.rs the agent's handle on it;
//! datapath.rs owns the programs that shift the same clocks read through raw system calls.

pub mod client;
pub mod datapath;
pub mod driver;
pub mod inject;
pub mod repair;
pub mod skewer;
pub mod stub;
pub mod vdso;
