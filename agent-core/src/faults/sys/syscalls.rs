//! System-call names and the kernel hook that can fail each one.

use faultline_common::sys::{
    HOOK_BIND, HOOK_CONNECT, HOOK_EXEC, HOOK_FORK, HOOK_MKDIR, HOOK_MMAP, HOOK_OPEN, HOOK_READ,
    HOOK_RENAME, HOOK_SENDMSG, HOOK_SOCKET, HOOK_UNLINK, HOOK_WRITE,
};

/// Where a call can be failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// A HOOK_* bit number.
    At(u32),
    /// A known call with no hook the kernels here offer; the reason says what it needs.
    Missing(&'static str),
}

const FSYNC: &str = "no LSM or cgroup hook sits on the fsync path; failing it needs fmod_ret on \
                     the syscall entry (CONFIG_FUNCTION_ERROR_INJECTION, probe fmod_ret_syscall)";

const TABLE: &[(&str, Hook)] = &[
    ("open", Hook::At(HOOK_OPEN)),
    ("openat", Hook::At(HOOK_OPEN)),
    ("openat2", Hook::At(HOOK_OPEN)),
    ("creat", Hook::At(HOOK_OPEN)),
    ("read", Hook::At(HOOK_READ)),
    ("readv", Hook::At(HOOK_READ)),
    ("pread64", Hook::At(HOOK_READ)),
    ("preadv", Hook::At(HOOK_READ)),
    ("preadv2", Hook::At(HOOK_READ)),
    ("write", Hook::At(HOOK_WRITE)),
    ("writev", Hook::At(HOOK_WRITE)),
    ("pwrite64", Hook::At(HOOK_WRITE)),
    ("pwritev", Hook::At(HOOK_WRITE)),
    ("pwritev2", Hook::At(HOOK_WRITE)),
    ("fallocate", Hook::At(HOOK_WRITE)),
    ("unlink", Hook::At(HOOK_UNLINK)),
    ("unlinkat", Hook::At(HOOK_UNLINK)),
    ("mkdir", Hook::At(HOOK_MKDIR)),
    ("mkdirat", Hook::At(HOOK_MKDIR)),
    ("rename", Hook::At(HOOK_RENAME)),
    ("renameat", Hook::At(HOOK_RENAME)),
    ("renameat2", Hook::At(HOOK_RENAME)),
    ("mmap", Hook::At(HOOK_MMAP)),
    ("execve", Hook::At(HOOK_EXEC)),
    ("execveat", Hook::At(HOOK_EXEC)),
    ("fork", Hook::At(HOOK_FORK)),
    ("vfork", Hook::At(HOOK_FORK)),
    ("clone", Hook::At(HOOK_FORK)),
    ("clone3", Hook::At(HOOK_FORK)),
    ("connect", Hook::At(HOOK_CONNECT)),
    ("bind", Hook::At(HOOK_BIND)),
    ("sendmsg", Hook::At(HOOK_SENDMSG)),
    ("sendto", Hook::At(HOOK_SENDMSG)),
    ("socket", Hook::At(HOOK_SOCKET)),
    ("fsync", Hook::Missing(FSYNC)),
    ("fdatasync", Hook::Missing(FSYNC)),
    ("sync_file_range", Hook::Missing(FSYNC)),
];

pub fn lookup(name: &str) -> Option<Hook> {
    TABLE.iter().find(|(n, _)| *n == name).map(|(_, h)| *h)
}

/// A few names, for error messages.
pub const EXAMPLES: &str = "openat, read, write, unlink, mkdir, rename, mmap, execve, clone, \
                            connect, bind, sendmsg, socket";

/// The HOOK_* bit set of `names` (all known, none Missing), or the first name that has none.
pub fn hooks(names: &[String]) -> Result<u32, (String, &'static str)> {
    let mut bits = 0;
    for n in names {
        match lookup(n) {
            Some(Hook::At(h)) => bits |= 1 << h,
            Some(Hook::Missing(why)) => return Err((n.clone(), why)),
            None => return Err((n.clone(), "unknown system call")),
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hooks() {
        assert_eq!(lookup("openat"), Some(Hook::At(HOOK_OPEN)));
        assert_eq!(lookup("pwrite64"), Some(Hook::At(HOOK_WRITE)));
        assert!(matches!(lookup("fsync"), Some(Hook::Missing(_))));
        assert_eq!(lookup("frobnicate"), None);
        let both = hooks(&["read".into(), "write".into(), "readv".into()]).unwrap();
        assert_eq!(both, 1 << HOOK_READ | 1 << HOOK_WRITE);
        assert_eq!(hooks(&["read".into(), "fsync".into()]).unwrap_err().0, "fsync");
    }
}
