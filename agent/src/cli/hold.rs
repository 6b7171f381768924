//! `--wait`: an injected fault held in the foreground until it ends. Its lease, if it has
//! one, is renewed a third of the way through each lease; Ctrl-C, SIGTERM and SIGHUP (a
//! closed terminal, a lost SSH session) cancel it; a CLI that dies without a word stops
//! renewing, and the lease ends the fault. Shows how it ended; a fault that failed (its
//! lease ran out, its target went away) exits non-zero with the reason.

use std::time::Duration;

use anyhow::bail;
use faultline_proto::v1 as pb;
use tokio::signal::unix::{SignalKind, signal};

use super::{
    Output,
    client::{Client, status},
    display::{self, experiment::state_name, progress::is_live},
};

/// How often the experiment is looked at.
const POLL: Duration = Duration::from_millis(500);

pub async fn run(
    c: &mut Client,
    output: Output,
    e: pb::Experiment,
    lease: Option<Duration>,
) -> anyhow::Result<()> {
    let (mut int, mut term, mut hup) = (
        signal(SignalKind::interrupt())?,
        signal(SignalKind::terminate())?,
        signal(SignalKind::hangup())?,
    );
    let every = lease.map(|l| l / 3);
    let mut renewed = tokio::time::Instant::now();
    let id = e.id.clone();
    let mut last = e;
    let ended = loop {
        if !is_live(&last) {
            break last;
        }
        let signalled = tokio::select! {
            _ = tokio::time::sleep(POLL) => None,
            _ = int.recv() => Some("SIGINT"),
            _ = term.recv() => Some("SIGTERM"),
            _ = hup.recv() => Some("SIGHUP"),
        };
        if let Some(sig) = signalled {
            let e = c.cancel(pb::CancelRequest { id: id.clone() }).await.map_err(status)?;
            display::print_experiment(output, &e.into_inner())?;
            bail!("{sig}: experiment {id} cancelled");
        }
        if let Some(every) = every
            && renewed.elapsed() >= every
        {
            // An ended experiment is not renewed: the next look shows how it ended.
            if c.renew(pb::RenewRequest { id: id.clone() }).await.is_ok() {
                renewed = tokio::time::Instant::now();
            }
        }
        last = c.get(pb::GetRequest { id: id.clone() }).await.map_err(status)?.into_inner();
    };
    display::print_experiment(output, &ended)?;
    // A stop condition that held ends the drill early: scripts see it as they see a failure.
    if ended.state == pb::State::Failed as i32 || ended.state == pb::State::Aborted as i32 {
        bail!("experiment {id} {}: {}", state_name(ended.state), ended.reason);
    }
    Ok(())
}
