//! An active experiment's own task: it ends the experiment at its deadline, when the fault
//! fails or finishes on its own, when its lease runs out or its target goes away, and
//! announces its first hit (or that it has hit nothing in time).

use std::sync::Weak;

use tokio::{task::JoinHandle, time::Instant};

use super::{
    Engine, EventKind, FAILURE_POLL,
    driver::FaultHandle,
    model::{Abort, Resolved, State, StopCondition},
};

/// What the task watches.
pub(super) struct Watch {
    pub id: String,
    pub deadline: Instant,
    pub handle: Weak<dyn FaultHandle>,
    pub leased: bool,
    pub target: Resolved,
    /// A kill that ends its target did what it was asked when the target goes.
    pub ends_its_target: bool,
    /// Whether it has acted already.
    pub hit: bool,
    /// When it is marked as hitting nothing, unless it has acted by then.
    pub hit_expected_by: Instant,
    pub stop: Vec<StopCondition>,
    /// Set when it follows its container through restarts.
    pub follow: Option<super::follow::Follow>,
}

impl Engine {
    pub(super) fn spawn_watch(&self, w: Watch) -> JoinHandle<()> {
        let me = self.me.clone();
        let resolver = self.resolver.clone();
        tokio::spawn(async move {
            let id = w.id.clone();
            let (state, reason) = watch(&me, &resolver, w).await;
            if let Some(engine) = me.upgrade() {
                engine.end_from_timer(&id, state, reason).await;
            }
        })
    }

    /// Records which stop condition held, before the experiment is ended as aborted.
    fn record_abort(&self, id: &str, held: crate::stop::Held) {
        tracing::warn!(experiment = %id, condition = %held.condition, value = %held.value,
                       "stop condition held: aborting");
        if let Some(rec) = self.lock().records.get_mut(id) {
            rec.snap.abort = Some(Abort {
                condition: held.condition,
                value: held.value,
                at: std::time::SystemTime::now(),
            });
        }
    }

    /// Marks an experiment as having hit nothing in time, once.
    fn no_hit(&self, id: &str) {
        let snap = {
            let mut reg = self.lock();
            let Some(rec) = reg.records.get_mut(id) else { return };
            if rec.snap.first_hit_at.is_some() || rec.snap.no_hit {
                return;
            }
            rec.snap.no_hit = true;
            rec.snap.clone()
        };
        tracing::warn!(experiment = %id, within = ?snap.spec.expect_hit_within,
                       "no hit: nothing matched yet, check the target and filters");
        self.announce(EventKind::NoHit, &snap);
    }
}

/// Runs until the experiment should end; returns how.
async fn watch(
    me: &Weak<Engine>,
    resolver: &crate::targets::Resolver,
    mut w: Watch,
) -> (State, String) {
    let mut tick = 0u64;
    let mut marked = false;
    let conditions = std::mem::take(&mut w.stop);
    let stop = crate::stop::first_to_hold(conditions.clone(), w.target.clone());
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(w.deadline) => return (State::Expired, String::new()),
            held = &mut stop => {
                let reason = format!("aborted: {} held ({})", held.condition, held.value);
                if let Some(engine) = me.upgrade() {
                    engine.record_abort(&w.id, held);
                }
                return (State::Aborted, reason);
            }
            _ = tokio::time::sleep(FAILURE_POLL) => {
                if let Some(why) = w.handle.upgrade().and_then(|h| h.failure()) {
                    // A followed container's stress workers die with it: that is its
                    // restart, which the follow below handles, not the fault failing.
                    let restarting = w.follow.is_some() && resolver.target_gone(&w.target).is_some();
                    if !restarting {
                        return (State::Failed, why);
                    }
                }
                if let Some(why) = w.handle.upgrade().and_then(|h| h.finished()) {
                    return (State::Expired, why);
                }
                if w.leased
                    && let Some(why) = me.upgrade().and_then(|e| e.lease_ran_out(&w.id))
                {
                    return (State::Failed, why);
                }
                // Every tick for the first 5 s, then every second: a thousand long
                // experiments must not keep the agent busy.
                tick += 1;
                // A followed container's successor is looked for at every tick (within 1 s).
                if tick > 50 && !tick.is_multiple_of(10) && w.follow.is_none() {
                    continue;
                }
                if !w.hit && let Some(h) = w.handle.upgrade() {
                    let c = h.counters();
                    if c.acted() {
                        w.hit = true;
                        if let Some(engine) = me.upgrade() {
                            engine.first_hit(&w.id, c);
                        }
                    } else if !marked && Instant::now() >= w.hit_expected_by {
                        marked = true;
                        if let Some(engine) = me.upgrade() {
                            engine.no_hit(&w.id);
                        }
                    }
                }
                // Never carried over to whatever replaces the target, unless followed.
                if let Some(why) = resolver.target_gone(&w.target) {
                    let before = w.target.clone();
                    if let Some(end) = super::follow::gone(me, &mut w, why).await {
                        return end;
                    }
                    // Moved onto the successor: the stop conditions watch it from now on.
                    if w.target != before && !conditions.is_empty() {
                        stop.set(crate::stop::first_to_hold(conditions.clone(), w.target.clone()));
                    }
                }
            }
        }
    }
}
