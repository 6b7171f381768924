//! The code a skewed process runs instead of the vDSO's clock functions, and the page it
//! reads the offset from. Both live in one 8 KiB shared mapping the skewer injects into the
//! process (`inject.rs`): page 0 is code (the three functions below, then the trampoline that
//! runs the vDSO's own `clock_gettime`), page 1 is data, written by the skewer through
//! /proc/PID/map_files while the process runs.
//!
//! The offset applies only while true time is before `expiry`: the skewer renews the expiry
//! every `RENEW` (a lease of `LEASE`), so a skewer that dies (with its agent, SIGKILL
//! included) stops shifting within the lease, with nothing to undo first. x86-64 only.

use std::time::Duration;

/// Size of the mapping: a code page and a data page.
pub const MAPPING_LEN: usize = 8192;
/// Where the trampoline to the real `clock_gettime` starts in the code page.
pub const TRAMPOLINE_AT: usize = 0x800;
/// Room for it (relocated prologue and the jump back).
pub const TRAMPOLINE_MAX: usize = 0x80;
/// The data page's fields (also read by the raw-syscall programs: agent-common/src/time.rs);
/// the code below spells their offsets as literals (a unit test checks they agree).
pub use faultline_common::time::{DATA_EXPIRY, DATA_HIT, DATA_MAGIC, DATA_MASK, DATA_OFFSET};
/// The vDSO entries' own first bytes, `Entry::ALL` order, 16 bytes apart (12 used): a
/// later skewer (the experiment resumed after its skewer was killed) takes the mapping over
/// and can still write them back.
pub const DATA_ORIGINALS: usize = 0x1040;
pub use faultline_common::time::MAGIC;

/// How long a renewal keeps the offset alive, and how often the skewer renews it: a dead
/// skewer's processes read true time again within `LEASE` (the issue asks for 1 s).
pub const LEASE: Duration = Duration::from_millis(750);
pub const RENEW: Duration = Duration::from_millis(200);

/// The realtime clocks (shifted together): REALTIME, REALTIME_COARSE, REALTIME_ALARM. Not
/// TAI: the lease's expiry is realtime, 37 s behind TAI, so a TAI read would never be shifted.
pub const REALTIME_MASK: u64 = 1 << 0 | 1 << 5 | 1 << 8;

/// Entry points in the code page, in the order of `Entry`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    ClockGettime,
    Gettimeofday,
    Time,
}

impl Entry {
    pub const ALL: [Entry; 3] = [Entry::ClockGettime, Entry::Gettimeofday, Entry::Time];

    /// The vDSO symbol this entry replaces.
    pub fn symbol(self) -> &'static str {
        match self {
            Entry::ClockGettime => "__vdso_clock_gettime",
            Entry::Gettimeofday => "__vdso_gettimeofday",
            Entry::Time => "__vdso_time",
        }
    }

    /// Its offset in the code page.
    pub fn offset(self) -> usize {
        match self {
            Entry::ClockGettime => 0,
            Entry::Gettimeofday => 0x100,
            Entry::Time => 0x200,
        }
    }
}

#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    // Bytes only: never run in the agent, copied into the target. Same-section labels keep
    // every reference relative, so the copy runs wherever it is mapped.
    ".pushsection .rodata.faultline_time_stub,\"a\"",
    ".balign 4096",
    ".globl faultline_time_stub",
    "faultline_time_stub:",
    // int fake_clock_gettime(clockid_t clk /* edi */, struct timespec *ts /* rsi */)
    "push rbx",
    "push r12",
    "sub rsp, 8",
    "mov ebx, edi",
    "mov r12, rsi",
    "call faultline_time_stub + 0x800",
    "test eax, eax",
    "jnz 9f",
    // Clock ids above 63 (and negative ones: CPU-time clocks) are never shifted.
    "cmp ebx, 63",
    "ja 9f",
    "mov rcx, qword ptr [rip + faultline_time_stub + 0x1018]",
    "bt rcx, rbx",
    "jnc 9f",
    "mov rax, qword ptr [r12]",
    "imul rax, rax, 1000000000",
    "add rax, qword ptr [r12 + 8]",
    "cmp rax, qword ptr [rip + faultline_time_stub + 0x1010]",
    "jge 8f",
    "add rax, qword ptr [rip + faultline_time_stub + 0x1008]",
    "xor edx, edx",
    "mov rcx, 1000000000",
    "div rcx",
    "mov qword ptr [r12], rax",
    "mov qword ptr [r12 + 8], rdx",
    "cmp qword ptr [rip + faultline_time_stub + 0x1020], 0",
    "jne 8f",
    "mov qword ptr [rip + faultline_time_stub + 0x1020], 1",
    "8:",
    "xor eax, eax",
    "9:",
    "add rsp, 8",
    "pop r12",
    "pop rbx",
    "ret",
    // int fake_gettimeofday(struct timeval *tv /* rdi */, struct timezone *tz /* rsi */)
    ".balign 256, 0xcc",
    "push rbx",
    "push r12",
    "sub rsp, 24",
    "mov rbx, rdi",
    "mov r12, rsi",
    "test r12, r12",
    "jz 2f",
    // The time zone from the kernel: gettimeofday(NULL, tz).
    "xor edi, edi",
    "mov rsi, r12",
    "mov eax, 96",
    "syscall",
    "test rax, rax",
    "jnz 4f",
    "2:",
    "test rbx, rbx",
    "jz 3f",
    "xor edi, edi",
    "mov rsi, rsp",
    "call faultline_time_stub",
    "test eax, eax",
    "jnz 4f",
    "mov rax, qword ptr [rsp]",
    "mov qword ptr [rbx], rax",
    "mov rax, qword ptr [rsp + 8]",
    "xor edx, edx",
    "mov rcx, 1000",
    "div rcx",
    "mov qword ptr [rbx + 8], rax",
    "3:",
    "xor eax, eax",
    "4:",
    "add rsp, 24",
    "pop r12",
    "pop rbx",
    "ret",
    // time_t fake_time(time_t *t /* rdi */)
    ".balign 256, 0xcc",
    "push rbx",
    "sub rsp, 16",
    "mov rbx, rdi",
    "xor edi, edi",
    "mov rsi, rsp",
    "call faultline_time_stub",
    "mov rax, qword ptr [rsp]",
    "test rbx, rbx",
    "jz 5f",
    "mov qword ptr [rbx], rax",
    "5:",
    "add rsp, 16",
    "pop rbx",
    "ret",
    ".balign 256, 0xcc",
    ".globl faultline_time_stub_end",
    "faultline_time_stub_end:",
    ".popsection",
);

#[cfg(target_arch = "x86_64")]
unsafe extern "C" {
    static faultline_time_stub: u8;
    static faultline_time_stub_end: u8;
}

/// The machine code of page 0 up to the trampoline (which is written per process).
#[cfg(target_arch = "x86_64")]
pub fn code() -> &'static [u8] {
    // SAFETY: both symbols are labels of the one global_asm block above, in one section, end
    // after start; the bytes between are initialised read-only data for the program's life.
    unsafe {
        let start = &raw const faultline_time_stub;
        let end = &raw const faultline_time_stub_end;
        std::slice::from_raw_parts(start, end.offset_from(start) as usize)
    }
}

/// The data page's initial words: magic, no offset, expired, no clocks, no hit.
pub fn data(offset_ns: i64, expiry_ns: i64, mask: u64) -> [(usize, u64); 4] {
    [
        (DATA_MAGIC, MAGIC),
        (DATA_OFFSET, offset_ns as u64),
        (DATA_EXPIRY, expiry_ns as u64),
        (DATA_MASK, mask),
    ]
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_code_fits_before_the_trampoline_and_each_entry_is_aligned() {
        let c = code();
        assert!(c.len() <= TRAMPOLINE_AT, "{} bytes", c.len());
        assert_eq!(c.len() % 256, 0);
        // Each entry starts with `push rbx` (0x53) where Entry::offset says.
        for e in Entry::ALL {
            assert_eq!(c[e.offset()], 0x53, "{e:?}");
        }
    }

    #[test]
    fn the_code_reads_the_data_page_where_agent_common_says() {
        // The literals of the global_asm block above.
        assert_eq!(
            (DATA_OFFSET, DATA_EXPIRY, DATA_MASK, DATA_HIT),
            (0x1008, 0x1010, 0x1018, 0x1020)
        );
    }
}
