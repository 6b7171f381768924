//! `faultline ls`: the experiments, filtered by state and label.

use clap::{Args, ValueEnum};
use faultline_proto::v1 as pb;

use super::{
    Output,
    client::{self, status},
    display,
    parse::parse_label,
};

#[derive(Args, Debug)]
pub struct LsArgs {
    /// Only these states (repeatable).
    #[arg(long = "state", value_enum)]
    pub states: Vec<StateArg>,
    /// Only experiments with this key=value label (repeatable).
    #[arg(long = "label", value_parser = parse_label)]
    pub labels: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum StateArg {
    Pending,
    Active,
    Expired,
    Cancelled,
    Failed,
    Aborted,
}

pub async fn run(endpoint: &str, output: Output, a: LsArgs) -> anyhow::Result<()> {
    let mut c = client::connect(endpoint).await?;
    let req = pb::ListRequest {
        states: a
            .states
            .iter()
            .map(|s| match s {
                StateArg::Pending => pb::State::Pending,
                StateArg::Active => pb::State::Active,
                StateArg::Expired => pb::State::Expired,
                StateArg::Cancelled => pb::State::Cancelled,
                StateArg::Failed => pb::State::Failed,
                StateArg::Aborted => pb::State::Aborted,
            } as i32)
            .collect(),
        labels: a.labels.into_iter().collect(),
    };
    let list = c.list(req).await.map_err(status)?.into_inner().experiments;
    display::print_experiments(output, &list)
}
