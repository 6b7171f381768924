//! `faultline renew ID`: renew the lease of an experiment injected with `--lease`, so that
//! it runs for another lease from now (never past its deadline).

use faultline_proto::v1 as pb;

use super::{
    Output,
    client::{self, status},
    display,
};

pub async fn run(endpoint: &str, output: Output, id: String) -> anyhow::Result<()> {
    let mut c = client::connect(endpoint).await?;
    let e = client::find_experiment(&mut c, &id).await?;
    let e = c.renew(pb::RenewRequest { id: e.id }).await.map_err(status)?.into_inner();
    display::print_experiment(output, &e)
}
