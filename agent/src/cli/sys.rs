//! `faultline sys fail`: system calls of the target that fail with an errno.

use clap::{Args, Subcommand};
use faultline_proto::v1 as pb;

use super::{
    args::{PID_SYS_HELP, ProcessTargetArgs, RunArgs},
    inject::Injection,
};

#[derive(Subcommand, Debug)]
pub enum SysCommand {
    /// Make chosen system calls of the target fail with an errno.
    Fail(SysFailArgs),
}

#[derive(Args, Debug)]
#[command(mut_arg("pid", |a| a.help(PID_SYS_HELP)))]
pub struct SysFailArgs {
    #[command(flatten)]
    pub target: ProcessTargetArgs,
    /// With --pid: also the processes it forks while the fault lasts.
    #[arg(long, requires = "pid")]
    pub follow_children: bool,
    /// System call (repeatable, or comma-separated): openat, read, write, unlink, mkdir,
    /// rename, mmap, execve, clone, connect, bind, sendmsg, socket, ...
    #[arg(long = "syscall", required = true, value_delimiter = ',')]
    pub syscalls: Vec<String>,
    /// errno name or number the calls fail with.
    #[arg(long, default_value = "EIO")]
    pub errno: String,
    /// Percent of matching calls that fail (default all).
    #[arg(long, allow_negative_numbers = true)]
    pub percent: Option<f64>,
    /// Fail exactly every Nth matching call instead of --percent.
    #[arg(long)]
    pub every_nth: Option<u64>,
    /// After this many failures the calls succeed again.
    #[arg(long)]
    pub max_hits: Option<u64>,
    /// Only calls on files under this absolute path (open, read, write).
    #[arg(long)]
    pub path: Option<String>,
    /// Seed for reproducible random decisions.
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl SysCommand {
    /// The wire form of a `faultline sys ...` command.
    pub fn into_pb(self) -> Injection {
        let SysCommand::Fail(a) = self;
        let fault = pb::fault::Kind::SyscallErrno(pb::SyscallErrno {
            syscalls: a.syscalls,
            errno: a.errno,
            percent: a.percent,
            every_nth: a.every_nth,
            max_hits: a.max_hits,
            path_prefix: a.path.unwrap_or_default(),
            follow_children: a.follow_children,
            seed: a.seed,
        });
        (a.target.to_pb(), fault, a.run)
    }
}
