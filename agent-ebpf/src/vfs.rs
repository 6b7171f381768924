//! A walk up a file's directories, across mounts, as the kernel's own path building does it
//! (d_path: a mount's root goes on from where the mount sits in its parent; the task's root
//! ends it). Offsets come from the kernel's BTF (FL_VFS, faultline_common::vfs). Users:
//! fdpath.rs (sys delay, by the directories' identity) and sys.rs (sys fail, by their names
//! before `bpf_d_path`).
//!
//! Two ways to read kernel memory: `Probe` (bpf_probe_read_kernel, a helper call per read:
//! any program) and `Typed` (plain loads, which the verifier turns into fault-safe loads:
//! only where the file pointer carries its BTF type, as an LSM or fentry program's argument
//! does, and only while the walk stays in one mount, since going from a vfsmount to its
//! struct mount is a negative offset the verifier refuses; past a mount the walk goes on
//! with `Probe`).

use aya_ebpf::helpers::{bpf_get_current_task, bpf_get_current_task_btf, bpf_probe_read_kernel};
use faultline_common::vfs::{DentryHead, VFS_WALK_DEPTH, VfsOffsets};

use crate::maps::FL_VFS;

/// The offsets, or None where they are unknown (the family never asked for path rules).
#[inline(always)]
pub fn offsets() -> Option<VfsOffsets> {
    // SAFETY: a frozen .rodata value; volatile so the verifier sees the loads.
    let o = unsafe { core::ptr::read_volatile(&FL_VFS) };
    (o.known != 0).then_some(o)
}

/// The `T` at `base + off` in kernel memory, by a probe read.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Option<T> {
    // SAFETY: a probe read: a bad address gives an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T).ok() }
}

/// How a walk reads kernel memory.
pub trait Mem {
    /// Whether a walk with these reads goes on past a mount's root.
    const CROSSES: bool;
    /// The `T` at `base + off`.
    fn at<T>(base: u64, off: u32) -> Option<T>;
    /// The current task.
    fn task() -> u64;
}

/// Probe reads: any program, any address.
pub struct Probe;

impl Mem for Probe {
    const CROSSES: bool = true;

    #[inline(always)]
    fn at<T>(base: u64, off: u32) -> Option<T> {
        read(base, off)
    }

    #[inline(always)]
    fn task() -> u64 {
        // SAFETY: helper without arguments.
        unsafe { bpf_get_current_task() }
    }
}

/// Plain loads from pointers the verifier knows the BTF type of (5.11+ for the task).
pub struct Typed;

impl Mem for Typed {
    const CROSSES: bool = false;

    #[inline(always)]
    fn at<T>(base: u64, off: u32) -> Option<T> {
        // SAFETY: `base` is a BTF-typed kernel pointer and `off` a member offset from the
        // same BTF: the verifier checks both and makes the load fault-safe.
        Some(unsafe { core::ptr::read_volatile((base + u64::from(off)) as *const T) })
    }

    #[inline(always)]
    fn task() -> u64 {
        // SAFETY: helper without arguments.
        unsafe { bpf_get_current_task_btf() as u64 }
    }
}

/// Where a walk stopped.
enum Stop {
    /// At the task's root or the top of the topmost mount: every name above the file seen.
    Top,
    /// Out of depth.
    Deep,
    /// At the root of a mount (vfsmount, dentry), which `Typed` does not cross.
    Mount(u64, u64),
}

/// Calls `visit` on the dentry of `file` (a struct file address) and on each directory
/// above it (its address and its `DentryHead`, whose name and length are read only with
/// `NAMES`), up to the current task's root (where d_path
/// stops) or the root of the topmost mount. Some(true): the walk reached one; Some(false):
/// it ran out of depth (VFS_WALK_DEPTH) first; None: a read failed or `visit` returned None.
#[inline(always)]
pub fn walk_up<const NAMES: bool>(
    o: &VfsOffsets,
    file: u64,
    visit: impl FnMut(u64, &DentryHead) -> Option<()>,
) -> Option<bool> {
    let top = task_root::<Probe>(o)?;
    let [vfsmnt, dentry]: [u64; 2] = read(file, o.file_f_path)?;
    finish(walk_in::<Probe, NAMES>(o, top, vfsmnt, dentry, visit, VFS_WALK_DEPTH)?)
}

/// `walk_up` with plain loads while the walk stays in the file's mount, for a `file` that
/// is a BTF-typed argument (LSM, fentry and fmod_ret programs).
#[inline(always)]
pub fn walk_up_typed<const NAMES: bool>(
    o: &VfsOffsets,
    file: u64,
    mut visit: impl FnMut(u64, &DentryHead) -> Option<()>,
) -> Option<bool> {
    let top = task_root::<Typed>(o)?;
    let vfsmnt: u64 = Typed::at(file, o.file_f_path)?;
    let dentry: u64 = Typed::at(file, o.file_f_path + 8)?;
    match walk_in::<Typed, NAMES>(o, top, vfsmnt, dentry, &mut visit, VFS_WALK_DEPTH)? {
        // On from the mount's root (visited once more) with probe reads.
        Stop::Mount(vfsmnt, dentry) => {
            finish(walk_in::<Probe, NAMES>(o, top, vfsmnt, dentry, &mut visit, VFS_WALK_DEPTH)?)
        }
        stop => finish(stop),
    }
}

#[inline(always)]
fn finish(stop: Stop) -> Option<bool> {
    match stop {
        Stop::Top => Some(true),
        Stop::Deep => Some(false),
        Stop::Mount(..) => None,
    }
}

/// The current task's root directory: (vfsmount, dentry).
#[inline(always)]
fn task_root<M: Mem>(o: &VfsOffsets) -> Option<[u64; 2]> {
    let fs: u64 = M::at(M::task(), o.task_fs)?;
    // struct path { struct vfsmount *mnt; struct dentry *dentry; }
    Some([M::at(fs, o.fs_root)?, M::at(fs, o.fs_root + 8)?])
}

#[inline(always)]
fn walk_in<M: Mem, const NAMES: bool>(
    o: &VfsOffsets,
    [top_mnt, top]: [u64; 2],
    mut vfsmnt: u64,
    mut dentry: u64,
    mut visit: impl FnMut(u64, &DentryHead) -> Option<()>,
    depth: u32,
) -> Option<Stop> {
    let mut root: u64 = M::at(vfsmnt, o.vfsmount_mnt_root)?;
    for _ in 0..depth {
        // Each member by its own read: 6.1's verifier refuses a load across qstr's union.
        let mut head =
            DentryHead { parent: M::at(dentry, o.dentry_d_parent)?, ..Default::default() };
        if NAMES {
            head.name = M::at(dentry, o.dentry_d_name + 8)?;
            head.len = M::at(dentry, o.dentry_d_name + 4)?;
        }
        visit(dentry, &head)?;
        if dentry == top && vfsmnt == top_mnt {
            return Some(Stop::Top);
        }
        if dentry == root {
            if !M::CROSSES {
                return Some(Stop::Mount(vfsmnt, dentry));
            }
            // The top of this mount: go on from where it is mounted in its parent.
            let mount = vfsmnt - u64::from(o.mount_mnt);
            let parent: u64 = read(mount, o.mount_mnt_parent)?;
            if parent == mount {
                return Some(Stop::Top);
            }
            dentry = read(mount, o.mount_mnt_mountpoint)?;
            vfsmnt = parent + u64::from(o.mount_mnt);
            root = read(vfsmnt, o.vfsmount_mnt_root)?;
        } else {
            if head.parent == dentry {
                return Some(Stop::Top);
            }
            dentry = head.parent;
        }
    }
    Some(Stop::Deep)
}
