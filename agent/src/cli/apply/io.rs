//! IOChaos: `latency` as system-call latency (`syscall_delay`) and `fault` as an errno
//! (`syscall_errno`) on the file calls that stand for Chaos Mesh's FUSE `methods`, under the
//! path `volumePath`/`path` name, in each picked container (or the whole pod).
//!
//! Paths: Chaos Mesh's `volumePath` and `path` are paths as the container sees them, and so is
//! faultline's path prefix (matched in the target's own mount namespace). `path` is a file or
//! directory (absolute, or relative to `volumePath`), optionally ending in `/**` or `/**/*`
//! (everything under it); other globs are refused: faultline matches a prefix at `/`
//! boundaries. Without `path`, the whole volume. `attrOverride` and `mistake` are refused.

use faultline_proto::v1 as pb;

use super::{
    Translated,
    manifest::{Node, Refusal, Result},
};

const OPEN: &[&str] = &["open", "openat", "openat2"];
const READ: &[&str] = &["read", "readv", "pread64", "preadv", "preadv2"];
const WRITE: &[&str] = &["write", "writev", "pwrite64", "pwritev", "pwritev2"];
const FSYNC: &[&str] = &["fsync", "fdatasync"];
/// Only with no path filter (a volume at /): faultline matches paths on calls on a file
/// descriptor or that open one, not on these.
const MKDIR: &[&str] = &["mkdir", "mkdirat"];
const UNLINK: &[&str] = &["unlink", "unlinkat"];
const RENAME: &[&str] = &["rename", "renameat", "renameat2"];

/// Methods absent ("all methods" in Chaos Mesh): every call on a file under the path that
/// faultline can match. Delay: opens, reads, writes and syncs (16, the most per fault);
/// errno: opens, reads and writes (fsync has no hook to fail it on most kernels).
const ALL_DELAY: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "read",
    "readv",
    "pread64",
    "preadv",
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "fallocate",
    "fsync",
    "fdatasync",
    "sync_file_range",
];
const ALL_ERRNO: &[&str] = &[
    "open",
    "openat",
    "openat2",
    "creat",
    "read",
    "readv",
    "pread64",
    "preadv",
    "preadv2",
    "write",
    "writev",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "fallocate",
];

/// The most system calls one fault takes (agent-core's MAX_SYSCALLS).
const MAX_SYSCALLS: usize = 16;
/// The longest delay faultline holds a call (latency + jitter).
const MAX_DELAY_S: f64 = 60.0;

/// Why a FUSE method has no system call here.
fn unsupported(method: &str) -> Option<&'static str> {
    Some(match method {
        "lookup" | "forget" | "getattr" | "access" | "statfs" | "bmap" => {
            "path lookup and stat calls are not hooked by faultline"
        }
        "setattr" => "chmod, chown, truncate and utimes are not hooked by faultline",
        "readlink" | "symlink" | "link" | "mknod" | "rmdir" => "faultline has no hook on this call",
        "create" => {
            "faultline's open hook cannot tell an open that creates the file from one that \
             does not (use open: every open)"
        }
        "flush" | "release" | "releasedir" => "close is not hooked by faultline",
        "opendir" | "readdir" | "fsyncdir" => "directory reads are not hooked by faultline",
        "setxattr" | "getxattr" | "listxattr" | "removexattr" => {
            "extended attributes are not hooked by faultline"
        }
        "getlk" | "setlk" => "file locks are not hooked by faultline",
        _ => return None,
    })
}

pub fn translate(spec: &Node) -> Result<Translated> {
    let action = spec.string("action")?.ok_or_else(|| Refusal::at("spec.action", "required"))?;
    let containers = spec.strings("containerNames")?.unwrap_or_default();
    let prefix = prefix(spec)?;
    // Chaos Mesh: 0 or absent is 100.
    let percent = spec.percent("percent")?.filter(|p| *p > 0.0);
    let delay = action == "latency";
    if !delay && action != "fault" {
        return Err(Refusal::at(
            "spec.action",
            match action.as_str() {
                "attrOverride" => {
                    "attrOverride is not supported: faultline does not rewrite file attributes"
                        .to_string()
                }
                "mistake" => {
                    "mistake is not supported: faultline does not corrupt the data of reads and writes"
                        .to_string()
                }
                other => format!("{other:?}: latency or fault (attrOverride, mistake: refused)"),
            },
        ));
    }
    // The other action's field (errno with latency, delay with fault) is left unread: the
    // document's check refuses it.
    for (key, why) in
        [("attr", "attrOverride is not supported"), ("mistake", "mistake is not supported")]
    {
        if spec.has(key) {
            return Err(Refusal::at(spec.path_of(key), why));
        }
    }
    let syscalls = syscalls(spec, delay, prefix.is_some())?;
    let path_prefix = prefix.unwrap_or_default();
    let fault = if delay {
        let (neg, d) = spec
            .duration("delay", true)?
            .ok_or_else(|| Refusal::at("spec.delay", "required with action latency"))?;
        if neg || d.is_zero() || d.as_secs_f64() > MAX_DELAY_S {
            return Err(Refusal::at(
                "spec.delay",
                format!("must be above 0 and at most {MAX_DELAY_S} s (faultline's longest hold)"),
            ));
        }
        pb::fault::Kind::SyscallDelay(pb::SyscallDelay {
            syscalls,
            latency: Some(faultline_core::wire::convert::duration(d)),
            percent,
            path_prefix,
            ..Default::default()
        })
    } else {
        let errno = match spec.number("errno")? {
            Some(e) if (1.0..=4095.0).contains(&e) && e.fract() == 0.0 => e as u32,
            Some(e) => {
                return Err(Refusal::at("spec.errno", format!("{e}: an errno number 1 to 4095")));
            }
            None => return Err(Refusal::at("spec.errno", "required with action fault")),
        };
        pb::fault::Kind::SyscallErrno(pb::SyscallErrno {
            syscalls,
            errno: errno.to_string(),
            percent,
            path_prefix,
            ..Default::default()
        })
    };
    Ok(Translated { faults: vec![fault], containers })
}

/// The path prefix: `path` (under `volumePath`) or `volumePath`; None for "/" (every file).
fn prefix(spec: &Node) -> Result<Option<String>> {
    let volume = spec.string("volumePath")?.ok_or_else(|| {
        Refusal::at("spec.volumePath", "required: the volume's mount path in the container")
    })?;
    let volume = normalized(&volume)
        .ok_or_else(|| Refusal::at("spec.volumePath", format!("{volume:?}: an absolute path")))?;
    let Some(path) = spec.string("path")? else {
        return Ok((volume != "/").then_some(volume));
    };
    let bad = |why: &str| Refusal::at("spec.path", format!("{path:?}: {why}"));
    let mut p = path.trim().to_string();
    for tail in ["/**/*", "/**"] {
        if let Some(s) = p.strip_suffix(tail) {
            p = if s.is_empty() { "/".into() } else { s.to_string() };
            break;
        }
    }
    if p.contains(['*', '?', '[', '{']) {
        return Err(bad(
            "faultline matches a file or a directory and everything under it, not a glob \
             (a trailing /** or /**/* is read as everything under the directory)",
        ));
    }
    let full = if p.starts_with('/') {
        p
    } else if volume == "/" {
        format!("/{p}")
    } else {
        format!("{volume}/{p}")
    };
    let full = normalized(&full).ok_or_else(|| bad("a normalized path (no . or ..)"))?;
    let under = volume == "/" || full == volume || full.starts_with(&format!("{volume}/"));
    if !under {
        return Err(bad(&format!(
            "must be under volumePath {volume} (Chaos Mesh injects there only)"
        )));
    }
    Ok((full != "/").then_some(full))
}

/// An absolute path without ".", "..", "//" or a trailing "/".
fn normalized(p: &str) -> Option<String> {
    let p = p.trim();
    if !p.starts_with('/') || p.split('/').any(|c| c == "." || c == "..") {
        return None;
    }
    let parts: Vec<&str> = p.split('/').filter(|c| !c.is_empty()).collect();
    Some(format!("/{}", parts.join("/")))
}

/// The system calls of `methods`, each refused with its index where faultline has none.
fn syscalls(spec: &Node, delay: bool, has_path: bool) -> Result<Vec<String>> {
    let methods = spec.strings("methods")?.unwrap_or_default();
    if methods.is_empty() {
        let all = if delay { ALL_DELAY } else { ALL_ERRNO };
        return Ok(all.iter().map(|s| s.to_string()).collect());
    }
    let mut out: Vec<String> = Vec::new();
    for (i, m) in methods.iter().enumerate() {
        let at = || format!("spec.methods[{i}]");
        if let Some(why) = unsupported(m) {
            return Err(Refusal::at(at(), format!("{m}: {why}")));
        }
        let calls: &[&str] = match m.as_str() {
            "open" => OPEN,
            "read" => READ,
            "write" => WRITE,
            "fsync" => FSYNC,
            "mkdir" | "unlink" | "rename" if has_path => {
                return Err(Refusal::at(
                    at(),
                    format!(
                        "{m} under a path: faultline matches paths on calls on a file or that \
                         open one only (the volume at / would have no path)"
                    ),
                ));
            }
            "mkdir" => MKDIR,
            "unlink" => UNLINK,
            "rename" => RENAME,
            other => {
                return Err(Refusal::at(at(), format!("{other:?} is not a Chaos Mesh IO method")));
            }
        };
        for c in calls {
            if !out.iter().any(|o| o == c) {
                out.push(c.to_string());
            }
        }
    }
    if out.len() > MAX_SYSCALLS {
        return Err(Refusal::at(
            "spec.methods",
            format!("{} system calls: faultline takes at most {MAX_SYSCALLS} per fault", out.len()),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(yaml: &str) -> Result<Translated> {
        crate::cli::apply::translate_yaml(translate, yaml)
    }

    #[test]
    fn latency_maps_to_a_syscall_delay_under_the_path() {
        let t = run("action: latency\nvolumePath: /var/run/etcd\npath: '/var/run/etcd/**/*'\ndelay: 100ms\npercent: 50\nmethods: [read, fsync]\ncontainerNames: [etcd]\n").unwrap();
        assert_eq!(t.containers, vec!["etcd".to_string()]);
        let pb::fault::Kind::SyscallDelay(d) = &t.faults[0] else { panic!() };
        assert_eq!(
            d.syscalls,
            ["read", "readv", "pread64", "preadv", "preadv2", "fsync", "fdatasync"]
        );
        assert_eq!(d.latency, Some(prost_types::Duration { seconds: 0, nanos: 100_000_000 }));
        assert_eq!((d.percent, d.path_prefix.as_str()), (Some(50.0), "/var/run/etcd"));
        // No methods: every file call faultline can match; no path: the volume; percent 0: 100.
        let t = run("action: latency\nvolumePath: /data/\ndelay: 1s\npercent: 0\n").unwrap();
        let pb::fault::Kind::SyscallDelay(d) = &t.faults[0] else { panic!() };
        assert_eq!(d.syscalls.len(), 16);
        assert_eq!((d.percent, d.path_prefix.as_str()), (None, "/data"));
    }

    #[test]
    fn fault_maps_to_a_syscall_errno() {
        let t = run("action: fault\nvolumePath: /data\npath: logs/app.log\nerrno: 5\nmethods: [open, write, open]\n").unwrap();
        let pb::fault::Kind::SyscallErrno(e) = &t.faults[0] else { panic!() };
        assert_eq!(e.errno, "5");
        assert_eq!(e.path_prefix, "/data/logs/app.log");
        assert_eq!(
            e.syscalls,
            ["open", "openat", "openat2", "write", "writev", "pwrite64", "pwritev", "pwritev2"]
        );
        let t = run("action: fault\nvolumePath: /data\nerrno: 28\n").unwrap();
        let pb::fault::Kind::SyscallErrno(e) = &t.faults[0] else { panic!() };
        assert_eq!(e.syscalls.len(), 15);
        // The volume at /: no path filter, and directory calls can be failed.
        let t = run("action: fault\nvolumePath: /\nerrno: 13\nmethods: [mkdir, unlink]\n").unwrap();
        let pb::fault::Kind::SyscallErrno(e) = &t.faults[0] else { panic!() };
        assert_eq!((e.path_prefix.as_str(), e.syscalls.len()), ("", 4));
    }

    #[test]
    fn refusals_name_their_path() {
        for (yaml, path) in [
            ("action: attrOverride\nvolumePath: /d\nattr: {perm: 72}", "spec.action"),
            ("action: mistake\nvolumePath: /d\nmistake: {filling: zero}", "spec.action"),
            ("action: latency\nvolumePath: /d\ndelay: 1s\nattr: {perm: 72}", "spec.attr"),
            ("action: latency\nvolumePath: /d", "spec.delay"),
            ("action: latency\nvolumePath: /d\ndelay: 61s", "spec.delay"),
            ("action: latency\nvolumePath: /d\ndelay: -1s", "spec.delay"),
            ("action: latency\nvolumePath: /d\ndelay: 1s\nerrno: 5", "spec.errno"),
            ("action: fault\nvolumePath: /d", "spec.errno"),
            ("action: fault\nvolumePath: /d\nerrno: 5000", "spec.errno"),
            ("action: fault\nvolumePath: /d\nerrno: 5\ndelay: 1s", "spec.delay"),
            ("action: fault\nerrno: 5", "spec.volumePath"),
            ("action: fault\nvolumePath: d\nerrno: 5", "spec.volumePath"),
            ("action: fault\nvolumePath: /d\npath: /e/f\nerrno: 5", "spec.path"),
            ("action: fault\nvolumePath: /d\npath: '/d/*.log'\nerrno: 5", "spec.path"),
            ("action: fault\nvolumePath: /d\npath: '../x'\nerrno: 5", "spec.path"),
            (
                "action: fault\nvolumePath: /d\nerrno: 5\nmethods: [read, getattr]",
                "spec.methods[1]",
            ),
            ("action: fault\nvolumePath: /d\nerrno: 5\nmethods: [create]", "spec.methods[0]"),
            ("action: fault\nvolumePath: /d\nerrno: 5\nmethods: [flush]", "spec.methods[0]"),
            ("action: fault\nvolumePath: /d\nerrno: 5\nmethods: [mkdir]", "spec.methods[0]"),
            ("action: fault\nvolumePath: /d\nerrno: 5\nmethods: [frob]", "spec.methods[0]"),
            ("action: fault\nvolumePath: /d\nerrno: 5\npercent: 150", "spec.percent"),
            ("action: fault\nvolumePath: /d\nerrno: 5\nlayer: fs", "spec.layer"),
            ("action: delay\nvolumePath: /d", "spec.action"),
        ] {
            let r = run(yaml).err().unwrap_or_else(|| panic!("{yaml} was accepted"));
            assert_eq!(r.path, path, "{yaml}: {r}");
        }
    }
}
