//! Time skew: the realtime clock of chosen processes moved by an offset, the node's left
//! alone. The vDSO's clock functions of each process are patched to jump to injected code
//! (stub.rs) that adds the offset while a lease the skewer renews holds; vdso.rs reads the
//! vDSO image and builds the patch, inject.rs does it through ptrace.

pub mod inject;
pub mod stub;
pub mod vdso;
