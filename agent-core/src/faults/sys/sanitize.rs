//! Kernels before 5.12 refuse atomic fetch-and-add instructions even on paths the program
//! never takes there (the `FL_SYS_HAS_FETCH` guard). For them the object's fetch-adds are
//! rewritten to plain atomic adds before loading, as libbpf sanitizes unsupported features:
//! the kernel accepts those, and the guarded code that used the fetched value never runs.

/// BPF_STX | BPF_ATOMIC | BPF_DW, BPF_STX | BPF_ATOMIC | BPF_W.
const ATOMIC_DW: u8 = 0xdb;
const ATOMIC_W: u8 = 0xc3;
/// BPF_ADD | BPF_FETCH in the immediate.
const ADD_FETCH: i32 = 0x01;
const SHF_EXECINSTR: u64 = 0x4;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}

fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// The (offset, size) of every executable section of a little-endian ELF64 object; None if
/// `elf` is not one.
fn code_sections(elf: &[u8]) -> Option<Vec<(usize, usize)>> {
    if elf.get(0..6)? != b"\x7fELF\x02\x01" {
        return None;
    }
    let shoff = u64_at(elf, 0x28)? as usize;
    let (shentsize, shnum) = (u16_at(elf, 0x3a)? as usize, u16_at(elf, 0x3c)? as usize);
    let mut out = Vec::new();
    for i in 0..shnum {
        let sh = shoff + i * shentsize;
        if u64_at(elf, sh + 0x08)? & SHF_EXECINSTR != 0 {
            out.push((u64_at(elf, sh + 0x18)? as usize, u64_at(elf, sh + 0x20)? as usize));
        }
    }
    Some(out)
}

fn is_fetch_add(insn: &[u8]) -> bool {
    let imm = i32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
    (insn[0] == ATOMIC_DW || insn[0] == ATOMIC_W) && imm == ADD_FETCH
}

/// A copy of the ELF object `elf` with every fetch-add turned into a plain add; None if the
/// file is not a little-endian ELF64 object.
pub fn without_fetch(elf: &[u8]) -> Option<Vec<u8>> {
    let mut out = elf.to_vec();
    for (off, size) in code_sections(elf)? {
        for insn in out.get_mut(off..off + size)?.chunks_exact_mut(8) {
            if is_fetch_add(insn) {
                insn[4..8].copy_from_slice(&0i32.to_le_bytes());
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_object_loses_its_fetch_adds_and_nothing_else() {
        let elf = crate::kernel::ebpf_object();
        // Only instructions count: data and debug sections may hold the same bytes.
        let fetches = |b: &[u8]| {
            let code = code_sections(b).expect("an ELF64 object");
            code.iter()
                .flat_map(|&(o, n)| b[o..o + n].chunks_exact(8))
                .filter(|i| is_fetch_add(i))
                .count()
        };
        let out = without_fetch(elf).expect("an ELF64 object");
        assert_eq!(out.len(), elf.len());
        assert!(fetches(elf) > 0, "the object has fetch-adds to rewrite");
        assert_eq!(fetches(&out), 0);
        let changed = elf.iter().zip(&out).filter(|(a, b)| a != b).count();
        assert_eq!(changed, fetches(elf), "one byte per fetch-add, nothing else");
        assert!(without_fetch(b"not an elf").is_none());
    }
}
