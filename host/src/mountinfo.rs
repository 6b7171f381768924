//! /proc/self/mountinfo: one mount per line,
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2) (3)   (4)   (5)    (6)       (7)    (8) (9)    (10)        (11)
//! ```
//!
//! id, parent, major:minor, root, mount point, mount options, optional fields ended by "-",
//! filesystem type, source, super options. The kernel escapes space, tab, newline and
//! backslash in paths as octal `\040`, `\011`, `\012` and `\134`; [`unescape`] undoes that.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One line of mountinfo, paths unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the filesystem mounted here (field 4: "/" unless a bind mount).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (field 6), such as "rw,relatime".
    pub options: String,
    pub fstype: String,
    pub source: String,
    /// Per-superblock options (field 11); for cgroup v1 they name the controllers.
    pub super_options: String,
}

impl Mount {
    /// Whether the super options hold `option` (such as "cpu" on a v1 cgroup mount).
    pub fn has_super_option(&self, option: &str) -> bool {
        self.super_options.split(',').any(|o| o == option)
    }
}

/// A cgroup v1 hierarchy: its mount point and the controllers mounted together in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Hierarchy {
    pub mount: PathBuf,
    /// Such as ["cpu", "cpuacct"]; named hierarchies ("name=systemd") have none.
    pub controllers: Vec<String>,
}

/// Parses one mountinfo line; None for a line that is not one.
pub fn parse_line(line: &str) -> Option<Mount> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let (_id, _parent, _dev) = (l.next()?, l.next()?, l.next()?);
    let (root, mount_point, options) = (l.next()?, l.next()?, l.next()?);
    let mut r = right.split(' ');
    let (fstype, source) = (r.next()?, r.next()?);
    let super_options = r.next().unwrap_or_default();
    Some(Mount {
        root: PathBuf::from(unescape(root)),
        mount_point: PathBuf::from(unescape(mount_point)),
        options: options.to_string(),
        fstype: unescape(fstype),
        source: unescape(source),
        super_options: super_options.to_string(),
    })
}

/// Every mount of a mountinfo text, in its order (later mounts stack over earlier ones).
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines().filter_map(parse_line).collect()
}

/// The mounts of this process's mount namespace.
pub fn read() -> Result<Vec<Mount>> {
    read_from(Path::new("/proc/self/mountinfo"))
}

/// The mounts listed in a mountinfo file.
pub fn read_from(path: &Path) -> Result<Vec<Mount>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    Ok(parse(&text))
}

/// Undoes mountinfo's octal escapes (`\040` space, `\011` tab, `\012` newline, `\134`
/// backslash; any other `\ooo` too). A backslash not followed by three octal digits stays.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = |j: usize| b.get(j).is_some_and(|c| (b'0'..=b'7').contains(c));
        if b[i] == b'\\' && octal(i + 1) && b[i + 1] <= b'3' && octal(i + 2) && octal(i + 3) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of filesystem type `fstype`.
pub fn by_fstype<'a>(mounts: &'a [Mount], fstype: &'a str) -> impl Iterator<Item = &'a Mount> {
    mounts.iter().filter(move |m| m.fstype == fstype)
}

/// The mount at `mount_point` (the last one, which hides those below it).
pub fn at<'a>(mounts: &'a [Mount], mount_point: &Path) -> Option<&'a Mount> {
    mounts.iter().rev().find(|m| m.mount_point == mount_point)
}

/// The first cgroup2 mount (hybrid hosts mount it at /sys/fs/cgroup/unified, pure v2 hosts
/// at /sys/fs/cgroup).
pub fn cgroup2(mounts: &[Mount]) -> Option<&Mount> {
    by_fstype(mounts, "cgroup2").next()
}

/// The cgroup v1 hierarchies, with their controllers.
pub fn v1_hierarchies(mounts: &[Mount]) -> Vec<V1Hierarchy> {
    by_fstype(mounts, "cgroup")
        .map(|m| V1Hierarchy {
            mount: m.mount_point.clone(),
            controllers: m
                .super_options
                .split(',')
                .filter(|o| !o.is_empty() && !V1_NON_CONTROLLER_OPTIONS.contains(o))
                .filter(|o| !o.contains('='))
                .map(str::to_string)
                .collect(),
        })
        .collect()
}

/// Super options of a v1 cgroup mount that are not controllers.
const V1_NON_CONTROLLER_OPTIONS: &[&str] =
    &["rw", "ro", "noprefix", "xattr", "clone_children", "cpuset_v2_mode", "all", "none"];

/// The mount point of the v1 hierarchy holding `controller`.
pub fn v1_mount(mounts: &[Mount], controller: &str) -> Option<PathBuf> {
    by_fstype(mounts, "cgroup")
        .find(|m| m.has_super_option(controller))
        .map(|m| m.mount_point.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw,errors=remount-ro
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const PURE: &str = "25 30 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 master:1 - cgroup2 cgroup2 rw,nsdelegate\n";
    const ESCAPED: &str = "\
50 22 0:40 /a\\040b /mnt/my\\040cg\\011tab rw - cgroup2 none rw
51 22 0:41 / /mnt/back\\134slash\\012nl rw - tmpfs my\\040tmp rw
52 22 0:42 / /mnt/v1\\040cpu rw - cgroup cgroup rw,cpu
";

    #[test]
    fn parses_every_field() {
        let m = parse_line(PURE.trim_end()).unwrap();
        assert_eq!(m.root, PathBuf::from("/"));
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(m.options, "rw,nosuid,nodev,noexec,relatime");
        assert_eq!(m.fstype, "cgroup2");
        assert_eq!(m.source, "cgroup2");
        assert_eq!(m.super_options, "rw,nsdelegate");
        assert!(m.has_super_option("nsdelegate"));
        assert!(!m.has_super_option("nsdeleg"));
        assert_eq!(parse("not a mountinfo line\n\n"), vec![]);
        assert_eq!(parse(HYBRID).len(), 7);
    }

    #[test]
    fn finds_cgroup2_in_hybrid_and_pure_layouts() {
        let mp = |t: &str| cgroup2(&parse(t)).map(|m| m.mount_point.clone());
        assert_eq!(mp(HYBRID), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        assert_eq!(mp(PURE), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(mp("1 2 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn unescapes_paths_with_spaces_tabs_newlines_and_backslashes() {
        let m = parse(ESCAPED);
        assert_eq!(m[0].root, PathBuf::from("/a b"));
        assert_eq!(m[0].mount_point, PathBuf::from("/mnt/my cg\ttab"));
        assert_eq!(cgroup2(&m).map(|m| &*m.mount_point), Some(Path::new("/mnt/my cg\ttab")));
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/back\\slash\nnl"));
        assert_eq!(m[1].source, "my tmp");
        assert_eq!(v1_mount(&m, "cpu"), Some(PathBuf::from("/mnt/v1 cpu")));
        assert_eq!(at(&m, Path::new("/mnt/v1 cpu")).map(|m| m.fstype.as_str()), Some("cgroup"));
        // Not escapes: too short, not octal, or past a byte's range.
        assert_eq!(unescape("a\\04"), "a\\04");
        assert_eq!(unescape("a\\089b"), "a\\089b");
        assert_eq!(unescape("\\400"), "\\400");
        assert_eq!(unescape("end\\"), "end\\");
        assert_eq!(unescape("\\134\\134"), "\\\\");
    }

    #[test]
    fn finds_v1_hierarchies_by_controller() {
        let m = parse(HYBRID);
        let v1 = v1_hierarchies(&m);
        assert_eq!(v1.len(), 4);
        assert_eq!(v1[0].mount, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(v1[0].controllers, vec!["cpu", "cpuacct"]);
        assert_eq!(v1[1].controllers, vec!["memory"]);
        assert!(v1[3].controllers.is_empty(), "{:?}", v1[3]);
        assert_eq!(v1_mount(&m, "cpuacct"), Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")));
        assert_eq!(v1_mount(&m, "memory"), Some(PathBuf::from("/sys/fs/cgroup/memory")));
        assert_eq!(v1_mount(&m, "pids"), None);
        assert_eq!(v1_mount(&parse(PURE), "cpu"), None);
        assert_eq!(by_fstype(&m, "tmpfs").count(), 1);
    }
}
