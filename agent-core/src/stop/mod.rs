//! Stop conditions: what an experiment is watched for while it runs (its target's pressure,
//! OOM kills, no process left, a health URL failing), each on its own task, every
//! `PERIOD`. The first that holds ends the experiment as aborted, with what was seen.

pub mod cgroup;
pub mod http;
pub mod node;

use std::time::Duration;

use tokio::task::JoinSet;

use crate::engine::{
    error::{Error, Result},
    model::{Resolved, StopCondition},
};

/// How often each condition is evaluated (the API promises 250 ms or faster).
pub const PERIOD: Duration = Duration::from_millis(200);

/// A condition that held, and what was seen.
#[derive(Clone, Debug, PartialEq)]
pub struct Held {
    /// As --abort-if spells it.
    pub condition: String,
    pub value: String,
}

/// What the target and the kernel must offer for `conds`, checked before the fault is
/// applied: the cgroup conditions need a cgroup target, pressure needs PSI.
pub fn check(conds: &[StopCondition], target: &Resolved) -> Result<()> {
    for (i, c) in conds.iter().enumerate() {
        let field = format!("stop_conditions[{i}]");
        if matches!(c, StopCondition::Http { .. }) {
            continue;
        }
        let Resolved::Cgroup(cg) = target else {
            return Err(Error::invalid(
                field,
                format!("{} watches a cgroup, and the target is a network device", c.describe()),
            ));
        };
        if let StopCondition::Pressure { resource, .. } = c {
            cgroup::read_pressure(&cgroup::pressure_file(cg, *resource)).map_err(|why| {
                Error::FailedPrecondition(format!(
                    "{field}: {} needs pressure stall information (PSI), which this kernel does \
                     not give: {why}",
                    c.describe()
                ))
            })?;
        }
    }
    Ok(())
}

/// Runs until the first of `conds` holds (never, when there are none). Dropping it stops
/// every probe.
pub async fn first_to_hold(conds: Vec<StopCondition>, target: Resolved) -> Held {
    let mut set = JoinSet::new();
    for c in conds {
        let target = target.clone();
        set.spawn(async move { watch(c, target).await });
    }
    loop {
        match set.join_next().await {
            Some(Ok(held)) => return held,
            // A probe task that panicked stops watching; the others go on.
            Some(Err(_)) => continue,
            None => std::future::pending::<()>().await,
        }
    }
}

async fn watch(c: StopCondition, target: Resolved) -> Held {
    let condition = c.describe();
    let held = |value: String| Held { condition: condition.clone(), value };
    let cg = match &target {
        Resolved::Cgroup(cg) => Some(cg.clone()),
        Resolved::Interface(_) => None,
    };
    let mut tick = tokio::time::interval(PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    match c {
        StopCondition::Pressure { resource, above_percent } => {
            let Some(cg) = cg else { return std::future::pending().await };
            let file = cgroup::pressure_file(&cg, resource);
            loop {
                tick.tick().await;
                if let Ok(v) = cgroup::read_pressure(&file)
                    && v > above_percent
                {
                    return held(format!("{} some avg10 {v:.2}%", resource.name()));
                }
            }
        }
        StopCondition::OomKill => {
            let Some(cg) = cg else { return std::future::pending().await };
            let mut counter = cgroup::OomCounter::new(&cg);
            // Kills before the experiment began do not count.
            let mut base = counter.read();
            loop {
                tick.tick().await;
                match (base, counter.read()) {
                    (Some(b), Some(n)) if n > b => {
                        return held(format!("oom_kill {} since the experiment began", n - b));
                    }
                    (None, now) => base = now,
                    _ => {}
                }
            }
        }
        StopCondition::NoProcesses => {
            let Some(cg) = cg else { return std::future::pending().await };
            loop {
                tick.tick().await;
                if cgroup::populated(&cg) == Some(false) {
                    return held(format!("no process left in {}", cg.path));
                }
            }
        }
        StopCondition::Http { url, timeout, failures } => {
            let Ok((host, port, path)) = crate::wire::validate_drill::http_url(&url, "url") else {
                return std::future::pending().await;
            };
            let mut in_a_row = 0;
            loop {
                tick.tick().await;
                let why = match http::get(&host, port, &path, timeout).await {
                    Ok(code) if (200..300).contains(&code) => {
                        in_a_row = 0;
                        continue;
                    }
                    Ok(code) => format!("answered {code}"),
                    Err(e) => e,
                };
                in_a_row += 1;
                if in_a_row >= failures {
                    return held(format!("{in_a_row} failed in a row, the last: {why}"));
                }
            }
        }
    }
}
