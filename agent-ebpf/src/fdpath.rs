//! Path rules of the delay programs without `bpf_d_path` (which tracepoints may not call):
//! the file behind a descriptor of the current task (task->files->fdt->fd[fd]) and a walk
//! up its directories (vfs.rs), looking each (device, inode) up in FL_DELAY_PATHS (the
//! rules' directories): one walk per call, whatever the number of path rules. Matching by
//! identity, not by name: a directory reached through a bind mount or a symlink matches as
//! itself. User-space owner: agent-core/src/faults/delay/datapath.rs.

use aya_ebpf::helpers::bpf_get_current_task;
use faultline_common::{delay::DelayPathKey, vfs::VfsOffsets};

use crate::{
    maps::FL_DELAY_PATHS,
    vfs::{self, read},
};

/// The struct file behind descriptor `fd` of the current task.
#[inline(always)]
fn file_of(o: &VfsOffsets, fd: u64) -> Option<u64> {
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
    let Some(o) = vfs::offsets() else { return 0 };
    walk(&o, fd).unwrap_or(0)
}

#[inline(always)]
fn walk(o: &VfsOffsets, fd: u64) -> Option<u64> {
    let file = file_of(o, fd)?;
    let mut mask = 0u64;
    vfs::walk_up::<false>(o, file, |dentry, _| {
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
        Some(())
    })?;
    Some(mask)
}
