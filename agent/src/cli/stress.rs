//! `faultline stress cpu|mem|disk`: stress workers inside the target cgroup.

use clap::{Args, Subcommand};
use faultline_proto::v1 as pb;

use super::{
    args::{HostTargetArgs, PID_STRESS_HELP, RunArgs},
    inject::Injection,
    parse::{parse_bytes, parse_duration},
};
use faultline_core::wire::convert::duration as convert_duration;

#[derive(Subcommand, Debug)]
pub enum StressCommand {
    /// Busy workers holding the target cgroup's CPU usage at a load.
    Cpu(CpuArgs),
    /// Workers holding resident memory inside the target cgroup.
    Mem(MemArgs),
    /// Disk IO by workers inside the target cgroup.
    Io(IoArgs),
    /// Take space on the filesystem holding a path (released at the end).
    Disk(DiskArgs),
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum IoModeArg {
    Write,
    Read,
    Mixed,
}

#[derive(Args, Debug)]
#[command(mut_arg("pid", |a| a.help(PID_STRESS_HELP)))]
pub struct IoArgs {
    #[command(flatten)]
    pub target: HostTargetArgs,
    /// What the workers do: write, read (a file they fill first), or mixed (both).
    #[arg(long, value_enum, default_value_t = IoModeArg::Write)]
    pub mode: IoModeArg,
    /// Workers.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Bytes per read or write, 4kb to 64mb.
    #[arg(long, value_parser = parse_bytes, default_value = "1mb")]
    pub block_size: u64,
    /// Bypass the page cache (O_DIRECT) where the filesystem allows it.
    #[arg(long)]
    pub direct: bool,
    /// Directory for the (unnamed) work file; default /tmp of the target's root filesystem.
    #[arg(long)]
    pub dir: Option<String>,
    /// Bytes to move in all, e.g. 1gb.
    #[arg(long, value_parser = parse_bytes, conflicts_with = "rate")]
    pub bytes: Option<u64>,
    /// Bytes per second in all, e.g. 50mb.
    #[arg(long, value_parser = parse_bytes)]
    pub rate: Option<u64>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
#[command(mut_arg("pid", |a| a.help(PID_STRESS_HELP)))]
pub struct CpuArgs {
    #[command(flatten)]
    pub target: HostTargetArgs,
    /// Workers (default: the CPUs the target cgroup may use).
    #[arg(long, default_value_t = 0)]
    pub workers: u32,
    /// Load per worker, 1-100 percent (a cpu.max quota scales it: 80 in a cgroup limited to
    /// 0.5 CPU is 0.4 CPU).
    #[arg(long, allow_negative_numbers = true)]
    pub load: u32,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
#[command(mut_arg("pid", |a| a.help(PID_STRESS_HELP)))]
pub struct MemArgs {
    #[command(flatten)]
    pub target: HostTargetArgs,
    /// Memory to hold, e.g. 256mb, 1gb.
    #[arg(long, value_parser = parse_bytes, required_unless_present = "percent", conflicts_with = "percent")]
    pub size: Option<u64>,
    /// Percent of the cgroup's memory limit (of host memory when it has none).
    #[arg(long, allow_negative_numbers = true)]
    pub percent: Option<f64>,
    /// Workers sharing the size.
    #[arg(long, default_value_t = 1)]
    pub workers: u32,
    /// Take the memory gradually over this time, e.g. 10s.
    #[arg(long, value_parser = parse_duration)]
    pub ramp: Option<std::time::Duration>,
    /// oom_score_adj of the workers (-1000..1000).
    #[arg(long, allow_negative_numbers = true)]
    pub oom_score_adj: Option<i32>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Args, Debug)]
#[command(mut_arg("pid", |a| a.help(PID_STRESS_HELP)))]
pub struct DiskArgs {
    #[command(flatten)]
    pub target: HostTargetArgs,
    /// A directory on the filesystem to fill.
    #[arg(long)]
    pub path: String,
    /// Space to take, e.g. 1gb.
    #[arg(long, value_parser = parse_bytes, required_unless_present = "percent", conflicts_with = "percent")]
    pub size: Option<u64>,
    /// Fill until the filesystem is this percent used, as df counts it.
    #[arg(long, allow_negative_numbers = true)]
    pub percent: Option<f64>,
    #[command(flatten)]
    pub run: RunArgs,
}

impl StressCommand {
    pub fn into_pb(self) -> Injection {
        match self {
            StressCommand::Cpu(a) => (
                a.target.to_pb(),
                pb::fault::Kind::CpuStress(pb::CpuStress {
                    workers: a.workers,
                    load_percent: a.load,
                }),
                a.run,
            ),
            StressCommand::Mem(a) => (
                a.target.to_pb(),
                pb::fault::Kind::MemoryStress(pb::MemoryStress {
                    size: match (a.size, a.percent) {
                        (Some(b), _) => Some(pb::memory_stress::Size::Bytes(b)),
                        (None, Some(p)) => Some(pb::memory_stress::Size::Percent(p)),
                        (None, None) => None,
                    },
                    workers: a.workers,
                    ramp: a.ramp.map(convert_duration),
                    oom_score_adj: a.oom_score_adj,
                }),
                a.run,
            ),
            StressCommand::Io(a) => (
                a.target.to_pb(),
                pb::fault::Kind::IoStress(pb::IoStress {
                    workers: a.workers,
                    mode: match a.mode {
                        IoModeArg::Write => pb::IoMode::Write,
                        IoModeArg::Read => pb::IoMode::Read,
                        IoModeArg::Mixed => pb::IoMode::Mixed,
                    } as i32,
                    block_size: a.block_size,
                    direct: a.direct,
                    directory: a.dir.unwrap_or_default(),
                    amount: match (a.bytes, a.rate) {
                        (Some(b), _) => Some(pb::io_stress::Amount::Bytes(b)),
                        (None, Some(r)) => Some(pb::io_stress::Amount::RateBytesPerSecond(r)),
                        (None, None) => None,
                    },
                }),
                a.run,
            ),
            StressCommand::Disk(a) => (
                a.target.to_pb(),
                pb::fault::Kind::DiskFill(pb::DiskFill {
                    path: a.path,
                    amount: match (a.size, a.percent) {
                        (Some(b), _) => Some(pb::disk_fill::Amount::Bytes(b)),
                        (None, Some(p)) => Some(pb::disk_fill::Amount::Percent(p)),
                        (None, None) => None,
                    },
                }),
                a.run,
            ),
        }
    }
}
