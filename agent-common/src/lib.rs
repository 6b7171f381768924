//! `#[repr(C)]`, padding-free types shared by the kernel programs (agent-ebpf) and the agent.
//!
//! Layout rules: fixed-size integers only (no bool, Option or enum), explicit padding fields,
//! so both sides agree byte for byte. Map names are constants so neither side spells them.
#![no_std]

pub mod delay;
pub mod levels;
pub mod net;
pub mod sys;
pub mod time;
pub mod vfs;

#[cfg(feature = "user")]
mod pod {
    use crate::net::{
        CgroupRules, CidrKey, DevInfo, DnsClient, DnsOrig, NetConfig, NetCounters, NetRule,
        PortKey, RuleState,
    };

    // SAFETY: all of these are #[repr(C)], contain only integers and have no padding bytes.
    unsafe impl aya::Pod for NetRule {}
    unsafe impl aya::Pod for CgroupRules {}
    unsafe impl aya::Pod for CidrKey {}
    unsafe impl aya::Pod for PortKey {}
    unsafe impl aya::Pod for RuleState {}
    unsafe impl aya::Pod for DevInfo {}
    unsafe impl aya::Pod for DnsOrig {}
    unsafe impl aya::Pod for DnsClient {}
    unsafe impl aya::Pod for NetCounters {}
    unsafe impl aya::Pod for NetConfig {}
    unsafe impl aya::Pod for crate::sys::SysRule {}
    unsafe impl aya::Pod for crate::sys::SysState {}
    unsafe impl aya::Pod for crate::sys::SysSlots {}
    unsafe impl aya::Pod for crate::sys::SysConfig {}
    unsafe impl aya::Pod for crate::delay::DelayRule {}
    unsafe impl aya::Pod for crate::delay::DelayState {}
    unsafe impl aya::Pod for crate::delay::DelayArm {}
    unsafe impl aya::Pod for crate::delay::DelaySlots {}
    unsafe impl aya::Pod for crate::delay::DelayConfig {}
    unsafe impl aya::Pod for crate::vfs::VfsOffsets {}
    unsafe impl aya::Pod for crate::levels::AncestryOffsets {}
    unsafe impl aya::Pod for crate::vfs::NameKey {}
    unsafe impl aya::Pod for crate::delay::DelayPathKey {}
}

/// `.rodata` flag of every program, set by user space at load (`faultline serve
/// --debug-bpf`): the programs write their debug log lines (aya-log) only when it is 1.
pub const GLOBAL_DEBUG: &str = "FL_DEBUG";
