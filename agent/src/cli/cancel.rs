//! `faultline cancel ID`: end an experiment now, and show how it ended.
//!
//! Cancel is idempotent in the API: an experiment that had already ended comes back as it
//! ended, with OK. The command says so ("ID had already ended: expired at ..."; on stderr,
//! so stdout stays the experiment) and exits 0 too: what was asked, that the fault no longer
//! acts, holds, and a cleanup script (`trap 'faultline cancel $id' EXIT` under `set -e`)
//! must not fail because the fault ran out first.

use faultline_proto::v1 as pb;

use super::{
    Output,
    client::{self, status},
    display::{
        self,
        experiment::{rfc3339, state_name},
        progress::is_live,
    },
    output::eprint_line,
};

pub async fn run(endpoint: &str, output: Output, id: String) -> anyhow::Result<()> {
    let mut c = client::connect(endpoint).await?;
    // The id, or the one experiment whose id the argument begins; how it was before.
    let before = client::find_experiment(&mut c, &id).await?;
    // Asked even then: the agent's audit log records every cancel.
    let e =
        c.cancel(pb::CancelRequest { id: before.id.clone() }).await.map_err(status)?.into_inner();
    if output == Output::Table
        && let Some(note) = already_ended(&before, &e)
    {
        eprint_line(&note);
    }
    display::print_experiment(output, &e)
}

/// `faultline cancel --label K=V`: every active experiment with all of the labels (a Chaos
/// Mesh plan applied by `faultline apply`); shows those it ended.
pub async fn by_label(
    endpoint: &str,
    output: Output,
    labels: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let mut c = client::connect(endpoint).await?;
    let list = c
        .list(pb::ListRequest {
            states: vec![pb::State::Active as i32],
            labels: labels.into_iter().collect(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .experiments;
    let mut ended = Vec::new();
    for e in list {
        ended.push(c.cancel(pb::CancelRequest { id: e.id }).await.map_err(status)?.into_inner());
    }
    display::print_experiments(output, &ended)
}

/// "ID had already ended: expired at TIME (reason)" when this cancel did not end it: it had
/// ended before (`before`), or it ended on its own before the call reached it (`after`).
pub fn already_ended(before: &pb::Experiment, after: &pb::Experiment) -> Option<String> {
    let ended_before = !is_live(before);
    let ended_itself = after.state != pb::State::Cancelled as i32;
    if !(ended_before || ended_itself) {
        return None;
    }
    let e = if ended_before { before } else { after };
    let at = rfc3339(e.ended_at.as_ref()).map(|t| format!(" at {t}")).unwrap_or_default();
    let reason = if e.reason.is_empty() { String::new() } else { format!(" ({})", e.reason) };
    Some(format!("{} had already ended: {}{at}{reason}", e.id, state_name(e.state)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exp(state: pb::State, reason: &str, ended: Option<i64>) -> pb::Experiment {
        pb::Experiment {
            id: "2f4c81a09b3e".into(),
            state: state as i32,
            reason: reason.into(),
            ended_at: ended.map(|seconds| prost_types::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn an_ended_experiment_is_said_to_have_ended() {
        let active = exp(pb::State::Active, "", None);
        let cancelled = exp(pb::State::Cancelled, "cancelled by request", Some(1_700_000_000));
        assert_eq!(already_ended(&active, &cancelled), None);
        let expired = exp(pb::State::Expired, "", Some(1_700_000_000));
        assert_eq!(
            already_ended(&expired, &expired).as_deref(),
            Some("2f4c81a09b3e had already ended: expired at 2023-11-14T22:13:20.000Z")
        );
        // It ran out between the look and the Cancel.
        assert!(already_ended(&active, &expired).is_some());
        // Cancelled earlier (by someone else).
        assert_eq!(
            already_ended(&cancelled, &cancelled).as_deref(),
            Some(
                "2f4c81a09b3e had already ended: cancelled at 2023-11-14T22:13:20.000Z \
                 (cancelled by request)"
            )
        );
        let failed = exp(pb::State::Failed, "target gone", Some(1_700_000_000));
        assert!(already_ended(&failed, &failed).unwrap().ends_with("(target gone)"));
    }
}
