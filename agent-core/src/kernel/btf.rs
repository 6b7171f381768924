//! Struct member offsets from the running kernel's BTF (/sys/kernel/btf/vmlinux). aya-ebpf
//! has no CO-RE, so programs that read kernel structs get the offsets as .rodata globals.

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

fn u32_at(b: &[u8], off: usize) -> Result<u32, String> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or_else(|| "truncated BTF".to_string())
}

fn name_at(strings: &[u8], off: u32) -> &[u8] {
    let s = strings.get(off as usize..).unwrap_or_default();
    &s[..s.iter().position(|&c| c == 0).unwrap_or(s.len())]
}

/// One BTF type: its kind, name, member count, kind flag and where its members start.
struct Type {
    kind: u32,
    name_off: u32,
    vlen: usize,
    kind_flag: bool,
    body: usize,
}

/// Byte offset of `member` in `struct name`, from BTF data `btf`. Members of anonymous
/// structs and unions inside it count as its own (C's rule: `file.f_path` sits in an
/// anonymous union on recent kernels).
pub fn member_offset_in(btf: &[u8], name: &str, member: &str) -> Result<u32, String> {
    KernelBtf::parse(btf.to_vec())?.offset(name, member)
}

/// The bit offset of `member` in `t`, looking into anonymous members (to a bounded depth).
fn find_member(
    types: &[u8],
    strings: &[u8],
    all: &[Type],
    t: &Type,
    member: &[u8],
    depth: u32,
) -> Result<Option<u32>, String> {
    for i in 0..t.vlen {
        let m = t.body + i * 12;
        let (name_off, type_id, raw) =
            (u32_at(types, m)?, u32_at(types, m + 4)?, u32_at(types, m + 8)?);
        let bits = if t.kind_flag { raw & 0x00ff_ffff } else { raw };
        if name_off != 0 {
            if name_at(strings, name_off) == member {
                return Ok(Some(bits / 8));
            }
            continue;
        }
        let Some(inner) = all.get(type_id as usize) else { continue };
        if depth < 4
            && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
            && let Some(off) = find_member(types, strings, all, inner, member, depth + 1)?
        {
            return Ok(Some(bits / 8 + off));
        }
    }
    Ok(None)
}

/// The running kernel's BTF, read and indexed once for several look-ups (a scan of its
/// 5-6 MB per look-up costs seconds in an emulated guest).
pub struct KernelBtf {
    data: Vec<u8>,
    /// Where the type and string sections lie in `data`.
    types: std::ops::Range<usize>,
    strings: std::ops::Range<usize>,
    /// Every type, by id (ids start at 1; index 0 is a placeholder).
    all: Vec<Type>,
}

impl KernelBtf {
    pub fn read() -> Result<Self, String> {
        let data = std::fs::read("/sys/kernel/btf/vmlinux")
            .map_err(|e| format!("reading /sys/kernel/btf/vmlinux: {e}"))?;
        Self::parse(data)
    }

    fn parse(data: Vec<u8>) -> Result<Self, String> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err("not little-endian BTF".into());
        }
        let hdr_len = u32_at(&data, 4)? as usize;
        let (type_off, type_len) = (u32_at(&data, 8)? as usize, u32_at(&data, 12)? as usize);
        let (str_off, str_len) = (u32_at(&data, 16)? as usize, u32_at(&data, 20)? as usize);
        let types = hdr_len + type_off..hdr_len + type_off + type_len;
        let strings = hdr_len + str_off..hdr_len + str_off + str_len;
        let t = data.get(types.clone()).ok_or("BTF type section out of range")?;
        data.get(strings.clone()).ok_or("BTF strings out of range")?;
        let mut all = vec![Type { kind: 0, name_off: 0, vlen: 0, kind_flag: false, body: 0 }];
        let mut at = 0;
        while at + 12 <= t.len() {
            let name_off = u32_at(t, at)?;
            let info = u32_at(t, at + 4)?;
            let (kind, vlen, kind_flag) = ((info >> 24) & 0x1f, info & 0xffff, info >> 31 == 1);
            let body = at + 12;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                _ => 0,
            };
            all.push(Type { kind, name_off, vlen: vlen as usize, kind_flag, body });
            at = body + extra;
        }
        Ok(KernelBtf { data, types, strings, all })
    }

    /// Byte offset of `member` in `struct name`.
    pub fn offset(&self, name: &str, member: &str) -> Result<u32, String> {
        let (types, strings) = (&self.data[self.types.clone()], &self.data[self.strings.clone()]);
        let Some(top) = self
            .all
            .iter()
            .find(|t| t.kind == KIND_STRUCT && name_at(strings, t.name_off) == name.as_bytes())
        else {
            return Err(format!("struct {name} is not in the kernel's BTF"));
        };
        find_member(types, strings, &self.all, top, member.as_bytes(), 0)?
            .ok_or_else(|| format!("struct {name} has no member {member}"))
    }
}

impl KernelBtf {
    /// The offsets the programs' walks up a file's directories read (agent-ebpf/src/vfs.rs,
    /// for the path rules of sys delay and sys fail); the first member missing is the error.
    pub fn vfs_offsets(&self) -> Result<faultline_common::vfs::VfsOffsets, String> {
        let at = |s: &str, m: &str| self.offset(s, m);
        Ok(faultline_common::vfs::VfsOffsets {
            known: 1,
            task_fs: at("task_struct", "fs")?,
            fs_root: at("fs_struct", "root")?,
            task_files: at("task_struct", "files")?,
            files_fdt: at("files_struct", "fdt")?,
            fdt_max_fds: at("fdtable", "max_fds")?,
            fdt_fd: at("fdtable", "fd")?,
            file_f_path: at("file", "f_path")?,
            dentry_d_parent: at("dentry", "d_parent")?,
            dentry_d_name: at("dentry", "d_name")?,
            dentry_d_inode: at("dentry", "d_inode")?,
            dentry_d_sb: at("dentry", "d_sb")?,
            inode_i_ino: at("inode", "i_ino")?,
            sb_s_dev: at("super_block", "s_dev")?,
            mount_mnt: at("mount", "mnt")?,
            mount_mnt_parent: at("mount", "mnt_parent")?,
            mount_mnt_mountpoint: at("mount", "mnt_mountpoint")?,
            vfsmount_mnt_root: at("vfsmount", "mnt_root")?,
        })
    }

    /// Where a task's ancestor cgroup ids are read (`AncestryOffsets`), on kernels whose
    /// `struct cgroup` keeps them in `ancestor_ids[]` (before 6.1, whose tracing programs
    /// may lack bpf_get_current_ancestor_cgroup_id); elsewhere `known` 0: the helper.
    pub fn ancestry_offsets(&self) -> faultline_common::levels::AncestryOffsets {
        let at = |s: &str, m: &str| self.offset(s, m);
        let read = || -> Result<_, String> {
            Ok(faultline_common::levels::AncestryOffsets {
                known: 1,
                task_cgroups: at("task_struct", "cgroups")?,
                css_set_dfl_cgrp: at("css_set", "dfl_cgrp")?,
                cgroup_level: at("cgroup", "level")?,
                cgroup_ancestor_ids: at("cgroup", "ancestor_ids")?,
            })
        };
        read().unwrap_or_default()
    }
}

/// Byte offset of `member` in `struct name` in the running kernel.
pub fn member_offset(name: &str, member: &str) -> Result<u32, String> {
    KernelBtf::read()?.offset(name, member)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob with `int`, `struct file { int a; int f_path; }` and
    /// `struct task { int a; union { int x; int files; }; }` (the union anonymous, at byte 8).
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0file\0a\0f_path\0task\0x\0files\0".to_vec();
        let mut types = Vec::new();
        let mut push = |v: &[u32]| v.iter().for_each(|x| types.extend_from_slice(&x.to_le_bytes()));
        // [1] int: name "int", kind INT, size 4, encoding word.
        push(&[1, KIND_INT << 24, 4, 32]);
        // [2] struct file, 2 members: a at bit 0, f_path at bit 64.
        push(&[5, KIND_STRUCT << 24 | 2, 16, 10, 1, 0, 12, 1, 64]);
        // [3] union { x; files; } (anonymous), [4] struct task { a; <union at bit 64> }.
        push(&[0, KIND_UNION << 24 | 2, 4, 24, 1, 0, 26, 1, 0]);
        push(&[19, KIND_STRUCT << 24 | 2, 12, 10, 1, 0, 0, 3, 64]);
        let mut b = vec![0x9f, 0xeb, 1, 0];
        for v in [24u32, 0, types.len() as u32, types.len() as u32, strings.len() as u32] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&types);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn finds_a_member_offset() {
        assert_eq!(member_offset_in(&blob(), "file", "f_path"), Ok(8));
        assert!(member_offset_in(&blob(), "file", "nope").is_err());
        assert!(member_offset_in(&blob(), "inode", "i_mode").is_err());
        assert_eq!(member_offset_in(&blob(), "task", "files"), Ok(8));
        assert!(member_offset_in(&blob(), "task", "y").is_err());
    }
}
