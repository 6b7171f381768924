//! `faultline cancel ID`: end an experiment now, and show how it ended.

use faultline_proto::v1 as pb;

use super::{
    Output,
    client::{self, status},
    display,
};

pub async fn run(endpoint: &str, output: Output, id: String) -> anyhow::Result<()> {
    let mut c = client::connect(endpoint).await?;
    let e = c.cancel(pb::CancelRequest { id }).await.map_err(status)?.into_inner();
    display::print_experiment(output, &e)
}
