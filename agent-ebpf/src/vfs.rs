//! A walk up a file's directories, across mounts, as the kernel's own path building does it
//! (d_path: a mount's root goes on from where the mount sits in its parent). Offsets come
//! from the kernel's BTF (FL_VFS, faultline_common::vfs). Users: fdpath.rs (sys delay, by
//! the directories' identity) and sys.rs (sys fail, by their names before `bpf_d_path`).

use aya_ebpf::helpers::bpf_probe_read_kernel;
use faultline_common::vfs::{VFS_WALK_DEPTH, VfsOffsets};

use crate::maps::FL_VFS;

/// The offsets, or None where they are unknown (the family never asked for path rules).
#[inline(always)]
pub fn offsets() -> Option<VfsOffsets> {
    // SAFETY: a frozen .rodata value; volatile so the verifier sees the loads.
    let o = unsafe { core::ptr::read_volatile(&FL_VFS) };
    (o.known != 0).then_some(o)
}

/// The `T` at `base + off` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    // SAFETY: a probe read: a bad address gives an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T).ok() }
}

/// Calls `visit` on the dentry of `file` (a struct file address) and on each directory
/// above it, up to the root of the topmost mount. Some(true): the walk reached the top;
/// Some(false): it ran out of depth (VFS_WALK_DEPTH) first; None: a read failed or `visit`
/// returned None.
#[inline(always)]
pub fn walk_up(
    o: &VfsOffsets,
    file: u64,
    mut visit: impl FnMut(u64) -> Option<()>,
) -> Option<bool> {
    // struct path { struct vfsmount *mnt; struct dentry *dentry; }
    let mut vfsmnt: u64 = read(file, o.file_f_path)?;
    let mut dentry: u64 = read(file, o.file_f_path + 8)?;
    let mut root: u64 = read(vfsmnt, o.vfsmount_mnt_root)?;
    for _ in 0..VFS_WALK_DEPTH {
        visit(dentry)?;
        if dentry == root {
            // The top of this mount: go on from where it is mounted in its parent.
            let mount = vfsmnt - u64::from(o.mount_mnt);
            let parent: u64 = read(mount, o.mount_mnt_parent)?;
            if parent == mount {
                return Some(true);
            }
            dentry = read(mount, o.mount_mnt_mountpoint)?;
            vfsmnt = parent + u64::from(o.mount_mnt);
            root = read(vfsmnt, o.vfsmount_mnt_root)?;
        } else {
            let up: u64 = read(dentry, o.dentry_d_parent)?;
            if up == dentry {
                return Some(true);
            }
            dentry = up;
        }
    }
    Some(false)
}
