//! Reading a process's vDSO image (pure: bytes in, addresses and patches out): where its
//! clock functions are, how many whole instructions start `clock_gettime` (moved to the
//! trampoline), and the bytes written over each entry.

use super::stub::{Entry, TRAMPOLINE_MAX};

/// Bytes the jump written over an entry takes: `movabs rax, imm64; jmp rax`.
pub const PATCH_LEN: usize = 12;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum VdsoError {
    #[error("the vDSO is not a 64-bit x86-64 ELF image (a 32-bit process is not handled)")]
    NotX86_64,
    #[error("the vDSO image is truncated or malformed ({0})")]
    Malformed(&'static str),
    #[error("the vDSO has no symbol {0}")]
    NoSymbol(&'static str),
    #[error(
        "the start of __vdso_clock_gettime cannot be moved (instruction byte {0:#04x} at +{1}); \
         this kernel's vDSO is not handled"
    )]
    Prologue(u8, usize),
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, VdsoError> {
    let s = b.get(at..at + 2).ok_or(VdsoError::Malformed("short read"))?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, VdsoError> {
    let s = b.get(at..at + 4).ok_or(VdsoError::Malformed("short read"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, VdsoError> {
    let s = b.get(at..at + 8).ok_or(VdsoError::Malformed("short read"))?;
    Ok(u64::from_le_bytes(s.try_into().unwrap_or_default()))
}

/// The clock entries of one vDSO image: their offsets from the image's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entries {
    /// In the order of `Entry::ALL`.
    pub offsets: [u64; 3],
}

impl Entries {
    pub fn offset(&self, e: Entry) -> u64 {
        self.offsets[e as usize]
    }
}

/// Finds the clock entries in a vDSO image (as mapped: the image starts at its first load
/// segment, whose virtual address is subtracted from each symbol's value).
pub fn entries(image: &[u8]) -> Result<Entries, VdsoError> {
    if image.len() < 64 || &image[0..4] != b"\x7fELF" {
        return Err(VdsoError::Malformed("no ELF header"));
    }
    // 64-bit, little-endian, x86-64.
    if image[4] != 2 || image[5] != 1 || u16_at(image, 18)? != 62 {
        return Err(VdsoError::NotX86_64);
    }
    let (phoff, shoff) = (u64_at(image, 32)? as usize, u64_at(image, 40)? as usize);
    let (phentsize, phnum) = (u16_at(image, 54)? as usize, u16_at(image, 56)? as usize);
    let (shentsize, shnum) = (u16_at(image, 58)? as usize, u16_at(image, 60)? as usize);
    // The first PT_LOAD's virtual address is the image's base.
    let base = (0..phnum)
        .map(|i| phoff + i * phentsize)
        .find(|&p| u32_at(image, p).ok() == Some(1))
        .map(|p| u64_at(image, p + 16))
        .transpose()?
        .ok_or(VdsoError::Malformed("no load segment"))?;
    let section = |i: usize| shoff + i * shentsize;
    let dynsym = (0..shnum)
        .map(section)
        .find(|&s| u32_at(image, s + 4).ok() == Some(11))
        .ok_or(VdsoError::Malformed("no .dynsym"))?;
    let (sym_off, sym_size) = (u64_at(image, dynsym + 24)? as usize, u64_at(image, dynsym + 32)?);
    let strtab = section(u32_at(image, dynsym + 40)? as usize);
    let str_off = u64_at(image, strtab + 24)? as usize;
    let name = |off: usize| -> &[u8] {
        let s = image.get(str_off + off..).unwrap_or_default();
        &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
    };
    let mut offsets = [0u64; 3];
    for (i, e) in Entry::ALL.iter().enumerate() {
        let found = (0..sym_size as usize / 24)
            .map(|k| sym_off + k * 24)
            .find(|&s| u32_at(image, s).is_ok_and(|n| name(n as usize) == e.symbol().as_bytes()))
            .ok_or(VdsoError::NoSymbol(e.symbol()))?;
        let value = u64_at(image, found + 8)?;
        offsets[i] = value.checked_sub(base).ok_or(VdsoError::Malformed("symbol below base"))?;
    }
    Ok(Entries { offsets })
}

/// Length of one instruction at the start of `code`, if it is one the trampoline may run
/// somewhere else: no memory operand, no relative jump, nothing that depends on where it is.
fn movable_len(code: &[u8]) -> Option<usize> {
    let mut i = 0;
    if code.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa]) {
        return Some(4); // endbr64
    }
    if code.first() == Some(&0x66) {
        i += 1; // operand size
    }
    let rex_w = match code.get(i) {
        Some(&r) if r & 0xf0 == 0x40 => {
            i += 1;
            r & 0x08 != 0
        }
        _ => false,
    };
    let op = *code.get(i)?;
    i += 1;
    // A ModRM byte naming two registers (mod == 11): no memory, no rip.
    let reg_reg = |at: usize| code.get(at).is_some_and(|m| m >> 6 == 3);
    let len = match op {
        0x50..=0x57 | 0x90 => i,
        // mov, add, or, and, sub, xor, cmp, test between registers
        0x89 | 0x8b | 0x01 | 0x03 | 0x09 | 0x0b | 0x21 | 0x23 | 0x29 | 0x2b | 0x31 | 0x33
        | 0x39 | 0x3b | 0x85
            if reg_reg(i) =>
        {
            i + 1
        }
        // group 1 with an imm8 / imm32, on a register
        0x83 if reg_reg(i) => i + 2,
        0x81 if reg_reg(i) => i + 5,
        // mov r, imm32 (imm64 with REX.W)
        0xb8..=0xbf => i + if rex_w { 8 } else { 4 },
        _ => return None,
    };
    (len <= code.len()).then_some(len)
}

/// How many bytes of whole, movable instructions at the start of `code` cover `need` bytes.
pub fn prologue_len(code: &[u8], need: usize) -> Result<usize, VdsoError> {
    let mut at = 0;
    while at < need {
        let n = movable_len(&code[at..])
            .ok_or(VdsoError::Prologue(code.get(at).copied().unwrap_or(0), at))?;
        at += n;
    }
    if at + 13 > TRAMPOLINE_MAX {
        return Err(VdsoError::Prologue(code[0], 0));
    }
    Ok(at)
}

/// The bytes written over an entry: `movabs rax, to; jmp rax`.
pub fn patch(to: u64) -> [u8; PATCH_LEN] {
    let mut p = [0u8; PATCH_LEN];
    p[0..2].copy_from_slice(&[0x48, 0xb8]);
    p[2..10].copy_from_slice(&to.to_le_bytes());
    p[10..12].copy_from_slice(&[0xff, 0xe0]);
    p
}

/// The trampoline: the entry's first instructions, then `movabs r11, back; jmp r11`.
pub fn trampoline(prologue: &[u8], back: u64) -> Vec<u8> {
    let mut t = prologue.to_vec();
    t.extend_from_slice(&[0x49, 0xbb]);
    t.extend_from_slice(&back.to_le_bytes());
    t.extend_from_slice(&[0x41, 0xff, 0xe3]);
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This process's own vDSO, as mapped.
    fn own_vdso() -> Vec<u8> {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let line = maps.lines().find(|l| l.ends_with("[vdso]")).expect("a vDSO");
        let (a, b) = line.split_whitespace().next().unwrap().split_once('-').unwrap();
        let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        // SAFETY: reading our own mapped, readable vDSO pages.
        unsafe { std::slice::from_raw_parts(a as *const u8, (b - a) as usize) }.to_vec()
    }

    #[test]
    fn the_running_kernels_vdso_has_movable_clock_entries() {
        let image = own_vdso();
        let e = entries(&image).unwrap();
        for (i, off) in e.offsets.iter().enumerate() {
            assert!((*off as usize) < image.len(), "entry {i} at {off:#x}");
        }
        let code = &image[e.offset(Entry::ClockGettime) as usize..];
        let n = prologue_len(code, PATCH_LEN).unwrap();
        assert!(n >= PATCH_LEN, "{n}");
    }

    #[test]
    fn a_prologue_is_cut_at_whole_instructions() {
        // push rbp; mov rbp,rsp; push r14; push rbx; and rsp,-16; sub rsp,16; cmp edi,23
        let code = [
            0x55, 0x48, 0x89, 0xe5, 0x41, 0x56, 0x53, 0x48, 0x83, 0xe4, 0xf0, 0x48, 0x83, 0xec,
            0x10, 0x83, 0xff, 0x17,
        ];
        assert_eq!(prologue_len(&code, 12), Ok(15));
        // endbr64 first.
        let mut ibt = vec![0xf3, 0x0f, 0x1e, 0xfa];
        ibt.extend_from_slice(&code);
        assert_eq!(prologue_len(&ibt, 12), Ok(15));
    }

    #[test]
    fn rip_relative_and_jumps_are_refused() {
        // lea r10, [rip + x]
        let lea = [0x55, 0x4c, 0x8d, 0x15, 0xca, 0x94, 0xff, 0xff, 0, 0, 0, 0, 0, 0];
        assert_eq!(prologue_len(&lea, 12), Err(VdsoError::Prologue(0x4c, 1)));
        // ja rel32
        let ja = [0x55, 0x0f, 0x87, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(prologue_len(&ja, 12), Err(VdsoError::Prologue(0x0f, 1)));
    }

    #[test]
    fn patch_and_trampoline_encode_the_jumps() {
        let p = patch(0x1122_3344_5566_7788);
        assert_eq!(p, [0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xff, 0xe0]);
        let t = trampoline(&[0x55], 0x10);
        assert_eq!(t, [0x55, 0x49, 0xbb, 0x10, 0, 0, 0, 0, 0, 0, 0, 0x41, 0xff, 0xe3]);
    }
}
