//! `faultline sys fail`: system calls of the target that fail with an errno.
//! `faultline sys delay`: system calls of the target whose result comes back later.

use std::time::Duration;

use clap::{Args, Subcommand};
use faultline_proto::v1 as pb;

use super::{
    args::{PID_SYS_HELP, ProcessTargetArgs, RunArgs},
    inject::Injection,
    net::DistributionArg,
    parse::parse_duration,
};

#[derive(Subcommand, Debug)]
pub enum SysCommand {
    /// Make chosen system calls of the target fail with an errno.
    Fail(SysFailArgs),
    /// Make chosen system calls of the target take longer: only the calling thread waits,
    /// held (ptrace) after the call completes; the process shows a TracerPid meanwhile.
    Delay(SysDelayArgs),
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

#[derive(Args, Debug)]
#[command(mut_arg("pid", |a| a.help(PID_SYS_HELP)))]
#[command(group(clap::ArgGroup::new("share").args(["percent", "every_nth"])))]
pub struct SysDelayArgs {
    #[command(flatten)]
    pub target: ProcessTargetArgs,
    /// With --pid: also the processes it forks while the fault lasts.
    #[arg(long, requires = "pid")]
    pub follow_children: bool,
    /// System call (repeatable, or comma-separated): read, write, openat, fsync, fdatasync,
    /// sync_file_range, connect, sendmsg, ... (every name `sys fail` takes).
    #[arg(long = "syscall", required = true, value_delimiter = ',')]
    pub syscalls: Vec<String>,
    /// Added latency per delayed call, e.g. 100ms (latency + jitter at most 60s).
    #[arg(long, value_parser = parse_duration)]
    pub latency: Duration,
    /// Jitter around the latency (at most the latency), e.g. 10ms.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub jitter: Duration,
    /// How jitter draws spread: uniform in +-jitter, or normal with jitter as sigma.
    #[arg(long, value_enum, default_value_t = DistributionArg::Uniform)]
    pub distribution: DistributionArg,
    /// Percent of matching calls that are delayed (default all).
    #[arg(long, allow_negative_numbers = true)]
    pub percent: Option<f64>,
    /// Delay exactly every Nth matching call instead of --percent.
    #[arg(long)]
    pub every_nth: Option<u64>,
    /// After this many delays the calls run at full speed again.
    #[arg(long)]
    pub max_hits: Option<u64>,
    /// Only calls on files at or under this absolute path, as the target sees it (it must
    /// exist): open, read, write, fsync and the other calls on a file descriptor.
    #[arg(long)]
    pub path: Option<String>,
    /// Seed for reproducible random decisions.
    #[arg(long)]
    pub seed: Option<u64>,
    #[command(flatten)]
    pub run: RunArgs,
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

impl SysCommand {
    /// The wire form of a `faultline sys ...` command.
    pub fn into_pb(self) -> Injection {
        let a = match self {
            SysCommand::Fail(a) => a,
            SysCommand::Delay(a) => {
                let fault = pb::fault::Kind::SyscallDelay(pb::SyscallDelay {
                    syscalls: a.syscalls,
                    latency: Some(duration(a.latency)),
                    jitter: (!a.jitter.is_zero()).then(|| duration(a.jitter)),
                    distribution: match a.distribution {
                        DistributionArg::Uniform => pb::Distribution::Uniform,
                        DistributionArg::Normal => pb::Distribution::Normal,
                    } as i32,
                    percent: a.percent,
                    every_nth: a.every_nth,
                    max_hits: a.max_hits,
                    path_prefix: a.path.unwrap_or_default(),
                    follow_children: a.follow_children,
                    seed: a.seed,
                });
                return (a.target.to_pb(), fault, a.run);
            }
        };
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

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn delay(args: &str) -> Result<pb::SyscallDelay, clap::Error> {
        let cli = Cli::try_parse_from(format!("faultline sys delay {args}").split_whitespace())?;
        let Command::Sys { command, .. } = cli.command else { panic!("not sys") };
        match command.into_pb().1 {
            pb::fault::Kind::SyscallDelay(d) => Ok(d),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn delay_flags_become_the_request() {
        let d = delay(
            "--cgroup x --syscall read,write --syscall fsync --latency 100ms --jitter 10ms \
             --distribution normal --percent 50 --max-hits 9 --seed 3 --for 30s",
        )
        .unwrap();
        assert_eq!(d.syscalls, ["read", "write", "fsync"]);
        assert_eq!(d.latency, Some(prost_types::Duration { seconds: 0, nanos: 100_000_000 }));
        assert_eq!(d.jitter, Some(prost_types::Duration { seconds: 0, nanos: 10_000_000 }));
        assert_eq!(d.distribution, pb::Distribution::Normal as i32);
        assert_eq!(
            (d.percent, d.every_nth, d.max_hits, d.seed),
            (Some(50.0), None, Some(9), Some(3))
        );
        let d =
            delay("--pid 7 --follow-children --syscall fsync --latency 2s --every-nth 3 --for 1m")
                .unwrap();
        assert!(d.follow_children);
        assert_eq!((d.every_nth, d.jitter), (Some(3), None));
        // --percent or --every-nth, not both; a latency and a syscall are required (the
        // agent refuses --follow-children without --pid, as for sys fail).
        for bad in [
            "--cgroup x --syscall read --latency 1ms --percent 5 --every-nth 2 --for 1s",
            "--cgroup x --syscall read --for 1s",
            "--cgroup x --latency 1ms --for 1s",
        ] {
            assert!(delay(bad).is_err(), "{bad}");
        }
    }
}
