//! Named network namespaces, as iproute2 keeps them (/run/netns/NAME): create, delete, open,
//! and enter one (on the calling thread, or in a child between fork and exec).

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::PathBuf,
    process::Command,
};

use crate::{Error, Result};

/// Where `ip netns add NAME` binds the namespace.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Runs `ip ARGS...` and fails with its stderr on a non-zero exit.
fn ip(args: &[&str]) -> Result<String> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| Error::io(format!("running {command} (iproute2)"), e))?;
    if !out.status.success() {
        return Err(Error::Command {
            command,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Creates the namespace `name` (`ip netns add`) and sets its `lo` up.
pub fn create(name: &str) -> Result<()> {
    ip(&["netns", "add", name])?;
    if let Err(e) = ip(&["-n", name, "link", "set", "lo", "up"]) {
        let _ = delete(name);
        return Err(e);
    }
    Ok(())
}

/// Deletes the namespace `name` (`ip netns del`); it lives on while processes are in it.
pub fn delete(name: &str) -> Result<()> {
    ip(&["netns", "del", name]).map(drop)
}

/// Runs `ip -n NAME ARGS...` and returns its stdout.
pub fn ip_in(name: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", name];
    full.extend_from_slice(args);
    ip(&full)
}

/// The namespace's file, to enter it by.
pub fn open(name: &str) -> Result<File> {
    let p = path(name);
    File::open(&p).map_err(|e| Error::io(format!("opening {}", p.display()), e))
}

/// Moves the calling thread into the namespace of `ns`; sockets it creates from then on
/// belong there. Only for a thread of the caller's own that ends soon after.
pub fn enter_thread(ns: &File) -> Result<()> {
    // SAFETY: setns(2) on a valid descriptor; it changes the calling thread only.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::io("setns(CLONE_NEWNET)", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Makes `cmd`'s child enter the namespace of `ns` between fork and exec.
pub fn enter_before_exec(cmd: &mut Command, ns: File) {
    // SAFETY: setns is async-signal-safe; the descriptor was opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_failures() {
        assert_eq!(path("fl1"), PathBuf::from("/run/netns/fl1"));
        let e = open("faultline-host-no-such-netns").unwrap_err().to_string();
        assert!(e.starts_with("opening /run/netns/faultline-host-no-such-netns: "), "{e}");
    }
}
