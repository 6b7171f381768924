//! The kernel's file-system structures as the programs walk them (agent-ebpf/src/vfs.rs):
//! the offsets of the members read, from the running kernel's BTF, and the key by which a
//! directory's name is looked up. Shared by the families that match files by path: sys
//! delay (by the identity of the directories) and sys fail (by name, before `bpf_d_path`).

/// `.rodata` (`VfsOffsets`) of each family's programs that walk a file's directories.
pub const GLOBAL_VFS: &str = "FL_VFS";

/// Directories walked up from a file (mount crossings count) before the walk gives up.
pub const VFS_WALK_DEPTH: u32 = 40;

/// offsetof() of the members the walk reads, from the kernel's BTF; `known` is 1 when every
/// one was found (else path rules are refused).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VfsOffsets {
    pub known: u32,
    /// struct task_struct.fs, and struct fs_struct.root (a struct path): the walk stops at
    /// the task's root, where d_path stops.
    pub task_fs: u32,
    pub fs_root: u32,
    pub task_files: u32,
    pub files_fdt: u32,
    pub fdt_max_fds: u32,
    pub fdt_fd: u32,
    /// struct file.f_path: a struct path { vfsmount *mnt; dentry *dentry; }.
    pub file_f_path: u32,
    pub dentry_d_parent: u32,
    /// struct dentry.d_name: a struct qstr { u32 hash; u32 len; const char *name; }.
    pub dentry_d_name: u32,
    pub dentry_d_inode: u32,
    pub dentry_d_sb: u32,
    pub inode_i_ino: u32,
    pub sb_s_dev: u32,
    /// struct mount.mnt: the vfsmount a file's f_path.mnt points at.
    pub mount_mnt: u32,
    pub mount_mnt_parent: u32,
    pub mount_mnt_mountpoint: u32,
    pub vfsmount_mnt_root: u32,
}

/// What the walk reads of each dentry: d_parent, and of d_name (a struct qstr { u32 hash;
/// u32 len; const char *name; } on little-endian) the length and the name's address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DentryHead {
    pub parent: u64,
    pub name: u64,
    pub len: u32,
    pub _pad: u32,
}

/// A directory name as the walk looks it up: its length and its first 8 bytes (little-endian,
/// zero past the end). Two names with the same key may differ after the 8th byte: a match
/// is a candidate, which the caller confirms.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NameKey {
    pub head: u64,
    pub len: u32,
    pub _pad: u32,
}

impl NameKey {
    /// From a name's length and the 8 bytes read at its start (what lies past a shorter
    /// name's end is masked off).
    #[inline(always)]
    pub fn new(word: u64, len: u32) -> Self {
        let head = if len >= 8 { word } else { word & ((1u64 << (8 * len)) - 1) };
        NameKey { head, len, _pad: 0 }
    }

    pub fn of(name: &[u8]) -> Self {
        let mut word = [0u8; 8];
        let n = if name.len() < 8 { name.len() } else { 8 };
        word[..n].copy_from_slice(&name[..n]);
        Self::new(u64::from_le_bytes(word), name.len() as u32)
    }

    /// The key's bit in a set of name lengths (lengths from 63 on share the last bit).
    #[inline(always)]
    pub fn len_bit(len: u32) -> u64 {
        1u64 << if len < 63 { len } else { 63 }
    }
}

/// The last component of an absolute, normalized path ("/" for the root, whose dentry is
/// named "/"): a file under the path has a directory of that name above it.
pub fn last_name(path: &[u8]) -> &[u8] {
    let mut end = path.len();
    while end > 1 && path[end - 1] == b'/' {
        end -= 1;
    }
    let mut start = end;
    while start > 0 && path[start - 1] != b'/' {
        start -= 1;
    }
    if start == end { b"/" } else { &path[start..end] }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_masks_what_lies_past_a_short_name() {
        let word = u64::from_le_bytes(*b"data\0xyz");
        assert_eq!(NameKey::new(word, 4), NameKey::of(b"data"));
        assert_ne!(NameKey::of(b"data"), NameKey::of(b"data2"));
        assert_ne!(NameKey::of(b"dat"), NameKey::of(b"data"));
        // Past 8 bytes only the length tells names apart: a candidate, confirmed later.
        assert_eq!(NameKey::of(b"abcdefgh-1"), NameKey::of(b"abcdefgh-2"));
        assert_eq!(NameKey::new(u64::MAX, 8).head, u64::MAX);
        assert_eq!(NameKey::len_bit(4), 1 << 4);
        assert_eq!(NameKey::len_bit(200), 1 << 63);
    }

    #[test]
    fn the_last_name_of_a_path() {
        assert_eq!(last_name(b"/data"), b"data");
        assert_eq!(last_name(b"/var/lib/data/"), b"data");
        assert_eq!(last_name(b"/"), b"/");
        assert_eq!(last_name(b"/a/b/c"), b"c");
    }
}
