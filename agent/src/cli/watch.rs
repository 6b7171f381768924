//! `faultline watch`: the active experiments, live on a terminal; one snapshot when piped
//! (or with -o json).

use std::time::{Duration, SystemTime};

use clap::Args;
use faultline_proto::v1 as pb;

use super::{
    Output,
    client::{self, Agent, status},
    display::{emit, experiment, live, terminal},
    live_view::{self, Step},
    parse::parse_interval,
};

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// How often to redraw, e.g. 1s, 500ms (at least 100ms).
    #[arg(long, value_parser = parse_interval, default_value = "1s")]
    pub interval: Duration,
    /// Also show experiments that ended in the last 10 minutes.
    #[arg(long)]
    pub all: bool,
}

pub async fn run(endpoint: &str, output: Output, a: WatchArgs) -> anyhow::Result<()> {
    let WatchArgs { interval, all } = a;
    if output == Output::Table && terminal::stdout_is_terminal() {
        live_view::run(
            endpoint,
            interval,
            async |agent: &mut Agent, _| match agent.list().await {
                Ok(list) => Step::<_, ()>::Show(list),
                Err(f) => Step::Retry(f.text()),
            },
            |now, seen, error, size| {
                live::watch_frame(endpoint, interval, all, now, seen, error, size)
            },
        )
        .await?;
        return Ok(());
    }
    let mut c = client::connect(endpoint).await?;
    let list = c.list(pb::ListRequest::default()).await.map_err(status)?.into_inner().experiments;
    let now = SystemTime::now();
    let shown = live::select(&list, all, now);
    match output {
        Output::Table => {
            emit(live::watch_table(&shown, now, None).trim_end())?;
        }
        Output::Json => {
            let v: Vec<_> = shown.iter().map(experiment::experiment_json).collect();
            emit(&serde_json::to_string_pretty(&v)?)?;
        }
    }
    Ok(())
}
