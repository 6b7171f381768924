//! Validation of system-call faults.

use faultline_common::sys::{PATH_HOOKS, SYS_PATH_MAX};
use faultline_proto::v1 as pb;

use super::fields::{errno, percent};
use crate::{
    engine::{
        error::{Error, Result},
        model::SyscallErrno,
    },
    faults::sys::syscalls::{self, Hook},
};

pub const MAX_SYSCALLS: usize = 16;

pub fn syscall_errno(s: &pb::SyscallErrno, field: &str) -> Result<SyscallErrno> {
    if s.syscalls.is_empty() || s.syscalls.len() > MAX_SYSCALLS {
        return Err(Error::invalid(
            format!("{field}.syscalls"),
            format!("1 to {MAX_SYSCALLS} system call names, got {}", s.syscalls.len()),
        ));
    }
    let mut names = Vec::new();
    let mut path_ok = true;
    for (i, raw) in s.syscalls.iter().enumerate() {
        let n = raw.trim().to_ascii_lowercase();
        match syscalls::lookup(&n) {
            None => {
                return Err(Error::invalid(
                    format!("{field}.syscalls[{i}]"),
                    format!(
                        "{raw:?} is not a system call faultline knows ({})",
                        syscalls::EXAMPLES
                    ),
                ));
            }
            Some(Hook::At(h)) => path_ok &= PATH_HOOKS & (1 << h) != 0,
            Some(Hook::Missing(_)) => {}
        }
        names.push(n);
    }
    let errno = errno(&s.errno, libc::EIO, &format!("{field}.errno"))?;
    if s.every_nth.is_some() && s.percent.is_some() {
        return Err(Error::invalid(
            format!("{field}.every_nth"),
            "give either percent or every_nth, not both",
        ));
    }
    if s.every_nth == Some(0) {
        return Err(Error::invalid(format!("{field}.every_nth"), "must be >= 1, got 0"));
    }
    if s.max_hits == Some(0) {
        return Err(Error::invalid(format!("{field}.max_hits"), "must be >= 1 (or unset), got 0"));
    }
    let percent = match s.percent {
        Some(p) => percent(p, &format!("{field}.percent"))?,
        None => 100.0,
    };
    let path_prefix = path_prefix(&s.path_prefix, &format!("{field}.path_prefix"))?;
    if path_prefix.is_some() && !path_ok {
        return Err(Error::invalid(
            format!("{field}.path_prefix"),
            "applies to open, read and write calls only (the other calls name no path here)",
        ));
    }
    Ok(SyscallErrno {
        syscalls: names,
        errno,
        percent,
        every_nth: s.every_nth,
        max_hits: s.max_hits,
        path_prefix,
        follow_children: s.follow_children,
        seed: s.seed,
    })
}

fn path_prefix(p: &str, field: &str) -> Result<Option<String>> {
    if p.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| Err(Error::invalid(field, format!("{p:?}: {why}")));
    if !p.starts_with('/') {
        return bad("must be an absolute path");
    }
    if p.split('/').any(|c| c == "." || c == "..") || p.contains("//") || p.contains('\0') {
        return bad("must be a normalized path (no ., .., // or NUL)");
    }
    let trimmed = if p.len() > 1 { p.trim_end_matches('/') } else { p };
    if trimmed.len() >= SYS_PATH_MAX {
        return bad(&format!("at most {} bytes", SYS_PATH_MAX - 1));
    }
    // "/" holds every path: no filter.
    Ok((trimmed != "/").then(|| trimmed.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(names: &[&str]) -> pb::SyscallErrno {
        pb::SyscallErrno {
            syscalls: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn field_of(r: Result<SyscallErrno>) -> String {
        match r {
            Err(Error::InvalidArgument { field, .. }) => field,
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn defaults_and_refusals() {
        let ok = syscall_errno(&req(&["OpenAt", "read"]), "f").unwrap();
        assert_eq!(
            (ok.syscalls.clone(), ok.errno, ok.percent),
            (vec!["openat".into(), "read".into()], libc::EIO, 100.0)
        );
        assert_eq!(field_of(syscall_errno(&req(&[]), "f")), "f.syscalls");
        assert_eq!(field_of(syscall_errno(&req(&["read", "nope"]), "f")), "f.syscalls[1]");
        let e = |f: fn(&mut pb::SyscallErrno)| {
            let mut r = req(&["openat"]);
            f(&mut r);
            field_of(syscall_errno(&r, "f"))
        };
        assert_eq!(e(|r| r.errno = "EWHAT".into()), "f.errno");
        assert_eq!(e(|r| r.errno = "5000".into()), "f.errno");
        assert_eq!(e(|r| r.percent = Some(0.0)), "f.percent");
        assert_eq!(e(|r| r.percent = Some(101.0)), "f.percent");
        assert_eq!(e(|r| r.every_nth = Some(0)), "f.every_nth");
        assert_eq!(e(|r| r.max_hits = Some(0)), "f.max_hits");
        assert_eq!(
            e(|r| {
                r.every_nth = Some(3);
                r.percent = Some(5.0)
            }),
            "f.every_nth"
        );
        assert_eq!(e(|r| r.path_prefix = "data".into()), "f.path_prefix");
        assert_eq!(e(|r| r.path_prefix = "/data/../etc".into()), "f.path_prefix");
        let mut r = req(&["connect"]);
        r.path_prefix = "/data".into();
        assert_eq!(field_of(syscall_errno(&r, "f")), "f.path_prefix");
        let mut r = req(&["openat"]);
        r.path_prefix = "/data/".into();
        assert_eq!(syscall_errno(&r, "f").unwrap().path_prefix.as_deref(), Some("/data"));
    }
}
