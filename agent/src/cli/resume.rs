//! `faultline resume`: lifts a halt, so that experiments are taken again.

use faultline_proto::v1 as pb;

use super::{
    Output,
    client::{self, status},
    output,
};

pub async fn run(endpoint: &str, output: Output) -> anyhow::Result<()> {
    let mut c = client::connect(endpoint).await?;
    let r = c.resume(pb::ResumeRequest {}).await.map_err(status)?.into_inner();
    match output {
        Output::Table if r.was_halted => {
            output::println(&format!("resumed: the halt ({}) is lifted", r.reason))
        }
        Output::Table => output::println("not halted: nothing to resume"),
        Output::Json => output::println(&serde_json::to_string_pretty(
            &serde_json::json!({ "was_halted": r.was_halted, "reason": r.reason }),
        )?),
    }
}
