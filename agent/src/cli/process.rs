//! `faultline process kill|pause`: signals to the target's processes, or freezing them.

use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use faultline_proto::v1 as pb;

use super::{
    args::{CgroupTargetArgs, DrillArgs, LabelArgs, PID_KILL_HELP, ProcessTargetArgs, RunArgs},
    inject::Injection,
    parse::parse_duration,
};
use faultline_core::wire::convert::duration as convert_duration;

#[derive(Subcommand, Debug)]
pub enum ProcessCommand {
    /// Signal the target's processes (SIGKILL by default), once or every --every.
    Kill(KillArgs),
    /// Freeze every process of the target for the duration (cgroup freezer).
    Pause(PauseArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KillModeArg {
    /// Every process of the target.
    All,
    /// One process, chosen at random each round.
    RandomOne,
}

#[derive(Args, Debug)]
#[command(mut_arg("pid", |a| a.help(PID_KILL_HELP)))]
pub struct KillArgs {
    #[command(flatten)]
    pub target: ProcessTargetArgs,
    /// Signal name (KILL, SIGTERM) or number.
    #[arg(long, default_value = "SIGKILL")]
    pub signal: String,
    /// Which processes each round signals.
    #[arg(long, value_enum, default_value_t = KillModeArg::All)]
    pub mode: KillModeArg,
    /// Signal again every interval while the fault lasts (at least 100ms).
    #[arg(long, value_parser = parse_duration)]
    pub every: Option<Duration>,
    /// How long the fault lasts (with --every: how long it keeps signalling).
    #[arg(long = "for", value_parser = parse_duration, default_value = "1s")]
    pub duration: Duration,
    #[command(flatten)]
    pub labels: LabelArgs,
    #[command(flatten)]
    pub drill: DrillArgs,
}

#[derive(Args, Debug)]
// No --pid: the freezer stops a whole cgroup, and a pid's cgroup may hold other processes.
pub struct PauseArgs {
    #[command(flatten)]
    pub target: CgroupTargetArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

impl ProcessCommand {
    pub fn into_pb(self) -> Injection {
        match self {
            ProcessCommand::Kill(a) => (
                a.target.to_pb(),
                pb::fault::Kind::ProcessKill(pb::ProcessKill {
                    signal: a.signal,
                    mode: match a.mode {
                        KillModeArg::All => pb::KillMode::All,
                        KillModeArg::RandomOne => pb::KillMode::RandomOne,
                    } as i32,
                    interval: a.every.map(convert_duration),
                }),
                RunArgs::of(a.duration, a.labels, a.drill),
            ),
            ProcessCommand::Pause(a) => {
                (a.target.to_pb(), pb::fault::Kind::ProcessPause(pb::ProcessPause {}), a.run)
            }
        }
    }
}
