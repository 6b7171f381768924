//! Sending a fault to the agent: where every inject verb (net, sys, stress, process) ends,
//! printing the experiment the agent made of it (its id on stderr when stdout is closed).

use anyhow::Context as _;
use faultline_proto::v1 as pb;

use super::{
    Output,
    args::RunArgs,
    client::{self, status},
    display::{self, experiment::state_name},
    hold,
    output::{eprint_line, is_stdout_closed},
};
use faultline_core::wire::convert;

/// What an inject verb asks for: who, which fault, for how long with which labels.
pub type Injection = (pb::Target, pb::fault::Kind, RunArgs);

pub async fn run(
    endpoint: &str,
    output: Output,
    (target, kind, run): Injection,
) -> anyhow::Result<()> {
    let mut c = client::connect(endpoint).await?;
    let req = pb::InjectRequest {
        target: Some(target),
        fault: Some(pb::Fault { kind: Some(kind) }),
        duration: Some(convert::duration(run.duration)),
        labels: run.labels.labels.into_iter().collect(),
        lease: run.lease.map(convert::duration),
        stop_conditions: run.drill.abort_if,
        dry_run: run.drill.dry_run,
        expect_hit_within: run.drill.expect_hit_within.map(convert::duration),
        follow: run.drill.follow,
    };
    let resp = c.inject(req).await.map_err(status)?.into_inner();
    if let Some(plan) = &resp.plan {
        return display::print_plan(output, plan);
    }
    let e = resp.experiment.context("agent returned no experiment")?;
    let printed = display::print_experiment(output, &e);
    if let Err(err) = &printed
        && is_stdout_closed(err)
    {
        // The experiment is in the agent either way; its id must not be lost with the pipe.
        eprint_line(&closed_note(&e));
    }
    printed?;
    if run.wait {
        return hold::run(&mut c, output, e, run.lease).await;
    }
    Ok(())
}

/// What an inject says on stderr when its stdout was closed before the experiment was shown.
pub fn closed_note(e: &pb::Experiment) -> String {
    format!("faultline: stdout closed; experiment {} is {}", e.id, state_name(e.state))
}
