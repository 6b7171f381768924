//! System-call latency (`sys delay`): the exit program in agent-ebpf/src/delay.rs picks the
//! calls of seized threads and signals them; a tracer process (`faultline __delay-tracer`:
//! holder.rs is its code, tracer.rs the agent's handle on it and the protocol) holds each
//! signalled thread for its delay. datapath.rs owns the kernel side (maps, rule slots, the
//! exit program's attachment, counters), probe.rs is the capability probe; the tracer gets
//! FL_DELAY_ARMED and FL_DELAY_SEIZED through `DelayDatapath::tracer_fds`. driver.rs: one
//! rule and one tracer per experiment.

pub mod datapath;
pub mod driver;
pub mod holder;
pub mod probe;
pub mod tracer;

pub use faultline_common::delay::{DELAY_PROB_ONE, DELAY_SIGNAL, DelayArm, DelayRule};

pub use driver::DelayDriver;

pub use datapath::{
    DelayCounters, DelayDatapath, DelayError, DelayTarget, ExitHook, ThreadMaps, syscall_bitmap,
};
pub use probe::{DelayProbe, probe};
