//! The seam between the engine and the kernel: drivers apply faults and return RAII handles.

use super::{
    error::{Error, Result},
    model::{Counters, FaultSpec, Plan, Resolved},
};

/// Applies faults. Implementations own their kernel objects; the engine never touches them.
pub trait FaultDriver: Send + Sync {
    /// Applies `fault` to `target`. The kernel side must ignore the fault after
    /// `expires_mono_ns` (CLOCK_MONOTONIC) on its own, so it ends even if user space stalls.
    fn apply(
        &self,
        target: &Resolved,
        fault: &FaultSpec,
        expires_mono_ns: u64,
    ) -> Result<Box<dyn FaultHandle>>;

    /// What `apply` would do, checked as far as it can be without changing anything: the
    /// kernel's support, the target's state. Applies and records nothing.
    fn plan(&self, _target: &Resolved, fault: &FaultSpec) -> Result<Plan> {
        Err(Error::FailedPrecondition(format!("no dry run for {} yet", fault.kind())))
    }
}

/// A fault in effect. Dropping the handle reverts the fault.
pub trait FaultHandle: Send + Sync {
    /// The kernel mechanism serving the fault, e.g. "cgroup_skb".
    fn backend(&self) -> &'static str;
    fn counters(&self) -> Counters;
    /// What the running fault could not do, for the experiment's note (a time skew's last
    /// process it could not shift, and why).
    fn note(&self) -> Option<String> {
        None
    }
    /// Why the fault stopped working on its own (a stress worker was OOM-killed), if it did.
    /// The engine polls it and ends the experiment as failed with this reason.
    fn failure(&self) -> Option<String> {
        None
    }
    /// Moves the kernel's own deadline of the fault to `expires_mono_ns` (a lease renewed).
    /// Only the faults `FaultSpec::takes_lease` names implement it.
    fn extend(&self, _expires_mono_ns: u64) -> std::result::Result<(), String> {
        Err("this fault's kernel deadline cannot be moved".into())
    }
    /// Why the fault ended on its own having done all it was asked (an IO stress moved its
    /// bytes), if it did. The engine polls it and ends the experiment as expired with this
    /// reason.
    fn finished(&self) -> Option<String> {
        None
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds: the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    use nix::time::{ClockId, clock_gettime};
    // CLOCK_MONOTONIC always exists; 0 if it ever failed.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map_or(0, |ts| ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
}
