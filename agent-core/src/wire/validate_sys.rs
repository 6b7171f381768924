//! Validation of system-call faults.

use faultline_common::{
    delay::{PATH_FD_NONE, path_fd},
    sys::{PATH_HOOKS, SYS_PATH_MAX},
};
use faultline_proto::v1 as pb;

use std::time::Duration;

use super::fields::{errno, non_negative, percent};
use crate::{
    engine::{
        error::{Error, Result},
        model::{Distribution, SyscallDelay, SyscallErrno},
    },
    faults::sys::syscalls::{self, Hook},
    units::human_duration,
};

pub const MAX_SYSCALLS: usize = 16;
/// The longest a delayed call is held (latency + jitter).
pub const MAX_SYSCALL_DELAY: Duration = Duration::from_secs(60);

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

pub fn syscall_delay(s: &pb::SyscallDelay, field: &str) -> Result<SyscallDelay> {
    if s.syscalls.is_empty() || s.syscalls.len() > MAX_SYSCALLS {
        return Err(Error::invalid(
            format!("{field}.syscalls"),
            format!("1 to {MAX_SYSCALLS} system call names, got {}", s.syscalls.len()),
        ));
    }
    let mut names = Vec::new();
    let mut numbers = Vec::new();
    for (i, raw) in s.syscalls.iter().enumerate() {
        let n = raw.trim().to_ascii_lowercase();
        let Some(nr) = syscalls::x86_64_number(&n) else {
            return Err(Error::invalid(
                format!("{field}.syscalls[{i}]"),
                format!(
                    "{raw:?} is not a system call faultline knows ({}, fsync, fdatasync, \
                     sync_file_range)",
                    syscalls::EXAMPLES
                ),
            ));
        };
        names.push(n);
        numbers.push(nr);
    }
    let latency = non_negative(s.latency.as_ref(), &format!("{field}.latency"))?;
    let jitter = non_negative(s.jitter.as_ref(), &format!("{field}.jitter"))?;
    if latency.is_zero() {
        return Err(Error::invalid(
            format!("{field}.latency"),
            format!("required: > 0 and at most {}", human_duration(MAX_SYSCALL_DELAY)),
        ));
    }
    if jitter > latency {
        return Err(Error::invalid(
            format!("{field}.jitter"),
            format!(
                "must be <= latency ({}), got {}",
                human_duration(latency),
                human_duration(jitter)
            ),
        ));
    }
    if latency + jitter > MAX_SYSCALL_DELAY {
        return Err(Error::invalid(
            format!("{field}.latency"),
            format!(
                "latency + jitter must be <= {}, got {}",
                human_duration(MAX_SYSCALL_DELAY),
                human_duration(latency + jitter)
            ),
        ));
    }
    let distribution = match pb::Distribution::try_from(s.distribution) {
        Ok(pb::Distribution::Unspecified | pb::Distribution::Uniform) => Distribution::Uniform,
        Ok(pb::Distribution::Normal) => Distribution::Normal,
        Err(_) => {
            return Err(Error::invalid(
                format!("{field}.distribution"),
                format!("must be UNIFORM or NORMAL, got {}", s.distribution),
            ));
        }
    };
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
    if path_prefix.is_some()
        && let Some(i) = numbers.iter().position(|&nr| path_fd(nr) == PATH_FD_NONE)
    {
        return Err(Error::invalid(
            format!("{field}.path_prefix"),
            format!(
                "applies to calls on a file descriptor or that open one (open, read, write, \
                 fsync, fdatasync, sync_file_range, fallocate, mmap and their variants), not {}",
                names[i]
            ),
        ));
    }
    Ok(SyscallDelay {
        syscalls: names,
        numbers,
        latency,
        jitter,
        distribution,
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

    fn field_of<T: std::fmt::Debug>(r: Result<T>) -> String {
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

    fn ms(ms: i64) -> Option<prost_types::Duration> {
        Some(prost_types::Duration { seconds: ms / 1000, nanos: ((ms % 1000) * 1_000_000) as i32 })
    }

    fn delay(names: &[&str]) -> pb::SyscallDelay {
        pb::SyscallDelay {
            syscalls: names.iter().map(|s| s.to_string()).collect(),
            latency: ms(100),
            ..Default::default()
        }
    }

    /// (field, message) of an InvalidArgument.
    fn refusal(r: Result<SyscallDelay>) -> (String, String) {
        match r {
            Err(Error::InvalidArgument { field, message }) => (field, message),
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }

    #[test]
    fn delay_defaults_and_numbers() {
        let ok =
            syscall_delay(&delay(&["Read", " fsync", "sync_file_range", "openat"]), "f").unwrap();
        assert_eq!(ok.syscalls, ["read", "fsync", "sync_file_range", "openat"]);
        assert_eq!(ok.numbers, [0, 74, 277, 257]);
        assert_eq!(ok.latency, Duration::from_millis(100));
        assert_eq!(ok.jitter, Duration::ZERO);
        assert_eq!(ok.distribution, Distribution::Uniform);
        assert_eq!((ok.percent, ok.every_nth, ok.max_hits), (100.0, None, None));
        // Every name sys fail takes, and the three sync calls.
        for (name, _) in syscalls::TABLE {
            assert!(syscall_delay(&delay(&[name]), "f").is_ok(), "{name}");
        }
        let mut r = delay(&["write"]);
        r.jitter = ms(100);
        r.distribution = pb::Distribution::Normal as i32;
        r.every_nth = Some(3);
        r.max_hits = Some(5);
        r.seed = Some(7);
        r.follow_children = true;
        let ok = syscall_delay(&r, "f").unwrap();
        assert_eq!(ok.jitter, Duration::from_millis(100));
        assert_eq!(ok.distribution, Distribution::Normal);
        assert_eq!((ok.every_nth, ok.max_hits, ok.seed), (Some(3), Some(5), Some(7)));
        assert!(ok.follow_children);
        let mut r = delay(&["write"]);
        r.latency = ms(30_000);
        r.jitter = ms(30_000);
        assert!(syscall_delay(&r, "f").is_ok(), "exactly 60 s in all");
    }

    #[test]
    fn delay_refusals_name_the_field_and_the_range() {
        let e = |f: fn(&mut pb::SyscallDelay)| {
            let mut r = delay(&["read"]);
            f(&mut r);
            refusal(syscall_delay(&r, "fault.syscall_delay"))
        };
        let has = |(field, msg): (String, String), want: &str, words: &str| {
            assert_eq!(field, want, "{msg}");
            assert!(msg.contains(words), "{field}: {msg:?} lacks {words:?}");
        };
        has(e(|r| r.syscalls.clear()), "fault.syscall_delay.syscalls", "1 to 16");
        has(
            e(|r| r.syscalls = (0..17).map(|_| "read".to_string()).collect()),
            "fault.syscall_delay.syscalls",
            "got 17",
        );
        has(
            e(|r| r.syscalls.push("getppid".into())),
            "fault.syscall_delay.syscalls[1]",
            "\"getppid\" is not a system call",
        );
        has(e(|r| r.latency = None), "fault.syscall_delay.latency", "> 0 and at most 1m");
        has(e(|r| r.latency = ms(0)), "fault.syscall_delay.latency", "> 0");
        has(e(|r| r.latency = ms(-5)), "fault.syscall_delay.latency", "must not be negative");
        has(
            e(|r| r.latency = Some(prost_types::Duration { seconds: 0, nanos: 1_000_000_000 })),
            "fault.syscall_delay.latency.nanos",
            "0..=999999999",
        );
        has(e(|r| r.jitter = ms(101)), "fault.syscall_delay.jitter", "must be <= latency (100ms)");
        has(e(|r| r.jitter = ms(-1)), "fault.syscall_delay.jitter", "must not be negative");
        has(e(|r| r.latency = ms(60_001)), "fault.syscall_delay.latency", "must be <= 1m");
        has(
            e(|r| {
                r.latency = ms(40_000);
                r.jitter = ms(20_001);
            }),
            "fault.syscall_delay.latency",
            "latency + jitter must be <= 1m",
        );
        has(e(|r| r.distribution = 9), "fault.syscall_delay.distribution", "UNIFORM or NORMAL");
        has(e(|r| r.percent = Some(0.0)), "fault.syscall_delay.percent", "> 0 and <= 100");
        has(e(|r| r.percent = Some(100.5)), "fault.syscall_delay.percent", "> 0 and <= 100");
        has(e(|r| r.percent = Some(f64::NAN)), "fault.syscall_delay.percent", "> 0 and <= 100");
        has(e(|r| r.every_nth = Some(0)), "fault.syscall_delay.every_nth", ">= 1");
        has(
            e(|r| {
                r.every_nth = Some(2);
                r.percent = Some(50.0);
            }),
            "fault.syscall_delay.every_nth",
            "either percent or every_nth",
        );
        has(e(|r| r.max_hits = Some(0)), "fault.syscall_delay.max_hits", ">= 1");
        has(e(|r| r.path_prefix = "data".into()), "fault.syscall_delay.path_prefix", "absolute");
        has(
            e(|r| r.path_prefix = "/data/../etc".into()),
            "fault.syscall_delay.path_prefix",
            "normalized",
        );
    }

    /// A delay's path prefix: normalized as for errno faults, only with calls on a file
    /// descriptor or that open one; "/" (every path) is no filter at all.
    #[test]
    fn delay_path_prefix_goes_with_file_calls_only() {
        let mut r = delay(&["read", "openat", "fsync", "mmap"]);
        r.path_prefix = "/data/".into();
        assert_eq!(syscall_delay(&r, "f").unwrap().path_prefix.as_deref(), Some("/data"));
        r.path_prefix = "data".into();
        assert_eq!(field_of(syscall_delay(&r, "f")), "f.path_prefix");
        let mut r = delay(&["read", "unlink"]);
        r.path_prefix = "/data".into();
        match syscall_delay(&r, "f") {
            Err(Error::InvalidArgument { field, message }) => {
                assert_eq!(field, "f.path_prefix");
                assert!(message.ends_with("not unlink"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        r.path_prefix = "/".into();
        assert_eq!(syscall_delay(&r, "f").unwrap().path_prefix, None);
    }
}
