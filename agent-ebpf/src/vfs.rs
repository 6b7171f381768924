//! A walk up a file's directories, across mounts, as the kernel's own path building does it
//! (d_path: a mount's root goes on from where the mount sits in its parent; the task's root
//! ends it). Offsets come
//! from the kernel's BTF (FL_VFS, faultline_common::vfs). Users: fdpath.rs (sys delay, by
//! the directories' identity) and sys.rs (sys fail, by their names before `bpf_d_path`).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use faultline_common::vfs::{DentryHead, VFS_WALK_DEPTH, VfsOffsets};

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
/// above it (its address and its `DentryHead`, one read each), up to the current task's root
/// (where d_path stops) or the root of the topmost mount. Some(true): the walk reached one;
/// Some(false): it ran out of depth (VFS_WALK_DEPTH) first; None: a read failed or `visit`
/// returned None.
#[inline(always)]
pub fn walk_up(
    o: &VfsOffsets,
    file: u64,
    mut visit: impl FnMut(u64, &DentryHead) -> Option<()>,
) -> Option<bool> {
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let fs: u64 = read(task, o.task_fs)?;
    // struct path { struct vfsmount *mnt; struct dentry *dentry; }
    let [top_mnt, top]: [u64; 2] = read(fs, o.fs_root)?;
    let [mut vfsmnt, mut dentry]: [u64; 2] = read(file, o.file_f_path)?;
    let mut root: u64 = read(vfsmnt, o.vfsmount_mnt_root)?;
    for _ in 0..VFS_WALK_DEPTH {
        let head: DentryHead = read(dentry, o.dentry_d_parent)?;
        visit(dentry, &head)?;
        if dentry == top && vfsmnt == top_mnt {
            return Some(true);
        }
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
            if head.parent == dentry {
                return Some(true);
            }
            dentry = head.parent;
        }
    }
    Some(false)
}
