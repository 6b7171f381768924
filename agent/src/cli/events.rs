//! `faultline events`: the agent's events as they come, one line each.

use std::time::Duration;

use clap::Args;
use faultline_proto::v1 as pb;
use tokio_stream::StreamExt as _;

use super::{
    Output,
    client::{self, status},
    display::{
        emit,
        events::{event_name, event_text},
    },
    parse::parse_interval,
};
use faultline_core::wire::convert;

#[derive(Args, Debug)]
pub struct EventsArgs {
    /// Only this experiment.
    pub id: Option<String>,
    /// Do not print the current state of experiments first.
    #[arg(long)]
    pub no_initial: bool,
    /// Also a snapshot of every active experiment's counters this often (at least 100ms).
    #[arg(long, value_parser = parse_interval)]
    pub snapshots: Option<Duration>,
}

pub async fn run(endpoint: &str, output: Output, a: EventsArgs) -> anyhow::Result<()> {
    let mut c = client::connect(endpoint).await?;
    let req = pb::WatchRequest {
        id: a.id.unwrap_or_default(),
        send_initial: !a.no_initial,
        snapshot_interval: a.snapshots.map(convert::duration),
    };
    let mut stream = c.watch(req).await.map_err(status)?.into_inner();
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(status)?;
        let Some(e) = ev.experiment else { continue };
        if !emit(&event_text(output, event_name(ev.r#type), ev.time.as_ref(), &e))? {
            break;
        }
    }
    Ok(())
}
