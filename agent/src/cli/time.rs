//! `faultline time skew`: the realtime clock of the target's processes moved by an offset.

use std::time::Duration;

use clap::{Args, Subcommand};
use faultline_proto::v1 as pb;

use super::{
    args::{DrillArgs, LabelArgs, ProcessTargetArgs, RunArgs},
    inject::Injection,
    parse::parse_duration,
};

/// What `--pid` means for time skew.
const PID_TIME_HELP: &str = "Target process PID itself: only its clock, not the rest of its \
    cgroup (with --follow-children, also the processes it forks)";

#[derive(Subcommand, Debug)]
pub enum TimeCommand {
    /// Shift the realtime clock of the target's processes (not the node's) by --offset.
    Skew(SkewArgs),
}

#[derive(Args, Debug)]
#[command(mut_arg("pid", |a| a.help(PID_TIME_HELP)))]
pub struct SkewArgs {
    #[command(flatten)]
    pub target: ProcessTargetArgs,
    /// With --pid: also the processes it forks while the fault lasts.
    #[arg(long, requires = "pid")]
    pub follow_children: bool,
    /// Signed offset, at most 10 years either way: -10m (ten minutes behind), +2h, +1y.
    #[arg(long, value_parser = parse_offset, allow_hyphen_values = true)]
    pub offset: (bool, Duration),
    /// Clocks to shift (comma-separated): realtime (the default; with it realtime_coarse).
    /// monotonic and boottime are refused.
    #[arg(long, value_delimiter = ',')]
    pub clocks: Vec<String>,
    /// How long the fault lasts.
    #[arg(long = "for", value_parser = parse_duration, default_value = "1m")]
    pub duration: Duration,
    #[command(flatten)]
    pub labels: LabelArgs,
    #[command(flatten)]
    pub drill: DrillArgs,
}

/// `-10m` -> (negative, 10 min); `+2h` or `2h` -> (positive, 2 h).
fn parse_offset(s: &str) -> Result<(bool, Duration), String> {
    let (negative, rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    Ok((negative, parse_duration(rest)?))
}

impl TimeCommand {
    pub fn into_pb(self) -> Injection {
        match self {
            TimeCommand::Skew(a) => {
                let (negative, d) = a.offset;
                let (s, n) = (d.as_secs() as i64, d.subsec_nanos() as i32);
                let offset = if negative {
                    prost_types::Duration { seconds: -s, nanos: -n }
                } else {
                    prost_types::Duration { seconds: s, nanos: n }
                };
                (
                    a.target.to_pb(),
                    pb::fault::Kind::TimeSkew(pb::TimeSkew {
                        offset: Some(offset),
                        clocks: a.clocks,
                        follow_children: a.follow_children,
                    }),
                    RunArgs::of(a.duration, a.labels, a.drill),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: TimeCommand,
    }

    fn skew(line: &str) -> pb::TimeSkew {
        let cli = Cli::try_parse_from(std::iter::once("time").chain(line.split_whitespace()))
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        match cli.cmd.into_pb().1 {
            pb::fault::Kind::TimeSkew(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn offsets_keep_their_sign() {
        let t = skew("skew --cgroup /a --offset -10m");
        assert_eq!(t.offset, Some(prost_types::Duration { seconds: -600, nanos: 0 }));
        let t = skew("skew --pid 7 --follow-children --offset +2h --clocks realtime --for 5m");
        assert_eq!(t.offset.unwrap().seconds, 7200);
        assert!(t.follow_children);
        assert_eq!(t.clocks, ["realtime"]);
        assert!(parse_offset("-1parsec").is_err());
    }
}
