//! Host helpers shared by the agent, the integration tests and xtask's bench: the mount table
//! (/proc/self/mountinfo, with its octal escapes), cgroup2 and v1 discovery, creating,
//! entering and removing cgroups, and named network namespaces.
//!
//! Light on purpose (std, libc, thiserror): every crate of the workspace may depend on it.

pub mod cgroup;
pub mod mountinfo;
pub mod netns;

use std::path::PathBuf;

/// What can go wrong on the host.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or system call failed; `what` names the operation and its path.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no cgroup2 filesystem is mounted")]
    NoCgroup2,
    /// A cgroup kept processes (or children) past the time allowed to remove it.
    #[error("cgroup {} could not be removed: {reason}", path.display())]
    Busy { path: PathBuf, reason: String },
    /// A helper program (iproute2's `ip`) failed.
    #[error("{command} failed ({status}): {stderr}")]
    Command { command: String, status: String, stderr: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { what: what.into(), source }
    }
}
