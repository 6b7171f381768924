//! System-call latency (`sys delay`): the exit program chooses calls, the tracer process
//! holds the threads that made them.

pub mod tracer;
