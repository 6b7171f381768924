//! The faultline agent and CLI as a library: the binary (src/main.rs) is a thin entry point,
//! and the fuzz targets (fuzz/) reach request validation and the journal reader through it.

pub mod api;
pub mod cli;
pub mod engine;
pub mod errno;
pub mod faults;
pub mod kernel;
pub mod policy;
pub mod serve;
pub mod store;
pub mod target;
pub mod telemetry;
#[cfg(test)]
mod testutil;
