//! System-call latency (`sys delay`, issue 16): the syscall-exit program in
//! agent-ebpf/src/delay.rs picks the calls of seized threads and signals them; a tracer
//! process (tracer.rs, `faultline __delay-tracer`) holds each signalled thread for its delay.
//! datapath.rs owns the kernel side (maps, rule slots, the exit program's attachment,
//! counters, probes); the tracer gets FL_DELAY_ARMED and FL_DELAY_SEIZED through
//! `DelayDatapath::tracer_fds`.

pub mod datapath;
pub mod driver;
pub mod tracer;

pub use faultline_common::delay::{DELAY_PROB_ONE, DELAY_SIGNAL, DelayArm, DelayRule};

pub use driver::DelayDriver;

pub use datapath::{
    DelayCounters, DelayDatapath, DelayError, DelayProbe, DelayTarget, ExitHook, ThreadMaps, probe,
    syscall_bitmap,
};
