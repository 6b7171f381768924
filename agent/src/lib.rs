//! The faultline agent's front ends: the gRPC service (`api`), the command line (`cli`),
//! telemetry (Prometheus, logs) and `serve`, which wires the core (crate faultline-core) to
//! them. The binary (src/main.rs) is a thin entry point.

pub mod api;
pub mod cli;
pub mod serve;
pub mod telemetry;
