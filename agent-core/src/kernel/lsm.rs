//! The active Linux security modules, read from securityfs: whether the bpf LSM runs (the
//! syscall fault's `lsm` backend needs it), or why that is not known.

use std::path::Path;

/// Where securityfs is mounted, and the file in it that lists the active LSMs.
const SECURITYFS: &str = "/sys/kernel/security";

/// The active LSMs, in the kernel's order, or why they are not known.
pub fn active_lsms() -> Result<Vec<String>, String> {
    active_lsms_in(Path::new(SECURITYFS), Path::new("/proc/self/mountinfo"))
}

fn active_lsms_in(securityfs: &Path, mountinfo: &Path) -> Result<Vec<String>, String> {
    match std::fs::read_to_string(securityfs.join("lsm")) {
        Ok(text) => {
            Ok(text.trim().split(',').filter(|l| !l.is_empty()).map(String::from).collect())
        }
        Err(e) => {
            let mounts = faultline_host::mountinfo::read_from(mountinfo).unwrap_or_default();
            let mounted = faultline_host::mountinfo::at(&mounts, securityfs)
                .is_some_and(|m| m.fstype == "securityfs");
            Err(if mounted {
                format!("cannot read {}/lsm: {e}", securityfs.display())
            } else {
                format!(
                    "securityfs is not mounted at {0}, so the active LSMs are unknown \
                     (mount -t securityfs securityfs {0})",
                    securityfs.display()
                )
            })
        }
    }
}

/// None when bpf is an active LSM; else why not, in words for a refusal.
pub fn bpf_lsm_inactive() -> Option<String> {
    bpf_lsm_inactive_in(active_lsms())
}

pub fn bpf_lsm_inactive_in(active: Result<Vec<String>, String>) -> Option<String> {
    match active {
        Ok(l) if l.iter().any(|l| l == "bpf") => None,
        Ok(l) => Some(format!(
            "bpf is not in the active LSM list ({}; boot with lsm=...,bpf)",
            l.join(",")
        )),
        Err(why) => Some(why),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::TempDir;

    #[test]
    fn the_lsm_list_or_why_it_is_unknown() {
        let d = TempDir::new();
        let sec = d.path().join("security");
        std::fs::create_dir_all(&sec).unwrap();
        let info = d.path().join("mountinfo");
        std::fs::write(&info, "22 1 0:6 / /proc rw - proc proc rw\n").unwrap();
        let e = active_lsms_in(&sec, &info).unwrap_err();
        assert!(e.starts_with(&format!("securityfs is not mounted at {}", sec.display())), "{e}");
        assert_eq!(bpf_lsm_inactive_in(Err(e.clone())), Some(e));
        std::fs::write(
            &info,
            format!("30 22 0:7 / {} rw - securityfs securityfs rw\n", sec.display()),
        )
        .unwrap();
        assert!(active_lsms_in(&sec, &info).unwrap_err().starts_with("cannot read"));
        std::fs::write(sec.join("lsm"), "lockdown,capability,landlock\n").unwrap();
        let l = active_lsms_in(&sec, &info).unwrap();
        assert_eq!(l, ["lockdown", "capability", "landlock"]);
        let why = bpf_lsm_inactive_in(Ok(l)).unwrap();
        assert!(
            why.starts_with("bpf is not in the active LSM list (lockdown,capability,landlock;")
        );
        assert_eq!(bpf_lsm_inactive_in(Ok(vec!["capability".into(), "bpf".into()])), None);
    }
}
