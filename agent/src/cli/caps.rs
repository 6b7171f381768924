//! `faultline caps`: what this node's kernel supports.

use faultline_proto::v1 as pb;

use super::{
    Output,
    client::{self, status},
    display::caps::{caps_json, caps_table},
    output,
};

pub async fn run(endpoint: &str, output: Output) -> anyhow::Result<()> {
    let mut c = client::connect(endpoint).await?;
    let caps = c.capabilities(pb::CapabilitiesRequest {}).await.map_err(status)?.into_inner();
    match output {
        Output::Table => output::print(&caps_table(&caps)),
        Output::Json => output::println(&serde_json::to_string_pretty(&caps_json(&caps))?),
    }
}
