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

pub(crate) const TABLE: &[(&str, Hook)] = &[
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

/// x86_64 system call numbers of every name above (what `sys delay` takes: its exit program
/// matches calls by number, so every known call can be delayed, fsync included).
const X86_64: &[(&str, u32)] = &[
    ("read", 0),
    ("write", 1),
    ("open", 2),
    ("mmap", 9),
    ("pread64", 17),
    ("pwrite64", 18),
    ("readv", 19),
    ("writev", 20),
    ("socket", 41),
    ("connect", 42),
    ("sendto", 44),
    ("sendmsg", 46),
    ("bind", 49),
    ("clone", 56),
    ("fork", 57),
    ("vfork", 58),
    ("execve", 59),
    ("fsync", 74),
    ("fdatasync", 75),
    ("rename", 82),
    ("mkdir", 83),
    ("creat", 85),
    ("unlink", 87),
    ("openat", 257),
    ("mkdirat", 258),
    ("unlinkat", 263),
    ("renameat", 264),
    ("sync_file_range", 277),
    ("fallocate", 285),
    ("preadv", 295),
    ("pwritev", 296),
    ("renameat2", 316),
    ("execveat", 322),
    ("preadv2", 327),
    ("pwritev2", 328),
    ("clone3", 435),
    ("openat2", 437),
];

/// The x86_64 number of a system call faultline knows (None for any other name).
pub fn x86_64_number(name: &str) -> Option<u32> {
    X86_64.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// The name of x86_64 system call `nr`, if faultline knows it.
pub fn x86_64_name(nr: u32) -> Option<&'static str> {
    X86_64.iter().find(|(_, n)| *n == nr).map(|(name, _)| *name)
}

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

    /// Every name has a number and every number a name, once each; on x86_64 they are the
    /// C library's.
    #[test]
    fn every_name_has_its_x86_64_number() {
        let names: std::collections::BTreeSet<_> = TABLE.iter().map(|(n, _)| *n).collect();
        let numbered: std::collections::BTreeSet<_> = X86_64.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, numbered);
        let nrs: std::collections::BTreeSet<_> = X86_64.iter().map(|(_, nr)| *nr).collect();
        assert_eq!(nrs.len(), X86_64.len());
        assert_eq!(x86_64_number("fsync"), Some(74));
        assert_eq!(x86_64_number("frobnicate"), None);
        #[cfg(target_arch = "x86_64")]
        for (name, nr) in [
            ("read", libc::SYS_read),
            ("write", libc::SYS_write),
            ("open", libc::SYS_open),
            ("mmap", libc::SYS_mmap),
            ("pread64", libc::SYS_pread64),
            ("pwrite64", libc::SYS_pwrite64),
            ("readv", libc::SYS_readv),
            ("writev", libc::SYS_writev),
            ("socket", libc::SYS_socket),
            ("connect", libc::SYS_connect),
            ("sendto", libc::SYS_sendto),
            ("sendmsg", libc::SYS_sendmsg),
            ("bind", libc::SYS_bind),
            ("clone", libc::SYS_clone),
            ("fork", libc::SYS_fork),
            ("vfork", libc::SYS_vfork),
            ("execve", libc::SYS_execve),
            ("fsync", libc::SYS_fsync),
            ("fdatasync", libc::SYS_fdatasync),
            ("rename", libc::SYS_rename),
            ("mkdir", libc::SYS_mkdir),
            ("creat", libc::SYS_creat),
            ("unlink", libc::SYS_unlink),
            ("openat", libc::SYS_openat),
            ("mkdirat", libc::SYS_mkdirat),
            ("unlinkat", libc::SYS_unlinkat),
            ("renameat", libc::SYS_renameat),
            ("sync_file_range", libc::SYS_sync_file_range),
            ("fallocate", libc::SYS_fallocate),
            ("preadv", libc::SYS_preadv),
            ("pwritev", libc::SYS_pwritev),
            ("renameat2", libc::SYS_renameat2),
            ("execveat", libc::SYS_execveat),
            ("preadv2", libc::SYS_preadv2),
            ("pwritev2", libc::SYS_pwritev2),
            ("clone3", libc::SYS_clone3),
            ("openat2", libc::SYS_openat2),
        ] {
            assert_eq!(x86_64_number(name), Some(nr as u32), "{name}");
        }
    }
}
