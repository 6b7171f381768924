//! Path rules of the delay programs without `bpf_d_path` (which tracepoints may not call):
//! the file behind a descriptor of the current task (task->files->fdt->fd[fd]) and a walk
//! up its directories, across mounts, looking each (device, inode) up in FL_DELAY_PATHS (the
//! rules' directories): one walk per call, whatever the number of path rules. Offsets come from the kernel's BTF (FL_DELAY_FILE, set by
//! agent-core/src/faults/delay/datapath.rs). Matching by identity, not by name: a directory
//! reached through a bind mount or a symlink matches as itself.

use aya_ebpf::helpers::{bpf_get_current_task, bpf_probe_read_kernel};
use faultline_common::delay::{DELAY_PATH_DEPTH, DelayFileOffsets, DelayPathKey};

use crate::maps::{FL_DELAY_FILE, FL_DELAY_PATHS};

#[inline(always)]
fn offsets() -> DelayFileOffsets {
    // SAFETY: a frozen .rodata value; volatile so the verifier sees the loads.
    unsafe { core::ptr::read_volatile(&FL_DELAY_FILE) }
}

/// The `T` at `base + off` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, off: u32) -> Option<T> {
    // SAFETY: a probe read: a bad address gives an error, not a fault.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T).ok() }
}

/// The struct file behind descriptor `fd` of the current task.
#[inline(always)]
fn file_of(o: &DelayFileOffsets, fd: u64) -> Option<u64> {
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    let files: u64 = read(task, o.task_files)?;
    let fdt: u64 = read(files, o.files_fdt)?;
    let max: u32 = read(fdt, o.fdt_max_fds)?;
    if fd >= u64::from(max) {
        return None;
    }
    let arr: u64 = read(fdt, o.fdt_fd)?;
    let file: u64 = read(arr + fd * 8, 0)?;
    (file != 0).then_some(file)
}

/// The slots of the path rules whose directory (or file) is the file behind `fd` or one of
/// its ancestors: a bit per rule slot.
#[inline(always)]
pub fn rules_over(fd: u64) -> u64 {
    let o = offsets();
    if o.known == 0 {
        return 0;
    }
    walk(&o, fd).unwrap_or(0)
}

#[inline(always)]
fn walk(o: &DelayFileOffsets, fd: u64) -> Option<u64> {
    let file = file_of(o, fd)?;
    // struct path { struct vfsmount *mnt; struct dentry *dentry; }
    let mut vfsmnt: u64 = read(file, o.file_f_path)?;
    let mut dentry: u64 = read(file, o.file_f_path + 8)?;
    let mut mask = 0u64;
    for _ in 0..DELAY_PATH_DEPTH {
        let inode: u64 = read(dentry, o.dentry_d_inode)?;
        if inode != 0 {
            let sb: u64 = read(dentry, o.dentry_d_sb)?;
            let key = DelayPathKey {
                ino: read(inode, o.inode_i_ino)?,
                dev: read(sb, o.sb_s_dev)?,
                _pad: 0,
            };
            // SAFETY: only read.
            if let Some(m) = unsafe { FL_DELAY_PATHS.get(key) } {
                mask |= *m;
            }
        }
        let root: u64 = read(vfsmnt, o.vfsmount_mnt_root)?;
        if dentry == root {
            // The top of this mount: go on from where it is mounted in its parent.
            let mount = vfsmnt - u64::from(o.mount_mnt);
            let parent: u64 = read(mount, o.mount_mnt_parent)?;
            if parent == mount {
                break;
            }
            dentry = read(mount, o.mount_mnt_mountpoint)?;
            vfsmnt = parent + u64::from(o.mount_mnt);
        } else {
            let up: u64 = read(dentry, o.dentry_d_parent)?;
            if up == dentry {
                break;
            }
            dentry = up;
        }
    }
    Some(mask)
}
