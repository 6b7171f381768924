//! `faultline halt [--reason TEXT]`: the emergency stop. Every active experiment of every
//! family ends at once, and new ones are refused until `faultline resume`; shows the
//! experiments it ended (their reason: "halted: TEXT").

use clap::Args;
use faultline_proto::v1 as pb;

use super::{
    Output,
    client::{self, status},
    display,
    output::eprint_line,
};

#[derive(Args, Debug)]
pub struct HaltArgs {
    /// Why: every refused Inject says it until `faultline resume`.
    #[arg(long, default_value = "")]
    pub reason: String,
}

pub async fn run(endpoint: &str, output: Output, a: HaltArgs) -> anyhow::Result<()> {
    let mut c = client::connect(endpoint).await?;
    let r = c.halt(pb::HaltRequest { reason: a.reason }).await.map_err(status)?.into_inner();
    if output == Output::Table {
        eprint_line(&format!(
            "halted ({}): {} experiments ended; new ones are refused until `faultline resume`",
            r.reason,
            r.ended.len()
        ));
    }
    display::print_experiments(output, &r.ended)
}
