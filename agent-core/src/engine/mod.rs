//! The experiment registry: lifecycle, deadlines and change notifications.
//!
//! Every experiment has a deadline enforced twice: a timer here removes the fault, and the
//! kernel rule carries the same expiry so the program ignores it even if this process stalls.

pub mod driver;
mod dry_run;
pub mod error;
mod follow;
mod guard;
pub mod halt;
pub mod journal;
pub mod model;
mod recovery;
mod watch;

pub use model::Snapshot;
pub use recovery::Recovered;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, Weak},
    time::SystemTime,
};

use tokio::{sync::broadcast, task::JoinHandle, time::Instant};
use tracing::{debug, info, warn};

use crate::{policy::Policy, targets::Resolver};
use driver::{FaultDriver, FaultHandle, monotonic_ns};
use error::{Error, Result};
use model::{Counters, ExperimentSpec, Resolved, State};

/// Ended experiments kept for Get and List (and the metrics' grace period); the oldest go
/// first, so the registry stays bounded however many experiments a node runs.
const KEEP_ENDED: usize = 1000;

/// How often an active experiment's handle is asked whether it failed on its own.
const FAILURE_POLL: std::time::Duration = std::time::Duration::from_millis(100);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// Created, active, or ended.
    State,
    /// The fault acted for the first time.
    FirstHit,
    /// Active for its expect_hit_within without acting.
    NoHit,
    /// Its container restarted and the fault now acts on the successor.
    Followed,
}

/// A change the engine announces to watchers.
#[derive(Clone, Debug)]
pub struct Event {
    pub kind: EventKind,
    pub snap: Snapshot,
}

#[derive(Clone, Debug, Default)]
pub struct ListFilter {
    pub states: Vec<State>,
    pub labels: BTreeMap<String, String>,
}

impl ListFilter {
    fn matches(&self, s: &Snapshot) -> bool {
        (self.states.is_empty() || self.states.contains(&s.state))
            && self.labels.iter().all(|(k, v)| s.spec.labels.get(k) == Some(v))
    }
}

type LiveHandle = Option<Arc<dyn FaultHandle>>;

struct Record {
    snap: Snapshot,
    handle: LiveHandle,
    timer: Option<JoinHandle<()>>,
    /// Order of creation, for stable listings.
    seq: u64,
}

#[derive(Default)]
struct Registry {
    records: HashMap<String, Record>,
    next_seq: u64,
    /// Set by a halt: new experiments are refused until resume.
    halted: Option<halt::Halted>,
}

impl Registry {
    fn add(&mut self, snap: Snapshot) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.records.insert(snap.id.clone(), Record { snap, handle: None, timer: None, seq });
        let ended = |r: &Record| !matches!(r.snap.state, State::Pending | State::Active);
        let n = self.records.values().filter(|r| ended(r)).count();
        if n > KEEP_ENDED {
            let mut old: Vec<(u64, String)> = self
                .records
                .iter()
                .filter(|(_, r)| ended(r))
                .map(|(id, r)| (r.seq, id.clone()))
                .collect();
            old.sort_unstable();
            for (_, id) in old.into_iter().take(n - KEEP_ENDED) {
                self.records.remove(&id);
            }
        }
    }
}

pub struct Engine {
    registry: Mutex<Registry>,
    driver: Arc<dyn FaultDriver>,
    resolver: Resolver,
    policy: Policy,
    /// None: experiments are not journaled (unit tests).
    journal: Option<Arc<journal::Journal>>,
    events: broadcast::Sender<Event>,
    me: Weak<Engine>,
}

impl Engine {
    pub fn new(
        driver: Arc<dyn FaultDriver>,
        resolver: Resolver,
        policy: Policy,
        journal: Option<journal::Journal>,
    ) -> Arc<Self> {
        let (events, _) = broadcast::channel(1024);
        Arc::new_cyclic(|me| Engine {
            registry: Mutex::new(Registry::default()),
            driver,
            resolver,
            policy,
            journal: journal.map(Arc::new),
            events,
            me: me.clone(),
        })
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, snap: &Snapshot) {
        self.announce(EventKind::State, snap);
    }

    fn announce(&self, kind: EventKind, snap: &Snapshot) {
        // No subscribers is fine.
        let _ = self.events.send(Event { kind, snap: snap.clone() });
    }

    /// Resolves the target, applies the fault and returns once it is in effect.
    /// A refusal (see `Error::is_refusal`: the kernel lacks what the fault needs, a limit, the
    /// policy) leaves nothing behind: no record, no event, no journal entry. Only a failure of
    /// the agent itself (`Internal`) is kept as a failed experiment.
    pub async fn inject(&self, spec: ExperimentSpec) -> Result<Snapshot> {
        self.check_not_halted()?;
        let resolved = self.resolve(&spec).await?;

        let id = new_id();
        let snap = Snapshot {
            id: id.clone(),
            spec: spec.clone(),
            state: State::Pending,
            reason: String::new(),
            resolved: Some(resolved.clone()),
            backend: String::new(),
            note: String::new(),
            created_at: SystemTime::now(),
            started_at: None,
            deadline: None,
            ended_at: None,
            first_hit_at: None,
            counters: Counters::default(),
            lease_expires: None,
            abort: None,
            no_hit: false,
            followed: 0,
        };
        {
            let mut reg = self.lock();
            // Under the lock a halt takes too: nothing slips in while it ends the rest.
            if let Some(h) = &reg.halted {
                return Err(Error::FailedPrecondition(format!("halted: {}", h.reason)));
            }
            // Counted and recorded under one lock, so concurrent injects cannot overshoot.
            self.admit(&reg, &spec, &resolved)?;
            reg.add(snap.clone());
        }
        // Announced as pending once the outcome is known (just before active or failed), so a
        // watcher never hears of an experiment that a refusal then takes back.
        let now = SystemTime::now();
        let active =
            self.activate(&id, &spec, resolved, now, now + spec.duration, Some(snap)).await?;
        // A halt that came while it was being applied ends it too.
        if let Some(h) = self.halted()
            && let Some(ended) =
                self.end(&id, State::Cancelled, format!("halted: {}", h.reason)).await
        {
            return Ok(ended);
        }
        Ok(active)
    }

    /// The experiment's target, resolved off the async threads.
    async fn resolve(&self, spec: &ExperimentSpec) -> Result<Resolved> {
        let resolver = self.resolver.clone();
        let target = spec.target.clone();
        tokio::task::spawn_blocking(move || resolver.resolve(&target))
            .await
            .map_err(|e| Error::internal("resolving target", e))?
    }

    /// What an inject (or its dry run) must pass once its target is resolved: the policy,
    /// with the experiments in effect now, and what its stop conditions need.
    fn admit(&self, reg: &Registry, spec: &ExperimentSpec, resolved: &Resolved) -> Result<()> {
        let in_effect = reg
            .records
            .values()
            .filter(|r| matches!(r.snap.state, State::Pending | State::Active))
            .count();
        self.policy.check(spec, resolved, self.resolver.own_cgroup(), in_effect)?;
        crate::stop::check(&spec.stop, resolved)
    }

    /// Applies the fault of a recorded pending experiment until `deadline_wall` (all of its
    /// duration, or what remains of it on resume), journaled first. `fresh` is the pending
    /// snapshot of a new experiment (None on resume): it is announced before the outcome,
    /// and on a refusal the experiment is forgotten rather than recorded as failed (a resumed
    /// one that cannot be applied again stays, as failed: it did exist).
    async fn activate(
        &self,
        id: &str,
        spec: &ExperimentSpec,
        resolved: Resolved,
        started_wall: SystemTime,
        deadline_wall: SystemTime,
        fresh: Option<Snapshot>,
    ) -> Result<Snapshot> {
        let id = id.to_string();
        // Both clocks are read at the same moment so the kernel and the timer agree.
        let start = Instant::now();
        let now_wall = SystemTime::now();
        let left = deadline_wall.duration_since(now_wall).unwrap_or_default();
        // With a lease the kernel's deadline is the lease's end (a resumed one keeps what was
        // left of its lease), moved on at each renewal; the timer keeps the experiment's.
        let lease_until = spec.lease.map(|l| {
            let kept = self.lock().records.get(&id).and_then(|r| r.snap.lease_expires);
            kept.unwrap_or(now_wall + l).min(deadline_wall)
        });
        let kernel_left =
            lease_until.map_or(left, |l| l.duration_since(now_wall).unwrap_or_default()).min(left);
        let expires = monotonic_ns().saturating_add(kernel_left.as_nanos() as u64);
        // Journaled before the fault takes effect: a crash from then on is recovered.
        let entry = self.journal.clone().and_then(|j| {
            let mut e = self.lock().records.get(&id).map(|r| r.snap.clone())?;
            e.started_at = Some(started_wall);
            e.deadline = Some(deadline_wall);
            e.lease_expires = lease_until;
            Some((j, crate::wire::convert::experiment(&e)))
        });
        let driver = self.driver.clone();
        let fault = spec.fault.clone();
        let target = resolved.clone();
        // Whatever the drivers log while applying carries the experiment's id.
        let span = tracing::info_span!("experiment", id = %id);
        // With what the fault did while being applied (a kill's first round), for the reply.
        let applied = tokio::task::spawn_blocking(move || {
            let _in = span.enter();
            if let Some((j, e)) = &entry {
                j.put(e).map_err(|err| Error::journal("the experiment", &err))?;
            }
            driver.apply(&target, &fault, expires).map(|h| {
                let c = h.counters();
                (h, c)
            })
        })
        .await
        .map_err(|e| Error::internal("applying fault", e))
        .and_then(|r| r);

        let mut reg = self.lock();
        let Some(rec) = reg.records.get_mut(&id) else {
            return Err(Error::Internal(format!("experiment {id} vanished while being applied")));
        };
        match applied {
            Ok((handle, first_counters)) => {
                let handle: Arc<dyn FaultHandle> = Arc::from(handle);
                rec.snap.state = State::Active;
                rec.snap.backend = handle.backend().to_string();
                rec.snap.started_at = Some(started_wall);
                rec.snap.deadline = Some(deadline_wall);
                rec.snap.lease_expires = lease_until;
                // Weak: the handle's last reference must go with the record, so that its
                // drop (which reverts the fault) finishes before Cancel returns.
                let watched = Arc::downgrade(&handle);
                rec.handle = Some(handle);
                let hit = first_counters.acted();
                if hit {
                    rec.snap.first_hit_at = Some(SystemTime::now());
                }
                rec.timer = Some(self.spawn_watch(watch::Watch {
                    id: id.clone(),
                    deadline: start + left,
                    handle: watched,
                    leased: lease_until.is_some(),
                    target: resolved.clone(),
                    ends_its_target: spec.fault.ends_its_target(),
                    hit,
                    hit_expected_by: start + spec.expect_hit_within,
                    stop: spec.stop.clone(),
                    follow: follow::Follow::new(spec, &resolved),
                }));
                let mut snap = rec.snap.clone();
                drop(reg);
                snap.counters = first_counters;
                if let Some(pending) = &fresh {
                    self.publish(pending);
                }
                info!(experiment = %id, fault = snap.spec.fault.kind(), target = %resolved.describe(),
                      duration = ?spec.duration, "experiment active");
                self.publish(&snap);
                if snap.first_hit_at.is_some() {
                    self.announce(EventKind::FirstHit, &snap);
                }
                Ok(snap)
            }
            Err(err) if fresh.is_some() && err.is_refusal() => {
                reg.records.remove(&id);
                drop(reg);
                if let Some(j) = &self.journal {
                    j.remove(&id);
                }
                info!(error = %err, "inject refused when applying: nothing recorded");
                Err(err)
            }
            // A resumed experiment with less time left than applying it takes (found by the
            // crash campaign: a sys delay resumed 0.2 s before its deadline): its time is up,
            // it did not fail.
            Err(err) if fresh.is_none() && SystemTime::now() >= deadline_wall => {
                drop(reg);
                self.end_pending(
                    &id,
                    State::Expired,
                    format!("its deadline came while it was being resumed ({err})"),
                );
                info!(experiment = %id, error = %err, "deadline reached while resuming");
                Err(err)
            }
            Err(err) => {
                drop(reg);
                if let Some(pending) = &fresh {
                    self.publish(pending);
                }
                self.end_pending(&id, State::Failed, err.to_string());
                warn!(experiment = %id, error = %err, "experiment failed to apply");
                Err(err)
            }
        }
    }

    fn insert(&self, snap: Snapshot) {
        self.lock().add(snap);
    }

    /// Ends a pending experiment (nothing was applied) as failed, or as expired when its
    /// deadline came first, dropping its journal entry.
    fn end_pending(&self, id: &str, state: State, reason: String) {
        if let Some(j) = &self.journal {
            j.remove(id);
        }
        let snap = {
            let mut reg = self.lock();
            let Some(rec) = reg.records.get_mut(id) else { return };
            rec.snap.state = state;
            rec.snap.reason = reason;
            rec.snap.ended_at = Some(SystemTime::now());
            rec.snap.clone()
        };
        self.publish(&snap);
    }

    /// Records and announces the first time an experiment's fault acted.
    fn first_hit(&self, id: &str, counters: Counters) {
        let snap = {
            let mut reg = self.lock();
            let Some(rec) = reg.records.get_mut(id) else { return };
            if rec.snap.first_hit_at.is_some() {
                return;
            }
            rec.snap.first_hit_at = Some(SystemTime::now());
            rec.snap.no_hit = false;
            let mut snap = rec.snap.clone();
            snap.counters = counters;
            snap
        };
        info!(experiment = %id, "first hit: the fault is acting");
        self.announce(EventKind::FirstHit, &snap);
    }

    /// Ends an active experiment: reverts the fault, then records the final state.
    /// Returns None when the experiment was not active (already ended, or unknown).
    async fn end(&self, id: &str, state: State, reason: String) -> Option<Snapshot> {
        self.end_inner(id, state, reason, false).await
    }

    /// `end` called by the experiment's own timer task, which must not abort itself.
    async fn end_from_timer(&self, id: &str, state: State, reason: String) -> Option<Snapshot> {
        self.end_inner(id, state, reason, true).await
    }

    async fn end_inner(
        &self,
        id: &str,
        state: State,
        reason: String,
        from_timer: bool,
    ) -> Option<Snapshot> {
        let (handle, timer) = {
            let mut reg = self.lock();
            let rec = reg.records.get_mut(id)?;
            // An active record without a handle is being ended by another caller.
            if rec.snap.state != State::Active || rec.handle.is_none() {
                return None;
            }
            (rec.handle.take(), rec.timer.take())
        };
        let ended_at = SystemTime::now();
        // The timer task must not abort itself: the rest of this function runs on it.
        if let Some(t) = timer
            && !from_timer
        {
            t.abort();
        }
        let span = tracing::info_span!("experiment", id = %id);
        let (journal, jid) = (self.journal.clone(), id.to_string());
        let counters = match handle {
            Some(h) => tokio::task::spawn_blocking(move || {
                let _in = span.enter();
                let c = h.counters();
                drop(h);
                // Reverted: nothing is left for a restart to recover.
                if let Some(j) = journal {
                    j.remove(&jid);
                }
                c
            })
            .await
            .unwrap_or_default(),
            None => Counters::default(),
        };
        let snap = {
            let mut reg = self.lock();
            let rec = reg.records.get_mut(id)?;
            // The final state is shown only once the fault is reverted.
            rec.snap.state = state;
            rec.snap.reason = reason;
            rec.snap.ended_at = Some(ended_at);
            // With what the handles of the containers it followed before counted.
            rec.snap.counters = follow::carried(&rec.snap.counters, &counters);
            rec.snap.clone()
        };
        info!(experiment = %id, state = ?snap.state, matched = counters.packets_matched,
              dropped = counters.packets_dropped, "experiment ended");
        self.publish(&snap);
        Some(snap)
    }

    /// Why the experiment's lease ran out, if it did (checked by its timer).
    fn lease_ran_out(&self, id: &str) -> Option<String> {
        let reg = self.lock();
        let snap = &reg.records.get(id)?.snap;
        let until = snap.lease_expires?;
        let lease = snap.spec.lease?;
        (SystemTime::now() >= until).then(|| {
            format!("lease expired: not renewed within {}", crate::units::human_duration(lease))
        })
    }

    /// Renews an active experiment's lease: it then runs for another lease from now, never
    /// past its deadline, in the kernel too; journaled, so a restarted agent keeps it.
    pub async fn renew(&self, id: &str) -> Result<Snapshot> {
        let (handle, lease, deadline) = {
            let reg = self.lock();
            let rec = reg
                .records
                .get(id)
                .ok_or_else(|| Error::NotFound(format!("id: no experiment {id}")))?;
            let Some(lease) = rec.snap.spec.lease else {
                return Err(Error::FailedPrecondition(format!(
                    "experiment {id} was injected without a lease: nothing to renew"
                )));
            };
            if rec.snap.state != State::Active {
                return Err(Error::FailedPrecondition(format!(
                    "experiment {id} is {:?}: only an active experiment's lease is renewed",
                    rec.snap.state
                )));
            }
            (rec.handle.clone(), lease, rec.snap.deadline)
        };
        let Some(handle) = handle else {
            return Err(Error::FailedPrecondition(format!("experiment {id} is not in effect")));
        };
        let now = SystemTime::now();
        let until = deadline.map_or(now + lease, |d| (now + lease).min(d));
        let left = until.duration_since(now).unwrap_or_default();
        let expires = monotonic_ns().saturating_add(left.as_nanos() as u64);
        let snap = {
            let mut reg = self.lock();
            let rec = reg.records.get_mut(id).ok_or_else(|| Error::NotFound(id.to_string()))?;
            rec.snap.lease_expires = Some(until);
            rec.snap.clone()
        };
        let journal = self.journal.clone();
        let record = crate::wire::convert::experiment(&snap);
        tokio::task::spawn_blocking(move || {
            if let Some(j) = journal {
                j.put(&record).map_err(|e| Error::journal("the renewed lease", &e))?;
            }
            handle.extend(expires).map_err(|e| Error::internal("moving the kernel deadline", e))
        })
        .await
        .map_err(|e| Error::internal("renewing", e))??;
        debug!(experiment = %id, until = ?until, "lease renewed");
        Ok(snap)
    }

    pub async fn cancel(&self, id: &str) -> Result<Snapshot> {
        if let Some(s) = self.end(id, State::Cancelled, "cancelled by request".into()).await {
            return Ok(s);
        }
        // Not active: cancelling is idempotent, so return it as it is.
        self.get(id).await
    }

    pub async fn get(&self, id: &str) -> Result<Snapshot> {
        let (snap, handle) = {
            let reg = self.lock();
            let rec = reg
                .records
                .get(id)
                .ok_or_else(|| Error::NotFound(format!("id: no experiment {id}")))?;
            (rec.snap.clone(), rec.handle.clone())
        };
        let mut snaps = with_live_counters(vec![(snap.clone(), handle)]).await;
        Ok(snaps.pop().unwrap_or(snap))
    }

    pub async fn list(&self, filter: &ListFilter) -> Vec<Snapshot> {
        let mut items: Vec<(u64, Snapshot, LiveHandle)> = {
            let reg = self.lock();
            reg.records
                .values()
                .filter(|r| filter.matches(&r.snap))
                .map(|r| (r.seq, r.snap.clone(), r.handle.clone()))
                .collect()
        };
        items.sort_by_key(|(seq, ..)| *seq);
        with_live_counters(items.into_iter().map(|(_, s, h)| (s, h)).collect()).await
    }

    /// Cancels every active experiment; called once when the agent stops.
    pub async fn shutdown(&self) {
        let ids: Vec<String> = {
            let reg = self.lock();
            reg.records
                .iter()
                .filter(|(_, r)| r.snap.state == State::Active)
                .map(|(id, _)| id.clone())
                .collect()
        };
        for id in ids {
            self.end(&id, State::Cancelled, "agent shutting down".into()).await;
        }
    }
}

/// Fills in counters of active experiments from the kernel (map reads run off the async pool).
async fn with_live_counters(items: Vec<(Snapshot, LiveHandle)>) -> Vec<Snapshot> {
    if items.iter().all(|(_, h)| h.is_none()) {
        return items.into_iter().map(|(s, _)| s).collect();
    }
    tokio::task::spawn_blocking(move || {
        items
            .into_iter()
            .map(|(mut s, h)| {
                if let Some(h) = h {
                    // An active record's own counters are those of the containers it
                    // followed before (none: zero).
                    s.counters = follow::carried(&s.counters, &h.counters());
                    // Both may change while the fault runs (a time skew's raw-call programs
                    // attach after it started). The record's own note (waiting for a
                    // followed container) shows when the handle has none.
                    s.backend = h.backend().to_string();
                    if let Some(note) = h.note() {
                        s.note = note;
                    }
                }
                s
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// 12 hex digits from the kernel's random pool: unique enough per node and easy to type.
fn new_id() -> String {
    let mut b = [0u8; 6];
    // SAFETY: (nix has no getrandom) writes at most b.len() bytes into b, a live local.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // getrandom cannot fail for 6 bytes after boot; fall back to time anyway.
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        b.copy_from_slice(&t.as_nanos().to_le_bytes()[..6]);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
