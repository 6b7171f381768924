//! faultline's core: the experiment engine, the fault drivers, targets, policy, the capability
//! probe, and the proto <-> domain wire. It knows nothing of gRPC transport (tonic) or of the
//! command line (clap): the agent crate's `api` and `cli` sit above it.

pub mod caps;
pub mod counters;
pub mod engine;
pub mod errno;
pub mod faults;
pub mod kernel;
pub mod policy;
pub mod stop;
pub mod store;
pub mod targets;
#[cfg(test)]
mod testutil;
pub mod units;
pub mod wire;
