//! `faultline caps`: what this node's kernel supports. Asked of the agent; when no agent
//! answers on the local socket, probed by the CLI itself (as root), and said so.

use faultline_proto::v1 as pb;

use super::{
    Output,
    client::{self, status},
    display::caps::{caps_json, caps_table},
    output::{self, Coded},
};

pub async fn run(endpoint: &str, output: Output) -> anyhow::Result<()> {
    let (caps, here) = match client::connect(endpoint).await {
        Ok(mut c) => {
            (c.capabilities(pb::CapabilitiesRequest {}).await.map_err(status)?.into_inner(), false)
        }
        // A remote endpoint is another node: this host's kernel says nothing of it.
        Err(e) if client::is_remote(endpoint) => return Err(e),
        Err(_) => (probe_here(endpoint).await?, true),
    };
    if here {
        eprintln!(
            "no agent answers at {endpoint}: this host probed by the CLI itself \
             (programs loaded, attached to scratch cgroups and removed)"
        );
    }
    match output {
        Output::Table => output::print(&caps_table(&caps)),
        Output::Json => {
            let mut json = caps_json(&caps);
            json["probed_by"] = if here { "cli" } else { "agent" }.into();
            output::println(&serde_json::to_string_pretty(&json)?)
        }
    }
}

async fn probe_here(endpoint: &str) -> anyhow::Result<pb::CapabilitiesResponse> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Coded::quiet(
            tonic::Code::Unavailable,
            format!(
                "no agent answers at {endpoint}, and probing this host without it needs root \
                 (it loads eBPF programs): run `faultline caps` as root, or start `faultline serve`"
            ),
        )
        .into());
    }
    let caps = tokio::task::spawn_blocking(|| faultline_core::caps::probe_here(false))
        .await?
        .map_err(|e| anyhow::anyhow!("probing this host: {e}"))?;
    Ok(faultline_core::wire::convert::capabilities(&caps))
}
