//! faultline's kernel programs. Each program family lives in its own module; the user-space
//! owner of its maps is named at the top of the module.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

#[cfg(target_arch = "bpf")]
mod atomics;
#[cfg(target_arch = "bpf")]
mod calls;
#[cfg(target_arch = "bpf")]
mod delay;
#[cfg(target_arch = "bpf")]
mod dlog;
#[cfg(target_arch = "bpf")]
mod fdpath;
#[cfg(target_arch = "bpf")]
mod levels;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod net;
#[cfg(target_arch = "bpf")]
mod normal;
#[cfg(target_arch = "bpf")]
mod packet;
#[cfg(target_arch = "bpf")]
mod probe;
#[cfg(target_arch = "bpf")]
mod sockaddr;
#[cfg(target_arch = "bpf")]
mod sockcg;
#[cfg(target_arch = "bpf")]
mod sys;
#[cfg(target_arch = "bpf")]
mod tc;
#[cfg(target_arch = "bpf")]
mod time;
#[cfg(target_arch = "bpf")]
mod vfs;

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier refuses any program with a reachable panic path.
    unsafe { core::hint::unreachable_unchecked() }
}

/// Host builds (cargo check of the whole workspace) get an empty binary.
#[cfg(not(target_arch = "bpf"))]
fn main() {}

#[cfg(target_arch = "bpf")]
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
